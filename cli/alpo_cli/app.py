"""The `alpo` command: a thin Typer front over the `alpo` library.

Every command: `--help`, exit 0 on success, exit 1 with one line naming the file and the reason on
a user error (a traceback only with `--debug`), rich progress for long work, `--json` for a
machine-readable summary printed last.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

import alpo
from alpo.exceptions import AlpoError

app = typer.Typer(
    name="alpo",
    help="Train expressive subtitle-translation LLMs with ALPO and translate subtitle files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
state = {"debug": False}


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"alpo {alpo.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    state["debug"] = debug


@app.command()
def align(
    raw: Annotated[
        list[Path], typer.Argument(help="Subtitle files or folders (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    pair: Annotated[
        str | None,
        typer.Option(help="Keep one direction, SRC-TGT (e.g. zh-th). Default: every pair."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="JSON report path (default: OUT.report.json).")
    ] = None,
    max_gap: Annotated[
        float, typer.Option(help="Largest start-time gap, in seconds, of an aligned cue pair.")
    ] = 0.7,
    mode: Annotated[
        str,
        typer.Option(help="nearest (the paper's rule) or overlap (1:1, 1:2 and 2:1 links)."),
    ] = "nearest",
    sync: Annotated[
        bool,
        typer.Option(help="Detect and correct a constant offset or frame-rate drift first."),
    ] = True,
    keep_top: Annotated[
        bool, typer.Option(help="Keep top-positioned cues ({\\an8} signs and notices).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="Worker threads (default: one per core).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo the run even if OUT is up to date.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary last.")] = False,
) -> None:
    """Align the cues of bilingual subtitle tracks into a Parquet corpus.

    Files of one episode are paired by name (NAME.LANG.EXT, NAME_LANG.EXT, NAME-LANG.EXT, BCP-47
    tags, the MuSC layout); each source cue is matched to the target cue starting nearest to it
    within --max-gap. Bad files are skipped and listed in the report; the run goes on.
    """
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as progress:
        task = progress.add_task("aligning", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = alpo.align_to_parquet(
            raw,
            out,
            pair=pair,
            max_gap=max_gap,
            report=report,
            sync=sync,
            mode=mode,
            keep_top=keep_top,
            threads=threads,
            force=force,
            on_progress=on_progress,
        )
    summary = align_summary(result)
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        print_align_summary(summary)


def align_summary(r: dict[str, Any]) -> dict[str, Any]:
    total = r["aligned"] + r["unaligned"]
    return {
        "output": r["output"],
        "report": r.get("report"),
        "skipped_run": bool(r.get("skipped")),
        "files_found": r["files_found"],
        "files_paired": r["files_paired"],
        "files_skipped": r["files_skipped"],
        "files_partial": r["files_partial"],
        "duplicate_files": r["duplicate_files"],
        "episodes": len(r["episodes"]),
        "episodes_synced": r["episodes_synced"],
        "aligned": r["aligned"],
        "unaligned": r["unaligned"],
        "aligned_share": round(r["aligned"] / total, 4) if total else 0.0,
        "pairs": r["pairs"],
        "duplicates_removed": r["duplicates_removed"],
        "encodings": r["encodings"],
        "seconds": r["seconds"],
    }


def print_align_summary(s: dict[str, Any]) -> None:
    out = Console()
    if s["skipped_run"]:
        out.print(f"{s['output']} is up to date (use --force to redo it)")
    out.print(
        f"{s['aligned']:,} cue pairs from {s['episodes']:,} episode pairs "
        f"({s['aligned_share']:.1%} of source cues) -> {s['output']}"
    )
    for name, p in s["pairs"].items():
        out.print(f"  {name}: {p['episodes']} episodes, {p['aligned_share']:.1%} aligned")
    out.print(
        f"files: {s['files_found']} found, {s['files_paired']} paired, "
        f"{len(s['files_skipped'])} skipped, {len(s['files_partial'])} read in part, "
        f"{len(s['duplicate_files'])} duplicates left out; timing corrected in "
        f"{s['episodes_synced']} episodes; {s['seconds']:.1f} s"
    )
    for k in s["files_skipped"][:20]:
        out.print(f"  skipped {k['file']}: {k['reason']}", highlight=False)
    if len(s["files_skipped"]) > 20:
        out.print(f"  ... {len(s['files_skipped']) - 20} more in {s['report']}")
    for k in s["files_partial"][:20]:
        out.print(f"  partly read {k['file']}: line {k['line']}: {k['reason']}", highlight=False)
    out.print(f"report: {s['report']}")


def main() -> None:
    """Entry point of the `alpo` script: user errors become one line and exit code 1."""
    try:
        app()
    except (AlpoError, OSError) as e:
        if state["debug"]:
            raise
        message = str(e) if isinstance(e, AlpoError) else f"{getattr(e, 'filename', '')}: {e}"
        err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
