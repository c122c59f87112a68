"""Listwise LLM judging of candidate translations: the prompt, reply validation and voting.

A judge sees one segment of a window with context lines around it, and every candidate
translation of that segment under a letter (A, B, ...), in a fresh random order for each vote.
It answers with one JSON object giving each letter an integer score from 0 to 100 under the
rubric accuracy 30 % / colloquial fit 30 % / expressiveness 40 % (anchors at 100, 50, 0). A reply
counts only if it is valid (`parse_scores`); invalid replies are retried; the valid votes are
un-shuffled and averaged per candidate. A segment without any valid vote has no score (never 0).

The prompt exists in English and in Chinese (the ALPO release judges in Chinese), chosen by the
`language` argument. The fixed parts (rubric, context) come before the shuffled candidates, so a
server with prefix caching reuses them across votes.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alpo.exceptions import ConfigError
from alpo.prompts import language_name

if TYPE_CHECKING:
    from alpo.generation import Backend

__all__ = [
    "LETTERS",
    "Ask",
    "asker",
    "JudgeTask",
    "SegmentScore",
    "judge",
    "parse_scores",
    "render_judge_prompt",
    "score_schema",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: a reply with fewer distinct scores than this share of the candidates is degenerate
MIN_DISTINCT_SHARE = 0.25

_TEXT = {
    "en": {
        "title": "[{src} to {tgt} dialogue translation: expressiveness rating]",
        "task": (
            "Rate each candidate {tgt} translation of the marked {src} film/TV dialogue below "
            "with an integer from 0 to 100, weighing three criteria:"
        ),
        "rubric": (
            "- Accuracy (30%): the meaning comes across with nothing added or left out; a free "
            "rendering is fine.\n"
            "- Colloquial fit (30%): it sounds like real speech, suits the scene and carries the "
            "source's emotion, mood and tone.\n"
            "- Expressiveness (40%): vivid, emotionally rich wording that moves the audience; some "
            "literary flair is welcome."
        ),
        "anchors": (
            "Anchors: 100 = accurate and deeply expressive; 50 = accurate but emotionally flat; "
            "0 = inaccurate and lifeless."
        ),
        "source": (
            "Source (lines tagged [context] are only there to help; rate the translation of the "
            "lines tagged [rate]):"
        ),
        "context_tag": "[context]",
        "rate_tag": "[rate]",
        "candidates": "Candidate translations of the [rate] lines:",
        "candidate": "Translation {letter}:",
        "answer": (
            "Reply with only a JSON object that gives every candidate its score, for example "
            "{example}."
        ),
    },
    "zh": {
        "title": "[{src}到{tgt}对白翻译：表现力评分]",
        "task": (
            "请为下面标出的{src}影视对白的每个{tgt}候选译文打分（0到100的整数），综合三项标准："
        ),
        "rubric": (
            "- 准确（30%）：意思传达到位，不增不减；允许意译。\n"
            "- 口语贴合（30%）：像真实的口语，符合场景，传达原文的情绪、氛围和语气。\n"
            "- 表现力（40%）：用词生动、情感丰富、能打动观众；可以有一定文采。"
        ),
        "anchors": "参考：100 = 准确且极富表现力；50 = 准确但情感平淡；0 = 不准确且毫无表现力。",
        "source": "原文（标[上下文]的行仅供参考；请评价标[评分]的行的译文）：",
        "context_tag": "[上下文]",
        "rate_tag": "[评分]",
        "candidates": "[评分]行的候选译文：",
        "candidate": "译文{letter}：",
        "answer": "只输出一个JSON对象，给出每个候选译文的分数，例如 {example}。",
    },
}

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass
class JudgeTask:
    """One segment to score: its source lines with context, and its candidate texts."""

    before: Sequence[str]
    lines: Sequence[str]
    after: Sequence[str]
    candidates: Sequence[str]


@dataclass
class SegmentScore:
    """The judged scores of one segment's candidates, in candidate order.

    `scores` is None when no vote was valid; `votes[v][c]` is vote v's score of candidate c;
    `failures` lists why each rejected reply was rejected."""

    scores: list[float] | None
    votes: list[list[int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def render_judge_prompt(
    task: JudgeTask, order: Sequence[int], src_lang: str, tgt_lang: str, language: str = "en"
) -> str:
    """The judge's user prompt, showing candidate `order[j]` under letter j."""
    if language not in _TEXT:
        raise ConfigError(f"unknown judge prompt language {language!r} (use en or zh)")
    if not 1 <= len(order) <= len(LETTERS):
        raise ConfigError(f"a judge prompt takes 1 to {len(LETTERS)} candidates, not {len(order)}")
    t = _TEXT[language]
    names = {"src": language_name(src_lang, language), "tgt": language_name(tgt_lang, language)}
    example = json.dumps(dict(zip(LETTERS, (72, 55, 90)[: len(order)], strict=False)))
    source = (
        [f"{t['context_tag']} {line}" for line in task.before]
        + [f"{t['rate_tag']} {line}" for line in task.lines]
        + [f"{t['context_tag']} {line}" for line in task.after]
    )
    blocks = [
        t["title"].format(**names),
        t["task"].format(**names),
        t["rubric"],
        t["anchors"],
        "",
        t["source"],
        *source,
        "",
        t["candidates"],
    ]
    for j, c in enumerate(order):
        blocks += [t["candidate"].format(letter=LETTERS[j]), task.candidates[c]]
    blocks += ["", t["answer"].format(example=example)]
    return "\n".join(blocks)


def score_schema(n: int) -> dict[str, object]:
    """JSON schema of a valid reply for n candidates (for structured-output decoding)."""
    letters = list(LETTERS[:n])
    return {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0, "maximum": 100} for k in letters},
        "required": letters,
        "additionalProperties": False,
    }


def parse_scores(reply: str, n: int) -> tuple[list[int] | None, str | None]:
    """The n scores (letter order) of a judge reply, or None and why it is invalid.

    Valid: the first JSON object in the reply (after any <think> block; text around it is
    ignored) has exactly the keys A.. for n candidates, each once, each an integer 0..100 (not a
    float, not a bool); and, with 3 or more candidates, not degenerate: not all equal, and at
    least a quarter as many distinct values as candidates."""
    obj, why = _first_object(_THINK.sub("", reply))
    if obj is None:
        return None, why
    keys = [k for k, _ in obj]
    expected = list(LETTERS[:n])
    if len(set(keys)) != len(keys):
        return None, "duplicate keys"
    if sorted(keys) != expected:
        missing = sorted(set(expected) - set(keys))
        extra = sorted(set(keys) - set(expected))
        return None, f"keys do not match: missing {missing}, unexpected {extra}"
    values = dict(obj)
    scores = []
    for k in expected:
        v = values[k]
        if isinstance(v, bool) or not isinstance(v, int):
            return None, f"score of {k} is not an integer: {v!r}"
        if not 0 <= v <= 100:
            return None, f"score of {k} is out of 0..100: {v}"
        scores.append(v)
    if n >= 3 and (len(set(scores)) == 1 or len(set(scores)) < MIN_DISTINCT_SHARE * n):
        return None, "degenerate scores (too few distinct values)"
    return scores, None


def _first_object(text: str) -> tuple[list[tuple[str, object]] | None, str]:
    decoder = json.JSONDecoder(object_pairs_hook=lambda pairs: pairs)
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, list) and all(isinstance(p, tuple) for p in obj):
            return obj, ""
        start = text.find("{", start + 1)
    return None, "no JSON object in the reply"


Ask = Callable[[list[tuple[str, int]]], list[str]]


def asker(backend: Backend, temperature: float, max_new_tokens: int, seed: int) -> Ask:
    """`ask(batch of (prompt, letters)) -> replies`, one backend call per reply shape; each call
    gets its own seed, derived from `seed` and the number of calls before it, so a shard's
    replies do not depend on what other shards were asked before."""
    calls = [0]

    def ask(batch: list[tuple[str, int]]) -> list[str]:
        replies = [""] * len(batch)
        by_n: dict[int, list[int]] = {}
        for i, (_, n) in enumerate(batch):
            by_n.setdefault(n, []).append(i)
        for n, idx in by_n.items():
            got = backend.chat(
                [batch[i][0] for i in idx],
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                score_letters=n,
                seed=seed + calls[0] * 7919,
            )
            calls[0] += 1
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies

    return ask


def judge(
    tasks: Sequence[JudgeTask],
    ask: Ask,
    src_lang: str,
    tgt_lang: str,
    *,
    votes: int = 4,
    retries: int = 3,
    language: str = "en",
    rng: random.Random | None = None,
) -> list[SegmentScore]:
    """Score every task's candidates with `votes` shuffled votes each.

    `ask` gets a batch of (prompt, number of candidates) and returns one reply per prompt; all
    pending votes of all tasks go in one batch, and invalid replies are asked again (with a new
    shuffle) up to `retries` more times. Tasks with a single candidate are not judged."""
    rng = rng or random.Random(0)
    results = [SegmentScore(scores=None) for _ in tasks]
    pending = [
        (t, v) for t, task in enumerate(tasks) if len(task.candidates) > 1 for v in range(votes)
    ]
    for _ in range(retries + 1):
        if not pending:
            break
        orders = []
        prompts = []
        for t, _v in pending:
            order = list(range(len(tasks[t].candidates)))
            rng.shuffle(order)
            orders.append(order)
            prompts.append(
                (render_judge_prompt(tasks[t], order, src_lang, tgt_lang, language), len(order))
            )
        replies = ask(prompts)
        retry = []
        for (t, v), order, reply in zip(pending, orders, replies, strict=True):
            scores, why = parse_scores(reply, len(order))
            if scores is None:
                results[t].failures.append(why or "invalid")
                retry.append((t, v))
                continue
            unshuffled = [0] * len(order)
            for j, c in enumerate(order):
                unshuffled[c] = scores[j]
            results[t].votes.append(unshuffled)
        pending = retry
    for r in results:
        if r.votes:
            r.scores = [sum(col) / len(r.votes) for col in zip(*r.votes, strict=True)]
    return results
