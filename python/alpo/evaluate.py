"""`alpo eval`: LLM judges score translation systems on accuracy, naturalness and vividness.

The protocol follows the paper's final evaluation (method.md 8.2). Each test window's core lines
(`src_lines[core_start:core_end]`) are translated by every system; the human reference is
scored as one more system, blind, under the same prompt. A judge sees the source lines of the
core with a few context lines around them and one system's translation, and gives three integer
scores from 0 to 100:

- accuracy: is the meaning carried over, nothing added or left out, names and terms right;
- naturalness: fluent, idiomatic, grammatical target-language dialogue that fits the context;
- vividness: expressive wording and emotional impact, judged while ignoring accuracy.

By default (`rubric="separate"`, the paper's protocol) each dimension is its own prompt whose
answer is `{"A": score}` for "Translation A"; `rubric="joint"` asks once per window for
`{"A": accuracy, "B": naturalness, "C": vividness}`. Both shapes are held by the backends'
schema-guided decoding (`Backend.chat(score_letters=...)`), validated strictly, asked again
when invalid, and a dimension without any valid reply stays unscored (counted, never filled in).

Systems are model folders (or hub ids, or served model names), translated here with the shared
translation path (`alpo.translate.translate_units`: the whole window, context included, is one
training-format prompt; its core lines are kept; a line whose translation still fails after the
retries and splits counts as missing and is shown to the judge as missing), or files of ready
translations (`read_translations`).

Statistics (`alpo.stats`): the mean of every (direction, system, judge, dimension) over windows
with a bootstrap confidence interval over windows (seeded), the mean over judges ("all": each
judge's mean, then their mean) with its own interval, and pairwise win/tie/loss between systems
per window. Judge validation against human scores is `alpo.agreement`, which shares the judges,
backends, shards and asking of this module.

Resumable: translations and judgements are written in shards of a few windows under
`out/shards/`, each named by a fingerprint of everything it depends on (model, settings,
windows, the translations judged); a rerun reuses the shards that still match and redoes the
rest, and `force` starts afresh.
"""

from __future__ import annotations

import csv
import gc
import json
import random
import re
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from alpo import judging, models
from alpo.align import write_json_atomic
from alpo.exceptions import ConfigError, InputError
from alpo.generation import Backend, make_backend
from alpo.prepare import read_windows, write_parquet_atomic
from alpo.prompts import language_name
from alpo.stats import bootstrap_mean, nan_mean, pairwise, rounded, seed_for
from alpo.train import digest_json, folder_stamp

__all__ = [
    "DIMENSIONS",
    "REFERENCE",
    "TRANSLATION_FORMATS",
    "EvalSettings",
    "EvalWindow",
    "Judge",
    "ModelOptions",
    "System",
    "load_eval_windows",
    "parse_joint",
    "parse_judge",
    "parse_system",
    "read_translations",
    "render_eval_prompt",
    "run_eval",
    "summarize",
]

DIMENSIONS = ("accuracy", "naturalness", "vividness")
#: the human reference, scored as a system
REFERENCE = "reference"
#: file types of ready translations
TRANSLATION_FORMATS = (".parquet", ".jsonl", ".csv")
RUBRICS = ("separate", "joint")
BACKENDS = ("transformers", "vllm", "openai")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")

# ---------------------------------------------------------------------------------------------
# Judge prompts (method.md 8.2), English and Chinese

_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "dims": {"accuracy": "accuracy", "naturalness": "naturalness", "vividness": "vividness"},
        "title": "[{src} to {tgt} subtitle translation: {what} rating]",
        "lead": (
            "Below are {src} lines from a film or TV show and a {tgt} translation of the lines "
            "tagged [rate]. Rate the translation's {what} with an integer from 0 to 100."
        ),
        "lead_joint": (
            "Below are {src} lines from a film or TV show and a {tgt} translation of the lines "
            "tagged [rate]. Rate the translation on each of the three criteria below with an "
            "integer from 0 to 100."
        ),
        "rubric": {
            "accuracy": (
                "Accuracy: does the translation carry the meaning of the source lines, with "
                "nothing added or left out, and are names and terms rendered correctly?",
                "100 = fully accurate and coherent, every name and term right; 50 = mostly "
                "accurate, with small omissions or some terms wrong; 0 = the meaning is badly "
                "distorted.",
            ),
            "naturalness": (
                "Naturalness: does it read as fluent, idiomatic and grammatical {tgt} dialogue "
                "that fits the context and the audience's culture?",
                "100 = reads as if written in {tgt} for this scene; 50 = understandable but "
                "stiff or awkward in places; 0 = unnatural or ungrammatical throughout.",
            ),
            "vividness": (
                "Vividness: how expressive is the wording, and how much emotion and impact does "
                "it carry for the audience? Judge this on its own and ignore accuracy completely.",
                "100 = vivid and moving; 50 = plain and emotionally flat; 0 = lifeless.",
            ),
        },
        "anchors": "Anchors: {anchors}",
        "source": (
            "Source (lines tagged [context] only help you follow the scene; rate the "
            "translation of the lines tagged [rate]):"
        ),
        "context_tag": "[context]",
        "rate_tag": "[rate]",
        "missing": "(missing)",
        "translation": "Translation A:",
        "translation_joint": "Translation:",
        "answer": (
            'Reply with only a JSON object holding the score of Translation A, for example {{"A": '
            "73}}."
        ),
        "answer_joint": (
            "Reply with only a JSON object with the three scores, A for accuracy, B for "
            'naturalness and C for vividness, for example {{"A": 80, "B": 65, "C": 50}}.'
        ),
    },
    "zh": {
        "dims": {"accuracy": "准确性", "naturalness": "自然度", "vividness": "生动性"},
        "title": "[{src}到{tgt}字幕翻译：{what}评分]",
        "lead": (
            "下面是一段{src}影视剧台词，以及标[评分]的各行的一个{tgt}译文。"
            "请用0到100的整数给译文的{what}打分。"
        ),
        "lead_joint": (
            "下面是一段{src}影视剧台词，以及标[评分]的各行的一个{tgt}译文。"
            "请按下面三项标准分别给译文打分（0到100的整数）。"
        ),
        "rubric": {
            "accuracy": (
                "准确性：译文是否完整传达了原文的意思，不增不漏，人名和术语是否译对？",
                "100 = 完全准确、连贯，人名术语全部正确；50 = 大体准确，有少量遗漏或部分术语"
                "有误；0 = 意思严重失真。",
            ),
            "naturalness": (
                "自然度：译文读起来是否是流畅、地道、合乎语法的{tgt}对白，是否贴合语境和观众的"
                "文化？",
                "100 = 就像专为这个场景用{tgt}写的台词；50 = 能看懂，但有些地方生硬别扭；"
                "0 = 通篇不自然或不通顺。",
            ),
            "vividness": (
                "生动性：用词有多富有表现力，对观众有多大的情感感染力？只评这一点，完全不考虑"
                "准确性。",
                "100 = 生动传神、打动人心；50 = 平淡，缺少情感；0 = 毫无生气。",
            ),
        },
        "anchors": "参考：{anchors}",
        "source": "原文（标[上下文]的行只帮助理解情节；请评价标[评分]的行的译文）：",
        "context_tag": "[上下文]",
        "rate_tag": "[评分]",
        "missing": "（缺失）",
        "translation": "译文A：",
        "translation_joint": "译文：",
        "answer": '只输出一个JSON对象，给出译文A的分数，例如 {{"A": 73}}。',
        "answer_joint": (
            '只输出一个JSON对象，A为准确性、B为自然度、C为生动性的分数，例如 {{"A": 80, "B": 65, '
            '"C": 50}}。'
        ),
    },
}


def check_language(language: str) -> None:
    """A ConfigError unless the judge prompts exist in `language` (en, zh)."""
    if language not in _TEXT:
        raise ConfigError(f"unknown judge language {language!r} (use en or zh)")


def render_eval_prompt(
    before: Sequence[str],
    lines: Sequence[str],
    after: Sequence[str],
    translation: Sequence[str | None],
    src_lang: str,
    tgt_lang: str,
    dimension: str | None,
    language: str = "en",
) -> str:
    """The judge prompt for one translation: `dimension` alone (answer `{"A": n}`), or with
    `dimension=None` all three (answer `{"A": accuracy, "B": naturalness, "C": vividness}`).
    Rated source lines and translation lines are numbered; a missing line (None) is marked."""
    check_language(language)
    if dimension is not None and dimension not in DIMENSIONS:
        raise ConfigError(f"unknown dimension {dimension!r} (use {', '.join(DIMENSIONS)})")
    t = _TEXT[language]
    names = {"src": language_name(src_lang, language), "tgt": language_name(tgt_lang, language)}
    if dimension is None:
        what = " / ".join(t["dims"][d] for d in DIMENSIONS)
        head = [t["title"].format(what=what, **names), t["lead_joint"].format(**names)]
        for letter, d in zip("ABC", DIMENSIONS, strict=True):
            rubric, anchors = t["rubric"][d]
            head += [f"{letter}. {rubric.format(**names)}", "   " + anchors]
    else:
        what = t["dims"][dimension]
        rubric, anchors = t["rubric"][dimension]
        head = [
            t["title"].format(what=what, **names),
            t["lead"].format(what=what, **names),
            rubric.format(**names),
            t["anchors"].format(anchors=anchors),
        ]
    source = (
        [f"{t['context_tag']} {line}" for line in before]
        + [f"{t['rate_tag']} {i}. {line}" for i, line in enumerate(lines, 1)]
        + [f"{t['context_tag']} {line}" for line in after]
    )
    shown = [
        f"{i}. {line if line is not None and line.strip() else t['missing']}"
        for i, line in enumerate(translation, 1)
    ]
    label = t["translation"] if dimension is not None else t["translation_joint"]
    answer = t["answer"] if dimension is not None else t["answer_joint"]
    return "\n".join([*head, "", t["source"], *source, "", label, *shown, "", answer.format()])


def parse_joint(reply: str) -> tuple[list[int] | None, str | None]:
    """The three scores (accuracy, naturalness, vividness) of a joint reply, or None and why:
    valid as `judging.parse_scores` of three candidates A, B and C, except that equal scores
    are fine (unlike a listwise ranking, where parse_scores rejects them as degenerate)."""
    scores, why = judging.parse_scores(reply, 3)
    if scores is None and (why or "").startswith("degenerate"):  # all three equal
        obj, _ = judging._first_object(judging._THINK.sub("", reply))
        values = dict(obj or [])
        return [cast(int, values[k]) for k in "ABC"], None
    return scores, why


def parse_one(reply: str) -> tuple[list[int] | None, str | None]:
    """The score of a one-dimension reply `{"A": n}` (`judging.parse_scores` of one letter)."""
    return judging.parse_scores(reply, 1)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class EvalWindow:
    """A test window: its source and reference lines; the core is what gets scored."""

    window_id: str
    pair: str
    src_lines: list[str]
    ref_lines: list[str]
    core_start: int
    core_end: int
    glossary: list[tuple[str, str]] = field(default_factory=list)

    @property
    def core_size(self) -> int:
        return self.core_end - self.core_start

    def reference(self) -> list[str | None]:
        return list(self.ref_lines[self.core_start : self.core_end])


def load_eval_windows(
    path: Path, limit: int = 0, seed: int = 1234
) -> tuple[list[EvalWindow], dict[str, int]]:
    """The windows of a prepared test split, and what was left out. Windows whose reference core
    has an empty line are left out (the reference is scored as a system). With `limit`, each
    direction keeps `limit` windows picked by a seeded shuffle (the paper's 100 blocks); the
    kept windows stay in file order."""
    frame = read_windows(
        path, ("window_id", "pair", "src_lines", "ref_lines", "core_start", "core_end")
    )
    if frame.height == 0:
        raise InputError(f"{path}: no windows to evaluate")
    glossaries = frame["glossary"].to_list() if "glossary" in frame.columns else None
    windows: list[EvalWindow] = []
    seen: set[str] = set()
    empty = 0
    for i, row in enumerate(frame.iter_rows(named=True)):
        src, ref = list(row["src_lines"] or []), list(row["ref_lines"] or [])
        start, end = int(row["core_start"]), int(row["core_end"])
        wid = str(row["window_id"])
        if wid in seen:
            raise InputError(f"{path}: window {wid} appears twice")
        seen.add(wid)
        if len(src) != len(ref) or not 0 <= start < end <= len(src):
            raise InputError(f"{path}: window {wid}: inconsistent lines or core span")
        if any(not (r or "").strip() for r in ref[start:end]):
            empty += 1
            continue
        terms = [(g["term"], g["translation"]) for g in (glossaries[i] or [])] if glossaries else []
        windows.append(EvalWindow(wid, str(row["pair"]), src, ref, start, end, terms))
    if limit > 0:
        keep: set[int] = set()
        for pair in sorted({w.pair for w in windows}):
            idx = [i for i, w in enumerate(windows) if w.pair == pair]
            random.Random(seed).shuffle(idx)
            keep.update(idx[:limit])
        left = len(windows) - len(keep)
        windows = [w for i, w in enumerate(windows) if i in keep]
    else:
        left = 0
    if not windows:
        raise InputError(f"{path}: no window with a complete reference to evaluate")
    for pair in {w.pair for w in windows}:
        for code in pair.partition("-")[::2]:
            language_name(code)  # a one-line ConfigError for an unknown code
    return windows, {"empty_reference": empty, "over_limit": left}


@dataclass
class System:
    """A system to score: `reference` (the human reference), `model` (translated here) or
    `file` (ready translations)."""

    name: str
    kind: str
    source: str = ""


def parse_system(spec: str, backend: str = "transformers") -> System:
    """`NAME=MODEL_DIR` (or a hub id, a .gguf file, a served model name) or `NAME=FILE` of ready
    translations (.parquet, .jsonl, .csv); one-line errors for a bad name, an unknown file type
    or a folder that holds no model."""
    name, sep, value = spec.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ConfigError(f"--system {spec!r}: expected NAME=MODEL_DIR or NAME=FILE")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--system {spec!r}: a system name is letters, digits and . _ + - (up to 64)"
        )
    if name == REFERENCE:
        raise ConfigError(
            f"--system {spec!r}: the name {REFERENCE} is the human reference, always scored"
        )
    path = Path(value).expanduser()
    suffix = path.suffix.lower()
    if path.is_file() and suffix != ".gguf":
        if suffix not in TRANSLATION_FORMATS:
            raise InputError(
                f"{path}: unknown translations format {suffix or '(no extension)'} "
                f"(use {', '.join(TRANSLATION_FORMATS)})"
            )
        return System(name, "file", str(path))
    if suffix in TRANSLATION_FORMATS:
        raise InputError(f"{path}: no such file")
    if backend != "openai" or path.exists():
        models.resolve(value)  # a folder without a model: one-line InputError
    return System(name, "model", value)


@dataclass
class Judge:
    """A judge model and how to reach it; `name` labels it in the results."""

    name: str
    model: str
    backend: str = "transformers"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 600.0
    thinking_off: bool = True

    @property
    def key(self) -> tuple[str, str, str]:
        """Which backend serves it (`Backends.get`)."""
        return (self.backend, self.model, self.base_url)

    def stamp(self) -> list[Any]:
        """What its judgements depend on, for shard fingerprints."""
        return [self.backend, model_stamp(self.model), self.base_url, self.thinking_off]


def parse_judge(spec: str, **options: Any) -> Judge:
    """`MODEL` or `NAME=MODEL` (the name labels the judge; default: the model's folder name,
    else the model as given); `options` are the other fields of `Judge`."""
    name, sep, model = spec.partition("=")
    if not sep or "/" in name or not name.strip():
        name, model = "", spec
    model = model.strip()
    if not model:
        raise ConfigError(f"--judge {spec!r}: no model named")
    if not name:
        path = Path(model).expanduser()
        name = path.name if path.exists() and path.name else model
    judge = Judge(name.strip(), model, **options)
    if judge.backend not in BACKENDS:
        raise ConfigError(f"unknown judge backend {judge.backend!r} (use {', '.join(BACKENDS)})")
    if judge.backend == "openai" and not judge.base_url.startswith(("http://", "https://")):
        raise ConfigError("judge backend openai needs a base URL (--judge-base-url http://...)")
    if judge.backend != "openai" or Path(model).expanduser().exists():
        models.resolve(model)
    return judge


Lines = list[str | None]


def read_translations(path: Path, windows: Sequence[EvalWindow]) -> dict[str, Lines]:
    """Ready translations of the test windows, by window id: the core lines of each window.

    Formats (extra columns and extra windows are ignored):

    - `.parquet`: columns `window_id` (string) and `lines` (list of strings, null = missing);
    - `.jsonl`: one object per line, `{"window_id": "...", "lines": ["...", null, ...]}`;
    - `.csv` (UTF-8, header row): `window_id` and `lines` (a JSON array of strings), or one
      row per line with `window_id`, `line` (1-based position in the core) and `text`.

    `lines` holds the translations of `src_lines[core_start:core_end]`, or of every line of the
    window (its core is then kept). An empty or null line counts as missing; a window of the
    test data that the file lacks, a wrong line count, or a repeated window is an InputError.
    """
    suffix = path.suffix.lower()
    if suffix not in TRANSLATION_FORMATS:
        raise InputError(
            f"{path}: unknown translations format {suffix or '(no extension)'} "
            f"(use {', '.join(TRANSLATION_FORMATS)})"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    rows = {".parquet": _parquet_rows, ".jsonl": _jsonl_rows, ".csv": _csv_rows}[suffix](path)
    by_id: dict[str, tuple[str, list[Any] | dict[int, Any]]] = {}
    for where, wid, lines in rows:
        if not isinstance(wid, str) or not wid:
            raise InputError(f"{path}: {where}: window_id must be a non-empty string")
        if wid in by_id and not isinstance(lines, dict):
            raise InputError(f"{path}: {where}: window {wid} appears twice")
        if isinstance(lines, dict) and wid in by_id:
            held = by_id[wid][1]
            if not isinstance(held, dict):
                raise InputError(f"{path}: {where}: window {wid} appears twice")
            for k in lines:
                if k in held:
                    raise InputError(f"{path}: {where}: line {k} of window {wid} appears twice")
            held.update(lines)
        else:
            by_id[wid] = (where, lines)
    absent = [w.window_id for w in windows if w.window_id not in by_id]
    if absent:
        raise InputError(
            f"{path}: no translation of {len(absent)} test window(s) (first: {absent[0]})"
        )
    out: dict[str, Lines] = {}
    for w in windows:
        where, lines = by_id[w.window_id]
        n = w.core_size
        if isinstance(lines, dict):
            bad = [k for k in lines if not 1 <= k <= n]
            if bad:
                raise InputError(
                    f"{path}: window {w.window_id}: line {bad[0]} is outside its core (1..{n})"
                )
            lines = [lines.get(k) for k in range(1, n + 1)]
        if not isinstance(lines, list):
            raise InputError(f"{path}: {where}: lines must be a list of strings")
        if len(lines) == len(w.src_lines) and len(lines) != n:
            lines = lines[w.core_start : w.core_end]
        if len(lines) != n:
            raise InputError(
                f"{path}: {where}: window {w.window_id} has {len(lines)} lines, its core {n}"
            )
        if any(t is not None and not isinstance(t, str) for t in lines):
            raise InputError(f"{path}: {where}: lines must be strings (or null when missing)")
        out[w.window_id] = [t if t is not None and t.strip() else None for t in lines]
    return out


_Row = tuple[str, Any, Any]


def _parquet_rows(path: Path) -> list[_Row]:
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None
    missing = {"window_id", "lines"} - set(frame.columns)
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if not isinstance(frame.schema["lines"], pl.List):
        raise InputError(f"{path}: column lines must be a list of strings")
    return [
        (f"row {i + 1}", wid, list(lines) if lines is not None else None)
        for i, (wid, lines) in enumerate(zip(frame["window_id"], frame["lines"], strict=True))
    ]


def _jsonl_rows(path: Path) -> list[_Row]:
    rows = []
    with path.open(encoding="utf-8-sig") as f:
        for k, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                raise InputError(f"{path}: line {k}: not valid JSON") from None
            if not isinstance(obj, dict) or "window_id" not in obj or "lines" not in obj:
                raise InputError(f"{path}: line {k}: expected an object with window_id and lines")
            if not isinstance(obj["lines"], list):
                raise InputError(f"{path}: line {k}: lines must be a list of strings")
            rows.append((f"line {k}", obj["window_id"], obj["lines"]))
    return rows


def _csv_rows(path: Path) -> list[_Row]:
    rows: list[_Row] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = set(reader.fieldnames or [])
        per_line = {"line", "text"} <= header
        if "window_id" not in header or not ("lines" in header or per_line):
            raise InputError(
                f"{path}: a CSV of translations needs columns window_id and lines (a JSON "
                "array), or window_id, line and text"
            )
        for row in reader:
            where = f"row {reader.line_num}"
            wid = row["window_id"]
            if "lines" in header and not per_line:
                try:
                    lines = json.loads(row["lines"] or "null")
                except ValueError:
                    raise InputError(f"{path}: {where}: lines is not a JSON array") from None
                if not isinstance(lines, list):
                    raise InputError(f"{path}: {where}: lines is not a JSON array")
                rows.append((where, wid, lines))
                continue
            try:
                number = int(row["line"])
            except (TypeError, ValueError):
                raise InputError(f"{path}: {where}: line must be a number") from None
            rows.append((where, wid, {number: row["text"]}))
    return rows


# ---------------------------------------------------------------------------------------------
# Shards


def slug(name: str) -> str:
    """A folder name for a system or judge label: safe characters and a short hash."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._")[:48] or "x"
    return f"{safe}-{zlib.crc32(name.encode()):08x}"


def model_stamp(model: str) -> Any:
    """Identity of a model: its name, with a local folder's `folder_stamp` or a local file's
    size and time."""
    path = Path(model).expanduser()
    if path.is_file():
        return [model, path.stat().st_size, path.stat().st_mtime_ns]
    return [model, folder_stamp(path)]


def sharded(
    folder: Path,
    items: Sequence[Any],
    size: int,
    fingerprint: Callable[[int, Sequence[Any]], Any],
    make: Callable[[int, Sequence[Any]], pl.DataFrame],
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    progress: dict[str, Any] | None = None,
) -> list[pl.DataFrame]:
    """The frames of `items` in parts of `size`: each part is a shard in `folder` named by its
    index and `fingerprint(index, part)`, made by `make(index, part)` only when no shard of
    that name is there. Shards that no longer match are removed at the end. After each part,
    `on_progress` gets `progress` with `done` and `total`."""
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    used: set[str] = set()
    frames = []
    for index, part in enumerate(parts):
        path = folder / f"part-{index:04d}-{digest_json(fingerprint(index, part))[:20]}.parquet"
        used.add(path.name)
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_parquet_atomic(make(index, part).lazy(), path)
        frames.append(pl.read_parquet(path))
        if on_progress is not None:
            on_progress({**(progress or {}), "done": index + 1, "total": len(parts)})
    for p in folder.glob("part-*.parquet"):
        if p.name not in used:
            p.unlink()
    return frames


# ---------------------------------------------------------------------------------------------
# Asking a judge


@dataclass
class Vote:
    """One asked-for score set: a prompt, its reply shape and its validator."""

    key: Any
    prompt: str
    letters: int
    parse: Callable[[str], tuple[list[int] | None, str | None]]


def ask_until_valid(
    items: Sequence[Vote], ask: judging.Ask, retries: int
) -> tuple[dict[Any, list[list[int]]], dict[Any, list[str]]]:
    """Valid score lists per key, and the reasons of rejected replies per key: every pending
    item asked in one batch, the invalid ones asked again up to `retries` more times."""
    valid: dict[Any, list[list[int]]] = {}
    reasons: dict[Any, list[str]] = {}
    pending = list(items)
    for _ in range(retries + 1):
        if not pending:
            break
        replies = ask([(v.prompt, v.letters) for v in pending])
        again = []
        for vote, reply in zip(pending, replies, strict=True):
            scores, why = vote.parse(reply)
            if scores is None:
                reasons.setdefault(vote.key, []).append(why or "invalid")
                again.append(vote)
            else:
                valid.setdefault(vote.key, []).append(scores)
        pending = again
    return valid, reasons


def check_judges(judges: Sequence[Judge], command: str) -> list[str]:
    """The judges' names; a ConfigError when there is none or two share a name."""
    if not judges:
        raise ConfigError(f"{command} needs at least one judge")
    labels = [j.name for j in judges]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"judge names must differ (name them NAME=MODEL): {', '.join(labels)}")
    return labels


# ---------------------------------------------------------------------------------------------
# The evaluation run


@dataclass
class EvalSettings:
    """How `alpo eval` translates, judges and summarizes."""

    #: `separate` (one prompt per dimension, the paper's protocol) or `joint` (one prompt)
    rubric: str = "separate"
    #: judge replies per window and dimension, averaged
    votes: int = 1
    #: times an invalid judge reply is asked again
    retries: int = 3
    #: judge sampling temperature (the paper's final evaluation: 0)
    temperature: float = 0.0
    max_new_tokens: int = 256
    #: language of the judge prompt: `en` or `zh`
    language: str = "en"
    #: source lines shown before and after the core (from the window's context)
    context_lines: int = 5
    #: bootstrap resamples and confidence level of the intervals
    bootstrap: int = 1000
    confidence: float = 0.95
    #: a pairwise difference within this margin is a tie
    tie_margin: float = 0.0
    #: windows per shard (the unit of resuming)
    shard_size: int = 64
    #: windows whose systems differ most, shown in the report per direction
    examples: int = 5
    seed: int = 1234

    def check(self) -> None:
        if self.rubric not in RUBRICS:
            raise ConfigError(f"unknown rubric {self.rubric!r} (use {', '.join(RUBRICS)})")
        check_language(self.language)
        if self.votes < 1 or self.retries < 0 or self.max_new_tokens < 1:
            raise ConfigError("eval needs votes >= 1, retries >= 0 and max_new_tokens >= 1")
        if self.temperature < 0 or self.context_lines < 0 or self.shard_size < 1:
            raise ConfigError("eval needs temperature >= 0, context lines >= 0, shard size >= 1")
        if self.bootstrap < 0 or not 0 < self.confidence < 1 or self.tie_margin < 0:
            raise ConfigError("eval needs bootstrap >= 0, 0 < confidence < 1, tie margin >= 0")


@dataclass
class ModelOptions:
    """How system models load and translate (`alpo.translate.TranslateSettings` fields)."""

    backend: str = "transformers"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 600.0
    dtype: str = "auto"
    trust_remote_code: bool = False
    max_batch: int = 32
    vllm: dict[str, Any] = field(default_factory=dict)
    #: new tokens allowed per line, first-try temperature, retries before a split
    tokens_per_line: int = 64
    temperature: float = 0.0
    retries: int = 1
    instruction_language: str = "en"


BackendFactory = Callable[..., Backend]

JUDGEMENT_SCHEMA: dict[str, Any] = {
    "window_id": pl.String,
    "direction": pl.String,
    "system": pl.String,
    "judge": pl.String,
    "dimension": pl.String,
    "score": pl.Float64,
    "votes": pl.List(pl.Int64),
    "rejected": pl.UInt32,
    "reasons": pl.List(pl.String),
}
TRANSLATION_SCHEMA: dict[str, Any] = {
    "window_id": pl.String,
    "system": pl.String,
    "lines": pl.List(pl.String),
    "retries": pl.UInt32,
    "splits": pl.UInt32,
}
#: a translation shard: TRANSLATION_SCHEMA of one system
_SHARD_SCHEMA = {k: v for k, v in TRANSLATION_SCHEMA.items() if k != "system"}


class Backends:
    """Backends loaded on first use and kept while some later step needs them; every model
    loads with the options all share (dtype, remote code, vLLM engine settings)."""

    def __init__(self, factory: BackendFactory | None, options: ModelOptions) -> None:
        self.factory = factory or make_backend
        self.common = {
            "dtype": options.dtype,
            "trust_remote_code": options.trust_remote_code,
            "vllm": options.vllm,
        }
        self.held: dict[tuple[str, str, str], Backend] = {}

    def get(self, key: tuple[str, str, str], **kwargs: Any) -> Backend:
        """The backend of `key` (kind, model, base URL), loaded with `kwargs` if it is not yet."""
        if key not in self.held:
            options = {**self.common, **kwargs}
            self.held[key] = self.factory(key[0], key[1], base_url=key[2], **options)
        return self.held[key]

    def judge(self, j: Judge) -> Backend:
        """The backend of a judge (chat only: no tokenizer needed)."""
        return self.get(
            j.key,
            api_key_env=j.api_key_env,
            concurrency=j.concurrency,
            timeout=j.timeout,
            tokenizer=False,
            thinking_off=j.thinking_off,
        )

    def release(self, key: tuple[str, str, str]) -> None:
        if self.held.pop(key, None) is not None:
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover - torch is there whenever a model ran
                pass


def _model_key(system: System, m: ModelOptions) -> tuple[str, str, str]:
    return (m.backend, system.source, m.base_url)


def run_eval(
    data: Path,
    systems: Sequence[System],
    judges: Sequence[Judge],
    out: Path,
    settings: EvalSettings | None = None,
    model_options: ModelOptions | None = None,
    *,
    limit: int = 0,
    force: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    backend_factory: BackendFactory | None = None,
) -> dict[str, Any]:
    """Translate, judge and summarize; writes `out/scores.json`, `out/judgements.parquet`,
    `out/translations.parquet` and `out/report.html`; returns the summary (scores.json)."""
    from alpo import report

    started = time.perf_counter()
    settings = settings or EvalSettings()
    settings.check()
    mopts = model_options or ModelOptions()
    labels = check_judges(judges, "eval")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"system names must differ: {', '.join(names)}")
    windows, left_out = load_eval_windows(Path(data), limit, settings.seed)
    everyone = [System(REFERENCE, "reference"), *[s for s in systems if s.name != REFERENCE]]
    texts: dict[str, dict[str, Lines]] = {REFERENCE: {w.window_id: w.reference() for w in windows}}
    for s in everyone:
        if s.kind == "file":  # read every file before any model loads: errors come first
            texts[s.name] = read_translations(Path(s.source), windows)
    out = Path(out)
    shards = out / "shards"
    if force:
        shutil.rmtree(shards, ignore_errors=True)
    backends = Backends(backend_factory, mopts)
    judge_keys = {j.key for j in judges}
    system_info: dict[str, dict[str, Any]] = {}
    for s in everyone:
        info: dict[str, Any] = {"kind": s.kind, "source": s.source or "test data ref_lines"}
        if s.kind == "model":
            texts[s.name], extra = _translate_system(
                s, windows, backends, mopts, settings, shards, on_progress
            )
            info.update(extra)
            if _model_key(s, mopts) not in judge_keys:
                backends.release(_model_key(s, mopts))
        lines = [t for wid in texts[s.name] for t in texts[s.name][wid]]
        info["lines"] = len(lines)
        info["missing_lines"] = sum(t is None for t in lines)
        system_info[s.name] = info
    frames = []
    for j in judges:
        for s in everyone:
            frames += _judge_system(
                s.name, texts[s.name], windows, j, backends, settings, shards, on_progress
            )
        backends.release(j.key)
    judgements = pl.concat(frames).sort("judge", "system", "window_id", "dimension")
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(judgements.lazy(), out / "judgements.parquet")
    write_parquet_atomic(
        _translations_frame(everyone, texts, system_info).lazy(), out / "translations.parquet"
    )
    summary = summarize(judgements, windows, [s.name for s in everyone], labels, texts, settings)
    summary["systems"] = system_info
    for j in judges:
        summary["judges"][j.name].update(
            {
                "model": j.model,
                "backend": j.backend,
                **({"base_url": j.base_url} if j.base_url else {}),
            }
        )
    summary["data"] = {"path": str(data), "windows": len(windows), "left_out": left_out}
    summary["settings"] = asdict(settings)
    summary["translation"] = {
        k: v for k, v in asdict(mopts).items() if k not in ("vllm", "api_key_env")
    }
    summary["seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(out / "scores.json", summary)
    report.write_report(out)
    summary["out"] = str(out)
    return summary


def _translations_frame(
    systems: Sequence[System], texts: dict[str, dict[str, Lines]], info: dict[str, Any]
) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {k: [] for k in TRANSLATION_SCHEMA}
    for s in systems:
        stats = info[s.name].pop("per_window", {})
        for wid, lines in texts[s.name].items():
            rows["window_id"].append(wid)
            rows["system"].append(s.name)
            rows["lines"].append(lines)
            rows["retries"].append(stats.get(wid, (0, 0))[0])
            rows["splits"].append(stats.get(wid, (0, 0))[1])
    return pl.DataFrame(rows, schema=TRANSLATION_SCHEMA)


def _translate_system(
    system: System,
    windows: list[EvalWindow],
    backends: Backends,
    m: ModelOptions,
    settings: EvalSettings,
    shards: Path,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> tuple[dict[str, Lines], dict[str, Any]]:
    """The system's core lines of every window, translated in shards (resumed)."""
    from alpo.translate import TranslateSettings, Unit, translate_units

    tsettings = TranslateSettings(
        window=1 << 30,  # the whole window is one prompt, as in training
        context=0,
        temperature=m.temperature,
        retries=m.retries,
        tokens_per_line=m.tokens_per_line,
        instruction_language=m.instruction_language,
        seed=settings.seed,
    )
    tsettings.check()
    identity = {
        "model": model_stamp(system.source),
        "backend": m.backend,
        "base_url": m.base_url,
        "dtype": m.dtype,
        "translate": asdict(tsettings),
    }

    def fingerprint(_: int, chunk: Sequence[EvalWindow]) -> Any:
        return [
            identity,
            [
                (w.window_id, w.pair, w.src_lines, w.core_start, w.core_end, w.glossary)
                for w in chunk
            ],
        ]

    def translate(_: int, chunk: Sequence[EvalWindow]) -> pl.DataFrame:
        backend = backends.get(
            _model_key(system, m),
            api_key_env=m.api_key_env,
            concurrency=m.concurrency,
            timeout=m.timeout,
            max_batch=m.max_batch,
        )
        tokenizer = getattr(backend, "tokenizer", None) or models.load_tokenizer(
            system.source, m.trust_remote_code
        )
        rows: dict[str, list[Any]] = {k: [] for k in _SHARD_SCHEMA}
        for pair in sorted({w.pair for w in chunk}):
            mine = [w for w in chunk if w.pair == pair]
            units = [Unit(list(w.src_lines), list(w.glossary)) for w in mine]
            results = translate_units(units, backend, tokenizer, pair, tsettings)
            for w, r in zip(mine, results, strict=True):
                rows["window_id"].append(w.window_id)
                rows["lines"].append(r.lines[w.core_start : w.core_end])
                rows["retries"].append(r.retries)
                rows["splits"].append(r.splits)
        return pl.DataFrame(rows, schema=_SHARD_SCHEMA)

    frames = sharded(
        shards / "translate" / slug(system.name),
        windows,
        settings.shard_size,
        fingerprint,
        translate,
        on_progress,
        {"stage": "translate", "system": system.name},
    )
    texts: dict[str, Lines] = {}
    per_window: dict[str, tuple[int, int]] = {}
    for wid, lines, retries, splits in pl.concat(frames).iter_rows():
        texts[wid] = [t if t is not None and t.strip() else None for t in lines]
        per_window[wid] = (retries, splits)
    return texts, {
        "backend": m.backend,
        "retries": sum(r for r, _ in per_window.values()),
        "splits": sum(s for _, s in per_window.values()),
        "per_window": per_window,
    }


#: the settings that shape a judgement (not how it is summarized)
_JUDGE_SETTINGS = (
    "rubric",
    "votes",
    "retries",
    "temperature",
    "max_new_tokens",
    "language",
    "context_lines",
    "seed",
)


def _judge_system(
    system: str,
    texts: dict[str, Lines],
    windows: list[EvalWindow],
    judge: Judge,
    backends: Backends,
    settings: EvalSettings,
    shards: Path,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> list[pl.DataFrame]:
    """One judge's scores of one system on every window, in shards (resumed)."""
    identity = {
        "judge": judge.stamp(),
        "settings": {k: v for k, v in asdict(settings).items() if k in _JUDGE_SETTINGS},
    }

    def fingerprint(index: int, chunk: Sequence[EvalWindow]) -> Any:
        content = [
            (w.window_id, w.pair, w.src_lines, w.core_start, w.core_end, texts[w.window_id])
            for w in chunk
        ]
        return [identity, index, content]

    def judge_chunk(index: int, chunk: Sequence[EvalWindow]) -> pl.DataFrame:
        seed = seed_for(settings.seed, judge.name, system, str(index))
        ask = judging.asker(
            backends.judge(judge), settings.temperature, settings.max_new_tokens, seed
        )
        return _judge_chunk(system, texts, chunk, judge.name, ask, settings)

    return sharded(
        shards / "judge" / slug(judge.name) / slug(system),
        windows,
        settings.shard_size,
        fingerprint,
        judge_chunk,
        on_progress,
        {"stage": "judge", "judge": judge.name, "system": system},
    )


def _judge_chunk(
    system: str,
    texts: dict[str, Lines],
    chunk: Sequence[EvalWindow],
    judge_name: str,
    ask: judging.Ask,
    s: EvalSettings,
) -> pl.DataFrame:
    valid, reasons = ask_until_valid(_votes(texts, chunk, s), ask, s.retries)
    joint = s.rubric == "joint"
    rows: dict[str, list[Any]] = {k: [] for k in JUDGEMENT_SCHEMA}
    for w in chunk:
        for i, d in enumerate(DIMENSIONS):
            got: list[int] = []
            why: list[str] = []
            for v in range(s.votes):
                key = (w.window_id, None if joint else d, v)
                got += [scores[i if joint else 0] for scores in valid.get(key, [])]
                if not joint or i == 0:  # a joint reply's failure counts once
                    why += reasons.get(key, [])
            rows["window_id"].append(w.window_id)
            rows["direction"].append(w.pair)
            rows["system"].append(system)
            rows["judge"].append(judge_name)
            rows["dimension"].append(d)
            rows["score"].append(sum(got) / len(got) if got else None)
            rows["votes"].append(got)
            rows["rejected"].append(len(why))
            rows["reasons"].append(why)
    return pl.DataFrame(rows, schema=JUDGEMENT_SCHEMA)


def _votes(texts: dict[str, Lines], chunk: Sequence[EvalWindow], s: EvalSettings) -> list[Vote]:
    """The prompts of a chunk: per window and vote, one joint prompt or one per dimension."""
    c = s.context_lines
    votes: list[Vote] = []
    for w in chunk:
        src, _, tgt = w.pair.partition("-")
        before = w.src_lines[max(0, w.core_start - c) : w.core_start] if c else []
        after = w.src_lines[w.core_end : w.core_end + c] if c else []
        lines = w.src_lines[w.core_start : w.core_end]
        shown = texts[w.window_id]
        for v in range(s.votes):
            if s.rubric == "joint":
                prompt = render_eval_prompt(before, lines, after, shown, src, tgt, None, s.language)
                votes.append(Vote((w.window_id, None, v), prompt, 3, parse_joint))
                continue
            for d in DIMENSIONS:
                prompt = render_eval_prompt(before, lines, after, shown, src, tgt, d, s.language)
                votes.append(Vote((w.window_id, d, v), prompt, 1, parse_one))
    return votes


# ---------------------------------------------------------------------------------------------
# Summary

#: (system, dimension) -> windows x judges scores (NaN: unscored)
Cube = dict[tuple[str, str], np.ndarray]
#: direction -> system -> dimension -> each window's mean over judges
WindowScores = dict[str, dict[str, dict[str, list[float | None]]]]


def summarize(
    judgements: pl.DataFrame,
    windows: Sequence[EvalWindow],
    systems: Sequence[str],
    judges: Sequence[str],
    texts: dict[str, dict[str, Lines]],
    settings: EvalSettings,
) -> dict[str, Any]:
    """scores.json: means with confidence intervals per direction, system, judge (and over
    judges, `all`) and dimension; pairwise win/tie/loss; judge failures; example windows."""
    directions = sorted({w.pair for w in windows})
    index = {w.window_id: i for i, w in enumerate(windows)}
    jpos = {j: k for k, j in enumerate(judges)}
    cube: Cube = {
        (s, d): np.full((len(windows), len(judges)), np.nan) for s in systems for d in DIMENSIONS
    }
    for wid, system, judge, dim, score in judgements.select(
        "window_id", "system", "judge", "dimension", "score"
    ).iter_rows():
        if score is not None:
            cube[(system, dim)][index[wid], jpos[judge]] = score
    rows_of = {p: np.array([i for i, w in enumerate(windows) if w.pair == p]) for p in directions}
    scores, window_scores = _scores(cube, rows_of, systems, judges, settings)
    return {
        "dimensions": list(DIMENSIONS),
        "directions": {p: {"windows": len(rows_of[p])} for p in directions},
        "judges": _judge_failures(judgements, systems, judges),
        "scores": scores,
        "pairwise": _pairwise(cube, rows_of, systems, settings),
        "window_scores": {
            p: {"window_ids": [windows[i].window_id for i in rows_of[p]], **window_scores[p]}
            for p in directions
        },
        "examples": _examples(windows, systems, texts, window_scores, rows_of, settings),
    }


def _scores(
    cube: Cube,
    rows_of: dict[str, np.ndarray],
    systems: Sequence[str],
    judges: Sequence[str],
    settings: EvalSettings,
) -> tuple[dict[str, Any], WindowScores]:
    """Per direction, system, judge (and `all`) and dimension: the mean with its interval and
    the windows scored; and every window's score (mean over judges)."""
    scores: dict[str, Any] = {}
    window_scores: WindowScores = {}
    for p, rows in rows_of.items():
        scores[p] = {s: {} for s in systems}
        window_scores[p] = {s: {} for s in systems}
        for s in systems:
            for d in DIMENSIONS:
                m = cube[(s, d)][rows]
                for k, j in [(None, "all"), *enumerate(judges)]:
                    sub = m if k is None else m[:, [k]]
                    mean, low, high = bootstrap_mean(
                        sub,
                        resamples=settings.bootstrap,
                        confidence=settings.confidence,
                        seed=seed_for(settings.seed, p, s, d),
                    )
                    scores[p][s].setdefault(j, {})[d] = {
                        "mean": rounded(mean),
                        "ci": [rounded(low), rounded(high)],
                        "n": int((~np.isnan(sub).all(axis=1)).sum()),
                    }
                window_scores[p][s][d] = [rounded(v) for v in nan_mean(m, axis=1)]
    return scores, window_scores


def _pairwise(
    cube: Cube, rows_of: dict[str, np.ndarray], systems: Sequence[str], settings: EvalSettings
) -> dict[str, Any]:
    """Per direction and dimension, win/tie/loss of every pair of systems over windows."""
    pairs: dict[str, Any] = {}
    for p, rows in rows_of.items():
        pairs[p] = {}
        for d in DIMENSIONS:
            pairs[p][d] = []
            for a, b in combinations(systems, 2):
                r = pairwise(
                    nan_mean(cube[(a, d)][rows], axis=1),
                    nan_mean(cube[(b, d)][rows], axis=1),
                    tie_margin=settings.tie_margin,
                    seed=seed_for(settings.seed, p, d, a, b),
                    resamples=settings.bootstrap,
                    confidence=settings.confidence,
                )
                pairs[p][d].append(
                    {
                        "system": a,
                        "other": b,
                        **r,
                        "mean_diff": rounded(r["mean_diff"]),
                        "ci": [rounded(v) for v in r["ci"]],
                    }
                )
    return pairs


def _judge_failures(
    judgements: pl.DataFrame, systems: Sequence[str], judges: Sequence[str]
) -> dict[str, Any]:
    """Per judge, and per judge and system: rejected replies (and why), unscored, judged."""
    failures: dict[str, dict[str, Any]] = {}
    for (judge, system), group in judgements.group_by("judge", "system"):
        reasons: dict[str, int] = {}
        for why in group["reasons"].explode().drop_nulls():
            short = str(why).split(":")[0]
            reasons[short] = reasons.get(short, 0) + 1
        failures.setdefault(str(judge), {})[str(system)] = {
            "rejected_replies": int(group["rejected"].sum()),
            "unscored": int(group["score"].null_count()),
            "judged": group.height,
            "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        }
    out = {}
    for j in judges:
        mine = failures.get(j, {})
        out[j] = {
            "rejected_replies": sum(v["rejected_replies"] for v in mine.values()),
            "unscored": sum(v["unscored"] for v in mine.values()),
            "judged": sum(v["judged"] for v in mine.values()),
            "by_system": {s: mine[s] for s in systems if s in mine},
        }
    return out


def _examples(
    windows: Sequence[EvalWindow],
    systems: Sequence[str],
    texts: dict[str, dict[str, Lines]],
    window_scores: WindowScores,
    rows_of: dict[str, np.ndarray],
    settings: EvalSettings,
) -> dict[str, list[dict[str, Any]]]:
    """Per direction, the windows where the systems' scores differ most (sum over dimensions
    of the range across systems), with every system's lines and scores."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p, rows in rows_of.items():
        spread = []
        for k, i in enumerate(rows):
            total = 0.0
            for d in DIMENSIONS:
                vals = [window_scores[p][s][d][k] for s in systems]
                got = [v for v in vals if v is not None]
                total += (max(got) - min(got)) if len(got) > 1 else 0.0
            spread.append((-total, int(i), k))
        spread.sort()
        picked = []
        for neg, i, k in spread[: settings.examples]:
            w = windows[i]
            picked.append(
                {
                    "window_id": w.window_id,
                    "spread": round(-neg, 3),
                    "source": w.src_lines[w.core_start : w.core_end],
                    "systems": {
                        s: {
                            "lines": texts[s][w.window_id],
                            "scores": {d: window_scores[p][s][d][k] for d in DIMENSIONS},
                        }
                        for s in systems
                    },
                }
            )
        out[p] = picked
    return out
