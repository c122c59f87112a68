"""The one translation prompt format, shared by the sampler, the trainer and the translator.

A prompt (user turn) has these blocks, top to bottom::

    [Chinese to Thai dialogue translation]                      title
    Translate the following numbered lines of ... rules:        lead sentence
    - <style rule>                                              four rules: colloquial style,
    - <length rule>                                             line length, proper nouns,
    - <proper-noun rule>                                        exact line count (states N)
    - <line-count rule>
                                                                (blank line)
    Proper nouns and their translations:                        glossary header
    term - translation                                          one line per glossary entry, or
                                                                a fixed "no proper nouns" marker
                                                                (blank line)
    Now translate the lines below following the rules above.    closing line
    Source:
    1. first source line
    2. ...
    Translation:

The expected answer is the numbered target lines only (``render_answer``), same count and
numbering as the source; ``parse_answer`` reads a model answer back into line texts.

The instruction text exists in English (default) and Chinese (``instruction_language="zh"``, as
in the ALPO release, language names in Chinese too). Passing a ``random.Random`` as ``rng``
paraphrases the instruction: each of the eight slots (title, lead, four rules, glossary header,
closing line) is drawn from several hand-written variants, which acts as prompt augmentation.
Without ``rng`` the first (canonical) variant of each slot is used, so prompts are deterministic.
The source block, the glossary lines, the labels and the line count never change.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from alpo.exceptions import ConfigError

__all__ = [
    "LANGUAGES",
    "INSTRUCTION_LANGUAGES",
    "SYSTEM_PROMPT",
    "language_name",
    "render_prompt",
    "render_answer",
    "parse_answer",
    "to_messages",
    "window_texts",
]

#: ISO 639-1 code -> (English name, Chinese name).
LANGUAGES: dict[str, tuple[str, str]] = {
    "zh": ("Chinese", "中文"),
    "en": ("English", "英语"),
    "th": ("Thai", "泰语"),
    "de": ("German", "德语"),
    "fr": ("French", "法语"),
    "ja": ("Japanese", "日语"),
    "ko": ("Korean", "韩语"),
    "vi": ("Vietnamese", "越南语"),
    "es": ("Spanish", "西班牙语"),
    "pt": ("Portuguese", "葡萄牙语"),
    "ru": ("Russian", "俄语"),
    "ar": ("Arabic", "阿拉伯语"),
    "it": ("Italian", "意大利语"),
    "id": ("Indonesian", "印尼语"),
    "ms": ("Malay", "马来语"),
    "tr": ("Turkish", "土耳其语"),
    "nl": ("Dutch", "荷兰语"),
    "pl": ("Polish", "波兰语"),
    "hi": ("Hindi", "印地语"),
}

INSTRUCTION_LANGUAGES: tuple[str, ...] = ("en", "zh")

#: System turn used with the prompt when a chat template is applied.
SYSTEM_PROMPT = "You are a helpful assistant."

# Instruction slots, each a tuple of variants; the first one is canonical.
# Placeholders: {src}, {tgt} (language names), {n} (number of source lines).
_SLOTS = (
    "title",
    "lead",
    "rule_style",
    "rule_length",
    "rule_names",
    "rule_count",
    "glossary",
    "closing",
)

_TEXT: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "title": (
            "[{src} to {tgt} dialogue translation]",
            "[{src} → {tgt} dialogue translation]",
            "[Dialogue translation: {src} into {tgt}]",
            "[Translating {src} dialogue into {tgt}]",
        ),
        "lead": (
            "Translate the following numbered lines of {src} film/TV dialogue into {tgt}, "
            "following these rules:",
            "Below are numbered {src} lines from a film or TV show. Render them in {tgt} "
            "and keep to these rules:",
            "Your task is to turn the numbered {src} film/TV dialogue below into {tgt}. "
            "Follow these rules:",
            "Please translate the numbered {src} lines of screen dialogue below into {tgt}, "
            "observing these rules:",
        ),
        "rule_style": (
            "- Make the translation colloquial and natural, matching the style of the source "
            "dialogue.",
            "- Write natural, spoken {tgt} that keeps the tone and style of the original lines.",
            "- Keep it conversational and easy to follow, in the same style as the source "
            "dialogue.",
            "- Use everyday spoken language that fits the voice of the original dialogue.",
        ),
        "rule_length": (
            "- Keep each translated line about as long as its source line.",
            "- Each line of the translation should be of similar length to the line it translates.",
            "- Match the length of every translated line to that of its source line.",
            "- Do not make any line much longer or shorter than the original line.",
        ),
        "rule_names": (
            "- Translate proper nouns as given in the list below.",
            "- Use the listed translations for the proper nouns.",
            "- For names and other proper nouns, use exactly the translations provided.",
            "- Proper nouns take the translations given below.",
        ),
        "rule_count": (
            "- Output exactly {n} lines, numbered as in the source; never merge or split lines.",
            "- Return the same number of lines as the source ({n}), with the same numbering; "
            "do not combine or break up lines.",
            "- Give exactly {n} numbered lines, one per source line, without merging or "
            "splitting any.",
            "- The answer must have {n} lines numbered like the source; lines may not be "
            "joined or divided.",
        ),
        "glossary": (
            "Proper nouns and their translations:",
            "Names and terms to use:",
            "Glossary of proper nouns:",
            "Required translations of proper nouns:",
        ),
        "closing": (
            "Now translate the lines below following the rules above.",
            "Translate the lines below now.",
            "Now please translate the following lines.",
            "Go ahead and translate these lines according to the rules.",
        ),
    },
    "zh": {
        "title": (
            "[{src}到{tgt}对白翻译]",
            "[{src}→{tgt} 影视对白翻译]",
            "[对白翻译：{src}译为{tgt}]",
            "[将{src}台词译成{tgt}]",
        ),
        "lead": (
            "请将下面带编号的{src}影视对白翻译成{tgt}，并遵守以下规则：",
            "下面是一段带编号的{src}影视剧台词，请译为{tgt}，要求如下：",
            "把以下编号的{src}影视台词翻译为{tgt}，翻译时遵循这些规则：",
            "你的任务是把下列{src}影视对白逐行译成{tgt}，规则如下：",
        ),
        "rule_style": (
            "- 译文要口语化、自然，符合原对白的风格。",
            "- 用地道的口语表达，保持原台词的语气和风格。",
            "- 语言通俗自然，贴合原文对白的风格。",
            "- 译文应像日常说话一样自然，与原对白风格一致。",
        ),
        "rule_length": (
            "- 每行译文的长度与对应的原文行相当。",
            "- 每一行译文都不要比原文行长太多或短太多。",
            "- 译文各行的长度应与原文各行保持一致。",
            "- 让每行译文的篇幅和它的原文行差不多。",
        ),
        "rule_names": (
            "- 专有名词使用下方给出的译名。",
            "- 专有名词一律采用指定的译法。",
            "- 人名、地名等专有名词按下列译名翻译。",
            "- 遇到专有名词时，使用所列的译名。",
        ),
        "rule_count": (
            "- 恰好输出{n}行，编号与原文相同，不得合并或拆分行。",
            "- 输出行数必须与原文相同（{n}行），编号一致，不要合并或拆开任何一行。",
            "- 逐行对应输出{n}行带编号的译文，不合并、不拆分。",
            "- 译文须为{n}行，按原文编号，行与行之间不可合并也不可拆分。",
        ),
        "glossary": (
            "专有名词及译名：",
            "专有名词译法：",
            "指定译名：",
            "专名对照：",
        ),
        "closing": (
            "现在请按上述规则翻译下面的内容。",
            "请开始翻译以下各行。",
            "现在翻译下列台词。",
            "请依照规则翻译下面几行。",
        ),
    },
}

# Fixed (never paraphrased) labels.
_NO_PROPER_NOUNS = {"en": "(no proper nouns)", "zh": "（无专有名词）"}
_SOURCE_LABEL = {"en": "Source:", "zh": "原文："}
_ANSWER_LABEL = {"en": "Translation:", "zh": "译文："}

# Every character str.splitlines() breaks on ("\r\n" counts as one break).
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")

# A numbered answer line: "1. x", "1.x", "1) x", "1、x", "1: x", "1：x" (also full-width forms).
# A "." directly followed by a digit is a decimal ("1.5"), not a line number.
_NUMBERED = re.compile(r"\s*([0-9０-９]{1,6})\s*(?:[.．](?![0-9])|[)）、:：])(.*)")

# A header line allowed before the first numbered line: "Translation:", "**译文：**", "# Result:".
_HEADER = re.compile(r"[#*\s]*[^\n]{0,60}?[:：][*\s]*")
_FENCE = re.compile(r"\s*```[\w-]*\s*")


def language_name(code: str, instruction_language: str = "en") -> str:
    """The name of language `code` in the instruction language ("en" or "zh")."""
    _check_instruction_language(instruction_language)
    try:
        names = LANGUAGES[code]
    except (KeyError, TypeError):
        known = ", ".join(sorted(LANGUAGES))
        raise ConfigError(f"unknown language code {code!r} (known: {known})") from None
    return names[0] if instruction_language == "en" else names[1]


def render_prompt(
    src_lines: Sequence[str],
    src_lang: str,
    tgt_lang: str,
    *,
    glossary: Iterable[tuple[str, str]] = (),
    instruction_language: str = "en",
    rng: random.Random | None = None,
) -> str:
    """The user prompt asking to translate `src_lines` from `src_lang` into `tgt_lang`.

    `glossary` holds (term, translation) pairs. With `rng`, every instruction slot is drawn from
    its variants (paraphrase augmentation); without it the canonical wording is used.
    """
    lang = instruction_language
    src = language_name(src_lang, lang)
    tgt = language_name(tgt_lang, lang)
    lines = _source_lines(src_lines)
    fill = {"src": src, "tgt": tgt, "n": len(lines)}
    slot = {name: _pick(_TEXT[lang][name], rng).format(**fill) for name in _SLOTS}
    parts = [
        slot["title"],
        slot["lead"],
        slot["rule_style"],
        slot["rule_length"],
        slot["rule_names"],
        slot["rule_count"],
        "",
        slot["glossary"],
        *(_glossary_lines(glossary) or [_NO_PROPER_NOUNS[lang]]),
        "",
        slot["closing"],
        _SOURCE_LABEL[lang],
        render_answer(lines),
        _ANSWER_LABEL[lang],
    ]
    return "\n".join(parts)


def render_answer(tgt_lines: Sequence[str], *, start: int = 1) -> str:
    """Numbered answer lines "1. a\\n2. b..." (numbering from `start`), one per item."""
    flat = (_flatten(str(t)) for t in tgt_lines)
    return "\n".join(f"{i}. {t}".rstrip() for i, t in enumerate(flat, start))


def parse_answer(text: str, n_lines: int, *, start: int = 1) -> list[str] | None:
    """The `n_lines` line texts of a numbered answer, or None if it is not one.

    Numbers must run `start`, `start`+1, ... in order, one per line. Blank lines, a leading
    header such as "Translation:" and code fences are ignored; an unnumbered line after a
    numbered one continues it (joined with a space). Never raises on bad input.
    """
    if not isinstance(text, str) or not isinstance(n_lines, int) or n_lines < 0:
        return None
    out: list[str] = []
    for raw in text.splitlines():
        if not raw.strip() or _FENCE.fullmatch(raw):
            continue
        m = _NUMBERED.match(raw)
        if m:
            if int(m.group(1)) != start + len(out):
                return None
            out.append(m.group(2).strip())
        elif out:
            out[-1] = f"{out[-1]} {raw.strip()}".strip()
        elif not _HEADER.fullmatch(raw):
            return None
    return out if len(out) == n_lines else None


def window_texts(
    windows: Any,
    pair: str,
    *,
    instruction_language: str = "en",
    paraphrase_seed: int | None = None,
) -> tuple[list[str], list[str]]:
    """Prompts and reference answers of prepared windows (a frame with `src_lines`, `ref_lines`
    and optionally `glossary`), in row order: the prompt shows every source line of the window
    (context included), the answer numbers every reference line. With `paraphrase_seed`, the
    instruction is paraphrased by one seeded generator over the rows, so the same windows
    always get the same prompts."""
    src_lang, tgt_lang = pair.split("-")
    rng = random.Random(paraphrase_seed) if paraphrase_seed is not None else None
    glossaries = (
        windows["glossary"].to_list() if "glossary" in windows.columns else [[]] * len(windows)
    )
    prompts = [
        render_prompt(
            src,
            src_lang,
            tgt_lang,
            glossary=[(g["term"], g["translation"]) for g in gloss or []],
            instruction_language=instruction_language,
            rng=rng,
        )
        for src, gloss in zip(windows["src_lines"], glossaries, strict=True)
    ]
    answers = [render_answer(ref) for ref in windows["ref_lines"]]
    return prompts, answers


def to_messages(prompt: str) -> list[dict[str, str]]:
    """Chat messages (system + user) for a rendered prompt, for `apply_chat_template`."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def _check_instruction_language(lang: str) -> None:
    if lang not in INSTRUCTION_LANGUAGES:
        raise ConfigError(f"unknown instruction language {lang!r} (use 'en' or 'zh')")


def _pick(variants: tuple[str, ...], rng: random.Random | None) -> str:
    return variants[0] if rng is None else rng.choice(variants)


def _flatten(text: str) -> str:
    """One line of text: line breaks become spaces, outer whitespace is dropped."""
    return _LINE_BREAK.sub(" ", text).strip()


def _source_lines(src_lines: Sequence[str]) -> list[str]:
    if isinstance(src_lines, str):
        raise ConfigError("source lines must be a list of strings, not one string")
    lines = list(src_lines)
    if not lines:
        raise ConfigError("no source lines to translate")
    if not all(isinstance(line, str) for line in lines):
        raise ConfigError("every source line must be a string")
    return [_flatten(line) for line in lines]


def _glossary_lines(glossary: Iterable[tuple[str, str]]) -> list[str]:
    out = []
    for entry in glossary:
        if isinstance(entry, str) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise ConfigError(f"glossary entry {entry!r} is not a (term, translation) pair")
        term, translation = entry
        out.append(f"{_flatten(str(term))} - {_flatten(str(translation))}")
    return out
