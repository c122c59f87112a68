"""Preference pairs and training records, from the sample stage's candidates and scores.

For each segment's candidate set T_i and scores E_i this picks the chosen and the rejected
candidate and computes the gate 1(s_i), the importance weight w_i = 1(s_i) * delta_i and the
dynamic beta_i, exactly as DESIGN.md defines them (ties: shorter text, then lower candidate
number; per-window sums and maxima). The math runs in the Rust core over Arrow columns, windows
in parallel with the GIL released, so millions of segments take seconds. `build_records` then
turns the pairs into training records with scheduled prefix mixing, all as token ids.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from alpo import _core
from alpo.exceptions import ConfigError, InputError
from alpo.sampling import Segment, Window

__all__ = [
    "PAIR_SCHEMA",
    "RECORD_SCHEMA",
    "build_pairs",
    "build_outcome_records",
    "build_records",
    "gate_statistics",
    "lambdas",
]

PAIR_SCHEMA: dict[str, Any] = {
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


RECORD_SCHEMA: dict[str, Any] = {
    "window_id": pl.String,
    "segment": pl.UInt32,
    "stage": pl.UInt8,
    "lam": pl.Float32,
    "prompt_ids": pl.List(pl.UInt32),
    "chosen_ids": pl.List(pl.UInt32),
    "rejected_ids": pl.List(pl.UInt32),
    "weight": pl.Float32,
    "beta": pl.Float32,
    "chosen_score": pl.Float32,
    "rejected_score": pl.Float32,
    "n_candidates": pl.UInt32,
    "ref_chosen_logp": pl.Float64,
    "ref_rejected_logp": pl.Float64,
}


def lambdas(stages: int, start: float, end: float) -> list[float]:
    """The prefix-mixing schedule: `stages` values rising linearly from `start` to `end`."""
    if stages == 1:
        return [start]
    return [start + (end - start) * s / (stages - 1) for s in range(stages)]


def build_records(
    windows: Sequence[Window],
    candidates: pl.DataFrame,
    pairs: pl.DataFrame,
    reference_piece: Callable[[Window, Segment], list[int]],
    *,
    stages: int = 5,
    lambda_start: float = 0.2,
    lambda_end: float = 0.6,
    prefix_mixing: bool = True,
    schedule: str = "stages",
    seed: int = 1024,
) -> pl.DataFrame:
    """Training records with scheduled prefix mixing (DESIGN.md, method.md 6.4).

    For every prefix stage s (lambda_s from `lambdas`) and window, the segments are walked in
    order: each gated segment gives one record (prompt = the window's prompt ids + the prefix
    so far; chosen and rejected = those candidates' token ids), then the prefix grows by that
    segment's chosen piece with probability lambda_s, else by a uniformly random member of its
    candidate set. Context segments before the core add their reference. `prefix_mixing=False`
    gives one stage of chosen prefixes. `schedule="stages"` orders records by stage, shuffled
    within each; `"mixture"` shuffles them all together (the release). Shuffling moves a
    window's records of one stage as a block, in segment order: they form a chain (each prompt
    extends the previous one) that training packs into one sequence. The ref columns stay empty
    until the ref stage fills them."""
    if schedule not in ("stages", "mixture"):
        raise ConfigError(f"unknown prefix schedule {schedule!r} (use stages or mixture)")
    pieces, scores = _pieces(candidates)
    by_segment = {(r["window_id"], r["segment"]): r for r in pairs.iter_rows(named=True)}
    schedule_lams = lambdas(stages, lambda_start, lambda_end) if prefix_mixing else [1.0]
    blocks: list[list[dict[str, Any]]] = []
    for stage, lam in enumerate(schedule_lams):
        stage_blocks = []
        for w in windows:
            rng = random.Random(_window_seed(w.window_id, seed, stage))
            prefix: list[int] = []
            batch: list[dict[str, Any]] = []
            for seg in w.segments:
                key = (w.window_id, seg.index)
                if key not in pieces:
                    if _trailing(w, seg):
                        break  # nothing left to train on
                    prefix += reference_piece(w, seg)
                    continue
                p = by_segment.get(key)
                if p is not None and p["gated"]:
                    c, r = p["chosen"], p["rejected"]
                    batch.append(
                        {
                            "window_id": w.window_id,
                            "segment": seg.index,
                            "stage": stage,
                            "lam": lam,
                            "prompt_ids": w.prompt_ids + prefix,
                            "chosen_ids": pieces[key][c],
                            "rejected_ids": pieces[key][r],
                            "weight": p["weight"],
                            "beta": p["beta"],
                            "chosen_score": scores[key][c],
                            "rejected_score": scores[key][r],
                            "n_candidates": p["n_candidates"],
                            "ref_chosen_logp": None,
                            "ref_rejected_logp": None,
                        }
                    )
                best = p["chosen"] if p is not None and p["chosen"] is not None else 0
                pick = best if rng.random() < lam else rng.randrange(len(pieces[key]))
                prefix += pieces[key][pick]
            if batch:
                stage_blocks.append(batch)
        if schedule == "stages":
            random.Random(seed * 31 + stage).shuffle(stage_blocks)
        blocks += stage_blocks
    if schedule == "mixture":
        random.Random(seed).shuffle(blocks)
    return pl.DataFrame([r for block in blocks for r in block], schema=RECORD_SCHEMA)


def build_outcome_records(
    windows: Sequence[Window],
    candidates: pl.DataFrame,
    pairs: pl.DataFrame,
    reference_piece: Callable[[Window, Segment], list[int]],
    *,
    beta: float = 0.5,
    seed: int = 1024,
) -> pl.DataFrame:
    """The outcome-level DPO baseline (method.md 8.4): one record per window, on the same
    samples and scores. Chosen = the concatenation of every segment's chosen piece, rejected =
    of every rejected piece; a segment without a pair puts the same random candidate on both
    sides; context before the first sampled segment joins the prompt, context in between both
    answers. Weight 1, constant `beta`, windows in a seeded order."""
    pieces, scores = _pieces(candidates)
    by_segment = {(r["window_id"], r["segment"]): r for r in pairs.iter_rows(named=True)}
    records = []
    for w in windows:
        rng = random.Random(_window_seed(w.window_id, seed, 0))
        prompt = list(w.prompt_ids)
        chosen: list[int] = []
        rejected: list[int] = []
        picked: list[tuple[float, float]] = []
        first: int | None = None
        most = 0
        for seg in w.segments:
            key = (w.window_id, seg.index)
            if key not in pieces:
                if _trailing(w, seg):
                    break
                piece = reference_piece(w, seg)
                if first is None:
                    prompt += piece
                else:
                    chosen += piece
                    rejected += piece
                continue
            first = seg.index if first is None else first
            p = by_segment.get(key)
            most = max(most, len(pieces[key]))
            if p is not None and p["chosen"] is not None and p["chosen"] != p["rejected"]:
                c, r = p["chosen"], p["rejected"]
                picked.append((scores[key][c] or 0.0, scores[key][r] or 0.0))
            else:
                c = r = rng.randrange(len(pieces[key]))
            chosen += pieces[key][c]
            rejected += pieces[key][r]
        if first is None or not picked:
            continue  # nothing to prefer in this window
        records.append(
            {
                "window_id": w.window_id,
                "segment": first,
                "stage": 0,
                "lam": 1.0,
                "prompt_ids": prompt,
                "chosen_ids": chosen,
                "rejected_ids": rejected,
                "weight": 1.0,
                "beta": beta,
                "chosen_score": sum(c for c, _ in picked) / len(picked),
                "rejected_score": sum(r for _, r in picked) / len(picked),
                "n_candidates": most,
                "ref_chosen_logp": None,
                "ref_rejected_logp": None,
            }
        )
    random.Random(seed).shuffle(records)
    return pl.DataFrame(records, schema=RECORD_SCHEMA)


def gate_statistics(
    pairs: pl.DataFrame, scores: pl.DataFrame, min_candidates: int, min_spread: float
) -> dict[str, Any]:
    """Shares of segments gated out by each rule, and the weight and beta distributions."""
    spread = scores.group_by("window_id", "segment").agg(
        (pl.col("score").max() - pl.col("score").min()).alias("spread")
    )
    p = pairs.join(spread, on=["window_id", "segment"], how="left")
    n = max(p.height, 1)
    gated = p.filter(pl.col("gated"))

    def quantiles(col: str) -> list[float]:
        if gated.height == 0:
            return []
        return [round(float(gated[col].quantile(q) or 0.0), 4) for q in (0.1, 0.5, 0.9)]

    return {
        "segments": p.height,
        "gated": gated.height,
        "share_no_pair": round(p["chosen"].null_count() / n, 4),
        "share_few_candidates": round(float((p["n_candidates"] <= min_candidates).sum()) / n, 4),
        "share_small_spread": round(float((p["spread"].fill_null(0.0) <= min_spread).sum()) / n, 4),
        "share_no_gap": round(float((p["gap"].fill_null(0.0) <= 0).sum()) / n, 4),
        "weight_quantiles": quantiles("weight"),
        "beta_quantiles": quantiles("beta"),
    }


def _pieces(
    candidates: pl.DataFrame,
) -> tuple[dict[tuple[str, int], list[list[int]]], dict[tuple[str, int], list[float | None]]]:
    """Each segment's candidate token ids and scores, in candidate order."""
    pieces: dict[tuple[str, int], list[list[int]]] = {}
    scores: dict[tuple[str, int], list[float | None]] = {}
    for (wid, seg), group in candidates.sort("candidate").group_by(
        "window_id", "segment", maintain_order=True
    ):
        pieces[(str(wid), int(seg))] = [list(ids) for ids in group["token_ids"]]
        scores[(str(wid), int(seg))] = group["score"].to_list()
    return pieces, scores


def _trailing(w: Window, seg: Segment) -> bool:
    """Context after the window's core: no core segment follows."""
    return not seg.in_core and not any(g.in_core for g in w.segments if g.index > seg.index)


def _window_seed(window_id: str, seed: int, stage: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{stage}\0{window_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")
