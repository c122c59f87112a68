"""The `llm` segmenter of `alpo prepare`: which subtitle lines continue the utterance of the line
before them, labelled by a language model (method.md 1.4).

A sentence or utterance often spans several subtitle lines; ALPO's segments are such runs. The
model sees numbered lines of one fragment and answers one label per line, `new` (starts an
utterance) or `cont` (continues the previous line's). Labelling runs over sliding windows of
25, 30 and 35 lines, each window repeating the last 5 lines of the one before as context (their
labels come from the earlier window), and every line takes the majority of its labels over the
three window sizes (a tie starts a new segment). An answer counts only if it labels exactly the
window's lines, numbered in order; an invalid one is asked again, and a window that never gets
a valid answer gives no vote. The first line of a fragment always starts a segment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alpo.generation import Backend
from alpo.prompts import language_name

__all__ = ["SegmentSettings", "label_lines", "parse_labels", "render_segment_prompt"]

_LABEL = re.compile(r"^\s*(\d+)\s*[.:)]\s*(new|cont)\b", re.IGNORECASE)

_EXAMPLE = """Example (English):
1. Are you coming
2. to the harbour tonight?
3. Maybe.
4. If the rain stops,
5. I will.
6. Good. I'll wait.
Labels:
1. new
2. cont
3. new
4. new
5. cont
6. new"""


@dataclass
class SegmentSettings:
    """How the `llm` segmenter asks its model."""

    #: window sizes whose labels vote (the paper's 25, 30 and 35 lines)
    sizes: tuple[int, ...] = (25, 30, 35)
    #: lines each window repeats from the one before, as context
    overlap: int = 5
    #: times an invalid answer is asked again
    retries: int = 3
    temperature: float = 0.2
    #: new tokens allowed per labelled line
    tokens_per_line: int = 8
    seed: int = 0


def render_segment_prompt(lines: Sequence[str], lang: str) -> str:
    """The question for one window: the numbered lines and the rules, with a short example."""
    numbered = "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))
    return (
        f"Below are {len(lines)} consecutive subtitle lines of a {language_name(lang)} "
        "dialogue. For each line, decide whether it continues the sentence or utterance of the "
        "line just before it (the same sentence split across subtitles: `cont`) or starts a new "
        "one (`new`). A change of speaker starts a new one, although one speaker may also say "
        "several. Answer with exactly one label per line, in order, as `N. new` or `N. cont`, "
        "and nothing else.\n\n"
        f"{_EXAMPLE}\n\nLines:\n{numbered}\nLabels:\n"
    )


def parse_labels(reply: str, n: int) -> list[bool] | None:
    """The n labels of a reply (True = continues the previous line), or None unless it labels
    exactly lines 1..n in order. Lines without a label are ignored."""
    labels: list[bool] = []
    for line in reply.splitlines():
        m = _LABEL.match(line)
        if m is None:
            continue
        if int(m.group(1)) != len(labels) + 1:
            return None
        labels.append(m.group(2).lower() == "cont")
    return labels if len(labels) == n else None


def _windows(n: int, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """(first line shown, first line labelled, end) of the windows of one size."""
    spans, start = [], 0
    while start < n:
        lo = max(0, start - overlap) if start else 0
        end = min(n, lo + size)
        spans.append((lo, start, end))
        start = end
    return spans


def label_lines(
    fragments: Sequence[Sequence[str]],
    lang: str,
    backend: Backend,
    settings: SegmentSettings | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> tuple[list[list[bool]], dict[str, int]]:
    """For every line of every fragment, whether it continues the previous line; and counts of
    the windows asked, answered and given up. All windows of one size and try go to the backend
    in one call."""
    s = settings or SegmentSettings()
    votes = [[[0, 0] for _ in frag] for frag in fragments]  # per line: [new, cont]
    stats = {"windows": 0, "answered": 0, "failed": 0}
    for size in s.sizes:
        pending = [
            (f, lo, start, end)
            for f, frag in enumerate(fragments)
            for lo, start, end in _windows(len(frag), max(size, s.overlap + 1), s.overlap)
        ]
        stats["windows"] += len(pending)
        for attempt in range(s.retries + 1):
            if not pending:
                break
            longest = max(end - lo for _, lo, _, end in pending)
            replies = backend.chat(
                [render_segment_prompt(fragments[f][lo:end], lang) for f, lo, _, end in pending],
                temperature=s.temperature if attempt == 0 else max(s.temperature, 0.7),
                max_new_tokens=s.tokens_per_line * longest + 8,
                seed=s.seed + attempt,
            )
            retry = []
            for (f, lo, start, end), reply in zip(pending, replies, strict=True):
                labels = parse_labels(reply, end - lo)
                if labels is None:
                    retry.append((f, lo, start, end))
                    continue
                stats["answered"] += 1
                for i in range(start, end):
                    votes[f][i][int(labels[i - lo])] += 1
            pending = retry
            if on_round is not None:
                on_round(size, len(pending))
        stats["failed"] += len(pending)
    result = [
        [i > 0 and cont > new for i, (new, cont) in enumerate(frag_votes)] for frag_votes in votes
    ]
    return result, stats
