"""From an aligned corpus to the three datasets every later stage reads.

`prepare` reads `alpo align`'s Parquet output, labels segments (utterances of one or more lines),
cuts prompt windows of whole segments (25 core lines plus 5 lines of context on each side by
default) that never cross a fragment or episode border, holds whole titles out as the test
split, splits the rest into SFT and pool windows by a seeded shuffle, and writes
`sft.parquet`, `pool.parquet`, `test.parquet` and `manifest.json`. The window cutting runs in
the Rust core; polars does the rest. Same input and options give byte-identical outputs. The
instruction language and paraphrasing recorded in the manifest are what later stages render
prompts with (`alpo.prompts`); `prompts=True` also writes the rendered prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from alpo import _core
from alpo.align import PathLike, parse_pair, write_json_atomic
from alpo.exceptions import ConfigError, InputError

REQUIRED_COLUMNS = ("pair", "title", "episode", "line", "fragment", "src_text", "tgt_text")
SEGMENTERS = ("line", "punct", "llm")
SPLITS = ("sft", "pool", "test")

# Sentence-final marks: Latin and Cyrillic, CJK full-width, Arabic, Urdu and Devanagari stops,
# possibly followed by closing quotes or brackets. Thai and Chinese subtitles often carry no
# final mark at all, so `punct` keeps their lines together; `line` suits them better. An
# ellipsis means the utterance goes on, so it does not end a sentence.
_FINAL = re.compile(r"(?:[.!?。！？；;؟۔।♪]|[.!?。！？][\"'”’」』）)\]]+)\s*$")
_TRAILING_ELLIPSIS = re.compile(r"(?:\.\.\.|…|。。。)\s*$")


@dataclass
class PrepareOptions:
    """Options of `alpo prepare`; the manifest records them."""

    #: source-target language pair, ISO 639-1 (`zh-th`)
    pair: str
    #: core lines per window (whole segments, so a window may hold a few more)
    window: int = 25
    #: context lines before and after the core (whole segments)
    context: int = 5
    #: fragments shorter than this many lines are skipped
    min_fragment: int = 10
    #: `line` (every line its own segment), `punct` (sentence-final punctuation), `llm`
    #: (continuity labelled by a model, `alpo.segmenting`)
    segmenter: str = "line"
    #: the `llm` segmenter's model (folder, hub id or served name) and how it is served
    segment_model: str = ""
    segment_backend: str = "transformers"
    segment_base_url: str = ""
    #: share of the non-test windows that go to SFT; the rest form the ALPO prompt pool
    sft_share: float = 0.8
    #: titles held out for test: a count picked by seed, or the titles' names
    test_titles: int | list[str] | None = None
    #: seed of the test-title pick and the SFT/pool shuffle
    seed: int = 1024
    #: language of the instruction text in rendered prompts: `en` or `zh` (the release's)
    instruction_language: str = "en"
    #: paraphrase the instruction of SFT prompts (the release's prompt augmentation)
    paraphrase: bool = False
    #: TSV with `title<TAB>term<TAB>translation` rows: each window gets a `glossary` column of
    #: its title's terms that occur in it, which the prompts show
    glossary: str | None = None
    #: also write `prompt` and `answer` columns, rendered by `alpo.prompts` (for inspection and
    #: for tools outside alpo; the stages render prompts themselves with the options above)
    prompts: bool = False

    def check(self) -> None:
        if self.window < 1 or self.context < 0 or self.min_fragment < 1:
            raise ConfigError("--window and --min-fragment must be >= 1, --context >= 0")
        if not 0.0 <= self.sft_share <= 1.0:
            raise ConfigError(f"--sft-share must be between 0 and 1, got {self.sft_share}")
        if self.segmenter not in SEGMENTERS:
            raise ConfigError(f"unknown segmenter {self.segmenter!r} (use {', '.join(SEGMENTERS)})")
        if self.segmenter == "llm" and not self.segment_model:
            raise ConfigError("--segmenter llm needs --segment-model (the labelling model)")
        if self.segment_backend not in ("transformers", "vllm", "openai"):
            raise ConfigError("--segment-backend must be transformers, vllm or openai")
        if self.segment_backend == "openai" and not self.segment_base_url:
            raise ConfigError("--segment-backend openai needs --segment-base-url")
        if self.instruction_language not in ("en", "zh"):
            raise ConfigError("--instruction-language must be en or zh")


def read_aligned(path: PathLike, pair: str) -> pl.DataFrame:
    """The rows of `pair` from an aligned Parquet file, sorted, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    scan = pl.scan_parquet(path)
    try:
        schema = scan.collect_schema()
    except Exception as e:  # polars raises several types for a file that is not Parquet
        raise InputError(f"{path}: not a readable Parquet file ({type(e).__name__})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    # Only the pair's rows and the columns used are read (predicate and projection pushdown).
    rows = (
        scan.filter(pl.col("pair") == pair)
        .select(c for c in REQUIRED_COLUMNS if c != "pair")
        .collect()
    )
    if rows.height == 0:
        pairs = scan.select(pl.col("pair").unique()).collect()["pair"].to_list()
        if not pairs:
            raise InputError(f"{path}: the table is empty")
        found = ", ".join(sorted(pairs))
        raise InputError(f"{path}: no rows for pair {pair} (pairs in the file: {found})")
    # `alpo align` writes rows in this order already; sorting would copy every column.
    if in_order(rows):
        return rows
    return rows.sort("title", "episode", "line", maintain_order=True)


def in_order(rows: pl.DataFrame) -> bool:
    """Whether rows are sorted by (title, episode, line)."""
    t, e, n = pl.col("title"), pl.col("episode"), pl.col("line")
    step = (t > t.shift(1)) | (
        (t == t.shift(1)) & ((e > e.shift(1)) | ((e == e.shift(1)) & (n >= n.shift(1))))
    )
    return bool(rows.select(step.fill_null(True).all()).item())


def ends_sentence(text: pl.Expr) -> pl.Expr:
    """Whether a line ends with sentence-final punctuation (and no trailing ellipsis)."""
    return text.str.contains(_FINAL.pattern) & ~text.str.contains(_TRAILING_ELLIPSIS.pattern)


def label_segments(
    rows: pl.DataFrame, segmenter: str, continues: pl.Series | None = None
) -> pl.DataFrame:
    """Columns `group` (u32: fragment of an episode), `starts` and `open_end` for the windows.
    The `llm` segmenter takes its labels in `continues` (a line continues the previous one)."""
    border = (
        (pl.col("title") != pl.col("title").shift(1))
        | (pl.col("episode") != pl.col("episode").shift(1))
        | (pl.col("fragment") != pl.col("fragment").shift(1))
    ).fill_null(True)
    last_of_episode = (
        (pl.col("title") != pl.col("title").shift(-1))
        | (pl.col("episode") != pl.col("episode").shift(-1))
    ).fill_null(True)
    if segmenter == "line":
        starts = pl.lit(True)
        open_end = pl.lit(False)
    elif segmenter == "llm":
        if continues is None:
            raise ConfigError("the llm segmenter needs its labels")
        cont = pl.lit(continues)
        starts = ~cont
        open_end = cont.shift(-1).fill_null(False) & ~last_of_episode
    else:  # punct: a line continues the previous one unless that one ended a sentence
        ends = ends_sentence(pl.col("src_text"))
        starts = border | ends.shift(1).fill_null(True)
        open_end = ~ends & ~last_of_episode
    return rows.select(
        border.cum_sum().cast(pl.UInt32).alias("group"),
        (starts | border).alias("starts"),
        open_end.alias("open_end"),
    )


def window_id(pair: str, title: str, episode: str, line: int) -> str:
    """Stable id of a window: its pair, title, episode and the line its core starts at."""
    key = f"{pair}\x1f{title}\x1f{episode}\x1f{line}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def cut_windows(
    rows: pl.DataFrame, opts: PrepareOptions, continues: pl.Series | None = None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Windows with the contract's columns; the cutting and the gathering of each window's
    lines happen in the Rust core."""
    # One chunk, so the Rust side can share the text buffers instead of copying the texts.
    labels = (
        label_segments(rows, opts.segmenter, continues)
        .with_columns(rows["src_text"], rows["tgt_text"])
        .rechunk()
    )
    table, dropped_json = _core.prepare_windows(
        labels, core_lines=opts.window, context_lines=opts.context, min_lines=opts.min_fragment
    )
    win = pl.DataFrame(table)
    meta = rows.select("title", "episode", "line")[win["start"] + win["core_start"]]
    ids = [
        window_id(opts.pair, t, e, ln)
        for t, e, ln in zip(meta["title"], meta["episode"], meta["line"], strict=True)
    ]
    out = pl.DataFrame(
        {
            "window_id": pl.Series(ids, dtype=pl.String),
            "pair": pl.Series([opts.pair] * win.height, dtype=pl.String),
            "title": meta["title"],
            "episode": meta["episode"],
            "src_lines": win["src_lines"],
            "ref_lines": win["ref_lines"],
            "core_start": win["core_start"],
            "core_end": win["core_end"],
            "segment_of_line": win["segment_of_line"],
        }
    )
    return out, json.loads(dropped_json)


def pick_test_titles(
    titles: list[str], test_titles: int | list[str] | None, seed: int
) -> list[str]:
    if isinstance(test_titles, list):
        unknown = [t for t in test_titles if t not in titles]
        if unknown:
            raise ConfigError(f"--test-titles: no title named {', '.join(unknown)} in the data")
        return sorted(test_titles)
    n = (
        test_titles
        if test_titles is not None
        else (max(1, round(0.1 * len(titles))) if len(titles) > 1 else 0)
    )
    if n < 0 or n >= len(titles) and n > 0:
        raise ConfigError(
            f"--test-titles {n}: the data has {len(titles)} titles; keep at least one for training"
        )
    return sorted(random.Random(seed).sample(sorted(titles), n))


def assign_splits(windows: pl.DataFrame, test: list[str], sft_share: float, seed: int) -> pl.Series:
    """The split of every window: whole test titles, the rest shuffled by seed into sft/pool."""
    is_test = windows["title"].is_in(test).to_list()
    rest = [i for i, t in enumerate(is_test) if not t]
    random.Random(seed).shuffle(rest)
    labels = ["test" if t else "pool" for t in is_test]
    for i in rest[: round(sft_share * len(rest))]:
        labels[i] = "sft"
    return pl.Series("split", labels, dtype=pl.String)


def read_glossary(path: PathLike) -> dict[str, list[tuple[str, str]]]:
    """`title<TAB>term<TAB>translation` rows (a header row is allowed) -> terms per title."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such glossary file")
    terms: dict[str, list[tuple[str, str]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or (n == 1 and line.lower().startswith("title\t")):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise InputError(f"{path}: line {n}: expected title<TAB>term<TAB>translation")
        title, term, translation = (p.strip() for p in parts)
        terms.setdefault(title, []).append((term, translation))
    return terms


def window_glossary(
    src_lines: Sequence[str], terms: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The title's terms that occur in the window, in order of first occurrence, longest first
    where two start at the same place."""
    text = "\n".join(src_lines)
    found = [(text.find(t), -len(t), t, tr) for t, tr in terms if t in text]
    return [(t, tr) for _, _, t, tr in sorted(found)]


def add_glossary(df: pl.DataFrame, glossary: dict[str, list[tuple[str, str]]]) -> pl.DataFrame:
    """Column `glossary`: the title's terms found in each window's source lines."""
    entries = [
        [{"term": t, "translation": tr} for t, tr in window_glossary(src, glossary.get(title, []))]
        for title, src in zip(df["title"], df["src_lines"], strict=True)
    ]
    dtype = pl.List(pl.Struct({"term": pl.String, "translation": pl.String}))
    return df.with_columns(pl.Series("glossary", entries, dtype=dtype))


def add_prompts(df: pl.DataFrame, opts: PrepareOptions, paraphrase: bool) -> pl.DataFrame:
    """Columns `prompt` (instruction, glossary and numbered source lines, before any chat
    template) and `answer` (numbered reference lines), rendered by `alpo.prompts`."""
    from alpo.prompts import window_texts

    prompts, answers = window_texts(
        df,
        opts.pair,
        instruction_language=opts.instruction_language,
        paraphrase_seed=opts.seed if paraphrase else None,
    )
    return df.with_columns(
        pl.Series("prompt", prompts, dtype=pl.String),
        pl.Series("answer", answers, dtype=pl.String),
    )


def read_windows(path: Path, columns: Sequence[str]) -> pl.DataFrame:
    """A split that `prepare` wrote, checked for the `columns` a stage needs; one-line
    InputErrors for a missing, unreadable or incomplete file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (run alpo prepare first)")
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    missing = set(columns) - set(frame.columns)
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return frame


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def prepare(
    aligned: PathLike,
    pair: str,
    out: PathLike | None = None,
    *,
    force: bool = False,
    segment_client: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Prepare `sft`, `pool` and `test` windows from an aligned corpus; returns the manifest.

    `options` are the fields of `PrepareOptions` (window, context, segmenter, segment_model,
    sft_share, test_titles, seed, instruction_language, paraphrase, glossary, min_fragment);
    `segment_client` serves the `llm` segmenter instead of a backend built from them. `out`
    defaults to `runs/{pair}/data`. Outputs are written to temporary names and renamed; a rerun
    with the same input and options finds them and returns the manifest (`skipped: true`).
    """
    src, tgt = parse_pair(pair) or ("", "")
    opts = PrepareOptions(pair=f"{src}-{tgt}", **options)
    opts.check()
    aligned = Path(aligned)
    out_dir = Path(out) if out else Path("runs") / opts.pair / "data"
    manifest_path = out_dir / "manifest.json"
    if not aligned.is_file():
        raise InputError(f"{aligned}: no such file")
    inputs = {"aligned": {"path": str(aligned), "sha256": file_digest(aligned)}}
    if opts.glossary:
        inputs["glossary"] = {"path": opts.glossary, "sha256": file_digest(Path(opts.glossary))}
    settings = asdict(opts)
    if not force and manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            previous = {}
        done = all((out_dir / f"{s}.parquet").is_file() for s in SPLITS)
        if done and previous.get("inputs") == inputs and previous.get("options") == settings:
            return {**previous, "skipped": True}

    started = time.perf_counter()
    rows = read_aligned(aligned, opts.pair)
    glossary = read_glossary(opts.glossary) if opts.glossary else {}
    n_rows = rows.height
    titles = sorted(rows["title"].unique().to_list())
    test = pick_test_titles(titles, opts.test_titles, opts.seed)
    continues, segmentation = None, None
    if opts.segmenter == "llm":
        continues, segmentation = llm_continuity(rows, opts, segment_client)
    windows, dropped = cut_windows(rows, opts, continues)
    del rows  # the windows hold copies of what they need; free the rest before writing
    if windows.height == 0:
        raise InputError(
            f"{aligned}: no window could be cut for {opts.pair}: every fragment is shorter than "
            f"{opts.min_fragment} lines"
        )
    splits = assign_splits(windows, test, opts.sft_share, opts.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in SPLITS:
        part = windows.lazy().filter(splits == name)
        if glossary or opts.prompts:
            df = part.collect()
            if glossary:
                df = add_glossary(df, glossary)
            if opts.prompts:
                df = add_prompts(df, opts, paraphrase=opts.paraphrase and name == "sft")
            part = df.lazy()
        write_parquet_atomic(part, out_dir / f"{name}.parquet")
        sizes = windows.filter(splits == name).select(
            pl.len().alias("windows"),
            (pl.col("core_end") - pl.col("core_start")).sum().alias("core_lines"),
            pl.col("title").unique().sort().implode().alias("titles"),
        )
        counts[name] = sizes.row(0, named=True)
    manifest = {
        "inputs": inputs,
        "options": settings,
        "rows": n_rows,
        "titles": len(titles),
        "test_titles": test,
        "splits": counts,
        "dropped": dropped,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if segmentation is not None:
        manifest["segmentation"] = segmentation
    write_json_atomic(manifest_path, manifest)
    return {**manifest, "out": str(out_dir), "skipped": False}


def llm_continuity(
    rows: pl.DataFrame, opts: PrepareOptions, client: Any = None
) -> tuple[pl.Series, dict[str, int]]:
    """Per row, whether its source line continues the previous one, labelled episode by
    episode by the `llm` segmenter's model; and the labelling's counts."""
    from alpo.segmenting import label_lines

    if client is None:
        from alpo.generation import make_backend

        client = make_backend(
            opts.segment_backend,
            opts.segment_model,
            base_url=opts.segment_base_url,
            tokenizer=False,
        )
    episodes = rows.group_by("title", "episode", maintain_order=True).agg("src_text")
    labels, stats = label_lines(episodes["src_text"].to_list(), opts.pair.split("-")[0], client)
    return pl.Series("continues", [x for episode in labels for x in episode]), stats


def write_parquet_atomic(frame: pl.LazyFrame, path: Path) -> None:
    """Stream `frame` into `path` through a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.sink_parquet(tmp, compression="zstd", compression_level=3, statistics=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
