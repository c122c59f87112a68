"""Aligned cue pairs from folders of raw subtitle tracks.

The work happens in the Rust core (decode, parse, clean, pair files, correct timing, align), in
parallel and with the GIL released. It hands over Arrow batches, one chunk of episodes at a time;
`align_to_parquet` streams them into one Parquet file through polars, so memory stays bounded
whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from alpo import _core
from alpo.exceptions import ConfigError, InputError

PathLike = str | os.PathLike[str]

ALIGNED_SCHEMA: dict[str, Any] = {
    "pair": pl.String,
    "title": pl.String,
    "episode": pl.String,
    "src_lang": pl.String,
    "tgt_lang": pl.String,
    "line": pl.UInt32,
    "fragment": pl.UInt32,
    "src_start_ms": pl.Int64,
    "src_end_ms": pl.Int64,
    "tgt_start_ms": pl.Int64,
    "tgt_end_ms": pl.Int64,
    "src_text": pl.String,
    "tgt_text": pl.String,
    "src_file": pl.String,
    "tgt_file": pl.String,
    "dup": pl.Boolean,
}


def parse_pair(pair: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """`"zh-th"`, `"zh-Hans:th"` or `("zh", "th")` -> ("zh", "th") in ISO 639-1 codes."""
    if pair is None:
        return None
    if isinstance(pair, str):
        parts = pair.split(":") if ":" in pair else pair.split("-")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"pair {pair!r} must look like SRC-TGT, e.g. zh-th")
        pair = (parts[0], parts[1])
    src, tgt = (_core.lang(p) for p in pair)
    if src == tgt:
        raise ConfigError(f"pair {src}-{tgt} needs two different languages")
    return src, tgt


def _aligner(
    paths: Sequence[PathLike] | PathLike,
    pair: str | tuple[str, str] | None,
    max_gap: float,
    sync: bool,
    mode: str,
    keep_top: bool,
    threads: int | None,
    chunk_mb: int,
) -> _core.Aligner:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise InputError("no input paths given")
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file or folder")
    return _core.Aligner(
        [os.fspath(p) for p in paths],
        pair=parse_pair(pair),
        max_gap=max_gap,
        sync=sync,
        mode=mode,
        keep_top=keep_top,
        threads=threads,
        chunk_mb=chunk_mb,
    )


def _frames(aligner: _core.Aligner) -> Iterator[pl.DataFrame]:
    while (table := aligner.next_batch()) is not None:
        yield pl.DataFrame(table)


def align(
    paths: Sequence[PathLike] | PathLike,
    pair: str | tuple[str, str] | None = None,
    max_gap: float = 0.7,
    *,
    sync: bool = True,
    mode: str = "nearest",
    keep_top: bool = False,
    threads: int | None = None,
) -> pl.DataFrame:
    """Align every episode found under `paths` and return the cue pairs as one DataFrame.

    Columns are those of `alpo align`'s Parquet output (see `ALIGNED_SCHEMA`). For corpora larger
    than memory use `align_to_parquet`, which streams.
    """
    return align_report(
        paths, pair, max_gap, sync=sync, mode=mode, keep_top=keep_top, threads=threads
    )[0]


def align_report(
    paths: Sequence[PathLike] | PathLike,
    pair: str | tuple[str, str] | None = None,
    max_gap: float = 0.7,
    *,
    sync: bool = True,
    mode: str = "nearest",
    keep_top: bool = False,
    threads: int | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`align`, and the run's report: files skipped with reasons, offsets found, counts."""
    started = time.perf_counter()
    aligner = _aligner(paths, pair, max_gap, sync, mode, keep_top, threads, 64)
    frames = list(_frames(aligner))
    df = pl.concat(frames, rechunk=True) if frames else pl.DataFrame(aligner.empty())
    report = json.loads(aligner.report_json())
    report["seconds"] = round(time.perf_counter() - started, 3)
    return df, report


def fingerprint(paths: Sequence[PathLike], options: dict[str, Any]) -> str:
    """Identity of a run's inputs: every file's path, size and mtime, and the options."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for root in sorted(os.fspath(p) for p in paths):
        files = [Path(root)] if Path(root).is_file() else sorted(Path(root).rglob("*"))
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def align_to_parquet(
    paths: Sequence[PathLike] | PathLike,
    out: PathLike,
    pair: str | tuple[str, str] | None = None,
    max_gap: float = 0.7,
    *,
    report: PathLike | None = None,
    sync: bool = True,
    mode: str = "nearest",
    keep_top: bool = False,
    threads: int | None = None,
    chunk_mb: int = 64,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Align a corpus into one Parquet file, streaming, and return the report.

    The Parquet file and the report (default: `OUT.report.json`) are written to temporary names
    and renamed when complete, so an interrupted run leaves no half-written output. A second run
    with the same inputs and options finds the finished output and returns its report
    (`skipped: true`) unless `force`.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = Path(out)
    report_path = Path(report) if report else out.with_name(out.name + ".report.json")
    options = {
        "pair": list(parse_pair(pair) or []),
        "max_gap": max_gap,
        "sync": sync,
        "mode": mode,
        "keep_top": keep_top,
    }
    started = time.perf_counter()
    # Stat-ing every input takes a while on a large corpus: a side thread does it, while the
    # corpus is being aligned unless a finished output may make the run unnecessary.
    fingerprinting = ThreadPoolExecutor(max_workers=1)
    print_key = fingerprinting.submit(fingerprint, paths, options)
    fingerprinting.shutdown(wait=False)
    if not force and out.exists() and report_path.exists():
        try:
            previous = json.loads(report_path.read_text())
        except (OSError, ValueError):
            previous = {}
        if previous.get("fingerprint") == print_key.result():
            return {**previous, "skipped": True}
    aligner = _aligner(paths, pair, max_gap, sync, mode, keep_top, threads, chunk_mb)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    total = aligner.bytes_total

    failed: list[BaseException] = []  # an error of the aligner, not of the writer

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        try:
            for df in _frames(aligner):
                if on_progress:
                    on_progress(aligner.bytes_done, total)
                if with_columns is not None:
                    df = df.select(with_columns)
                if predicate is not None:
                    df = df.filter(predicate)
                yield df
        except Exception as e:
            failed.append(e)
            raise

    from polars.io.plugins import register_io_source

    try:
        register_io_source(source, schema=ALIGNED_SCHEMA).sink_parquet(
            tmp, compression="zstd", compression_level=1
        )
        os.replace(tmp, out)
    except (OSError, pl.exceptions.PolarsError) as e:
        if failed:
            raise failed[0] from e
        raise InputError(f"{out}: cannot write the output: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    result = json.loads(aligner.report_json())
    result["output"] = str(out)
    result["fingerprint"] = print_key.result()
    result["options"] = options
    result["seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(report_path, result)
    result["report"] = str(report_path)
    return result


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    os.replace(tmp, path)


def read_subtitles(
    path: PathLike,
    *,
    lang: str | None = None,
    clean: bool = True,
    keep_top: bool = True,
) -> pl.DataFrame:
    """Read one subtitle file (SRT, WebVTT, ASS/SSA, MicroDVD; any common encoding).

    Columns: start_ms, end_ms (i64), text, style (str), top (bool: positioned at the top of the
    frame), line (u32: where the cue stands in the file). With `clean` (default) the text is plain
    (markup removed, lines joined), cues are sorted by time and rolling duplicates merged, as
    `align` sees them; top-positioned cues are kept unless `keep_top=False`.
    `read_subtitles_info` also says which encoding and format were found.
    """
    return read_subtitles_info(path, lang=lang, clean=clean, keep_top=keep_top)[0]


def read_subtitles_info(
    path: PathLike,
    *,
    lang: str | None = None,
    clean: bool = True,
    keep_top: bool = True,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`read_subtitles` and what was found: encoding, format, and where parsing broke if it did."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    code = _core.lang(lang) if lang else None
    table, encoding, fmt, issue = _core.read_subtitles(
        os.fspath(path), lang=code, clean=clean, keep_top=keep_top
    )
    info: dict[str, Any] = {"encoding": encoding, "format": fmt, "issue": None}
    if issue is not None:
        info["issue"] = {"line": issue[0], "reason": issue[1]}
    return pl.DataFrame(table), info
