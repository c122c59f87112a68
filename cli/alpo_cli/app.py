"""The `alpo` command: a thin Typer front over the `alpo` library.

Every command: `--help`, exit 0 on success, exit 1 with one line naming the file and the reason on
a user error (a traceback only with `--debug`), rich progress for long work, `--json` for a
machine-readable summary printed last.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

import alpo
from alpo.exceptions import AlpoError, ConfigError

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


@app.command()
def prepare(
    aligned: Annotated[Path, typer.Argument(help="Aligned Parquet file from `alpo align`.")],
    pair: Annotated[str, typer.Option(help="Language pair SRC-TGT to prepare, e.g. zh-th.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: runs/{pair}/data).")
    ] = None,
    window: Annotated[int, typer.Option(help="Core lines per window (whole segments).")] = 25,
    context: Annotated[
        int, typer.Option(help="Context lines before and after the core (whole segments).")
    ] = 5,
    segmenter: Annotated[
        str, typer.Option(help="line (every line), punct (sentence-final punctuation) or llm.")
    ] = "line",
    sft_share: Annotated[
        float, typer.Option(help="Share of non-test windows for SFT; the rest is the pool.")
    ] = 0.8,
    test_titles: Annotated[
        str | None,
        typer.Option(
            help="Titles held out for test: a count picked by --seed, or names joined by "
            "commas (default: a tenth of the titles, none if there is only one)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the test pick and the SFT/pool split.")] = 1024,
    min_fragment: Annotated[
        int, typer.Option(help="Skip fragments shorter than this many lines.")
    ] = 10,
    instruction_language: Annotated[
        str, typer.Option(help="Instruction text of the prompts: en, or zh as the release.")
    ] = "en",
    paraphrase: Annotated[
        bool, typer.Option(help="Paraphrase the instruction of SFT prompts (augmentation).")
    ] = False,
    glossary: Annotated[
        Path | None, typer.Option(help="TSV of title, term, translation rows for the prompts.")
    ] = None,
    prompts: Annotated[
        bool, typer.Option(help="Also write the rendered prompt and answer of every window.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Redo even if the outputs are up to date.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary last.")] = False,
) -> None:
    """Cut prompt windows from an aligned corpus and split them into sft, pool and test.

    Windows hold whole segments and never cross a fragment or episode border; the test split
    holds whole titles that no training window contains. Writes sft.parquet, pool.parquet,
    test.parquet and manifest.json.
    """
    picked: int | list[str] | None = None
    if test_titles is not None:
        picked = (
            int(test_titles)
            if test_titles.strip().isdigit()
            else [t.strip() for t in test_titles.split(",") if t.strip()]
        )
    with (
        err.status("preparing windows", spinner="dots")
        if err.is_terminal and not as_json
        else nullcontext()
    ):
        manifest = alpo.prepare(
            aligned,
            pair,
            out,
            force=force,
            window=window,
            context=context,
            segmenter=segmenter,
            sft_share=sft_share,
            test_titles=picked,
            seed=seed,
            min_fragment=min_fragment,
            instruction_language=instruction_language,
            paraphrase=paraphrase,
            glossary=str(glossary) if glossary else None,
            prompts=prompts,
        )
    if as_json:
        typer.echo(json.dumps(manifest, ensure_ascii=False))
        return
    out_console = Console()
    if manifest.get("skipped"):
        out_console.print(f"{manifest['out']} is up to date (use --force to redo it)")
    splits = manifest["splits"]
    out_console.print(
        f"{manifest['rows']:,} aligned rows of {manifest['options']['pair']} -> "
        + ", ".join(f"{name} {s['windows']:,} windows" for name, s in splits.items())
        + f" in {manifest['out']}"
    )
    out_console.print(f"test titles: {', '.join(manifest['test_titles']) or 'none'}")
    d = manifest["dropped"]
    out_console.print(
        f"skipped: {d['short_fragments']} fragments under {manifest['options']['min_fragment']} "
        f"lines ({d['short_fragment_lines']} lines), {d['open_segment_lines']} lines of "
        "segments cut at a fragment end"
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`section.key=value` strings as a nested dict; values are TOML (`1e-5`, `true`, `"x"`,
    `["a", "b"]`), and a bare word is a string."""
    from alpo.config import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE (e.g. sft.lr=1e-5)")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(section, {})[name] = value
    return out


@app.command()
def train(
    pair: Annotated[str, typer.Option(help="Language pair SRC-TGT, e.g. zh-th.")],
    data: Annotated[
        Path | None, typer.Option(help="Prepared data folder (default: runs/{pair}/data).")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Where stages write (default: runs/{pair}).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config; its values override the preset's.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="tiny (embedded model, laptop CPU) or paper (the paper's recipe)."),
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(help="Run only this stage (repeatable). Default: every stage, in order."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config value: SECTION.KEY=VALUE (repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun stages even if they are up to date.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary last.")] = False,
) -> None:
    """Train a translation model for one language pair, stage by stage.

    Stages: sft (supervised fine-tuning in DeepSpeed), sample (candidate translations per
    segment, scored by an LLM judge), pairs (chosen/rejected, gate, weights, dynamic beta and
    prefix-mixed training records), ref (reference log-probs of every record, computed once),
    alpo (preference training in DeepSpeed; alpo.method = segment_dpo or outcome_dpo trains the
    paper's DPO baselines instead). Each stage resumes from its last
    checkpoint and is skipped when its inputs are unchanged (workdir/manifest.json). On CPU or one
    GPU the stages run in this process; with several GPUs or a hostfile, alpo starts itself again
    under torchrun or deepspeed, one process per GPU.
    """
    import subprocess

    from alpo import launch
    from alpo.config import load_config
    from alpo.train import STAGES, TRAINING_STAGES
    from alpo.train import train as run_train

    cfg = load_config(preset, config, parse_overrides(set_ or []))
    for name in stage or []:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    todo = [name for name in STAGES if name in (stage or STAGES)]
    results: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "{task.completed}/{task.total}",
        "{task.fields[info]}",
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_log(name: str, m: dict[str, Any]) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=m["total_steps"], info="")
            if name == "sample":
                info = (
                    f"round {m['step']}/{m['total_steps']}, "
                    f"{m['candidates_per_s']:,.1f} candidates/s, "
                    f"{m['judge_failures']} judge failures"
                )
            elif name == "alpo":
                info = (
                    f"loss {m['loss']:.4f}, accuracy {m['accuracy']:.0%}, "
                    f"margin {m['margin']:.3f}, {m['records_per_s']:,.1f} records/s"
                )
            else:
                info = f"loss {m['loss']:.4f}, {m['tokens_per_s']:,.0f} tok/s"
            progress.update(tasks[name], completed=m["step"], info=info)

        for name in todo:
            # Training stages on several GPUs run under a launcher, one process per GPU; the
            # others (sampling, judging) run here, where they can use every GPU themselves.
            argv = launch.with_stage(sys.argv[1:], name)
            command = launch.plan(cfg.launch, argv) if name in TRAINING_STAGES else None
            if command is not None:
                err.print(f"launching: {' '.join(command)}", highlight=False)
                code = subprocess.run(command, check=False).returncode
                if code:
                    raise typer.Exit(code)
                results[name] = {"launched": command}
                continue
            launch.prepare_environment(cfg.launch.master_port)
            results.update(
                run_train(
                    pair,
                    cfg,
                    data=data,
                    workdir=workdir,
                    stages=[name],
                    force=force,
                    on_log=on_log,
                )
            )
    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        typer.echo(json.dumps(results, ensure_ascii=False))
        return
    out_console = Console()
    for name, r in results.items():
        if "launched" in r:
            continue  # the launched processes printed their own summary
        if r.get("skipped"):
            out_console.print(f"{name}: up to date (use --force to rerun)")
            continue
        if name == "ref":
            out_console.print(
                f"ref: reference log-probs of {r['records']:,} records, {r['seconds']:.1f} s "
                f"-> {r['out']}"
            )
            continue
        if name == "alpo":
            out_console.print(
                f"alpo ({r['method']}): {r['steps']} steps on {r['records']:,} records, loss "
                f"{r['loss']:.4f}, accuracy {r['accuracy']:.0%}, margin {r['margin']:.3f}, "
                f"{r['records_per_s']:,.1f} records/s, {r['seconds']:.1f} s -> {r['out']}"
            )
            continue
        if name == "pairs":
            out_console.print(
                f"pairs: {r['records']:,} records from {r['gated']:,} of {r['segments']:,} "
                f"segments ({r['stages']} prefix stages); gated out: "
                f"{r['share_few_candidates']:.1%} few candidates, "
                f"{r['share_small_spread']:.1%} small spread, {r['share_no_pair']:.1%} no pair "
                f"-> {r['out']}"
            )
            continue
        if name == "sample":
            out_console.print(
                f"sample: {r['candidates']:,} candidates for {r['segments']:,} segments of "
                f"{r['windows']:,} windows in {r['rounds']} rounds; "
                f"{r['share_over_3_candidates']:.1%} of segments have more than 3 candidates, "
                f"{r['share_spread_over_5'] or 0:.1%} a score spread over 5; "
                f"{r['seconds']:.1f} s -> {r['out']}"
            )
            continue
        eval_loss = r.get("eval_loss")
        out_console.print(
            f"{name}: {r['steps']} steps on {r['train_windows']} windows, loss {r['loss']:.4f}"
            + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else "")
            + f", {r['tokens_per_s']:,.0f} tok/s, {r['seconds']:.1f} s -> {r['out']}"
        )


@app.command()
def translate(
    input_path: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="A subtitle file (SRT, ASS/SSA, WebVTT) or a folder."),
    ],
    model: Annotated[
        str, typer.Option(help="Model folder (e.g. runs/zh-th/alpo), .gguf or hub id.")
    ],
    pair: Annotated[str, typer.Option(help="Language pair SRC-TGT, e.g. zh-th.")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output file (its extension picks the format) or folder."),
    ],
    backend: Annotated[str, typer.Option(help="transformers, vllm or openai.")] = "transformers",
    base_url: Annotated[str, typer.Option(help="Server URL for --backend openai.")] = "",
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the server's API key.")
    ] = "OPENAI_API_KEY",
    glossary: Annotated[
        Path | None,
        typer.Option(help="TSV of title<TAB>term<TAB>translation; title * applies everywhere."),
    ] = None,
    window: Annotated[int, typer.Option(help="Lines translated per window.")] = 25,
    context: Annotated[int, typer.Option(help="Context lines shown on each side.")] = 5,
    retries: Annotated[
        int, typer.Option(help="Fresh samples for a wrong answer before the window is split.")
    ] = 1,
    temperature: Annotated[float, typer.Option(help="First try's temperature (0: greedy).")] = 0.0,
    max_cps: Annotated[
        float | None, typer.Option(help="Flag cues over this many characters per second.")
    ] = None,
    max_line: Annotated[
        int | None, typer.Option(help="Flag lines over this many characters.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    force: Annotated[bool, typer.Option(help="Rewrite outputs that already exist.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary last.")] = False,
) -> None:
    """Translate subtitle files with a trained model, keeping every cue, its timing and style.

    Cues go to the model in windows of numbered lines with context on both sides (the training
    prompt). An answer with the wrong number of lines is retried, then its window is split; a cue
    that still fails keeps its source text and is listed. The output format follows OUTPUT's
    extension (.srt, .vtt, .ass); for a folder, each file keeps its format and gets the target's
    language tag. Reading speed (characters per second, characters per line) is reported per
    file, with cues over the target script's limits flagged.
    """
    from alpo import models
    from alpo.generation import make_backend
    from alpo.prepare import read_glossary
    from alpo.translate import TranslateSettings, check_request, translate_files

    settings = TranslateSettings(
        window=window,
        context=context,
        retries=retries,
        temperature=temperature,
        max_cps=max_cps,
        max_line=max_line,
    )
    check_request(input_path, out, pair, settings)
    terms = read_glossary(glossary) if glossary else None
    if backend != "openai":
        models.resolve(model)  # a missing model fails before anything loads
    engine = make_backend(backend, model, base_url=base_url, api_key_env=api_key_env, dtype=dtype)
    tokenizer = models.load_tokenizer(model)
    with Progress(
        "[progress.description]{task.description}",
        "{task.fields[info]}",
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as progress:
        task = progress.add_task("translating", info="")

        def on_round(round_: int, done: int, pending: int) -> None:
            progress.update(task, info=f"round {round_}: {done} windows done, {pending} to retry")

        summary = translate_files(
            input_path,
            out,
            pair,
            engine,
            tokenizer,
            settings,
            glossary=terms,
            force=force,
            on_round=on_round,
        )
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
        return
    for bad in summary["bad_files"]:
        err.print(f"[red]skipped[/red] {bad['file']}: {bad['error']}", highlight=False)
    for r in summary["reports"]:
        reading = r["reading"]
        typer.echo(
            f"{r['out']}: {r['translated']}/{r['cues'] - r['empty']} cues translated, "
            f"{len(r['kept_source'])} kept their source text; median "
            f"{reading['median_cps']} cps, {len(reading['over_cps'])} cues over "
            f"{reading['max_cps']:g} cps, {len(reading['over_line'])} over "
            f"{reading['max_line']} characters"
        )
        for failed in r["kept_source"]:
            typer.echo(f"  cue {failed['cue']} kept its source text: {failed['source']}")
    if summary["skipped_existing"]:
        typer.echo(f"{summary['skipped_existing']} outputs already existed (use --force)")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="Model folder, .gguf file, hub id or `embedded`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one).")] = 8000,
    served_name: Annotated[
        str | None, typer.Option(help="Model name clients use (default: MODEL as given).")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Require the value of this environment variable as bearer token."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/completions, /v1/chat/completions).

    Runs the transformers backend on CPU or GPU; sampling requests may ask for the sampled token
    ids (return_token_ids) and to stop after a number of lines (stop_lines); chat requests with
    the judge's score schema as response_format are decoded under it. Stop with Ctrl-C.
    """
    from alpo.generation import TransformersBackend
    from alpo.serve import make_server

    backend = TransformersBackend(model, dtype=dtype)
    server = make_server(backend, host, port, served_name, api_key_env)
    bound_port = server.server_address[1]
    typer.echo(f"serving {served_name or model} at http://{host}:{bound_port}/v1", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


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
