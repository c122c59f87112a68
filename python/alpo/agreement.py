"""`alpo eval agreement`: how well a judge agrees with human scores of the same translations.

Each judge scores every human-scored translation, either with the sample stage's listwise prompt
(`rubric="reward"`: the translations of one source judged together, as when the judge is the
reward model) or with the eval prompt of one dimension (`alpo.evaluate.render_eval_prompt`).
Per direction and over all rows: Spearman's rho, Kendall's tau-b and a Bland-Altman summary of
judge minus human (`alpo.stats`); a judge is trusted when rho reaches the threshold (the paper's
0.82) in every direction. Judges, backends, shards and the asking of a judge are those of
`alpo.evaluate`, so a rerun resumes the same way.
"""

from __future__ import annotations

import csv
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from alpo import judging
from alpo.align import write_json_atomic
from alpo.evaluate import (
    DIMENSIONS,
    BackendFactory,
    Backends,
    Judge,
    ModelOptions,
    Vote,
    ask_until_valid,
    check_judges,
    check_language,
    parse_one,
    render_eval_prompt,
    sharded,
    slug,
)
from alpo.exceptions import ConfigError, InputError
from alpo.judging import Ask
from alpo.prepare import write_parquet_atomic
from alpo.prompts import language_name
from alpo.stats import bland_altman, kendall_tau_b, rounded, seed_for, spearman

__all__ = [
    "AGREEMENT_RUBRICS",
    "AgreementSettings",
    "HumanRow",
    "read_human_scores",
    "run_agreement",
]

#: `reward`: the sample stage's listwise judge (the reward model); or one eval dimension
AGREEMENT_RUBRICS = ("reward", *DIMENSIONS)
#: the paper's bar for trusting a judge as reward model (Spearman rho, every direction)
TRUST_RHO = 0.82


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
        check_language(self.language)
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


#: the human-scored rows, as joined to the judge scores in agreement.parquet
INPUT_SCHEMA: dict[str, Any] = {
    "row": pl.UInt32,
    "direction": pl.String,
    "human": pl.Float64,
    "source": pl.String,
    "translation": pl.String,
    "window_id": pl.String,
    "system": pl.String,
}

#: a row, its valid votes, and the replies rejected on its account
_Scored = tuple[HumanRow, list[float], int]


def _judge_units(
    units: Sequence[Sequence[HumanRow]],
    judge_name: str,
    ask: Ask,
    s: AgreementSettings,
    rng: random.Random,
) -> pl.DataFrame:
    """One judge's score of every row of `units`: the rows judged alone first, then the
    listwise groups."""
    alone = [u[0] for u in units if s.rubric != "reward" or len(u) == 1]
    groups = [u for u in units if s.rubric == "reward" and len(u) > 1]
    scored = _judge_alone(alone, ask, s) + _judge_groups(groups, ask, s, rng)
    return pl.DataFrame(
        {
            "row": [r.row for r, _, _ in scored],
            "judge": [judge_name] * len(scored),
            "score": [sum(v) / len(v) if v else None for _, v, _ in scored],
            "votes": [v for _, v, _ in scored],
            "rejected": [n for _, _, n in scored],
        },
        schema=AGREEMENT_SCHEMA,
    )


def _judge_alone(rows: Sequence[HumanRow], ask: Ask, s: AgreementSettings) -> list[_Scored]:
    """Rows scored one at a time: the eval prompt of the dimension, or the listwise prompt
    with a single candidate."""
    votes: list[Vote] = []
    for r in rows:
        src, _, tgt = r.direction.partition("-")
        lines = r.source.split("\n")
        if s.rubric == "reward":
            task = judging.JudgeTask([], lines, [], [r.translation])
            prompt = judging.render_judge_prompt(task, [0], src, tgt, s.language)
        else:
            shown = r.translation.split("\n")
            prompt = render_eval_prompt([], lines, [], shown, src, tgt, s.rubric, s.language)
        votes += [Vote((r.row, v), prompt, 1, parse_one) for v in range(s.votes)]
    if not votes:
        return []
    valid, reasons = ask_until_valid(votes, ask, s.retries)
    return [
        (
            r,
            [float(x[0]) for v in range(s.votes) for x in valid.get((r.row, v), [])],
            sum(len(reasons.get((r.row, v), [])) for v in range(s.votes)),
        )
        for r in rows
    ]


def _judge_groups(
    groups: Sequence[Sequence[HumanRow]], ask: Ask, s: AgreementSettings, rng: random.Random
) -> list[_Scored]:
    """The translations of one source scored together by the listwise judge, per direction."""
    out: list[_Scored] = []
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
                rejected = len(res.failures) if c == 0 else 0
                out.append((r, [float(v[c]) for v in res.votes], rejected))
    return out


def _correlations(judge: np.ndarray, human: np.ndarray, threshold: float) -> dict[str, Any]:
    rho = spearman(judge, human) if len(judge) > 1 else None
    return {
        "n": int(len(judge)),
        "spearman": rounded(rho, 4),
        "kendall": rounded(kendall_tau_b(judge, human) if len(judge) > 1 else None, 4),
        "bland_altman": {k: rounded(v, 3) for k, v in bland_altman(judge, human).items()},
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
    check_judges(judges, "agreement")
    rows = read_human_scores(Path(human))
    units = _units(rows, s.rubric)
    out = Path(out)
    shards = out / "shards" / "agreement"
    if force:
        shutil.rmtree(shards, ignore_errors=True)
    backends = Backends(backend_factory, model_options or ModelOptions())
    frames = []
    for j in judges:
        frames += _judge_all(j, units, backends, s, shards, on_progress)
        backends.release(j.key)
    inputs = pl.DataFrame({k: [getattr(r, k) for r in rows] for k in INPUT_SCHEMA}, INPUT_SCHEMA)
    table = pl.concat(frames).join(inputs, on="row", how="left").sort("judge", "row")
    directions = sorted({r.direction for r in rows})
    results: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for j in judges:
        mine = table.filter(pl.col("judge") == j.name)
        results[j.name], points[j.name] = _compare(mine, j.model, directions, s.threshold)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table.lazy(), out / "agreement.parquet")
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


def _judge_all(
    j: Judge,
    units: Sequence[Sequence[HumanRow]],
    backends: Backends,
    s: AgreementSettings,
    shards: Path,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> list[pl.DataFrame]:
    """One judge's scores of every unit, in shards (resumed)."""
    identity = [j.stamp(), {k: v for k, v in asdict(s).items() if k != "threshold"}]

    def fingerprint(index: int, chunk: Sequence[Sequence[HumanRow]]) -> Any:
        content = [[(r.row, r.direction, r.source, r.translation) for r in u] for u in chunk]
        return [identity, index, content]

    def judge_chunk(index: int, chunk: Sequence[Sequence[HumanRow]]) -> pl.DataFrame:
        seed = seed_for(s.seed, j.name, str(index))
        ask = judging.asker(backends.judge(j), s.temperature, s.max_new_tokens, seed)
        return _judge_units(chunk, j.name, ask, s, random.Random(seed))

    return sharded(
        shards / slug(j.name),
        units,
        s.shard_size,
        fingerprint,
        judge_chunk,
        on_progress,
        {"stage": "judge", "judge": j.name},
    )


def _compare(
    mine: pl.DataFrame, model: str, directions: Sequence[str], threshold: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One judge's agreement with the human scores (per direction and over all rows), and the
    (human, judge) points per direction."""
    ok = mine.filter(pl.col("score").is_not_null())
    per: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for direction in directions:
        d = ok.filter(pl.col("direction") == direction)
        jd, hd = d["score"].to_numpy(), d["human"].to_numpy()
        asked = mine.filter(pl.col("direction") == direction)
        per[direction] = {
            "rows": asked.height,
            "unscored": int(asked["score"].null_count()),
            **_correlations(jd, hd, threshold),
        }
        points[direction] = [[float(h), float(v)] for h, v in zip(hd, jd, strict=True)]
    result = {
        "model": model,
        "directions": per,
        "all": _correlations(ok["score"].to_numpy(), ok["human"].to_numpy(), threshold),
        "rejected_replies": int(mine["rejected"].sum()),
        "unscored": int(mine["score"].null_count()),
        "trusted": all(v["trusted"] for v in per.values()),
    }
    return result, points
