"""The sample stage: candidate translations per segment, and their judge scores.

For every window of `pool.parquet`, each segment of its core (`core_start..core_end`) gets a
candidate set T_i: the human reference plus the distinct sampled texts (exact match after NFC,
trimming and whitespace folding), each scored by the judge (`alpo.judging`).

Mode `segment` (the paper): rounds over the segment index. In round i every window with a core
segment i asks for k continuations of its prompt, whose answer so far holds the best-scored
candidate of each earlier segment (the reference for context segments before the core), and
sampling stops at the end of the segment's lines. All windows of a round go to the backend
together; the judge scores round i before round i+1 samples. Mode `response` (the official
release): k whole answers per window, answers with a wrong line count dropped, each cut into
its segments; one round.

A candidate's `token_ids` are its continuation exactly as sampled ("3. text\\n4. text\\n", with
the end-of-sequence token when the segment ends the answer); the reference's are its tokenized
text in the same form. Joining the pieces of consecutive segments gives a whole answer, which
is how later stages build prefixes without re-tokenizing anything.

Resumable: each finished round is written as a shard (`sample/round-NNNN.parquet`); a rerun
reads the finished shards (which also give back the chosen prefixes) and goes on from there.
At the end the shards are joined into `candidates.parquet` and `scores.parquet`.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from alpo import _core, chat, judging
from alpo.align import write_json_atomic
from alpo.exceptions import InputError
from alpo.generation import Backend, SampleRequest
from alpo.prepare import read_windows
from alpo.prompts import parse_answer, render_answer, window_texts

__all__ = [
    "CANDIDATE_SCHEMA",
    "SCORE_SCHEMA",
    "Segment",
    "Window",
    "load_windows",
    "candidate_sets",
    "run_sample",
]

CANDIDATE_SCHEMA: dict[str, Any] = {
    "window_id": pl.String,
    "segment": pl.UInt32,
    "candidate": pl.UInt32,
    "text": pl.String,
    "token_ids": pl.List(pl.UInt32),
    "is_reference": pl.Boolean,
}
SCORE_SCHEMA: dict[str, Any] = {
    "window_id": pl.String,
    "segment": pl.UInt32,
    "candidate": pl.UInt32,
    "score": pl.Float32,
    "votes": pl.List(pl.Float32),
}


@dataclass
class Segment:
    index: int
    start: int  # first line, within the window
    end: int  # one past the last line
    final: bool  # ends the window's answer (its piece ends with end-of-sequence)
    in_core: bool


@dataclass
class Window:
    window_id: str
    src_lines: list[str]
    ref_lines: list[str]
    segments: list[Segment]
    prompt_ids: list[int]


def load_windows(path: Path, pair: str, tokenizer: Any, options: dict[str, Any]) -> list[Window]:
    """The pool windows with their segments and chat-rendered prompt ids."""
    frame = read_windows(
        path,
        ("window_id", "src_lines", "ref_lines", "core_start", "core_end", "segment_of_line"),
    )
    prompts, _ = window_texts(
        frame, pair, instruction_language=options.get("instruction_language", "en")
    )
    windows = []
    for row, prompt in zip(frame.iter_rows(named=True), prompts, strict=True):
        labels = list(row["segment_of_line"])
        n = len(labels)
        segments = []
        start = 0
        for line in range(1, n + 1):
            if line == n or labels[line] != labels[start]:
                in_core = row["core_start"] <= start and line <= row["core_end"]
                segments.append(Segment(labels[start], start, line, line == n, in_core))
                start = line
        ids = chat.encode(tokenizer, prompt, "").prompt_ids
        windows.append(
            Window(row["window_id"], list(row["src_lines"]), list(row["ref_lines"]), segments, ids)
        )
    return windows


def reference_piece(tokenizer: Any, window: Window, seg: Segment) -> list[int]:
    text = render_answer(window.ref_lines[seg.start : seg.end], start=seg.start + 1)
    ids = list(tokenizer(text + ("" if seg.final else "\n"), add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id] if seg.final else ids


def piece_text(
    decode: Callable[[Sequence[int]], str], ids: Sequence[int], seg: Segment, eos: int
) -> str | None:
    """The segment's lines (joined with "\\n") of a sampled piece, or None if the piece is not
    exactly the segment's numbered lines, ended as the segment must end."""
    ended = bool(ids) and ids[-1] == eos
    if ended != seg.final:
        return None
    text = decode(list(ids[:-1]) if ended else list(ids))
    if not seg.final and not text.endswith("\n"):
        return None  # ran out of tokens mid-line
    lines = parse_answer(text, seg.end - seg.start, start=seg.start + 1)
    return None if lines is None else "\n".join(lines)


Raw = tuple[str, list[int], list[tuple[str, list[int]]]]


def candidate_sets(raw: Sequence[Raw]) -> list[list[tuple[str, list[int], bool]]]:
    """Candidate sets from (reference, its ids, sampled (text, ids)) per segment: the reference
    first, then each distinct sampled text in order of first appearance. Texts are the same
    when equal after NFC, trimming and whitespace folding; the dedup runs in the Rust core,
    over all segments at once."""
    groups: list[int] = []
    texts: list[str] = []
    for g, (reference, _, sampled) in enumerate(raw):
        groups += [g] * (1 + len(sampled))
        texts += [reference] + [t for t, _ in sampled]
    keep = _core.distinct_candidates(
        pl.DataFrame(
            {"group": groups, "text": texts}, schema={"group": pl.UInt32, "text": pl.String}
        )
    )
    out = []
    row = 0
    for reference, ref_ids, sampled in raw:
        cands = [(reference, ref_ids, True)]
        row += 1
        for text, ids in sampled:
            if keep[row]:
                cands.append((text, ids, False))
            row += 1
        out.append(cands)
    return out


def best_candidate(texts: Sequence[str], scores: Sequence[float | None]) -> int:
    """The best-scored candidate: highest score, then shorter text, then lower number.
    Without any score, the reference (candidate 0)."""
    scored = [c for c, s in enumerate(scores) if s is not None]
    if not scored:
        return 0
    return min(scored, key=lambda c: (-(scores[c] or 0.0), len(texts[c]), c))


@dataclass
class SampleSettings:
    mode: str
    k: int
    temperature: float
    top_k: int
    top_p: float
    max_new_tokens: int
    votes: int
    judge_retries: int
    judge_temperature: float
    judge_language: str
    context_lines: int
    seed: int
    judge_max_new_tokens: int = 256


def run_sample(
    windows: list[Window],
    policy: Backend,
    judge_backend: Backend,
    tokenizer: Any,
    pair: str,
    settings: SampleSettings,
    out_dir: Path,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    fresh: bool = False,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample and judge every core segment of `windows`; write `out_dir/candidates.parquet` and
    `out_dir/scores.parquet`; resume from finished round shards in `out_dir/sample/` unless
    `fresh`. `identity` names what else the shards depend on (the models): shards made with
    another identity are not resumed."""
    started = time.perf_counter()
    shards = out_dir / "sample"
    fingerprint = _fingerprint(windows, settings, identity or {})
    progress_path = shards / "progress.json"
    stale = progress_path.is_file() and _progress_fingerprint(progress_path) != fingerprint
    if fresh or stale:  # shards of other inputs or settings cannot be continued
        shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True, exist_ok=True)
    write_json_atomic(progress_path, {"fingerprint": fingerprint, "settings": asdict(settings)})
    src, tgt = pair.split("-")
    by_id = {w.window_id: w for w in windows}
    chosen: dict[tuple[str, int], list[int]] = {}
    core = sorted({s.index for w in windows for s in w.segments if s.in_core})
    if not core:
        raise InputError("no window has a core segment to sample")
    rounds = core if settings.mode == "segment" else [0]
    stats = {"candidates": 0, "judge_failures": 0, "sampled": 0, "invalid": 0}
    for r in rounds:
        shard = shards / f"round-{r:04d}.parquet"
        if shard.is_file():
            frame = pl.read_parquet(shard)
            _remember_best(frame, chosen)
            continue
        t0 = time.perf_counter()
        if settings.mode == "segment":
            sets = _sample_segment_round(windows, r, chosen, policy, tokenizer, settings, stats)
        else:
            sets = _sample_responses(windows, policy, tokenizer, settings, stats)
        frame = _judge_round(sets, by_id, judge_backend, src, tgt, settings, stats, r)
        _write_atomic(frame, shard)
        _remember_best(frame, chosen)
        if on_round is not None:
            n = frame.height
            on_round(
                {
                    "round": r,
                    "rounds": len(rounds),
                    "candidates": n,
                    "candidates_per_s": n / max(1e-9, time.perf_counter() - t0),
                    "judge_failures": stats["judge_failures"],
                }
            )
    frame = pl.concat([pl.read_parquet(shards / f"round-{r:04d}.parquet") for r in rounds])
    frame = frame.sort("window_id", "segment", "candidate")
    _write_atomic(frame.select(list(CANDIDATE_SCHEMA)), out_dir / "candidates.parquet")
    _write_atomic(frame.select(list(SCORE_SCHEMA)), out_dir / "scores.parquet")
    return {
        **summarize(frame),
        "sampled_this_run": stats["sampled"],
        "invalid_this_run": stats["invalid"],
        "rounds": len(rounds),
        "windows": len(windows),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _sample_segment_round(
    windows: list[Window],
    r: int,
    chosen: dict[tuple[str, int], list[int]],
    policy: Backend,
    tokenizer: Any,
    s: SampleSettings,
    stats: dict[str, int],
) -> list[tuple[str, Segment, list[tuple[str, list[int], bool]]]]:
    todo = []
    for w in windows:
        seg = next((g for g in w.segments if g.index == r and g.in_core), None)
        if seg is None:
            continue
        prefix: list[int] = []
        for g in w.segments:
            if g.index >= r:
                break
            piece = chosen.get((w.window_id, g.index))
            prefix += piece if piece is not None else reference_piece(tokenizer, w, g)
        todo.append(
            (
                w,
                seg,
                SampleRequest(
                    w.prompt_ids + prefix,
                    s.k,
                    s.temperature,
                    s.top_k,
                    s.top_p,
                    s.max_new_tokens,
                    stop_lines=0 if seg.final else seg.end - seg.start,
                    seed=s.seed * 100_003 + r,
                ),
            )
        )
    samples = policy.sample([req for _, _, req in todo])
    raw = [
        _raw(w, seg, pieces, policy, tokenizer, stats)
        for (w, seg, _), pieces in zip(todo, samples, strict=True)
    ]
    return [
        (w.window_id, seg, cands)
        for (w, seg, _), cands in zip(todo, candidate_sets(raw), strict=True)
    ]


def _sample_responses(
    windows: list[Window],
    policy: Backend,
    tokenizer: Any,
    s: SampleSettings,
    stats: dict[str, int],
) -> list[tuple[str, Segment, list[tuple[str, list[int], bool]]]]:
    reqs = [
        SampleRequest(
            w.prompt_ids, s.k, s.temperature, s.top_k, s.top_p, s.max_new_tokens, seed=s.seed
        )
        for w in windows
    ]
    keys = []
    raw = []
    for w, answers in zip(windows, policy.sample(reqs), strict=True):
        cut = [_cut(answer, w, policy, tokenizer) for answer in answers]
        stats["sampled"] += len(answers)
        stats["invalid"] += sum(c is None for c in cut)  # wrong line count: dropped whole
        for seg in (g for g in w.segments if g.in_core):
            pieces = [c[seg.index] for c in cut if c is not None and seg.index in c]
            keys.append((w.window_id, seg))
            raw.append(_raw(w, seg, pieces, policy, tokenizer, stats, count_invalid=False))
    sets = candidate_sets(raw)
    return [(wid, seg, cands) for (wid, seg), cands in zip(keys, sets, strict=True)]


def _cut(
    answer: list[int], w: Window, policy: Backend, tokenizer: Any
) -> dict[int, list[int]] | None:
    """A whole answer's token ids cut into its segments' pieces, at the tokens that end each
    segment's last line; None if the answer does not have the window's line count."""
    eos = tokenizer.eos_token_id
    body = answer[:-1] if answer and answer[-1] == eos else answer
    if parse_answer(policy.decode(body), len(w.src_lines)) is None:
        return None
    pieces: dict[int, list[int]] = {}
    start = 0
    lines_done = 0
    segs = iter(w.segments)
    seg = next(segs)
    for j, tok in enumerate(answer):
        lines_done += policy.decode([tok]).count("\n")
        if not seg.final and lines_done >= seg.end:
            pieces[seg.index] = answer[start : j + 1]
            start = j + 1
            seg = next(segs)
    pieces[seg.index] = answer[start:]
    return pieces


def _raw(
    w: Window,
    seg: Segment,
    pieces: list[list[int]],
    policy: Backend,
    tokenizer: Any,
    stats: dict[str, int],
    count_invalid: bool = True,
) -> Raw:
    """The reference and the valid sampled pieces of one segment, before dedup."""
    eos = tokenizer.eos_token_id
    sampled = []
    for ids in pieces:
        text = piece_text(policy.decode, ids, seg, eos)
        stats["sampled"] += count_invalid
        if text is None:
            stats["invalid"] += count_invalid
            continue
        sampled.append((text, ids))
    reference = "\n".join(w.ref_lines[seg.start : seg.end])
    return reference, reference_piece(tokenizer, w, seg), sampled


def _judge_round(
    sets: list[tuple[str, Segment, list[tuple[str, list[int], bool]]]],
    by_id: dict[str, Window],
    backend: Backend,
    src: str,
    tgt: str,
    s: SampleSettings,
    stats: dict[str, int],
    r: int,
) -> pl.DataFrame:
    tasks = []
    for window_id, seg, cands in sets:
        w = by_id[window_id]
        c = s.context_lines
        tasks.append(
            judging.JudgeTask(
                before=w.src_lines[max(0, seg.start - c) : seg.start],
                lines=w.src_lines[seg.start : seg.end],
                after=w.src_lines[seg.end : seg.end + c],
                candidates=[text for text, _, _ in cands],
            )
        )

    ask = judging.asker(backend, s.judge_temperature, s.judge_max_new_tokens, s.seed + r)
    results = judging.judge(
        tasks,
        ask,
        src,
        tgt,
        votes=s.votes,
        retries=s.judge_retries,
        language=s.judge_language,
        rng=random.Random(s.seed * 7919 + r),
    )
    rows: dict[str, list[Any]] = {k: [] for k in {**CANDIDATE_SCHEMA, **SCORE_SCHEMA}}
    for (window_id, seg, cands), result in zip(sets, results, strict=True):
        if len(cands) > 1 and result.scores is None:
            stats["judge_failures"] += 1
        for c, (text, ids, is_ref) in enumerate(cands):
            rows["window_id"].append(window_id)
            rows["segment"].append(seg.index)
            rows["candidate"].append(c)
            rows["text"].append(text)
            rows["token_ids"].append(ids)
            rows["is_reference"].append(is_ref)
            rows["score"].append(result.scores[c] if result.scores is not None else None)
            rows["votes"].append([float(v[c]) for v in result.votes])
        stats["candidates"] += len(cands)
    return pl.DataFrame(rows, schema={**CANDIDATE_SCHEMA, **SCORE_SCHEMA})


def _remember_best(frame: pl.DataFrame, chosen: dict[tuple[str, int], list[int]]) -> None:
    for (window_id, segment), group in frame.group_by("window_id", "segment"):
        group = group.sort("candidate")
        best = best_candidate(group["text"].to_list(), group["score"].to_list())
        chosen[(str(window_id), int(segment))] = list(group["token_ids"][best])


def summarize(frame: pl.DataFrame) -> dict[str, Any]:
    """Gate-relevant statistics: candidates per segment and the spread of their scores."""
    per = frame.group_by("window_id", "segment").agg(
        pl.len().alias("n"),
        (pl.col("score").max() - pl.col("score").min()).alias("spread"),
        pl.col("score").is_not_null().any().alias("scored"),
    )
    stats = per.select(
        pl.col("n").mean().alias("mean_candidates"),
        (pl.col("n") > 3).mean().alias("share_over_3_candidates"),
        pl.col("scored").mean().alias("share_scored"),
        (~pl.col("scored") & (pl.col("n") > 1)).sum().alias("unscored_segments"),
        pl.col("spread").quantile(0.1).alias("spread_p10"),
        pl.col("spread").quantile(0.5).alias("spread_p50"),
        pl.col("spread").quantile(0.9).alias("spread_p90"),
        (pl.col("spread").drop_nulls() > 5).mean().alias("share_spread_over_5"),
    ).row(0, named=True)
    return {
        "segments": per.height,
        "candidates": frame.height,
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()},
    }


def _fingerprint(windows: list[Window], settings: SampleSettings, identity: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps([asdict(settings), identity], sort_keys=True).encode())
    for w in windows:
        h.update(repr((w.window_id, w.prompt_ids, w.ref_lines)).encode())
    return h.hexdigest()


def _progress_fingerprint(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: treated as stale, the shards are redone
    return str(value) if value is not None else None


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
