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
        str,
        typer.Option(
            help="line (every line), punct (sentence-final punctuation) or llm (continuity "
            "labelled by --segment-model over windows of 25, 30 and 35 lines, majority vote)."
        ),
    ] = "line",
    segment_model: Annotated[
        str, typer.Option(help="Model of the llm segmenter (folder, hub id or served name).")
    ] = "",
    segment_backend: Annotated[
        str, typer.Option(help="How it is served: transformers, vllm or openai.")
    ] = "transformers",
    segment_base_url: Annotated[
        str, typer.Option(help="Server URL for --segment-backend openai.")
    ] = "",
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
            segment_model=segment_model,
            segment_backend=segment_backend,
            segment_base_url=segment_base_url,
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


eval_app = typer.Typer(
    help="Score translation systems with LLM judges; check a judge against human scores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(eval_app, name="eval")


def eval_judges(
    specs: list[str] | None,
    config: Path | None,
    preset: str | None,
    backend: str | None,
    base_url: str | None,
) -> tuple[list[Any], Any]:
    """The judges named by --judge (default: the config's judge model), and the config."""
    from alpo.config import load_config
    from alpo.evaluate import parse_judge

    cfg = load_config(preset, config)
    j = cfg.judge
    options = {
        "backend": backend or j.backend,
        "base_url": base_url if base_url is not None else j.base_url,
        "api_key_env": j.api_key_env,
        "concurrency": j.concurrency,
        "timeout": j.timeout,
        "thinking_off": j.thinking_off,
    }
    return [parse_judge(spec, **options) for spec in (specs or [j.model])], cfg


class EvalProgress:
    """Rich progress bars for `alpo eval` events: one bar per system translated or judged."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            "{task.completed}/{task.total} shards",
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not enabled,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> EvalProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        if event["stage"] == "translate":
            name = f"translating {event['system']}"
        elif "system" in event:
            name = f"judge {event['judge']}: {event['system']}"
        else:
            name = f"judge {event['judge']}"
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=event["total"])
        self.progress.update(self.tasks[name], completed=event["done"], total=event["total"])


@eval_app.callback(invoke_without_command=True)
def eval_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Test windows: the test.parquet that prepare wrote.")
    ] = None,
    system: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=MODEL_DIR (translated here; also a .gguf, hub id or served name) or "
            "NAME=FILE of ready translations (.parquet, .jsonl, .csv). Repeatable; the human "
            "reference is always scored as `reference`."
        ),
    ] = None,
    judge: Annotated[
        list[str] | None,
        typer.Option(help="Judge model, [NAME=]MODEL (repeatable; default: the config's)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for scores.json and report.html.")
    ] = None,
    judge_backend: Annotated[
        str | None,
        typer.Option(help="Judges' backend: transformers, vllm or openai (default: config)."),
    ] = None,
    judge_base_url: Annotated[
        str | None, typer.Option(help="Judges' server URL for --judge-backend openai.")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Systems' backend: transformers, vllm or openai.")
    ] = "transformers",
    base_url: Annotated[str, typer.Option(help="Systems' server URL for --backend openai.")] = "",
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the systems' server API key.")
    ] = "OPENAI_API_KEY",
    config: Annotated[
        Path | None, typer.Option(help="TOML config (its [judge] and [model] sections).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="tiny or paper (judge defaults).")] = None,
    limit: Annotated[
        int,
        typer.Option(help="Windows per direction, picked by --seed (0: all; the paper: 100)."),
    ] = 0,
    rubric: Annotated[
        str,
        typer.Option(
            help="separate (one judge prompt per dimension, the paper's protocol) or joint "
            "(one prompt, three scores)."
        ),
    ] = "separate",
    votes: Annotated[int, typer.Option(help="Judge replies per score, averaged.")] = 1,
    judge_temperature: Annotated[
        float, typer.Option(help="Judge temperature (the paper's evaluation: 0).")
    ] = 0.0,
    judge_retries: Annotated[
        int | None, typer.Option(help="Asks again after an invalid reply (default: config).")
    ] = None,
    judge_language: Annotated[
        str | None, typer.Option(help="Judge prompt language, en or zh (default: config).")
    ] = None,
    context_lines: Annotated[
        int, typer.Option(help="Source context lines shown on each side of the core.")
    ] = 5,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples of the confidence intervals.")
    ] = 1000,
    tie_margin: Annotated[
        float, typer.Option(help="Pairwise: score differences up to this are ties.")
    ] = 0.0,
    tokens_per_line: Annotated[
        int, typer.Option(help="Systems: new tokens allowed per line of a window.")
    ] = 64,
    translate_retries: Annotated[
        int, typer.Option(help="Systems: fresh samples for a wrong answer before a split.")
    ] = 1,
    instruction_language: Annotated[
        str | None,
        typer.Option(help="Systems' prompt language, en or zh (default: the data's manifest)."),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16 or float16 (default: config).")
    ] = None,
    examples: Annotated[
        int, typer.Option(help="Windows shown per direction where the systems differ most.")
    ] = 5,
    shard_size: Annotated[int, typer.Option(help="Windows per resumable shard.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of --limit, judging and the bootstrap.")] = 1234,
    force: Annotated[bool, typer.Option(help="Redo every shard instead of resuming.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary last.")] = False,
) -> None:
    """Score systems (and the human reference) on accuracy, naturalness and vividness.

    Every window of --data is translated by each --system NAME=MODEL_DIR (its core lines kept;
    a line that fails every try counts as missing) or read from NAME=FILE, then each judge gives
    each window's translation three 0..100 scores (accuracy; naturalness; vividness, ignoring
    accuracy). Writes OUT/scores.json (means per direction, system, judge and dimension with
    bootstrap intervals, pairwise win/tie/loss, judge failures) and OUT/report.html (tables and
    plots in one file). Resumes from OUT/shards; --force starts afresh. `alpo eval agreement`
    checks a judge against human scores.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    from alpo.evaluate import EvalSettings, ModelOptions, parse_system, run_eval
    from alpo.sft import prepare_options

    if data is None:
        raise ConfigError("alpo eval needs --data (the test.parquet that prepare wrote)")
    if out is None:
        raise ConfigError("alpo eval needs --out (a folder for scores.json and report.html)")
    systems = [parse_system(spec, backend) for spec in system or []]
    judges, cfg = eval_judges(judge, config, preset, judge_backend, judge_base_url)
    settings = EvalSettings(
        rubric=rubric,
        votes=votes,
        retries=cfg.judge.retries if judge_retries is None else judge_retries,
        temperature=judge_temperature,
        max_new_tokens=cfg.judge.max_new_tokens,
        language=judge_language or cfg.judge.language,
        context_lines=context_lines,
        bootstrap=bootstrap,
        tie_margin=tie_margin,
        shard_size=shard_size,
        examples=examples,
        seed=seed,
    )
    options = ModelOptions(
        backend=backend,
        base_url=base_url,
        api_key_env=api_key_env,
        dtype=dtype or cfg.model.dtype,
        trust_remote_code=cfg.model.trust_remote_code,
        vllm=asdict(cfg.vllm),
        tokens_per_line=tokens_per_line,
        retries=translate_retries,
        instruction_language=instruction_language
        or prepare_options(data.parent).get("instruction_language", "en"),
    )
    with EvalProgress(not as_json and err.is_terminal) as progress:
        summary = run_eval(
            data,
            systems,
            judges,
            out,
            settings,
            options,
            limit=limit,
            force=force,
            on_progress=progress,
        )
    if as_json:
        brief = {k: v for k, v in summary.items() if k not in ("window_scores", "examples")}
        typer.echo(json.dumps(brief, ensure_ascii=False))
        return
    print_eval_summary(summary)


def print_eval_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    out_console = Console(soft_wrap=True)
    for p, by_system in s["scores"].items():
        table = Table(title=f"{p}: {s['directions'][p]['windows']} windows, mean over judges")
        table.add_column("system")
        for d in s["dimensions"]:
            table.add_column(d, justify="right")
        for name, by_judge in by_system.items():
            cells = []
            for d in s["dimensions"]:
                v = by_judge["all"][d]
                if v["mean"] is None:
                    cells.append("-")
                else:
                    cells.append(f"{v['mean']:.1f} [{v['ci'][0]:.1f}, {v['ci'][1]:.1f}]")
            table.add_row(name, *cells)
        out_console.print(table)
    for name, info in s["systems"].items():
        if info["missing_lines"]:
            out_console.print(
                f"{name}: {info['missing_lines']} of {info['lines']} lines missing (scored as "
                "missing)",
                highlight=False,
            )
    for name, j in s["judges"].items():
        out_console.print(
            f"judge {name}: {j['judged']} scores asked, {j['unscored']} unscored, "
            f"{j['rejected_replies']} replies rejected",
            highlight=False,
        )
    out_console.print(
        f"{s['seconds']:.1f} s -> {s['out']}/scores.json, {s['out']}/report.html", highlight=False
    )


@eval_app.command("agreement")
def eval_agreement(
    human: Annotated[
        Path,
        typer.Option(
            help="CSV of human scores: direction (or pair), source, translation, human (0..100); "
            "optionally window_id, system."
        ),
    ],
    judge: Annotated[
        list[str] | None,
        typer.Option(help="Judge model, [NAME=]MODEL (repeatable; default: the config's)."),
    ] = None,
    judge_backend: Annotated[
        str | None,
        typer.Option(help="Judges' backend: transformers, vllm or openai (default: config)."),
    ] = None,
    judge_base_url: Annotated[
        str | None, typer.Option(help="Judges' server URL for --judge-backend openai.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config (its [judge] section).")] = None,
    preset: Annotated[str | None, typer.Option(help="tiny or paper (judge defaults).")] = None,
    rubric: Annotated[
        str,
        typer.Option(
            help="reward (the sample stage's listwise prompt: the judge as reward model) or "
            "accuracy, naturalness, vividness (eval's prompts)."
        ),
    ] = "reward",
    votes: Annotated[
        int | None, typer.Option(help="Replies per score (default: config for reward, else 1).")
    ] = None,
    judge_temperature: Annotated[
        float | None,
        typer.Option(help="Judge temperature (default: config for reward, else 0)."),
    ] = None,
    judge_retries: Annotated[
        int | None, typer.Option(help="Asks again after an invalid reply (default: config).")
    ] = None,
    judge_language: Annotated[
        str | None, typer.Option(help="Judge prompt language, en or zh (default: config).")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Trust a judge when Spearman's rho reaches this everywhere.")
    ] = 0.82,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: HUMAN's name + -agreement)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the judge's shuffles and sampling.")] = 1234,
    force: Annotated[bool, typer.Option(help="Judge again instead of resuming.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary last.")] = False,
) -> None:
    """How well a judge agrees with human scores of the same translations, per direction.

    The judge scores every translation of --human; Spearman's rho (average ranks for ties),
    Kendall's tau-b and a Bland-Altman summary (judge minus human: bias and 95% limits of
    agreement) are reported per direction and overall. The paper trusts a judge as reward
    model when rho >= 0.82 in every direction. Writes OUT/agreement.json, OUT/agreement.parquet
    and OUT/report.html (scatter and Bland-Altman plots).
    """
    from dataclasses import asdict

    from alpo.agreement import AgreementSettings, run_agreement
    from alpo.evaluate import ModelOptions

    judges, cfg = eval_judges(judge, config, preset, judge_backend, judge_base_url)
    reward = rubric == "reward"
    settings = AgreementSettings(
        rubric=rubric,
        votes=votes if votes is not None else (cfg.judge.votes if reward else 1),
        retries=cfg.judge.retries if judge_retries is None else judge_retries,
        temperature=judge_temperature
        if judge_temperature is not None
        else (cfg.judge.temperature if reward else 0.0),
        max_new_tokens=cfg.judge.max_new_tokens,
        language=judge_language or cfg.judge.language,
        threshold=threshold,
        seed=seed,
    )
    target = out or human.with_name(f"{human.stem}-agreement")
    with EvalProgress(not as_json and err.is_terminal) as progress:
        summary = run_agreement(
            human,
            judges,
            target,
            settings,
            ModelOptions(
                dtype=cfg.model.dtype,
                trust_remote_code=cfg.model.trust_remote_code,
                vllm=asdict(cfg.vllm),
            ),
            force=force,
            on_progress=progress,
        )
    if as_json:
        brief = {k: v for k, v in summary.items() if k != "points"}
        typer.echo(json.dumps(brief, ensure_ascii=False))
        return
    out_console = Console(soft_wrap=True)
    for name, r in summary["judges"].items():
        verdict = "trusted" if r["trusted"] else "not trusted"
        out_console.print(
            f"judge {name}: {verdict} as reward model (rho >= {summary['threshold']} in every "
            f"direction); {r['unscored']} translations unscored, {r['rejected_replies']} replies "
            "rejected",
            highlight=False,
        )
        for p, d in [*r["directions"].items(), ("all", r["all"])]:
            ba = d["bland_altman"]
            rho = "-" if d["spearman"] is None else f"{d['spearman']:.3f}"
            tau = "-" if d["kendall"] is None else f"{d['kendall']:.3f}"
            bias = (
                "-"
                if ba["mean_diff"] is None
                else f"{ba['mean_diff']:.1f} (limits {ba['loa_low']:.1f} to {ba['loa_high']:.1f})"
            )
            out_console.print(
                f"  {p}: rho {rho}, tau-b {tau}, n {d['n']}, bias {bias}", highlight=False
            )
    out_console.print(
        f"{summary['seconds']:.1f} s -> {summary['out']}/agreement.json, "
        f"{summary['out']}/report.html",
        highlight=False,
    )


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
