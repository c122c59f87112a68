"""Judge prompts, reply validation and shuffled voting."""

import json
import random

import pytest

from alpo.judging import JudgeTask, judge, parse_scores, render_judge_prompt, score_schema

TASK = JudgeTask(
    before=["你好。"],
    lines=["我们走吧。"],
    after=["好的。"],
    candidates=["ไปกันเถอะ", "ไปเลย", "เราไปกัน", "ไปกันเถอะนะ"],
)


@pytest.mark.parametrize(
    ("reply", "n", "scores", "why"),
    [
        ('{"A": 80, "B": 60, "C": 40}', 3, [80, 60, 40], None),
        (
            'Sure! Here are the scores:\n```json\n{"B": 7, "A": 90}\n```\nHope it helps.',
            2,
            [90, 7],
            None,
        ),
        ('<think>A is best {"A": 1}</think>{"A": 70, "B": 20}', 2, [70, 20], None),
        ('{"note": "x"} {"A": 70, "B": 20}', 2, None, "keys do not match"),
        ('{"A": 80, "C": 60}', 2, None, "missing ['B']"),
        ('{"A": 80}', 2, None, "missing ['B']"),
        ('{"A": 80, "B": 60, "C": 10}', 2, None, "unexpected ['C']"),
        ('{"A": 101, "B": 60}', 2, None, "out of 0..100"),
        ('{"A": -1, "B": 60}', 2, None, "out of 0..100"),
        ('{"A": 80.5, "B": 60}', 2, None, "not an integer"),
        ('{"A": 80.0, "B": 60}', 2, None, "not an integer"),
        ('{"A": "80", "B": 60}', 2, None, "not an integer"),
        ('{"A": true, "B": 60}', 2, None, "not an integer"),
        ('{"A": 80, "A": 70, "B": 60}', 2, None, "duplicate keys"),
        ('{"A": 50, "B": 50, "C": 50}', 3, None, "degenerate"),
        ('{"A": 50, "B": 50}', 2, [50, 50], None),  # two equal candidates may tie
        (json.dumps({k: 50 if k != "A" else 60 for k in "ABCDEFGHIJ"}), 10, None, "degenerate"),
        (
            json.dumps({k: 40 + 5 * (i % 3) for i, k in enumerate("ABCDEFGH")}),
            8,
            [40, 45, 50, 40, 45, 50, 40, 45],
            None,
        ),
        ("I cannot rate these.", 2, None, "no JSON object"),
        ('{"A": 80, "B": 6', 2, None, "no JSON object"),
        ("", 2, None, "no JSON object"),
    ],
)
def test_reply_validation(reply, n, scores, why):
    got, reason = parse_scores(reply, n)
    assert got == scores
    if why is None:
        assert reason is None
    else:
        assert why in reason


@pytest.mark.parametrize("language", ["en", "zh"])
def test_prompt_shows_context_tags_and_letters_in_the_given_order(language):
    prompt = render_judge_prompt(TASK, [2, 0, 3, 1], "zh", "th", language)
    tags = ("[context]", "[rate]") if language == "en" else ("[上下文]", "[评分]")
    assert f"{tags[0]} 你好。" in prompt and f"{tags[1]} 我们走吧。" in prompt
    assert f"{tags[0]} 好的。" in prompt
    lines = prompt.splitlines()
    label = "Translation {}:" if language == "en" else "译文{}："
    shown = [lines[lines.index(label.format(letter)) + 1] for letter in "ABCD"]
    assert shown == [TASK.candidates[i] for i in (2, 0, 3, 1)]
    assert ("Thai" if language == "en" else "泰语") in prompt
    assert "30%" in prompt and "40%" in prompt


def test_schema_requires_every_letter():
    schema = score_schema(3)
    assert schema["required"] == ["A", "B", "C"]
    assert schema["properties"]["C"] == {"type": "integer", "minimum": 0, "maximum": 100}


def fake_judge(quality, bad_first=0):
    """A judge that scores candidates by a hidden quality, after `bad_first` garbage replies."""
    calls = {"batches": 0, "prompts": 0, "bad": bad_first}

    def ask(batch):
        calls["batches"] += 1
        replies = []
        for prompt, n in batch:
            calls["prompts"] += 1
            if calls["bad"] > 0:
                calls["bad"] -= 1
                replies.append("no idea")
                continue
            lines = prompt.splitlines()
            texts = [lines[lines.index(f"Translation {k}:") + 1] for k in "ABCDEFGH"[:n]]
            replies.append(
                json.dumps({k: quality[t] for k, t in zip("ABCDEFGH"[:n], texts, strict=True)})
            )
        return replies

    return ask, calls


def test_votes_are_unshuffled_and_averaged_and_batched():
    quality = {"ไปกันเถอะ": 90, "ไปเลย": 40, "เราไปกัน": 70, "ไปกันเถอะนะ": 20}
    ask, calls = fake_judge(quality)
    single = JudgeTask([], ["x"], [], ["only one"])
    results = judge([TASK, TASK, single], ask, "zh", "th", votes=4, rng=random.Random(1))
    assert results[0].scores == [90.0, 40.0, 70.0, 20.0]
    assert len(results[0].votes) == 4 and results[1].scores == results[0].scores
    assert results[2].scores is None and results[2].votes == []  # nothing to compare
    assert calls == {"batches": 1, "prompts": 8, "bad": 0}  # all votes in one batch


def test_invalid_replies_are_retried_and_recorded():
    quality = {"ไปกันเถอะ": 90, "ไปเลย": 40, "เราไปกัน": 70, "ไปกันเถอะนะ": 20}
    ask, calls = fake_judge(quality, bad_first=3)
    (result,) = judge([TASK], ask, "zh", "th", votes=2, retries=3)
    assert result.scores == [90.0, 40.0, 70.0, 20.0] and len(result.votes) == 2
    assert result.failures == ["no JSON object in the reply"] * 3
    assert calls["batches"] == 3  # 2 bad -> retry 2 (1 bad) -> retry 1


def test_a_segment_with_no_valid_vote_has_no_score():
    (result,) = judge([TASK], lambda batch: ["{}"] * len(batch), "zh", "th", votes=2, retries=1)
    assert result.scores is None  # never 0
    assert len(result.failures) == 4
