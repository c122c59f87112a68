"""Preference pairs per segment, from the sample stage's candidates and scores.

For each segment's candidate set T_i and scores E_i this picks the chosen and the rejected
candidate and computes the gate 1(s_i), the importance weight w_i = 1(s_i) * delta_i and the
dynamic beta_i, exactly as DESIGN.md defines them (ties: shorter text, then lower candidate
number; per-window sums and maxima). The math runs in the Rust core over Arrow columns, windows
in parallel with the GIL released, so millions of segments take seconds.
"""

from __future__ import annotations

import polars as pl

from alpo import _core
from alpo.exceptions import InputError

__all__ = ["PAIR_SCHEMA", "build_pairs"]

PAIR_SCHEMA = {
    "window_id": pl.String,
    "segment": pl.UInt32,
    "gated": pl.Boolean,
    "chosen": pl.UInt32,
    "rejected": pl.UInt32,
    "weight": pl.Float64,
    "beta": pl.Float64,
    "n_candidates": pl.UInt32,
    "gap": pl.Float64,
}


def build_pairs(
    scores: pl.DataFrame,
    *,
    min_candidates: int = 3,
    min_spread: float = 5.0,
    beta0: float = 1.0,
    top_chosen: int = 3,
    rejected_rank: int = 3,
    seed: int = 1024,
    gate: bool = True,
    importance: bool = True,
    dynamic_beta: bool = True,
    beta: float = 0.5,
) -> pl.DataFrame:
    """One row per segment: `window_id`, `segment`, `gated`, `chosen`, `rejected` (candidate
    numbers; null without a pair), `weight`, `beta`, `n_candidates`, `gap`.

    `scores` has the columns of scores.parquet (`window_id`, `segment`, `candidate`, `score`)
    plus the candidate `text`. `gate`, `importance` and `dynamic_beta` switch the adaptive parts
    off for the paper's ablations (then every segment with a pair counts, delta_i = 1, and beta is
    the constant `beta`). Candidate numbers must run 0, 1, ... within each segment."""
    needed = {"window_id", "segment", "candidate", "score", "text"}
    missing = needed - set(scores.columns)
    if missing:
        raise InputError(f"scores: missing column(s) {', '.join(sorted(missing))}")
    table = scores.select(
        pl.col("window_id").cast(pl.String),
        pl.col("segment").cast(pl.UInt32),
        pl.col("candidate").cast(pl.UInt32),
        pl.col("score").cast(pl.Float32),
        pl.col("text").str.len_chars().cast(pl.UInt32).alias("chars"),
    ).sort("window_id", "segment", "candidate")
    numbered = table.group_by("window_id", "segment").agg(
        (pl.col("candidate") == pl.int_range(pl.len()).cast(pl.UInt32)).all().alias("ok")
    )
    if not numbered["ok"].all():
        raise InputError("scores: candidate numbers must run 0, 1, ... within each segment")
    pairs = pl.DataFrame(
        _core.build_pairs(
            table.select("window_id", "segment", "score", "chars"),
            min_candidates=min_candidates,
            min_spread=min_spread,
            beta0=beta0,
            top_chosen=top_chosen,
            rejected_rank=rejected_rank,
            seed=seed,
            gate=gate,
            importance=importance,
            dynamic_beta=dynamic_beta,
            beta=beta,
        )
    )
    window_ids = table["window_id"].gather(pairs["window_row"])
    return pairs.with_columns(window_id=window_ids).select(list(PAIR_SCHEMA))
