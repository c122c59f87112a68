"""Benchmark the segment-mode sample stage: batching across windows against a per-window loop.

Both paths run `alpo.sampling.run_sample` in segment mode on the same pool (zh-th windows of 35
synthetic lines: 25 core lines, 5 of context each side, one segment per line, so 25 rounds) with
the same tiny random Qwen2 model on the transformers backend (k candidates per segment, at most
`--max-new-tokens` each):

- batched (alpo): each round sends every window's request to the backend in one call, which
  generates them together (up to `--max-batch` sequences per `generate`);
- per-window loop (baseline): the same rounds, but the backend is called once per window and
  generates one window's k candidates at a time, the way a script loops over prompts.

Judging is the same cheap stand-in in both (a judge that scores candidates by length, answering
in the score JSON), so the figures compare sampling alone. Reported: wall seconds of the stage
(median of `--runs`), backend calls, candidates per second, and the ratio. Results go to
`bench/out/sample_speed.json`.

    python bench/sample_speed.py                  # 16 windows, 3 runs each
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from align_speed import machine  # noqa: E402

from alpo import synthetic  # noqa: E402
from alpo.generation import SampleRequest, TransformersBackend  # noqa: E402
from alpo.models import load_tokenizer  # noqa: E402
from alpo.sampling import SampleSettings, load_windows, run_sample  # noqa: E402
from alpo.tiny_model import build_tiny_model  # noqa: E402

PAIR = "zh-th"


def make_pool(n: int, folder: Path, seed: int = 2) -> Path:
    rng = random.Random(seed)
    serial = iter(range(10**9))
    rows = []
    for i in range(n):
        src = [synthetic.sentence(rng, "zh", next(serial)) for _ in range(35)]
        ref = [synthetic.sentence(rng, "th", next(serial)) for _ in range(35)]
        rows.append(
            {
                "window_id": f"w{i:04d}",
                "pair": PAIR,
                "src_lines": src,
                "ref_lines": ref,
                "core_start": 5,
                "core_end": 30,
                "segment_of_line": list(range(35)),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).with_columns(
        pl.col("core_start", "core_end").cast(pl.UInt32),
        pl.col("segment_of_line").cast(pl.List(pl.UInt32)),
    ).write_parquet(folder / "pool.parquet")
    return folder / "pool.parquet"


class Counting:
    """A backend wrapper that counts sample calls; `per_window` splits each call into one call
    per request (the per-window loop)."""

    def __init__(self, inner: TransformersBackend, per_window: bool) -> None:
        self.inner = inner
        self.per_window = per_window
        self.calls = 0

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode(ids)

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[list[int]]]:
        if not self.per_window:
            self.calls += 1
            return self.inner.sample(requests)
        out = []
        for r in requests:
            self.calls += 1
            out.extend(self.inner.sample([r]))
        return out

    def chat(self, prompts: Sequence[str], **_: Any) -> list[str]:
        raise NotImplementedError


class LengthJudge:
    """Scores each candidate by its length (a cheap, valid stand-in for the judge)."""

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[list[int]]]:
        raise NotImplementedError

    def chat(self, prompts: Sequence[str], **kw: Any) -> list[str]:
        replies = []
        for prompt in prompts:
            lines = prompt.splitlines()
            n = kw["score_letters"]
            texts = [lines[lines.index(f"Translation {chr(65 + j)}:") + 1] for j in range(n)]
            replies.append(json.dumps({chr(65 + j): min(100, len(t)) for j, t in enumerate(texts)}))
        return replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--max-batch", type=int, default=256)
    args = ap.parse_args()
    out = HERE / "out"
    pool = make_pool(args.windows, HERE / "data" / f"sample-pool-{args.windows}")
    frame = pl.read_parquet(pool)
    texts = [t for col in ("src_lines", "ref_lines") for row in frame[col] for t in row]
    model = build_tiny_model(out / "sample-tiny-model", texts)
    backend = TransformersBackend(str(model), device="cpu", max_batch=args.max_batch)
    tokenizer = load_tokenizer(str(model))
    windows = load_windows(pool, PAIR, tokenizer, {})
    settings = SampleSettings(
        mode="segment",
        k=args.k,
        temperature=1.0,
        top_k=40,
        top_p=0.9,
        max_new_tokens=args.max_new_tokens,
        votes=1,
        judge_retries=0,
        judge_temperature=0.3,
        judge_language="en",
        context_lines=7,
        seed=1,
    )
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "paths": {}}
    for name in ("batched", "per_window"):
        results["paths"][name] = {"seconds": [], "calls": None, "candidates": None}
    for _ in range(args.runs):
        for name, per_window in (("batched", False), ("per_window", True)):
            work = out / f"sample-{name}"
            shutil.rmtree(work, ignore_errors=True)
            counting = Counting(backend, per_window)
            start = time.perf_counter()
            summary = run_sample(windows, counting, LengthJudge(), tokenizer, PAIR, settings, work)
            seconds = time.perf_counter() - start
            row = results["paths"][name]
            row["seconds"].append(round(seconds, 3))
            row["calls"] = counting.calls
            row["candidates"] = summary["candidates"]
    for name, row in results["paths"].items():
        row["median_seconds"] = statistics.median(row["seconds"])
        print(
            f"{name}: {row['median_seconds']:.1f} s median over {args.runs} runs, "
            f"{row['calls']} backend calls, {row['candidates']} candidates"
        )
    ratio = (
        results["paths"]["per_window"]["median_seconds"]
        / results["paths"]["batched"]["median_seconds"]
    )
    results["speedup"] = ratio
    print(
        f"batched is {ratio:.2f}x faster than the per-window loop "
        f"({args.windows} windows x 25 rounds x k={args.k})"
    )
    (out / "sample_speed.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
