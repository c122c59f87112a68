"""The shared translation prompt format: rendering, paraphrasing, answer parsing."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpo.exceptions import ConfigError
from alpo.prompts import (
    LANGUAGES,
    SYSTEM_PROMPT,
    language_name,
    parse_answer,
    render_answer,
    render_prompt,
    to_messages,
)

LINES = ["你好，Alice。", "今天\n下雨了", "我们走吧！"]
GLOSSARY = [("Alice", "อลิซ")]

GOLDEN_EN = """\
[Chinese to Thai dialogue translation]
Translate the following numbered lines of Chinese film/TV dialogue into Thai, following these rules:
- Make the translation colloquial and natural, matching the style of the source dialogue.
- Keep each translated line about as long as its source line.
- Translate proper nouns as given in the list below.
- Output exactly 3 lines, numbered as in the source; never merge or split lines.

Proper nouns and their translations:
Alice - อลิซ

Now translate the lines below following the rules above.
Source:
1. 你好，Alice。
2. 今天 下雨了
3. 我们走吧！
Translation:"""


def source_block(n: int, prompt: str) -> str:
    """The numbered lines between the source label and the last line."""
    lines = prompt.split("\n")
    return "\n".join(lines[-1 - n : -1])


# --- rendering -------------------------------------------------------------------------------


def test_canonical_english_prompt_is_exact() -> None:
    assert render_prompt(LINES, "zh", "th", glossary=GLOSSARY) == GOLDEN_EN


def test_canonical_prompt_is_deterministic() -> None:
    a = render_prompt(LINES, "zh", "th", glossary=GLOSSARY)
    b = render_prompt(LINES, "zh", "th", glossary=GLOSSARY, rng=None)
    assert a == b


def test_languages_cover_required_codes() -> None:
    required = ("zh", "en", "th", "de", "fr", "ja", "ko", "vi")
    required += ("es", "pt", "ru", "ar", "it", "id", "ms", "tr")
    for code in required:
        en, zh = LANGUAGES[code]
        assert en.isascii() and en[0].isupper()
        assert re.fullmatch(r"[\u4e00-\u9fff]+", zh)
    assert language_name("th") == "Thai"
    assert language_name("th", "zh") == "泰语"


def test_chinese_instructions_have_no_english_words() -> None:
    src = ["你好", "我们走吧"]
    prompt = render_prompt(
        src, "zh", "th", glossary=[("小明", "เสี่ยวหมิง")], instruction_language="zh"
    )
    assert "中文" in prompt and "泰语" in prompt
    assert not re.search("[A-Za-z]", prompt)
    assert prompt.split("\n")[-4:] == ["原文：", "1. 你好", "2. 我们走吧", "译文："]
    assert "小明 - เสี่ยวหมิง" in prompt.split("\n")
    for seed in range(20):
        p = render_prompt(src, "zh", "th", instruction_language="zh", rng=random.Random(seed))
        assert not re.search("[A-Za-z]", p)


def test_english_source_under_chinese_instructions() -> None:
    prompt = render_prompt(["Hi"], "en", "zh", instruction_language="zh")
    instructions = prompt.split("\n")[:-3]
    assert "英语" in prompt and "中文" in prompt
    assert not re.search("[A-Za-z]", "\n".join(instructions))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_empty_glossary_gives_marker_line(lang: str) -> None:
    prompt = render_prompt(["a", "b"], "en", "de", instruction_language=lang)
    marker = "(no proper nouns)" if lang == "en" else "（无专有名词）"
    assert marker in prompt.split("\n")
    with_terms = render_prompt(["a", "b"], "en", "de", glossary=[("Bob", "Bob")])
    assert "(no proper nouns)" not in with_terms


def test_glossary_lines_in_order() -> None:
    glossary = [("Alice", "อลิซ"), ("New\nYork", "นิวยอร์ก")]
    lines = render_prompt(["x"], "en", "th", glossary=glossary).split("\n")
    i = lines.index("Alice - อลิซ")
    assert lines[i + 1] == "New York - นิวยอร์ก"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_paraphrases_differ_but_keep_the_fixed_parts(lang: str) -> None:
    kwargs = {"glossary": GLOSSARY, "instruction_language": lang}
    canonical = render_prompt(LINES, "zh", "th", **kwargs)
    prompts = {render_prompt(LINES, "zh", "th", rng=random.Random(s), **kwargs) for s in range(40)}
    assert len(prompts) > 30
    a = render_prompt(LINES, "zh", "th", rng=random.Random(1), **kwargs)
    b = render_prompt(LINES, "zh", "th", rng=random.Random(2), **kwargs)
    assert a != b
    last = canonical.split("\n")[-1]
    for p in prompts:
        lines = p.split("\n")
        assert source_block(3, p) == "1. 你好，Alice。\n2. 今天 下雨了\n3. 我们走吧！"
        assert lines[-1] == last
        assert lines[-5] == canonical.split("\n")[-5]  # "Source:" label
        assert "Alice - อลิซ" in lines
        assert "3" in "\n".join(lines[2:6])  # the count rule names the line count
        assert len(lines) == len(canonical.split("\n"))


def test_same_seed_same_paraphrase() -> None:
    a = render_prompt(LINES, "zh", "th", rng=random.Random(7))
    b = render_prompt(LINES, "zh", "th", rng=random.Random(7))
    assert a == b


def test_source_newlines_are_flattened() -> None:
    prompt = render_prompt(["a\nb", "c\r\nd", "e\u2028f"], "en", "fr")
    assert source_block(3, prompt) == "1. a b\n2. c d\n3. e f"


@pytest.mark.parametrize(
    "call",
    [
        lambda: render_prompt(["x"], "xx", "th"),
        lambda: render_prompt(["x"], "zh", "klingon"),
        lambda: render_prompt(["x"], "zh", "th", instruction_language="fr"),
        lambda: render_prompt([], "zh", "th"),
        lambda: render_prompt("one string", "zh", "th"),
        lambda: render_prompt(["x", None], "zh", "th"),  # type: ignore[list-item]
        lambda: render_prompt(["x"], "zh", "th", glossary=[("only-term",)]),  # type: ignore[list-item]
        lambda: render_prompt(["x"], "zh", "th", glossary=["ab"]),  # type: ignore[list-item]
        lambda: language_name("nope"),
    ],
)
def test_bad_arguments_raise_config_error(call) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert "\n" not in str(info.value)


def test_to_messages() -> None:
    msgs = to_messages("hello")
    assert msgs == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "hello"},
    ]


# --- answers ---------------------------------------------------------------------------------


def test_render_answer() -> None:
    assert render_answer(["a", "b\nc", ""]) == "1. a\n2. b c\n3."
    assert render_answer(["x", "y"], start=5) == "5. x\n6. y"
    assert render_answer([]) == ""


@pytest.mark.parametrize(
    "text",
    [
        "1. 甲\n2. 乙",
        "1.甲\n2.乙",
        "1) 甲\n2) 乙",
        "1、甲\n2、乙",
        "1：甲\n2：乙",
        "1: 甲\n2: 乙",
        "1．甲\n2）乙",
        "\n\n1. 甲\n\n2. 乙\n\n",
        "Translation:\n1. 甲\n2. 乙",
        "译文：\n1. 甲\n2. 乙",
        "**Translation result:**\n\n1. 甲\n2. 乙\n",
        "```\n1. 甲\n2. 乙\n```",
        "  1. 甲  \r\n  2. 乙",
    ],
)
def test_parse_numbering_styles(text: str) -> None:
    assert parse_answer(text, 2) == ["甲", "乙"]


def test_parse_continuation_lines() -> None:
    text = "1. He said\nthat it was\n   late.\n2. ok"
    assert parse_answer(text, 2) == ["He said that it was late.", "ok"]
    assert parse_answer("1. a\n2. b\ntrailing", 2) == ["a", "b trailing"]


@pytest.mark.parametrize(
    "text",
    [
        "1. a\n2. b\n3. c",  # too many
        "1. a",  # too few
        "a\nb",  # no numbers
        "1. a\nb",  # second number missing (continuation -> one line)
        "2. a\n1. b",  # out of order
        "1. a\n3. b",  # gap
        "1. a\n1. b",  # repeated
        "0. a\n1. b",  # wrong start
        "Sure, I will translate it for you. Here it is\n1. a\n2. b",  # chatter, not a header
        "",
        "1.5 a\n2. b",  # a decimal, not a number
    ],
)
def test_parse_rejects(text: str) -> None:
    assert parse_answer(text, 2) is None


def test_parse_start_offset() -> None:
    assert parse_answer("3. c\n4. d", 2, start=3) == ["c", "d"]
    assert parse_answer("1. c\n2. d", 2, start=3) is None


def test_parse_zero_lines() -> None:
    assert parse_answer("", 0) == []
    assert parse_answer("1. a", 0) is None


def test_parse_digits_inside_text() -> None:
    lines = ["1. 2. 3.", "2) x", "10、y", "3.5 hours", "１：z"]
    assert parse_answer(render_answer(lines), 5) == lines


@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))), st.integers(-3, 50))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises(text: str, n: int) -> None:
    result = parse_answer(text, n)
    assert result is None or len(result) == n


def test_parse_garbage_types() -> None:
    assert parse_answer(None, 1) is None  # type: ignore[arg-type]
    assert parse_answer(b"1. a", 1) is None  # type: ignore[arg-type]
    assert parse_answer("1. a", "1") is None  # type: ignore[arg-type]
    assert parse_answer("9" * 5000 + ". a", 1) is None


# One line of text: any characters except line breaks, no outer whitespace.
_BREAKS = set("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_ALPHABET = st.one_of(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=sorted(_BREAKS)),
    st.sampled_from(list("你好吗我们走吧ทดสอบภาษาไทย0123456789.:)、：")),
)
_LINE = st.one_of(
    st.text(_ALPHABET, max_size=40),
    st.builds(lambda n, t: f"{n}. {t}", st.integers(0, 99), st.text(_ALPHABET, max_size=20)),
    st.sampled_from(["1. ", "12) ", "3、", "４：", "สวัสดี 1. ครับ", "第1.集"]),
).map(str.strip)


@given(st.lists(_LINE, min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_render_parse_round_trip(lines: list[str]) -> None:
    assert parse_answer(render_answer(lines), len(lines)) == lines


@given(st.lists(_LINE, min_size=1, max_size=10), st.integers(1, 500))
@settings(max_examples=100, deadline=None)
def test_round_trip_with_offset(lines: list[str], start: int) -> None:
    text = render_answer(lines, start=start)
    assert parse_answer(text, len(lines), start=start) == lines


@given(st.lists(st.text(max_size=30), min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_prompt_always_one_numbered_line_per_source_line(lines: list[str]) -> None:
    prompt = render_prompt(lines, "th", "zh", rng=random.Random(0))
    block = prompt.split("\n")[-1 - len(lines) : -1]
    assert [int(b.split(".")[0]) for b in block] == list(range(1, len(lines) + 1))
    assert prompt.split("\n")[-2 - len(lines)] == "Source:"
