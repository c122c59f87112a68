"""The `llm` segmenter: labels per line from a model, windows of three sizes voting, answers
checked and asked again, and prepare's windows keeping the labelled segments whole."""

import re

import polars as pl
import pytest

import alpo
from alpo.exceptions import ConfigError
from alpo.segmenting import SegmentSettings, label_lines, parse_labels, render_segment_prompt


def continues(previous: str) -> bool:
    """The double's notion of continuity: a line continues the previous one unless that one
    ended a sentence."""
    return not re.search(r"[.!?。！？]$", previous)


def expected(lines):
    return [i > 0 and continues(lines[i - 1]) for i in range(len(lines))]


class LabelBackend:
    """A backend double for `chat`: labels each window's lines by `continues`. `broken` window
    sizes always get a wrong answer, and the first `flaky` answers of all are cut short."""

    def __init__(self, broken=(), flaky=0):
        self.broken = set(broken)
        self.flaky = flaky
        self.sizes = []

    def chat(self, prompts, *, temperature=0.3, max_new_tokens=256, score_letters=0, seed=0):
        replies = []
        for prompt in prompts:
            block = prompt.rsplit("Lines:\n", 1)[1].split("\nLabels:", 1)[0]
            lines = [re.sub(r"^\d+\. ", "", x) for x in block.split("\n")]
            self.sizes.append(len(lines))
            labels = [f"{i + 1}. {'cont' if c else 'new'}" for i, c in enumerate(expected(lines))]
            if self.flaky > 0 or len(lines) in self.broken:
                self.flaky -= 1
                labels = labels[:-1]
            replies.append("Labels:\n" + "\n".join(labels))
        return replies


def fragment(n, seed=0):
    import random

    rng = random.Random(seed)
    return [f"line {i}" + ("." if rng.random() < 0.4 else "") for i in range(n)]


def test_parse_labels_needs_every_line_in_order():
    assert parse_labels("1. new\n2. cont\n3. CONT", 3) == [False, True, True]
    assert parse_labels("Sure:\n1) new\n2: cont\n", 2) == [False, True]
    assert parse_labels("1. new\n3. cont", 2) is None  # a number skipped
    assert parse_labels("1. new\n2. cont", 3) is None  # too few
    assert parse_labels("1. new\n2. maybe", 2) is None  # not a label
    assert "3. c" in render_segment_prompt(["a", "b", "c"], "en")


def test_three_window_sizes_vote_and_agree_with_the_model():
    frags = [fragment(70, 1), fragment(12, 2), fragment(1, 3)]
    backend = LabelBackend()
    labels, stats = label_lines(frags, "en", backend)
    for frag, got in zip(frags, labels, strict=True):
        assert got == expected(frag)
    assert {25, 30, 35} <= set(backend.sizes)  # every size asked
    assert stats["failed"] == 0 and stats["answered"] == stats["windows"]


def test_wrong_answers_are_asked_again_and_a_broken_size_does_not_vote():
    frag = fragment(60, 4)
    labels, stats = label_lines([frag], "en", LabelBackend(flaky=3))
    assert labels == [expected(frag)] and stats["failed"] == 0
    # Windows of 30 always fail: 25 and 35 still agree, so the vote stands.
    labels, stats = label_lines([frag], "en", LabelBackend(broken={30}), SegmentSettings(retries=1))
    assert labels == [expected(frag)] and stats["failed"] > 0
    # Nothing answers: every line starts its own segment (the `line` segmenter).
    labels, stats = label_lines([frag], "en", LabelBackend(flaky=10**6))
    assert labels == [[False] * 60] and stats["answered"] == 0


def test_prepare_keeps_labelled_segments_whole(tmp_path, examples_data):
    aligned = examples_data.parent / "aligned.parquet"
    backend = LabelBackend()
    out = alpo.prepare(
        aligned, "en-zh", tmp_path / "data", window=8, context=2, min_fragment=4,
        segmenter="llm", segment_model="double", segment_client=backend,
    )  # fmt: skip
    assert out["segmentation"]["answered"] == out["segmentation"]["windows"] > 0
    rows = pl.read_parquet(aligned).filter(pl.col("pair") == "en-zh")
    data = tmp_path / "data"
    windows = pl.concat(pl.read_parquet(data / f"{s}.parquet") for s in ("sft", "pool"))
    for w in windows.iter_rows(named=True):
        labels = w["segment_of_line"]
        for i in range(1, len(labels)):
            # a new segment exactly where the double says a line does not continue
            assert (labels[i] != labels[i - 1]) == (not continues(w["src_lines"][i - 1]))
    assert rows.height > 0
    with pytest.raises(ConfigError, match="segment-model"):
        alpo.prepare(aligned, "en-zh", tmp_path / "x", segmenter="llm")


def test_cli_labels_with_a_real_model(cli, examples_data, tiny_model, tmp_path):
    """The transformers backend serves the segmenter; a random tiny model mostly answers badly,
    which leaves its windows without a vote, counted, and the lines as their own segments."""
    import json

    proc = cli(
        "prepare", str(examples_data.parent / "aligned.parquet"), "--pair", "en-zh",
        "--out", str(tmp_path / "data"), "--window", "8", "--context", "2",
        "--min-fragment", "4", "--segmenter", "llm", "--segment-model", str(tiny_model), "--json",
    )  # fmt: skip
    stats = json.loads(proc.stdout.strip().splitlines()[-1])["segmentation"]
    assert stats["windows"] == 6  # two episodes of 14 lines, one window per size
    assert stats["answered"] + stats["failed"] == stats["windows"]
    assert pl.read_parquet(tmp_path / "data" / "sft.parquet").height > 0
