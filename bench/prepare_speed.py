"""Benchmark `alpo prepare` on a synthetic aligned corpus of N rows.

Generates (or reuses) `bench/data/aligned-N-sS.parquet`, a table with the columns of
`alpo.ALIGNED_SCHEMA` for the pair zh-th, then times
`alpo prepare FILE --pair zh-th --out bench/out/prepare-N --force --json` as a subprocess
under `/usr/bin/time -v`: `--runs` times with the line segmenter, once with `--segmenter punct`
and once with `--prompts` (rendered prompt and answer columns; `--no-prompts-run` skips it),
each after waiting for the machine to go idle. Prints the medians and writes every figure to
`bench/out/prepare_speed-N.json`. `--phases` also times the steps of `alpo.prepare.prepare` one
by one inside this process, with the peak RSS of each step; `--phases-only` does only that.

The synthetic table: about 500 titles (fewer when N is small), episodes of 500-1200 rows,
`line` counting up within an episode and skipping one or two numbers at about 3 % of rows,
where `fragment` goes up by one (as `alpo align` cuts a fragment at an unaligned source cue),
so fragments average about 32 lines and a quarter are under 10. Texts are 8-40 characters made
of 2-4 character "words" drawn from random CJK (source) and Thai (target) characters; one source
text in four ends in a sentence-final mark ("." 20 %, "。" 5 %). Times and file paths are
plausible. Rows come in title, episode, line order, as `alpo align` writes them;
`--shuffle-episodes` puts whole episodes in random order instead (a separate file), so prepare
has to sort. Random values come from seeded polars hashes: the same N and seed give the same
table with the same polars version.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from align_speed import alpo_exe, machine, timed  # noqa: E402

from alpo import ALIGNED_SCHEMA  # noqa: E402

PAIR = "zh-th"
SPLITS = ("sft", "pool", "test")
TITLES = 500
CHUNK = 1_000_000  # rows of text built at a time, to bound the generator's memory
WORDS = 4000  # distinct "words" per language
MAX_WORDS = 10  # words per text: 4-10, of 2-4 characters each -> 8-40 characters


def uniform(i: pl.Expr, stream: int, seed: int) -> pl.Expr:
    """A pseudo-random float in [0, 1) per value of `i`, from a seeded hash (one stream each)."""
    return (i.hash(seed * 1000 + stream) // (1 << 11)).cast(pl.Float64) / float(1 << 53)


def integers(i: pl.Expr, stream: int, seed: int, lo: int, hi: int) -> pl.Expr:
    """A pseudo-random integer in [lo, hi) per value of `i`."""
    return (i.hash(seed * 1000 + stream) % (hi - lo)).cast(pl.Int64) + lo


def word_pool(rnd: random.Random, alphabet: list[int]) -> pl.Series:
    """`WORDS` strings of 2-4 characters from `alphabet` (code points)."""
    return pl.Series(
        ["".join(chr(c) for c in rnd.choices(alphabet, k=rnd.randint(2, 4))) for _ in range(WORDS)]
    )


def texts(i: pl.Expr, words: pl.Series, stream: int, seed: int) -> pl.Expr:
    """A text of 4-10 words from `words` per value of `i`, without a loop over rows."""
    count = integers(i, stream, seed, 4, MAX_WORDS + 1)
    picked = [
        pl.when(count > k).then(pl.lit(words).gather(integers(i, stream + 1 + k, seed, 0, WORDS)))
        for k in range(MAX_WORDS)
    ]
    return pl.concat_str(picked, ignore_nulls=True)


def generate(rows: int, seed: int, path: Path, shuffle: bool = False) -> dict:
    """Write the synthetic aligned table of `rows` rows to `path` (reused when present).
    `shuffle` puts whole episodes in a seeded random order, so `prepare` has to sort."""
    if path.is_file():
        return {"reused": True, "bytes": path.stat().st_size}
    i = pl.col("i")
    # Episodes of 500-1200 rows, the last one cut to make exactly `rows`.
    eps = (
        pl.DataFrame({"i": pl.int_range(0, rows // 500 + 2, eager=True)})
        .with_columns(integers(i, 1, seed, 500, 1201).alias("n"))
        .with_columns(pl.col("n").cum_sum().alias("end"))
        .filter(pl.col("end") - pl.col("n") < rows)
        .with_columns(pl.min_horizontal("n", pl.col("n") - pl.col("end") + rows).alias("n"))
    )
    n_eps = eps.height
    n_titles = min(TITLES, n_eps)
    root = str((HERE / "data" / f"corpus-zh-th-{rows}-s{seed}").resolve())
    eps = (
        eps.with_columns((i * n_titles // n_eps).alias("t"))  # consecutive episodes per title
        .with_columns((i - i.min().over("t")).alias("k"))
        .select(
            i.alias("ep"),
            "n",
            pl.format("Title_{}", pl.col("t").cast(pl.String).str.zfill(4)).alias("title"),
            pl.format(
                "S{}E{}",
                (pl.col("k") // 20 + 1).cast(pl.String).str.zfill(2),
                (pl.col("k") % 20 + 1).cast(pl.String).str.zfill(2),
            ).alias("episode"),
        )
        .with_columns(
            pl.format(root + "/{}/{}.{}.zh.srt", "title", "title", "episode").alias("src_file"),
            pl.format(root + "/{}/{}.{}.th.srt", "title", "title", "episode").alias("tgt_file"),
        )
    )
    # One row per aligned line; `pos` counts rows within the episode.
    base = (
        eps.select("ep", pl.int_ranges(0, "n").alias("pos"))
        .explode("pos")
        .with_row_index("i")
        .with_columns(pl.col("i").cast(pl.UInt64))
    )
    first = pl.col("pos") == 0
    # An unaligned source cue (1 or 2 of them) before 3 % of rows: `line` skips, `fragment` cuts.
    cut = (uniform(i, 2, seed) < 0.03) & ~first
    skipped = pl.when(cut).then(integers(i, 3, seed, 1, 3)).otherwise(0)
    rnd = random.Random(seed)
    zh_words = word_pool(rnd, list(range(0x4E00, 0x9FA6)))
    th_words = word_pool(rnd, [*range(0x0E01, 0x0E2F), *range(0x0E30, 0x0E3A)])
    final = uniform(i, 4, seed)
    src = texts(i, zh_words, 100, seed)
    # A sentence-final mark replaces the last character, so texts stay 8-40 characters.
    src = (
        pl.when(final < 0.25)
        .then(
            pl.concat_str(
                src.str.slice(0, src.str.len_chars() - 1),
                pl.when(final < 0.2).then(pl.lit(".")).otherwise(pl.lit("。")),
            )
        )
        .otherwise(src)
    )
    parts = []
    for lo in range(0, rows, CHUNK):
        part = (
            base.slice(lo, CHUNK)
            .with_columns(cut.alias("cut"), skipped.alias("skipped"))
            .with_columns(
                pl.when(first).then(0).otherwise(1 + pl.col("skipped")).alias("step"),
                pl.when(first)
                .then(integers(i, 5, seed, 5_000, 60_000))
                .otherwise(integers(i, 6, seed, 1200, 4500) * (1 + pl.col("skipped")))
                .alias("gap_ms"),
                src.alias("src_text"),
                texts(i, th_words, 200, seed).alias("tgt_text"),
            )
        )
        parts.append(part)
    rows_df = pl.concat(parts).with_columns(
        pl.col("step").cum_sum().over("ep").alias("line"),
        pl.col("cut").cast(pl.UInt32).cum_sum().over("ep").alias("fragment"),
        pl.col("gap_ms").cum_sum().over("ep").alias("src_start_ms"),
    )
    if shuffle:
        rows_df = rows_df.sort(pl.col("ep").hash(seed * 1000 + 10), "pos")
    src_end = pl.col("src_start_ms") + integers(i, 7, seed, 700, 1100)
    df = (
        rows_df.join(eps, on="ep", how="left", maintain_order="left")
        .with_columns(
            pl.lit(PAIR).alias("pair"),
            pl.lit("zh").alias("src_lang"),
            pl.lit("th").alias("tgt_lang"),
            src_end.alias("src_end_ms"),
            (pl.col("src_start_ms") + integers(i, 8, seed, -150, 151)).alias("tgt_start_ms"),
            (src_end + integers(i, 9, seed, -150, 151)).alias("tgt_end_ms"),
        )
        .select([pl.col(c).cast(t) for c, t in ALIGNED_SCHEMA.items()])
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.write_parquet(tmp, compression="zstd", compression_level=1)
    tmp.replace(path)
    return {"reused": False, "bytes": path.stat().st_size, "episodes": n_eps, "titles": n_titles}


def describe(path: Path) -> dict:
    """Counts of the table that matter to prepare (titles, episodes, fragments, punctuation)."""
    frags = (
        pl.scan_parquet(path)
        .group_by("title", "episode", "fragment")
        .agg(pl.len().alias("n"))
        .select(
            pl.len().alias("fragments"),
            pl.col("n").mean().round(1).alias("mean_fragment_lines"),
            (pl.col("n") < 10).sum().alias("fragments_under_10"),
            pl.col("title").n_unique().alias("titles"),
            pl.struct("title", "episode").n_unique().alias("episodes"),
        )
        .collect()
        .row(0, named=True)
    )
    texts = (
        pl.scan_parquet(path)
        .select(
            pl.len().alias("rows"),
            pl.col("src_text").str.contains("[。.]$").mean().round(3).alias("src_final_share"),
            pl.col("src_text").str.len_chars().mean().round(1).alias("src_chars_mean"),
            pl.col("tgt_text").str.len_chars().mean().round(1).alias("tgt_chars_mean"),
        )
        .collect()
        .row(0, named=True)
    )
    return {**texts, **frags}


def run_prepare(data: Path, out: Path, extra: list[str], tag: str, idle: float) -> dict:
    """One timed `alpo prepare` run; figures from `/usr/bin/time` and the JSON manifest."""
    cmd = [alpo_exe(), "prepare", str(data), "--pair", PAIR, "--out", str(out), "--force"]
    cmd += ["--json", *extra]
    r = timed(cmd, out.with_name(out.name + f"-{tag}.time.txt"), idle)
    manifest = json.loads(r["stdout"].strip().splitlines()[-1])
    res = {
        "tag": tag,
        "command": " ".join(["alpo", *cmd[1:]]),
        "wall_s": r["wall_s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "rows": manifest["rows"],
        "rows_per_s": round(manifest["rows"] / r["wall_s"]),
        "windows": {k: v["windows"] for k, v in manifest["splits"].items()},
        "core_lines": {k: v["core_lines"] for k, v in manifest["splits"].items()},
        "test_titles": len(manifest["test_titles"]),
        "dropped": manifest["dropped"],
        "report_seconds": manifest.get("seconds"),
        "cpu_s": r["cpu_s"],
        "other_cpu_s": r["other_cpu_s"],
        "other_load_before": r["other_load_before"],
        "out_mb": {s: round((out / f"{s}.parquet").stat().st_size / 1e6, 1) for s in SPLITS},
    }
    print(fmt_row(res), file=sys.stderr, flush=True)
    return res


def fmt_row(r: dict) -> str:
    w = r["windows"]
    return (
        f"  {r['tag']:6s} wall {r['wall_s']:7.2f} s  peak {r['peak_rss_mb']:7.0f} MB"
        f"  rows {r['rows']:>10,}  {r['rows_per_s']:>9,} rows/s"
        f"  windows sft {w['sft']:,} pool {w['pool']:,} test {w['test']:,}"
        f"  (in run {r['report_seconds']} s; cpu {r['cpu_s']} s, others {r['other_cpu_s']} s)"
    )


def median_of(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    rss = [r["peak_rss_mb"] for r in runs]
    wall = statistics.median(walls)
    med = {
        "wall_s_all": walls,
        "wall_s_median": round(wall, 3),
        "peak_rss_mb_all": rss,
        "peak_rss_mb_median": round(statistics.median(rss), 1),
        "peak_rss_mb_max": max(rss),
        "rows": runs[0]["rows"],
        "rows_per_s_median": round(runs[0]["rows"] / wall),
        "windows": runs[0]["windows"],
        "cpu_s_all": [r["cpu_s"] for r in runs],
    }
    secs = [r["report_seconds"] for r in runs if r.get("report_seconds")]
    if secs:
        med["report_seconds_median"] = round(statistics.median(secs), 3)
    return med


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to the current RSS, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def phases(data: Path, out: Path, segmenter: str, prompts: bool) -> dict:
    """Time the steps of `alpo.prepare.prepare` in this process, called as `prepare` calls them
    (as of commit d19349d), with the peak RSS of each step."""
    P = importlib.import_module("alpo.prepare")  # `alpo.prepare` is also the function

    opts = P.PrepareOptions(pair=PAIR, segmenter=segmenter, prompts=prompts)
    steps: list[dict] = []

    def step(name: str, fn):
        can_reset = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        steps.append(
            {
                "step": name,
                "wall_s": round(time.perf_counter() - t0, 3),
                "cpu_s": round(time.process_time() - c0, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1) if can_reset else None,
                "rss_after_mb": round(rss_mb(), 1),
            }
        )
        print(f"    {steps[-1]}", file=sys.stderr, flush=True)
        return value

    t_all = time.perf_counter()
    step("file_digest", lambda: P.file_digest(data))
    rows = step("read_aligned", lambda: P.read_aligned(data, PAIR))
    titles = sorted(rows["title"].unique().to_list())
    test = P.pick_test_titles(titles, None, opts.seed)
    step("label_segments (also inside cut_windows)", lambda r=rows: P.label_segments(r, segmenter))
    windows, _ = step("cut_windows", lambda r=rows: P.cut_windows(r, opts))
    del rows  # as prepare does
    splits = step(
        "assign_splits", lambda w=windows: P.assign_splits(w, test, opts.sft_share, opts.seed)
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        part = windows.lazy().filter(splits == name)
        if prompts:
            df = step(f"collect {name}", part.collect)
            df = step(
                f"add_prompts {name} ({df.height:,} windows)",
                lambda df=df: P.add_prompts(df, opts, paraphrase=False),
            )
            part = df.lazy()
        step(
            f"write_parquet_atomic {name}",
            lambda part=part, n=name: P.write_parquet_atomic(part, out / f"{n}.parquet"),
        )
    total = round(time.perf_counter() - t_all, 3)
    peak = max((s["peak_rss_mb"] or 0.0) for s in steps) or round(peak_rss_mb(), 1)
    del windows, splits, part
    # prepare skips the sort when the rows are in order, as they are here unless
    # --shuffle-episodes; what sorting them costs (after the steps above, outside their total):
    rows = P.read_aligned(data, PAIR)
    step(
        "extra: sort the rows read (prepare skips it for rows in order)",
        lambda r=rows: r.sort("title", "episode", "line", maintain_order=True).height,
    )
    return {
        "segmenter": segmenter,
        "prompts": prompts,
        "steps": steps,
        "total_wall_s": total,
        # the highest peak of the steps above (Linux resets the peak between steps)
        "peak_rss_mb": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, required=True, help="aligned rows to generate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--shuffle-episodes",
        action="store_true",
        help="episodes in random order (aligned-N-sS-shuffled.parquet): prepare must sort",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs with the line segmenter")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=120.0,
        help="before each run, wait up to this many seconds for other processes to go quiet",
    )
    ap.add_argument(
        "--phases",
        action="store_true",
        help="also time the steps of prepare in this process (after the CLI runs)",
    )
    ap.add_argument(
        "--phases-only",
        action="store_true",
        help="only the in-process step timings (writes prepare_phases-N-SEGMENTER.json)",
    )
    ap.add_argument("--segmenter", default="line", help="segmenter for --phases-only")
    ap.add_argument("--prompts", action="store_true", help="--phases-only with rendered prompts")
    ap.add_argument(
        "--no-prompts-run",
        action="store_true",
        help="skip the extra run with --prompts (rendered prompt and answer columns)",
    )
    a = ap.parse_args()

    tag = f"{a.rows}" + ("-shuffled" if a.shuffle_episodes else "")
    data = (
        HERE
        / "data"
        / f"aligned-{a.rows}-s{a.seed}{'-shuffled' if a.shuffle_episodes else ''}.parquet"
    )
    out = a.out_dir / f"prepare-{tag}"
    a.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
    }
    print(f"machine: {results['machine']}", file=sys.stderr)

    t0 = time.perf_counter()
    gen = generate(a.rows, a.seed, data, a.shuffle_episodes)
    gen["wall_s"] = round(time.perf_counter() - t0, 1)
    gen.update(describe(data))
    results["data"] = {"path": str(data), **gen}
    print(
        f"data: {data} ({'reused' if gen['reused'] else 'generated'} in {gen['wall_s']} s, "
        f"{gen['bytes'] / 1e6:.0f} MB): {json.dumps(gen)}",
        file=sys.stderr,
    )

    path = a.out_dir / f"prepare_speed-{tag}.json"
    if a.phases_only:
        results["phases"] = phases(
            data, a.out_dir / f"prepare-phases-{tag}", a.segmenter, a.prompts
        )
        kind = a.segmenter + ("-prompts" if a.prompts else "")
        path = a.out_dir / f"prepare_phases-{tag}-{kind}.json"
        path.write_text(json.dumps(results, indent=1))
        print(f"  written: {path}")
        return

    print(f"alpo prepare, line segmenter, {a.runs} runs:", file=sys.stderr)
    line = [run_prepare(data, out, [], "line", a.idle_wait) for _ in range(a.runs)]
    print("alpo prepare --segmenter punct, 1 run:", file=sys.stderr)
    punct = run_prepare(data, out, ["--segmenter", "punct"], "punct", a.idle_wait)
    results["line"] = {"runs": line, "median": median_of(line)}
    results["punct"] = punct
    if not a.no_prompts_run:
        print("alpo prepare --prompts, 1 run:", file=sys.stderr)
        results["prompts"] = run_prepare(data, out, ["--prompts"], "prompts", a.idle_wait)
    m = results["line"]["median"]
    results["targets"] = {
        "wall_le_60s": m["wall_s_median"] <= 60,
        "peak_rss_le_4GB": m["peak_rss_mb_max"] <= 4000,
        "punct_wall_le_60s": punct["wall_s"] <= 60,
        "punct_peak_rss_le_4GB": punct["peak_rss_mb"] <= 4000,
    }
    path.write_text(json.dumps(results, indent=1))
    if a.phases:
        print("phases in one process (line segmenter):", file=sys.stderr)
        results["phases"] = phases(data, a.out_dir / f"prepare-phases-{tag}", "line", False)
        path.write_text(json.dumps(results, indent=1))

    print("\nsummary:")
    print(
        f"  line  (median of {a.runs}): {m['rows']:,} rows in {m['wall_s_median']} s "
        f"(runs {m['wall_s_all']}), {m['rows_per_s_median']:,} rows/s, "
        f"peak RSS median {m['peak_rss_mb_median']:.0f} MB (runs {m['peak_rss_mb_all']}), "
        f"windows {m['windows']}"
    )
    print(
        f"  punct (1 run): {punct['wall_s']} s, {punct['rows_per_s']:,} rows/s, "
        f"peak RSS {punct['peak_rss_mb']:.0f} MB, windows {punct['windows']}"
    )
    if "prompts" in results:
        q = results["prompts"]
        print(
            f"  --prompts (1 run): {q['wall_s']} s, {q['rows_per_s']:,} rows/s, "
            f"peak RSS {q['peak_rss_mb']:.0f} MB"
        )
    print(f"  targets: {results['targets']}")
    print(f"  written: {path}")


if __name__ == "__main__":
    main()
