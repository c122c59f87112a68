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

Statistics: the mean of every (direction, system, judge, dimension) over windows with a
bootstrap confidence interval over windows (seeded), the mean over judges ("all": each judge's
mean, then their mean) with its own interval, pairwise win/tie/loss between systems per window,
and for judge validation (`run_agreement`) Spearman's rho (average ranks for ties), Kendall's
tau-b and a Bland-Altman summary against human scores, all computed with numpy here.

Resumable: translations and judgements are written in shards of a few windows under
`out/shards/`, each named by a fingerprint of everything it depends on (model, settings,
windows, the translations judged); a rerun reuses the shards that still match and redoes the
rest, and `force` starts afresh.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import math
import random
import re
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from alpo import judging, models
from alpo.align import write_json_atomic
from alpo.exceptions import ConfigError, InputError
from alpo.generation import Backend, make_backend
from alpo.prepare import read_windows
from alpo.prompts import language_name

__all__ = [
    "AGREEMENT_RUBRICS",
    "DIMENSIONS",
    "REFERENCE",
    "TRANSLATION_FORMATS",
    "AgreementSettings",
    "EvalSettings",
    "EvalWindow",
    "HumanRow",
    "Judge",
    "ModelOptions",
    "System",
    "bland_altman",
    "bootstrap_mean",
    "kendall_tau_b",
    "load_eval_windows",
    "pairwise",
    "parse_joint",
    "parse_judge",
    "parse_system",
    "rank_average",
    "read_human_scores",
    "read_translations",
    "render_eval_prompt",
    "run_agreement",
    "run_eval",
    "spearman",
    "summarize",
]

DIMENSIONS = ("accuracy", "naturalness", "vividness")
#: the human reference, scored as a system
REFERENCE = "reference"
#: file types of ready translations
TRANSLATION_FORMATS = (".parquet", ".jsonl", ".csv")
RUBRICS = ("separate", "joint")
#: `reward`: the sample stage's listwise judge (the reward model); or one eval dimension
AGREEMENT_RUBRICS = ("reward", *DIMENSIONS)
#: the paper's bar for trusting a judge as reward model (Spearman rho, every direction)
TRUST_RHO = 0.82
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
    if language not in _TEXT:
        raise ConfigError(f"unknown judge prompt language {language!r} (use en or zh)")
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
    the first JSON object (after any <think> block) must have exactly the keys A, B and C, each
    an integer 0..100. Equal scores are fine (unlike a listwise ranking)."""
    obj, why = judging._first_object(judging._THINK.sub("", reply))
    if obj is None:
        return None, why
    keys = [k for k, _ in obj]
    if len(set(keys)) != len(keys):
        return None, "duplicate keys"
    if sorted(keys) != ["A", "B", "C"]:
        return None, f"keys do not match: expected A, B, C, got {', '.join(keys) or 'none'}"
    values = dict(obj)
    scores = []
    for k in "ABC":
        v = values[k]
        if isinstance(v, bool) or not isinstance(v, int):
            return None, f"score of {k} is not an integer: {v!r}"
        if not 0 <= v <= 100:
            return None, f"score of {k} is out of 0..100: {v}"
        scores.append(v)
    return scores, None


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
# Statistics (numpy only)


def rank_average(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of their ranks."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    cuts = np.flatnonzero(np.diff(ordered) != 0) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [n]))
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Spearman's rho: Pearson's correlation of the average ranks; None when undefined
    (fewer than 2 values, or all values of one side equal)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError("spearman needs two sequences of the same length")
    if len(a) < 2:
        return None
    return _pearson(rank_average(a), rank_average(b))


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denom == 0:
        return None
    return float(np.clip(np.dot(da, db) / denom, -1.0, 1.0))


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Kendall's tau-b (ties on either side corrected); None when undefined."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError("kendall_tau_b needs two sequences of the same length")
    n = len(a)
    if n < 2:
        return None
    s = 0.0
    for i in range(n - 1):
        s += float(np.sum(np.sign(a[i + 1 :] - a[i]) * np.sign(b[i + 1 :] - b[i])))
    pairs = n * (n - 1) / 2

    def tied(v: np.ndarray) -> float:
        _, counts = np.unique(v, return_counts=True)
        return float(np.sum(counts * (counts - 1) / 2))

    denom = math.sqrt((pairs - tied(a)) * (pairs - tied(b)))
    if denom == 0:
        return None
    return float(np.clip(s / denom, -1.0, 1.0))


def bland_altman(
    judge: Sequence[float] | np.ndarray, human: Sequence[float] | np.ndarray
) -> dict[str, float | None]:
    """Bland-Altman summary of judge - human: mean difference (systematic bias), the standard
    deviation of the differences and the 95 % limits of agreement (mean +- 1.96 sd)."""
    d = np.asarray(judge, dtype=float) - np.asarray(human, dtype=float)
    if len(d) == 0:
        return {"mean_diff": None, "sd": None, "loa_low": None, "loa_high": None}
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return {
        "mean_diff": mean,
        "sd": sd,
        "loa_low": mean - 1.96 * sd,
        "loa_high": mean + 1.96 * sd,
    }


def _mean_of_judge_means(stack: np.ndarray) -> np.ndarray:
    """(..., windows, judges) with NaN for unscored -> (...,): the mean over judges of each
    judge's mean over its scored windows (judges without any score left out)."""
    valid = ~np.isnan(stack)
    counts = valid.sum(axis=-2)
    sums = np.where(valid, stack, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    has = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(has, means, 0.0).sum(axis=-1) / has.sum(axis=-1)
    return out


def bootstrap_mean(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the mean over judges (columns) of each judge's mean over windows
    (rows), NaN meaning unscored, and its percentile confidence interval from resampling the
    windows with replacement (seeded). A 1-D input is one judge."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    m = m[~np.isnan(m).all(axis=1)]
    if m.shape[0] == 0:
        return None, None, None
    point = float(_mean_of_judge_means(m))
    if resamples <= 0 or m.shape[0] == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    stats = []
    batch = max(1, 2_000_000 // max(1, m.size))
    done = 0
    while done < resamples:
        size = min(batch, resamples - done)
        idx = rng.integers(0, m.shape[0], size=(size, m.shape[0]))
        stats.append(_mean_of_judge_means(m[idx]))
        done += size
    values = np.concatenate(stats)
    values = values[~np.isnan(values)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return point, float(low), float(high)


def pairwise(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    tie_margin: float = 0.0,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Win/tie/loss of system a against b over the windows both have a score for (a wins when
    its score is higher by more than `tie_margin`), and the mean difference a - b with a
    bootstrap confidence interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = ~np.isnan(x) & ~np.isnan(y)
    d = x[both] - y[both]
    n = int(len(d))
    win, loss = int(np.sum(d > tie_margin)), int(np.sum(d < -tie_margin))
    mean, low, high = bootstrap_mean(d, resamples=resamples, confidence=confidence, seed=seed)
    return {
        "n": n,
        "win": win,
        "tie": n - win - loss,
        "loss": loss,
        "mean_diff": mean,
        "ci": [low, high],
    }


def _seed(base: int, *parts: str) -> int:
    """A seed for one statistic: stable for its key, so adding a system changes no other."""
    return (base * 1_000_003 + zlib.crc32("\x1f".join(parts).encode())) % (2**32)


# ---------------------------------------------------------------------------------------------
# Shards


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _slug(name: str) -> str:
    """A folder name for a system or judge label: safe characters and a short hash."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._")[:48] or "x"
    return f"{safe}-{zlib.crc32(name.encode()):08x}"


def _folder_stamp(name: str) -> Any:
    """Identity of a model: a local folder's files (names, sizes, times), else its name."""
    path = Path(name).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return [name, [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
    if path.is_file():
        return [name, path.stat().st_size, path.stat().st_mtime_ns]
    return name


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


class _Shards:
    """Parts of one result in a folder, each named by its index and a fingerprint; parts that
    no longer match are removed at the end (`finish`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def path(self, index: int, fingerprint: str) -> Path:
        name = f"part-{index:04d}-{fingerprint[:20]}.parquet"
        self.used.add(name)
        return self.folder / name

    def finish(self) -> None:
        for p in self.folder.glob("part-*.parquet"):
            if p.name not in self.used:
                p.unlink()


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------
# Asking a judge


def _asker(
    backend: Backend, temperature: float, max_new_tokens: int, seed: int
) -> Callable[[list[tuple[str, int]]], list[str]]:
    """`ask(batch of (prompt, letters)) -> replies`, one backend call per reply shape; each call
    gets its own seed, derived from `seed` and the number of calls before it, so a shard's
    replies do not depend on what other shards were asked before."""
    calls = [0]

    def ask(batch: list[tuple[str, int]]) -> list[str]:
        replies = [""] * len(batch)
        by_n: dict[int, list[int]] = {}
        for i, (_, n) in enumerate(batch):
            by_n.setdefault(n, []).append(i)
        for n, idx in by_n.items():
            got = backend.chat(
                [batch[i][0] for i in idx],
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                score_letters=n,
                seed=seed + calls[0] * 7919,
            )
            calls[0] += 1
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies

    return ask


@dataclass
class _Vote:
    """One asked-for score set: a prompt, its reply shape and its validator."""

    key: Any
    prompt: str
    letters: int
    parse: Callable[[str], tuple[list[int] | None, str | None]]


def _ask_until_valid(
    items: Sequence[_Vote], ask: Callable[[list[tuple[str, int]]], list[str]], retries: int
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
        if self.language not in _TEXT:
            raise ConfigError(f"unknown judge language {self.language!r} (use en or zh)")
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


class _Backends:
    """Backends loaded on first use and kept while some later step needs them; `common` are
    the loading options every model shares (dtype, remote code, vLLM engine settings)."""

    def __init__(self, factory: BackendFactory, **common: Any) -> None:
        self.factory = factory
        self.common = common
        self.held: dict[tuple[str, str, str], Backend] = {}

    def get(self, key: tuple[str, str, str], **kwargs: Any) -> Backend:
        if key not in self.held:
            options = {**self.common, **kwargs}
            self.held[key] = self.factory(key[0], key[1], base_url=key[2], **options)
        return self.held[key]

    def release(self, key: tuple[str, str, str]) -> None:
        if self.held.pop(key, None) is not None:
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover - torch is there whenever a model ran
                pass


def _judge_key(j: Judge) -> tuple[str, str, str]:
    return (j.backend, j.model, j.base_url)


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
    if not judges:
        raise ConfigError("eval needs at least one judge")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"system names must differ: {', '.join(names)}")
    labels = [j.name for j in judges]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"judge names must differ (name them NAME=MODEL): {', '.join(labels)}")
    windows, left_out = load_eval_windows(Path(data), limit, settings.seed)
    everyone = [System(REFERENCE, "reference"), *[s for s in systems if s.name != REFERENCE]]
    texts: dict[str, dict[str, Lines]] = {REFERENCE: {w.window_id: w.reference() for w in windows}}
    for s in everyone:
        if s.kind == "file":  # read every file before any model loads: errors come first
            texts[s.name] = read_translations(Path(s.source), windows)
    shards = Path(out) / "shards"
    if force:
        shutil.rmtree(shards, ignore_errors=True)
    backends = _Backends(
        backend_factory or make_backend,
        dtype=mopts.dtype,
        trust_remote_code=mopts.trust_remote_code,
        vllm=mopts.vllm,
    )
    judge_keys = {_judge_key(j) for j in judges}
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
    judge_info: dict[str, dict[str, Any]] = {}
    for j in judges:
        for s in everyone:
            frames.append(
                _judge_system(
                    s.name, texts[s.name], windows, j, backends, settings, shards, on_progress
                )
            )
        backends.release(_judge_key(j))
        judge_info[j.name] = {
            "model": j.model,
            "backend": j.backend,
            **({"base_url": j.base_url} if j.base_url else {}),
        }
    judgements = pl.concat(frames).sort("judge", "system", "window_id", "dimension")
    out = Path(out)
    _write_atomic(judgements, out / "judgements.parquet")
    _write_atomic(_translations_frame(everyone, texts, system_info), out / "translations.parquet")
    summary = summarize(judgements, windows, [s.name for s in everyone], labels, texts, settings)
    summary["systems"] = system_info
    for name, info in summary["judges"].items():
        info.update(judge_info[name])
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
        stats = info[s.name].get("per_window", {})
        for wid, lines in texts[s.name].items():
            rows["window_id"].append(wid)
            rows["system"].append(s.name)
            rows["lines"].append(lines)
            rows["retries"].append(stats.get(wid, (0, 0))[0])
            rows["splits"].append(stats.get(wid, (0, 0))[1])
    for s in systems:
        info[s.name].pop("per_window", None)
    return pl.DataFrame(rows, schema=TRANSLATION_SCHEMA)


def _translate_system(
    system: System,
    windows: list[EvalWindow],
    backends: _Backends,
    m: ModelOptions,
    settings: EvalSettings,
    shards: Path,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> tuple[dict[str, Lines], dict[str, Any]]:
    """The system's core lines of every window, translated in shards (resumed)."""
    from alpo.translate import TranslateSettings, Unit, translate_units

    folder = _Shards(shards / "translate" / _slug(system.name))
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
        "model": _folder_stamp(system.source),
        "backend": m.backend,
        "base_url": m.base_url,
        "dtype": m.dtype,
        "translate": asdict(tsettings),
    }
    key = _model_key(system, m)
    parts = _chunks(windows, settings.shard_size)
    texts: dict[str, Lines] = {}
    per_window: dict[str, tuple[int, int]] = {}
    for index, chunk in enumerate(parts):
        fp = _digest(
            [
                identity,
                [
                    (w.window_id, w.pair, w.src_lines, w.core_start, w.core_end, w.glossary)
                    for w in chunk
                ],
            ]
        )
        path = folder.path(index, fp)
        if not path.is_file():
            backend = backends.get(
                key,
                api_key_env=m.api_key_env,
                concurrency=m.concurrency,
                timeout=m.timeout,
                max_batch=m.max_batch,
            )
            tokenizer = getattr(backend, "tokenizer", None) or models.load_tokenizer(
                system.source, m.trust_remote_code
            )
            eos = str(getattr(tokenizer, "eos_token", None) or "")
            rows: dict[str, list[Any]] = {"window_id": [], "lines": [], "retries": [], "splits": []}
            for pair in sorted({w.pair for w in chunk}):
                mine = [w for w in chunk if w.pair == pair]
                units = [Unit(list(w.src_lines), list(w.glossary)) for w in mine]
                results = translate_units(units, backend, tokenizer, pair, tsettings)
                for w, r in zip(mine, results, strict=True):
                    rows["window_id"].append(w.window_id)
                    rows["lines"].append(
                        [_without_eos(t, eos) for t in r.lines[w.core_start : w.core_end]]
                    )
                    rows["retries"].append(r.retries)
                    rows["splits"].append(r.splits)
            _write_atomic(
                pl.DataFrame(
                    rows,
                    schema={
                        "window_id": pl.String,
                        "lines": pl.List(pl.String),
                        "retries": pl.UInt32,
                        "splits": pl.UInt32,
                    },
                ),
                path,
            )
        frame = pl.read_parquet(path)
        for wid, lines, retries, splits in frame.iter_rows():
            texts[wid] = [t if t is not None and t.strip() else None for t in lines]
            per_window[wid] = (retries, splits)
        if on_progress is not None:
            on_progress(
                {
                    "stage": "translate",
                    "system": system.name,
                    "done": index + 1,
                    "total": len(parts),
                }
            )
    folder.finish()
    return texts, {
        "backend": m.backend,
        "retries": sum(r for r, _ in per_window.values()),
        "splits": sum(s for _, s in per_window.values()),
        "per_window": per_window,
    }


def _without_eos(text: str | None, eos: str) -> str | None:
    """A translated line without the end-of-sequence text that the decoded answer of a window
    can carry after its last line."""
    if text is not None and eos and text.endswith(eos):
        return text[: -len(eos)].rstrip()
    return text


def _judge_system(
    system: str,
    texts: dict[str, Lines],
    windows: list[EvalWindow],
    judge: Judge,
    backends: _Backends,
    settings: EvalSettings,
    shards: Path,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> pl.DataFrame:
    """One judge's scores of one system on every window, in shards (resumed)."""
    folder = _Shards(shards / "judge" / _slug(judge.name) / _slug(system))
    identity = {
        "judge": [judge.backend, _folder_stamp(judge.model), judge.base_url, judge.thinking_off],
        "settings": {
            k: v
            for k, v in asdict(settings).items()
            if k
            in (
                "rubric",
                "votes",
                "retries",
                "temperature",
                "max_new_tokens",
                "language",
                "context_lines",
                "seed",
            )
        },
    }
    parts = _chunks(windows, settings.shard_size)
    frames = []
    for index, chunk in enumerate(parts):
        fp = _digest(
            [
                identity,
                index,
                [
                    (w.window_id, w.pair, w.src_lines, w.core_start, w.core_end, texts[w.window_id])
                    for w in chunk
                ],
            ]
        )
        path = folder.path(index, fp)
        if not path.is_file():
            backend = backends.get(
                _judge_key(judge),
                api_key_env=judge.api_key_env,
                concurrency=judge.concurrency,
                timeout=judge.timeout,
                tokenizer=False,
                thinking_off=judge.thinking_off,
            )
            ask = _asker(
                backend,
                settings.temperature,
                settings.max_new_tokens,
                _seed(settings.seed, judge.name, system, str(index)),
            )
            _write_atomic(_judge_chunk(system, texts, chunk, judge.name, ask, settings), path)
        frames.append(pl.read_parquet(path))
        if on_progress is not None:
            on_progress(
                {
                    "stage": "judge",
                    "judge": judge.name,
                    "system": system,
                    "done": index + 1,
                    "total": len(parts),
                }
            )
    folder.finish()
    return pl.concat(frames)


def _judge_chunk(
    system: str,
    texts: dict[str, Lines],
    chunk: Sequence[EvalWindow],
    judge_name: str,
    ask: Callable[[list[tuple[str, int]]], list[str]],
    s: EvalSettings,
) -> pl.DataFrame:
    c = s.context_lines
    votes: list[_Vote] = []
    for w in chunk:
        src, _, tgt = w.pair.partition("-")
        before = w.src_lines[max(0, w.core_start - c) : w.core_start] if c else []
        after = w.src_lines[w.core_end : w.core_end + c] if c else []
        lines = w.src_lines[w.core_start : w.core_end]
        shown = texts[w.window_id]
        for v in range(s.votes):
            if s.rubric == "joint":
                prompt = render_eval_prompt(before, lines, after, shown, src, tgt, None, s.language)
                votes.append(_Vote((w.window_id, None, v), prompt, 3, parse_joint))
                continue
            for d in DIMENSIONS:
                prompt = render_eval_prompt(before, lines, after, shown, src, tgt, d, s.language)
                votes.append(
                    _Vote((w.window_id, d, v), prompt, 1, lambda r: judging.parse_scores(r, 1))
                )
    valid, reasons = _ask_until_valid(votes, ask, s.retries)
    rows: dict[str, list[Any]] = {k: [] for k in JUDGEMENT_SCHEMA}
    for w in chunk:
        for i, d in enumerate(DIMENSIONS):
            got: list[int] = []
            why: list[str] = []
            for v in range(s.votes):
                key = (w.window_id, None if s.rubric == "joint" else d, v)
                got += [scores[i if s.rubric == "joint" else 0] for scores in valid.get(key, [])]
                if s.rubric != "joint" or i == 0:  # a joint reply's failure counts once
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


# ---------------------------------------------------------------------------------------------
# Summary


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
    # score[(direction, system, dimension)] = windows x judges matrix (NaN: unscored)
    index = {w.window_id: i for i, w in enumerate(windows)}
    jpos = {j: k for k, j in enumerate(judges)}
    cube: dict[tuple[str, str], np.ndarray] = {
        (s, d): np.full((len(windows), len(judges)), np.nan) for s in systems for d in DIMENSIONS
    }
    for wid, system, judge, dim, score in judgements.select(
        "window_id", "system", "judge", "dimension", "score"
    ).iter_rows():
        if score is not None:
            cube[(system, dim)][index[wid], jpos[judge]] = score
    rows_of = {p: np.array([i for i, w in enumerate(windows) if w.pair == p]) for p in directions}
    reps, conf = settings.bootstrap, settings.confidence
    scores: dict[str, Any] = {}
    window_scores: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for p in directions:
        rows = rows_of[p]
        scores[p] = {}
        window_scores[p] = {}
        for s in systems:
            scores[p][s] = {}
            window_scores[p][s] = {}
            for d in DIMENSIONS:
                m = cube[(s, d)][rows]
                for k, j in [(None, "all"), *enumerate(judges)]:
                    sub = m if k is None else m[:, [k]]
                    mean, low, high = bootstrap_mean(
                        sub, resamples=reps, confidence=conf, seed=_seed(settings.seed, p, s, d)
                    )
                    scored = int((~np.isnan(sub).all(axis=1)).sum())
                    scores[p][s].setdefault(j, {})[d] = {
                        "mean": _round(mean),
                        "ci": [_round(low), _round(high)],
                        "n": scored,
                    }
                window_scores[p][s][d] = [_round(v) for v in _window_means(m)]
    pairs: dict[str, Any] = {}
    for p in directions:
        pairs[p] = {}
        for d in DIMENSIONS:
            pairs[p][d] = []
            for x in range(len(systems)):
                for y in range(x + 1, len(systems)):
                    a, bb = systems[x], systems[y]
                    r = pairwise(
                        _window_means(cube[(a, d)][rows_of[p]]),
                        _window_means(cube[(bb, d)][rows_of[p]]),
                        tie_margin=settings.tie_margin,
                        seed=_seed(settings.seed, p, d, a, bb),
                        resamples=reps,
                        confidence=conf,
                    )
                    pairs[p][d].append(
                        {
                            "system": a,
                            "other": bb,
                            **r,
                            "mean_diff": _round(r["mean_diff"]),
                            "ci": [_round(v) for v in r["ci"]],
                        }
                    )
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
    judge_summary = {
        j: {
            "rejected_replies": sum(v["rejected_replies"] for v in failures.get(j, {}).values()),
            "unscored": sum(v["unscored"] for v in failures.get(j, {}).values()),
            "judged": sum(v["judged"] for v in failures.get(j, {}).values()),
            "by_system": {s: failures[j][s] for s in systems if s in failures.get(j, {})},
        }
        for j in judges
    }
    return {
        "dimensions": list(DIMENSIONS),
        "directions": {p: {"windows": len(rows_of[p])} for p in directions},
        "judges": judge_summary,
        "scores": scores,
        "pairwise": pairs,
        "window_scores": {
            p: {"window_ids": [windows[i].window_id for i in rows_of[p]], **window_scores[p]}
            for p in directions
        },
        "examples": _examples(windows, systems, texts, window_scores, rows_of, settings),
    }


def _window_means(m: np.ndarray) -> np.ndarray:
    """Per window, the mean over the judges that scored it (NaN if none did)."""
    valid = ~np.isnan(m)
    counts = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(valid, m, 0.0).sum(axis=1) / counts
    return out


def _round(v: float | None, digits: int = 3) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), digits)


def _examples(
    windows: Sequence[EvalWindow],
    systems: Sequence[str],
    texts: dict[str, dict[str, Lines]],
    window_scores: dict[str, dict[str, dict[str, list[float | None]]]],
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


# ---------------------------------------------------------------------------------------------
# Agreement with human scores


@dataclass
class HumanRow:
    """One human-scored translation."""

    row: int
    direction: str
    source: str
    translation: str
    human: float
    window_id: str = ""
    system: str = ""


def read_human_scores(path: Path) -> list[HumanRow]:
    """Human scores from a CSV (UTF-8, header row): `direction` (or `pair`, SRC-TGT), `source`,
    `translation` and `human` (0..100), optionally `window_id` and `system`. A text may hold
    several lines (a quoted field with line breaks)."""
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: human scores must be a .csv file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = set(reader.fieldnames or [])
        where = "direction" if "direction" in header else "pair"
        missing = {where, "source", "translation", "human"} - header
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(sorted(missing))} (needs direction or "
                "pair, source, translation, human)"
            )
        for record in reader:
            line = reader.line_num
            pair = (record[where] or "").strip()
            src, _, tgt = pair.partition("-")
            if not src or not tgt:
                raise InputError(f"{path}: row {line}: direction {pair!r} is not SRC-TGT")
            try:
                language_name(src), language_name(tgt)
            except ConfigError as e:
                raise InputError(f"{path}: row {line}: {e}") from None
            try:
                human = float(record["human"])
            except (TypeError, ValueError):
                raise InputError(
                    f"{path}: row {line}: human score {record['human']!r} is not a number"
                ) from None
            if not 0 <= human <= 100 or math.isnan(human):
                raise InputError(f"{path}: row {line}: human score {human} is outside 0..100")
            source, translation = record["source"] or "", record["translation"] or ""
            if not source.strip() or not translation.strip():
                raise InputError(f"{path}: row {line}: empty source or translation")
            rows.append(
                HumanRow(
                    line,
                    pair,
                    source,
                    translation,
                    human,
                    (record.get("window_id") or "").strip(),
                    (record.get("system") or "").strip(),
                )
            )
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


@dataclass
class AgreementSettings:
    """How `alpo eval agreement` judges the human-scored translations."""

    #: `reward` (the sample stage's listwise judge: the translations of one source judged
    #: together, as when the judge is the reward model) or one eval dimension
    rubric: str = "reward"
    votes: int = 4
    retries: int = 3
    temperature: float = 0.3
    max_new_tokens: int = 256
    language: str = "en"
    #: the paper's bar: Spearman rho >= this in every direction
    threshold: float = TRUST_RHO
    #: sources (reward) or rows (a dimension) per shard
    shard_size: int = 32
    seed: int = 1234

    def check(self) -> None:
        if self.rubric not in AGREEMENT_RUBRICS:
            raise ConfigError(
                f"unknown agreement rubric {self.rubric!r} (use {', '.join(AGREEMENT_RUBRICS)})"
            )
        if self.language not in _TEXT:
            raise ConfigError(f"unknown judge language {self.language!r} (use en or zh)")
        if self.votes < 1 or self.retries < 0 or self.max_new_tokens < 1 or self.shard_size < 1:
            raise ConfigError("agreement needs votes >= 1, retries >= 0, shard size >= 1")
        if self.temperature < 0 or not -1 <= self.threshold <= 1:
            raise ConfigError("agreement needs temperature >= 0 and -1 <= threshold <= 1")


AGREEMENT_SCHEMA: dict[str, Any] = {
    "row": pl.UInt32,
    "judge": pl.String,
    "score": pl.Float64,
    "votes": pl.List(pl.Float64),
    "rejected": pl.UInt32,
}


def _units(rows: Sequence[HumanRow], rubric: str) -> list[list[HumanRow]]:
    """What is judged together: with `reward`, the translations of one source (in groups of at
    most 26, the judge's letters); otherwise each row alone."""
    if rubric != "reward":
        return [[r] for r in rows]
    groups: dict[tuple[str, str], list[HumanRow]] = {}
    for r in rows:
        groups.setdefault((r.direction, r.source), []).append(r)
    out = []
    for members in groups.values():
        size = len(judging.LETTERS)
        parts = math.ceil(len(members) / size)
        step = math.ceil(len(members) / parts)
        out += [members[i : i + step] for i in range(0, len(members), step)]
    return out


def _judge_units(
    units: Sequence[Sequence[HumanRow]],
    judge_name: str,
    ask: Callable[[list[tuple[str, int]]], list[str]],
    s: AgreementSettings,
    rng: random.Random,
) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {k: [] for k in AGREEMENT_SCHEMA}

    def add(r: HumanRow, votes: list[float], rejected: int) -> None:
        rows["row"].append(r.row)
        rows["judge"].append(judge_name)
        rows["score"].append(sum(votes) / len(votes) if votes else None)
        rows["votes"].append(votes)
        rows["rejected"].append(rejected)

    singles: list[_Vote] = []
    for unit in units:
        first = unit[0]
        src, _, tgt = first.direction.partition("-")
        lines = first.source.split("\n")
        if s.rubric != "reward":
            for v in range(s.votes):
                prompt = render_eval_prompt(
                    [], lines, [], first.translation.split("\n"), src, tgt, s.rubric, s.language
                )
                singles.append(
                    _Vote((first.row, v), prompt, 1, lambda r: judging.parse_scores(r, 1))
                )
        elif len(unit) == 1:
            task = judging.JudgeTask([], lines, [], [first.translation])
            prompt = judging.render_judge_prompt(task, [0], src, tgt, s.language)
            for v in range(s.votes):
                singles.append(
                    _Vote((first.row, v), prompt, 1, lambda r: judging.parse_scores(r, 1))
                )
    if singles:
        valid, reasons = _ask_until_valid(singles, ask, s.retries)
        for unit in units:
            if s.rubric == "reward" and len(unit) > 1:
                continue
            r = unit[0]
            got = [float(x[0]) for v in range(s.votes) for x in valid.get((r.row, v), [])]
            add(r, got, sum(len(reasons.get((r.row, v), [])) for v in range(s.votes)))
    if s.rubric == "reward":
        groups = [u for u in units if len(u) > 1]
        for direction in sorted({u[0].direction for u in groups}):
            mine = [u for u in groups if u[0].direction == direction]
            src, _, tgt = direction.partition("-")
            tasks = [
                judging.JudgeTask([], u[0].source.split("\n"), [], [r.translation for r in u])
                for u in mine
            ]
            results = judging.judge(
                tasks,
                ask,
                src,
                tgt,
                votes=s.votes,
                retries=s.retries,
                language=s.language,
                rng=rng,
            )
            for u, res in zip(mine, results, strict=True):
                for c, r in enumerate(u):  # a rejected listwise reply counts once
                    add(r, [float(v[c]) for v in res.votes], len(res.failures) if c == 0 else 0)
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA)


def _correlations(judge: np.ndarray, human: np.ndarray, threshold: float) -> dict[str, Any]:
    rho = spearman(judge, human) if len(judge) > 1 else None
    return {
        "n": int(len(judge)),
        "spearman": _round(rho, 4),
        "kendall": _round(kendall_tau_b(judge, human) if len(judge) > 1 else None, 4),
        "bland_altman": {k: _round(v, 3) for k, v in bland_altman(judge, human).items()},
        "trusted": rho is not None and rho >= threshold,
    }


def run_agreement(
    human: Path,
    judges: Sequence[Judge],
    out: Path,
    settings: AgreementSettings | None = None,
    model_options: ModelOptions | None = None,
    *,
    force: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    backend_factory: BackendFactory | None = None,
) -> dict[str, Any]:
    """Score the human-scored translations with each judge and compare per direction:
    Spearman's rho, Kendall's tau-b, Bland-Altman (judge - human), and whether rho reaches the
    threshold in every direction. Writes `out/agreement.json`, `out/agreement.parquet` (every
    row with its judge scores) and `out/report.html`. Of `model_options`, only how models load
    (dtype, remote code, vLLM settings) applies."""
    from alpo import report

    started = time.perf_counter()
    s = settings or AgreementSettings()
    s.check()
    if not judges:
        raise ConfigError("agreement needs at least one judge")
    labels = [j.name for j in judges]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"judge names must differ (name them NAME=MODEL): {', '.join(labels)}")
    rows = read_human_scores(Path(human))
    units = _units(rows, s.rubric)
    shards = Path(out) / "shards" / "agreement"
    if force:
        shutil.rmtree(shards, ignore_errors=True)
    mopts = model_options or ModelOptions()
    backends = _Backends(
        backend_factory or make_backend,
        dtype=mopts.dtype,
        trust_remote_code=mopts.trust_remote_code,
        vllm=mopts.vllm,
    )
    frames = []
    for j in judges:
        folder = _Shards(shards / _slug(j.name))
        identity = [
            [j.backend, _folder_stamp(j.model), j.base_url, j.thinking_off],
            {k: v for k, v in asdict(s).items() if k not in ("threshold",)},
        ]
        parts = _chunks(units, s.shard_size)
        for index, chunk in enumerate(parts):
            content = [[(r.row, r.direction, r.source, r.translation) for r in u] for u in chunk]
            path = folder.path(index, _digest([identity, index, content]))
            if not path.is_file():
                backend = backends.get(
                    _judge_key(j),
                    api_key_env=j.api_key_env,
                    concurrency=j.concurrency,
                    timeout=j.timeout,
                    tokenizer=False,
                    thinking_off=j.thinking_off,
                )
                seed = _seed(s.seed, j.name, str(index))
                ask = _asker(backend, s.temperature, s.max_new_tokens, seed)
                frame = _judge_units(chunk, j.name, ask, s, random.Random(seed))
                _write_atomic(frame, path)
            frames.append(pl.read_parquet(path))
            if on_progress is not None:
                on_progress(
                    {"stage": "judge", "judge": j.name, "done": index + 1, "total": len(parts)}
                )
        folder.finish()
        backends.release(_judge_key(j))
    inputs = pl.DataFrame(
        {
            "row": [r.row for r in rows],
            "direction": [r.direction for r in rows],
            "human": [r.human for r in rows],
            "source": [r.source for r in rows],
            "translation": [r.translation for r in rows],
            "window_id": [r.window_id for r in rows],
            "system": [r.system for r in rows],
        },
        schema={
            "row": pl.UInt32,
            "direction": pl.String,
            "human": pl.Float64,
            "source": pl.String,
            "translation": pl.String,
            "window_id": pl.String,
            "system": pl.String,
        },
    )
    table = pl.concat(frames).join(inputs, on="row", how="left").sort("judge", "row")
    results: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for label in labels:
        mine = table.filter(pl.col("judge") == label)
        ok = mine.filter(pl.col("score").is_not_null())
        per: dict[str, Any] = {}
        points[label] = {}
        for direction in sorted({r.direction for r in rows}):
            d = ok.filter(pl.col("direction") == direction)
            jd, hd = d["score"].to_numpy(), d["human"].to_numpy()
            per[direction] = {
                "rows": int((mine["direction"] == direction).sum()),
                "unscored": int(
                    mine.filter(pl.col("direction") == direction)["score"].null_count()
                ),
                **_correlations(jd, hd, s.threshold),
            }
            points[label][direction] = [[float(h), float(v)] for h, v in zip(hd, jd, strict=True)]
        pooled = _correlations(ok["score"].to_numpy(), ok["human"].to_numpy(), s.threshold)
        results[label] = {
            "model": next(x.model for x in judges if x.name == label),
            "directions": per,
            "all": pooled,
            "rejected_replies": int(mine["rejected"].sum()),
            "unscored": int(mine["score"].null_count()),
            "trusted": all(v["trusted"] for v in per.values()),
        }
    out = Path(out)
    _write_atomic(table, out / "agreement.parquet")
    summary = {
        "human": str(human),
        "rows": len(rows),
        "rubric": s.rubric,
        "threshold": s.threshold,
        "judges": results,
        "points": points,
        "settings": asdict(s),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(out / "agreement.json", summary)
    report.write_report(out)
    summary["out"] = str(out)
    return summary
