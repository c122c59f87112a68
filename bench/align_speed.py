"""Speed of `alpo align` on a generated corpus, and against a pure-Python baseline.

    python bench/align_speed.py --pairs 10000000 [--baseline-pairs 200000] [--data DIR]

1. Generates the corpus (bench/gen_corpus.py), or reuses it when already there.
2. Runs `alpo align DIR --out X.parquet --force` as a subprocess `--runs` times (default 3) under
   `/usr/bin/time -v`: wall seconds, peak RSS, pairs written (`aligned` in the report JSON).
3. On a prefix subset of the same corpus (the first episodes up to `--baseline-pairs` source
   cues, hard-linked into a folder of their own) runs alpo the same way, alpo with
   `--threads 1`, alpo with `--no-sync` (whose output must equal the baseline's row for row), and
   the pure-Python baseline (bench/baseline_python.py) `--baseline-runs` times (default 1).
   With `--baseline-pairs` at least the corpus size the "subset" is the whole corpus, and its
   alpo runs are the full-corpus runs (the baseline then takes several minutes on 10M pairs).
4. Prints a table and writes every figure to bench/out/align_speed-N.json.

The corpus is read from the page cache (it was just written or read), as in repeated runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import gen_corpus  # noqa: E402

TIME = "/usr/bin/time"
BIN = Path(sys.executable).parent


def alpo_exe() -> str:
    exe = BIN / "alpo"
    return str(exe) if exe.exists() else (shutil.which("alpo") or "alpo")


def subset(data: Path, pairs: int, dest: Path) -> Path:
    """The first episodes of `data` (generation order) up to `pairs` source cues, hard-linked."""
    lines = (data / gen_corpus.MANIFEST).read_text().splitlines()[1:]
    rows = [ln.split("\t") for ln in lines]
    n, k = 0, 0
    while k < len(rows) and n < pairs:
        n += int(rows[k][5])
        k += 1
    if k == len(rows):
        return data  # the subset would be the whole corpus
    marker = {"of": str(data.resolve()), "pairs": pairs}
    try:
        if json.loads((dest / gen_corpus.MARKER).read_text()).get("subset") == marker:
            return dest
    except (OSError, ValueError):
        pass
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    kept = []
    for r in rows[:k]:
        for rel in (r[8], r[9]):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(data / rel, target)
            except OSError:
                target.symlink_to((data / rel).resolve())
        kept.append("\t".join(r))
    header = (data / gen_corpus.MANIFEST).read_text().splitlines()[0]
    (dest / gen_corpus.MANIFEST).write_text("\n".join([header, *kept]) + "\n")
    (dest / gen_corpus.MARKER).write_text(
        json.dumps({"subset": marker, "episodes": len(kept), "src_cues": n})
    )
    return dest


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def other_load(seconds: float = 1.0) -> float:
    """Busy CPUs (0..cpus) over the next `seconds`, while this script waits."""
    b0, _ = cpu_ticks()
    time.sleep(seconds)
    b1, _ = cpu_ticks()
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / seconds


def wait_idle(limit_s: float) -> float:
    """Wait (up to `limit_s`) until other processes use under 0.2 CPU; return that load."""
    deadline = time.monotonic() + limit_s
    load = other_load()
    while load > 0.2 and time.monotonic() < deadline:
        load = other_load(2.0)
    return round(load, 2)


def timed(cmd: list[str], log: Path, idle_wait_s: float = 0.0) -> dict:
    """Run `cmd`; wall seconds, peak RSS (MB) and CPU seconds of the child, CPU seconds of the
    whole machine over the same span (the difference is what other processes took)."""
    load_before = wait_idle(idle_wait_s)
    use_time = os.access(TIME, os.X_OK)
    full = [TIME, "-v", "-o", str(log), *cmd] if use_time else cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, _ = cpu_ticks()
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    busy1, _ = cpu_ticks()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    rss_mb = None
    if use_time:
        for line in log.read_text().splitlines():
            if "Maximum resident set size" in line:
                rss_mb = int(line.rsplit(":", 1)[1]) / 1024
    if rss_mb is None:
        # Max over all children so far: right only when this child is the largest yet.
        rss_mb = max(after.ru_maxrss, before.ru_maxrss) / 1024
    child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    machine_cpu = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(rss_mb, 1),
        "cpu_s": round(child_cpu, 2),
        "other_cpu_s": round(max(machine_cpu - child_cpu, 0.0), 2),
        "other_load_before": load_before,
        "stdout": proc.stdout,
    }


IDLE_WAIT_S = 0.0


def measured(tool: str, tag: str, command: str, r: dict, report: dict, out: Path) -> dict:
    pairs = report["aligned"]
    res = {
        "tool": tool,
        "tag": tag,
        "command": command,
        "wall_s": r["wall_s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "pairs": pairs,
        "pairs_per_s": round(pairs / r["wall_s"]),
        # Seconds inside the run as the tool's report gives them (no interpreter start-up).
        "report_seconds": report.get("seconds"),
        "cpu_s": r["cpu_s"],
        "other_cpu_s": r["other_cpu_s"],
        "other_load_before": r["other_load_before"],
        "out_mb": round(out.stat().st_size / 1e6, 1),
    }
    if report.get("seconds"):
        res["pairs_per_s_in_run"] = round(pairs / report["seconds"])
    if "episodes_synced" in report:
        res["episodes_synced"] = report["episodes_synced"]
    print(fmt_row(res), file=sys.stderr, flush=True)
    return res


def run_alpo(data: Path, out: Path, extra: list[str], tag: str) -> dict:
    cmd = [alpo_exe(), "align", str(data), "--out", str(out), "--force", "--json", *extra]
    r = timed(cmd, out.with_suffix(".time.txt"), IDLE_WAIT_S)
    report = json.loads(Path(str(out) + ".report.json").read_text())
    return measured("alpo", tag, " ".join(["alpo", *cmd[1:]]), r, report, out)


def run_baseline(data: Path, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "baseline_python.py"), str(data), "--out", str(out)]
    r = timed(cmd, out.with_suffix(".time.txt"), IDLE_WAIT_S)
    report = json.loads(Path(str(out) + ".report.json").read_text())
    command = "python bench/baseline_python.py " + " ".join(cmd[2:])
    return measured("baseline", "subset", command, r, report, out)


def fmt_row(r: dict) -> str:
    return (
        f"  {r['tool']:8s} {r['tag']:16s} wall {r['wall_s']:8.2f} s"
        f"  peak {r['peak_rss_mb']:7.0f} MB  pairs {r['pairs']:>10,}"
        f"  {r['pairs_per_s']:>10,} pairs/s  (in run {r['report_seconds']} s;"
        f" cpu {r['cpu_s']} s, others {r['other_cpu_s']} s)"
    )


def median_of(runs: list[dict]) -> dict:
    """The run with the median wall time (runs are odd in number by default)."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    med = dict(ordered[(len(ordered) - 1) // 2])
    med["wall_s_all"] = [r["wall_s"] for r in runs]
    med["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
    med["wall_s_median"] = round(statistics.median(med["wall_s_all"]), 3)
    med["pairs_per_s_median"] = round(med["pairs"] / med["wall_s_median"])
    secs = [r["report_seconds"] for r in runs if r.get("report_seconds")]
    if secs:
        med["report_seconds_median"] = statistics.median(secs)
        med["pairs_per_s_in_run_median"] = round(med["pairs"] / med["report_seconds_median"])
    return med


def same_rows(a: Path, b: Path) -> dict:
    """Compare alpo --no-sync output with the baseline's, row for row, on the baseline's
    columns (alpo's `dup` flag is beyond the paper's rule)."""
    key = ["title", "episode", "pair", "line"]
    y = pl.read_parquet(b).sort(key)
    x = pl.read_parquet(a).select(y.columns).sort(key)
    if x.height != y.height or x.schema != y.schema:
        return {"identical": False, "rows": [x.height, y.height]}
    diff = [c for c in x.columns if not x[c].equals(y[c])]
    return {"identical": not diff, "rows": x.height, "columns_differing": diff}


def machine() -> dict:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    so = next((ROOT / "python" / "alpo").glob("_core*.so"), None)
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "git": git,
        "extension_sha256": hashlib.sha256(so.read_bytes()).hexdigest()[:16] if so else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, required=True, help="corpus size in cue pairs")
    ap.add_argument("--baseline-pairs", type=int, default=200_000, help="subset for the baseline")
    ap.add_argument("--data", type=Path, default=None, help="corpus folder (default bench/data/)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="alpo runs per measurement")
    ap.add_argument("--baseline-runs", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    ap.add_argument("--skip-full", action="store_true", help="only the subset comparison")
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=120.0,
        help="before each run, wait up to this many seconds for other processes to go quiet",
    )
    a = ap.parse_args()
    global IDLE_WAIT_S
    IDLE_WAIT_S = a.idle_wait

    data = a.data or HERE / "data" / f"corpus-{a.pairs}-s{a.seed}"
    out_dir = a.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "args": vars(a)}
    results["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    print(f"machine: {results['machine']}", file=sys.stderr)

    t0 = time.perf_counter()
    corpus = gen_corpus.generate(a.pairs, data, a.seed)
    corpus["wall_s"] = round(time.perf_counter() - t0, 1)
    results["corpus"] = {"path": str(data), **corpus}
    print(
        f"corpus: {data} ({corpus['episodes']} episodes, {corpus['src_cues']:,} source cues, "
        f"{corpus['bytes'] / 1e6:.0f} MB, {'reused' if corpus['reused'] else 'generated'} "
        f"in {corpus['wall_s']} s)",
        file=sys.stderr,
    )

    small = subset(
        data, a.baseline_pairs, HERE / "data" / f"subset-{a.pairs}-s{a.seed}-{a.baseline_pairs}"
    )
    results["subset"] = {"path": str(small), "same_as_corpus": small == data}

    if not a.skip_full and small != data:
        print(f"alpo on the full corpus, {a.runs} runs:", file=sys.stderr)
        full = [
            run_alpo(data, out_dir / f"alpo-{a.pairs}.parquet", [], "full") for _ in range(a.runs)
        ]
        results["full"] = {"runs": full, "median": median_of(full)}

    print(f"subset {small}:", file=sys.stderr)
    sub = [
        run_alpo(small, out_dir / f"alpo-subset-{a.pairs}.parquet", [], "subset")
        for _ in range(a.runs)
    ]
    if small == data:  # the baseline runs on the whole corpus: these runs are the full ones
        results["full"] = {"runs": sub, "median": median_of(sub)}
    one = [
        run_alpo(
            small,
            out_dir / f"alpo-subset-t1-{a.pairs}.parquet",
            ["--threads", "1"],
            "subset threads=1",
        )
        for _ in range(a.runs)
    ]
    nosync = run_alpo(
        small, out_dir / f"alpo-subset-nosync-{a.pairs}.parquet", ["--no-sync"], "subset no-sync"
    )
    base = [
        run_baseline(small, out_dir / f"baseline-subset-{a.pairs}.parquet")
        for _ in range(a.baseline_runs)
    ]
    results["subset"].update(
        {
            "alpo": {"runs": sub, "median": median_of(sub)},
            "alpo_threads1": {"runs": one, "median": median_of(one)},
            "alpo_nosync": nosync,
            "baseline": {"runs": base, "median": median_of(base)},
            "nosync_vs_baseline": same_rows(
                out_dir / f"alpo-subset-nosync-{a.pairs}.parquet",
                out_dir / f"baseline-subset-{a.pairs}.parquet",
            ),
        }
    )
    s = results["subset"]
    b = s["baseline"]["median"]
    alp, one1 = s["alpo"]["median"], s["alpo_threads1"]["median"]
    ratio = {
        "pairs_per_s": round(alp["pairs_per_s_median"] / b["pairs_per_s_median"], 1),
        "pairs_per_s_threads1": round(one1["pairs_per_s_median"] / b["pairs_per_s_median"], 1),
        "wall": round(b["wall_s_median"] / alp["wall_s_median"], 1),
        "wall_threads1": round(b["wall_s_median"] / one1["wall_s_median"], 1),
        "pairs_per_s_in_run": round(
            alp["pairs_per_s_in_run_median"] / b["pairs_per_s_in_run_median"], 1
        ),
    }
    s["ratio_alpo_over_baseline"] = ratio

    if "full" in results:
        m = results["full"]["median"]
        results["targets"] = {
            "wall_le_60s": m["wall_s_median"] <= 60,
            "wall_le_30s_stretch": m["wall_s_median"] <= 30,
            "peak_rss_le_4GB": m["peak_rss_mb_max"] <= 4000,
            "ratio_ge_50x": ratio["pairs_per_s"] >= 50,
        }
    name = f"align_speed-{a.pairs}" + (f"-subset{a.baseline_pairs}" if a.skip_full else "")
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=1))

    print("\nsummary (median of runs):")
    if "full" in results:
        m = results["full"]["median"]
        print(
            f"  full corpus: {m['pairs']:,} pairs in {m['wall_s_median']} s "
            f"(runs {m['wall_s_all']}), {m['pairs_per_s_median']:,} pairs/s, "
            f"peak RSS {m['peak_rss_mb_max']:.0f} MB"
        )
    for name in ("alpo", "alpo_threads1", "baseline"):
        m = s[name]["median"]
        print(
            f"  subset {name:14s}: {m['pairs']:,} pairs in {m['wall_s_median']} s "
            f"(runs {m['wall_s_all']}), {m['pairs_per_s_median']:,} pairs/s, "
            f"peak RSS {m['peak_rss_mb_max']:.0f} MB"
        )
    print(f"  alpo --no-sync vs baseline output: {s['nosync_vs_baseline']}")
    print(
        f"  ratio alpo/baseline pairs/s: {ratio['pairs_per_s']}x "
        f"(threads=1: {ratio['pairs_per_s_threads1']}x; wall time ratio {ratio['wall']}x; "
        f"in-run seconds {ratio['pairs_per_s_in_run']}x)"
    )
    if "targets" in results:
        print(f"  targets: {results['targets']}")
    print(f"  written: {path}")


if __name__ == "__main__":
    main()
