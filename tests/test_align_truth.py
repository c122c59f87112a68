"""Alignment quality against synthetic episodes whose true cue pairs are known."""

import random
from pathlib import Path

import polars as pl
import pytest

import alpo
from alpo import synthetic

FORMATS = [("srt", "utf-8"), ("vtt", "utf-8"), ("ass", "utf-8-sig"), ("srt", "utf-16")]
# (offset_ms, speed) per episode: none, constant offsets either way, the usual frame-rate drifts
TIMINGS = [
    (0, 1.0),
    (3_200, 1.0),
    (-1_850, 1.0),
    (12_000, 1.0),
    (0, 25 / 23.976),
    (1_500, 23.976 / 25),
    (-700, 24 / 25),
    (400, 24 / 23.976),
]


def write_corpus(root: Path, seed: int = 7, **noise: float) -> dict[str, synthetic.Episode]:
    rng = random.Random(seed)
    episodes = {}
    for k, (offset, speed) in enumerate(TIMINGS):
        ep = synthetic.make_episode(
            rng, 300, offset_ms=offset, speed=speed, src_lang="en", tgt_lang="zh", **noise
        )
        name = f"Show.S01E{k + 1:02d}"
        src_fmt, src_enc = FORMATS[k % len(FORMATS)]
        tgt_fmt, tgt_enc = FORMATS[(k + 1) % len(FORMATS)]
        synthetic.write(root / f"{name}.en.{src_fmt}", ep.src, src_fmt, src_enc)
        synthetic.write(root / f"{name}.zh.{tgt_fmt}", ep.tgt, tgt_fmt, tgt_enc)
        episodes[f"S01E{k + 1:02d}"] = ep
    return episodes


def predicted_pairs(rows: pl.DataFrame, root: Path, episode: str) -> set[tuple[int, int]]:
    """(source index, target index) of every output row; a merged row stands for every cue it
    spans on each side."""
    tgt_file = rows["tgt_file"][0]
    tgt = alpo.read_subtitles(tgt_file)
    src = alpo.read_subtitles(rows["src_file"][0])
    pairs = set()
    for r in rows.iter_rows(named=True):
        s_idx = src.with_row_index().filter(
            (pl.col("start_ms") >= r["src_start_ms"]) & (pl.col("end_ms") <= r["src_end_ms"])
        )["index"]
        t_idx = tgt.with_row_index().filter(
            (pl.col("start_ms") >= r["tgt_start_ms"]) & (pl.col("end_ms") <= r["tgt_end_ms"])
        )["index"]
        pairs |= {(int(i), int(j)) for i in s_idx for j in t_idx}
    return pairs


def score(df: pl.DataFrame, root: Path, episodes: dict[str, synthetic.Episode]):
    hits = predicted = covered = with_partner = 0
    for name, ep in episodes.items():
        rows = df.filter(pl.col("episode") == name)
        pred = predicted_pairs(rows, root, name) if rows.height else set()
        good = pred & ep.truth
        hits += len(good)
        predicted += len(pred)
        covered += len({i for i, _ in good})
        with_partner += len({i for i, _ in ep.truth})
    return hits / max(predicted, 1), covered / with_partner


NOISE = dict(jitter_ms=120, split=0.02, merge=0.02, drop=0.04)


def test_nearest_with_sync_meets_precision_and_recall(tmp_path):
    episodes = write_corpus(tmp_path, **NOISE)
    df, report = alpo.align_report(tmp_path, pair="en-zh")
    precision, recall = score(df, tmp_path, episodes)
    assert precision >= 0.99, precision
    assert recall >= 0.97, recall
    by_episode = {e["episode"]: e for e in report["episodes"]}
    for name, ep in episodes.items():
        e = by_episode[name]
        if ep.offset_ms == 0 and ep.speed == 1.0:
            assert not e["sync_applied"]
            continue
        assert e["sync_applied"], e
        assert abs(e["speed"] - ep.speed) < 2e-4, e
        assert abs(e["offset_ms"] - ep.offset_ms) < 60, e


def test_without_sync_offsets_and_drift_break_alignment(tmp_path):
    """The correction is what makes the difference: the same corpus without it aligns badly."""
    episodes = write_corpus(tmp_path, **NOISE)
    df = alpo.align(tmp_path, pair="en-zh", sync=False)
    _, recall = score(df, tmp_path, episodes)
    assert recall < 0.8


def test_overlap_mode_links_splits_and_merges(tmp_path):
    episodes = write_corpus(tmp_path, seed=11, jitter_ms=80, split=0.06, merge=0.06, drop=0.02)
    nearest = alpo.align(tmp_path, pair="en-zh")
    overlap = alpo.align(tmp_path, pair="en-zh", mode="overlap")
    p_near, r_near = score(nearest, tmp_path, episodes)
    p_over, r_over = score(overlap, tmp_path, episodes)
    assert p_over >= 0.98, p_over
    # merged cues are lost by the nearest-start rule and recovered by 2:1 links
    assert r_over > r_near + 0.02, (r_near, r_over)
    assert r_over >= 0.97


@pytest.mark.parametrize("threads", [1, 2])
def test_output_is_deterministic(tmp_path, threads):
    write_corpus(tmp_path, **NOISE)
    a = alpo.align(tmp_path, threads=threads)
    b = alpo.align(tmp_path, threads=2)
    assert a.equals(b)
    assert a.height > 0
