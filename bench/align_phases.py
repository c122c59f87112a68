"""Where the time of `alpo align` goes, phase by phase, in one process.

    python bench/align_phases.py DIR [--threads N] [--out bench/out/phases.parquet]

Phases, each timed on its own (the corpus is in the page cache):
- import: `import alpo` (polars and the extension);
- plan: building the aligner (walk the folders, stat and name every file, group episodes);
- align: the Rust work proper (read, decode, parse, clean, sync, align, Arrow batches), draining
  `next_batch()` without writing anything, with and without offset/drift correction;
- to_frame: the same, plus wrapping every batch in a polars DataFrame;
- align_to_parquet: the whole library call as the CLI makes it (streams into Parquet);
- read_files: `alpo.read_subtitles_info` on every file, one thread (decode, parse and clean of
  each file once, plus one small Arrow table per file).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

t0 = time.perf_counter()
import polars as pl  # noqa: E402

import alpo  # noqa: E402
from alpo import _core  # noqa: E402

IMPORT_S = time.perf_counter() - t0


def drain(paths: list[str], threads: int | None, sync: bool, frames: bool) -> dict:
    t = time.perf_counter()
    al = _core.Aligner(paths, sync=sync, threads=threads)
    plan = time.perf_counter() - t
    rows = 0
    batches = 0
    while (table := al.next_batch()) is not None:
        rows += pl.DataFrame(table).height if frames else len(table)
        batches += 1
    total = time.perf_counter() - t
    return {
        "plan_s": round(plan, 3),
        "align_s": round(total - plan, 3),
        "total_s": round(total, 3),
        "rows": rows,
        "batches": batches,
        "rows_per_s": round(rows / (total - plan)) if total > plan else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "phases.parquet")
    ap.add_argument("--read-files", type=int, default=400, help="files to read one by one")
    a = ap.parse_args()
    paths = [str(a.data)]
    res: dict = {"data": str(a.data), "threads": a.threads, "import_s": round(IMPORT_S, 3)}
    res["align_sync"] = drain(paths, a.threads, True, False)
    res["align_nosync"] = drain(paths, a.threads, False, False)
    res["to_frame_sync"] = drain(paths, a.threads, True, True)
    t = time.perf_counter()
    rep = alpo.align_to_parquet(paths, a.out, threads=a.threads, force=True)
    res["align_to_parquet_s"] = round(time.perf_counter() - t, 3)
    res["align_to_parquet_rows"] = rep["aligned"]
    files = sorted(p for p in a.data.rglob("*") if p.suffix in (".srt", ".ass", ".vtt"))
    files = files[: a.read_files]
    t = time.perf_counter()
    cues = 0
    for f in files:
        lang = f.name.rsplit(".", 2)[-2]
        df, _ = alpo.read_subtitles_info(f, lang=lang, keep_top=False)
        cues += df.height
    secs = time.perf_counter() - t
    res["read_files"] = {
        "files": len(files),
        "cues": cues,
        "seconds": round(secs, 3),
        "cues_per_s": round(cues / secs) if secs else None,
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
