"""`alpo translate`: subtitle files in, translated subtitle files out, every cue accounted for.

Cues are translated in windows of `window` lines with `context` lines of context on each side
(the prompt format of training: every line of the window numbered, the answer numbering every
line), and each window's core lines are kept, so the windows stitch into the whole file.
Every answer is checked: it must hold exactly the window's numbered lines. A wrong answer is
retried with a fresh sample; a window that still fails is split in two (each half with its own
context), down to single lines; a cue that still fails keeps its source text and is listed. All
windows of all files go to the backend together, one round at a time, so a folder translates
in parallel however the backend parallelizes (batched generation, concurrent requests).

Each output file also gets reading-speed figures for its target script: characters per second
and characters per line (combining marks, as in Thai, do not count), with the cues over the
limits flagged.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpo import chat
from alpo.exceptions import ConfigError, EncodingError, InputError, ParseError
from alpo.generation import Backend, SampleRequest
from alpo.prepare import window_glossary
from alpo.prompts import parse_answer, render_prompt
from alpo.subtitles import FORMATS, Track, output_format, read_track, write_track

__all__ = [
    "LIMITS",
    "TranslateSettings",
    "Unit",
    "check_request",
    "limits_for",
    "reading_stats",
    "translate_files",
    "translate_units",
]

#: (characters per second, characters per line) commonly used as limits, by script.
LIMITS: dict[str, tuple[float, int]] = {
    "latin": (17.0, 42),
    "cyrillic": (17.0, 42),
    "greek": (17.0, 42),
    "arabic": (17.0, 42),
    "hebrew": (17.0, 42),
    "thai": (15.0, 35),
    "cjk": (9.0, 16),
    "hangul": (12.0, 16),
}
_SCRIPTS = {
    "zh": "cjk",
    "ja": "cjk",
    "ko": "hangul",
    "th": "thai",
    "ru": "cyrillic",
    "uk": "cyrillic",
    "bg": "cyrillic",
    "el": "greek",
    "ar": "arabic",
    "fa": "arabic",
    "he": "hebrew",
}


def limits_for(lang: str) -> tuple[float, int]:
    """The default (cps, line length) limits for a target language."""
    return LIMITS[_SCRIPTS.get(lang, "latin")]


@dataclass
class TranslateSettings:
    """How `alpo translate` cuts, prompts, samples and checks."""

    #: core lines per window
    window: int = 25
    #: context lines on each side of the core
    context: int = 5
    #: first try: 0 is greedy decoding
    temperature: float = 0.0
    #: retries with a fresh sample at `retry_temperature` before a window is split
    retries: int = 1
    retry_temperature: float = 0.7
    #: new tokens allowed per line of the window
    tokens_per_line: int = 64
    #: language of the instruction text (as in prepare: `en` or `zh`)
    instruction_language: str = "en"
    #: reading-speed limits; None takes the target script's defaults (`LIMITS`)
    max_cps: float | None = None
    max_line: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.window < 1 or self.context < 0 or self.retries < 0 or self.tokens_per_line < 1:
            raise ConfigError("translate needs window >= 1, context >= 0, retries >= 0")


@dataclass
class Unit:
    """A run of source lines to translate: the lines of one file (or test window) in order,
    with the glossary entries that apply to them."""

    lines: list[str]
    glossary: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Job:
    unit: int
    lo: int  # first line shown (context included)
    start: int  # first core line
    end: int  # one past the last core line
    hi: int  # one past the last line shown
    attempt: int = 0


@dataclass
class UnitResult:
    #: one translation per line, None where every try failed
    lines: list[str | None]
    retries: int = 0
    splits: int = 0


def _windows(n: int, window: int, context: int) -> list[tuple[int, int, int, int]]:
    return [
        (max(0, s - context), s, min(n, s + window), min(n, s + window + context))
        for s in range(0, n, window)
    ]


def translate_units(
    units: Sequence[Unit],
    backend: Backend,
    tokenizer: Any,
    pair: str,
    settings: TranslateSettings,
    on_round: Callable[[int, int, int], None] | None = None,
) -> list[UnitResult]:
    """Translate every line of every unit; one backend call per round for all pending
    windows. `on_round(round, windows_done, windows_pending)` reports progress."""
    src_lang, tgt_lang = pair.split("-")
    results = [UnitResult([None] * len(u.lines)) for u in units]
    pending = [
        _Job(i, lo, s, e, hi)
        for i, u in enumerate(units)
        for lo, s, e, hi in _windows(len(u.lines), settings.window, settings.context)
    ]
    done = 0
    round_ = 0
    while pending:
        requests = []
        for job in pending:
            unit = units[job.unit]
            shown = unit.lines[job.lo : job.hi]
            prompt = render_prompt(
                shown,
                src_lang,
                tgt_lang,
                glossary=window_glossary(shown, unit.glossary),
                instruction_language=settings.instruction_language,
            )
            ids = chat.encode(tokenizer, prompt, "").prompt_ids
            warm = job.attempt > 0
            requests.append(
                SampleRequest(
                    ids,
                    1,
                    settings.retry_temperature if warm else settings.temperature,
                    40 if warm else 0,
                    0.95 if warm else 1.0,
                    settings.tokens_per_line * len(shown) + 16,
                    stop_lines=len(shown),
                    seed=settings.seed + job.attempt,
                )
            )
        answers = backend.sample(requests)
        next_round: list[_Job] = []
        for job, outs in zip(pending, answers, strict=True):
            n = job.hi - job.lo
            # The end-of-turn token is not part of the answer.
            text = tokenizer.decode(list(outs[0]), skip_special_tokens=True) if outs else ""
            parsed = parse_answer(text, n)
            result = results[job.unit]
            if parsed is not None:
                core = parsed[job.start - job.lo : job.end - job.lo]
                result.lines[job.start : job.end] = core
                done += 1
            elif job.attempt < settings.retries:
                result.retries += 1
                next_round.append(
                    _Job(job.unit, job.lo, job.start, job.end, job.hi, job.attempt + 1)
                )
            elif job.end - job.start > 1:
                result.splits += 1
                mid = (job.start + job.end) // 2
                size = len(units[job.unit].lines)
                for s, e in ((job.start, mid), (mid, job.end)):
                    lo = max(0, s - settings.context)
                    next_round.append(_Job(job.unit, lo, s, e, min(size, e + settings.context)))
            else:
                done += 1  # this line keeps its source text
        round_ += 1
        pending = next_round
        if on_round is not None:
            on_round(round_, done, len(pending))
    return results


# ---------------------------------------------------------------------------------------------
# Files


def _visible(text: str) -> int:
    """Characters a reader sees: marks that sit on another character (Thai vowels and tones
    above and below, accents written apart) and format characters do not count."""
    return sum(
        1 for ch in text if ch != "\n" and unicodedata.category(ch) not in ("Mn", "Me", "Cf")
    )


def reading_stats(
    starts: Sequence[int], ends: Sequence[int], texts: Sequence[str], max_cps: float, max_line: int
) -> dict[str, Any]:
    """Characters per second and per line of the cues that have text, and those over limits."""
    cps, widths, over_cps, over_line = [], [], [], []
    for i, (s, e, text) in enumerate(zip(starts, ends, texts, strict=True)):
        if not text.strip():
            continue
        rate = _visible(text) / max((e - s) / 1000, 0.001)
        width = max(_visible(line) for line in text.split("\n"))
        cps.append(rate)
        widths.append(width)
        if rate > max_cps:
            over_cps.append(i + 1)
        if width > max_line:
            over_line.append(i + 1)
    cps.sort()
    return {
        "max_cps": max_cps,
        "max_line": max_line,
        "median_cps": round(cps[len(cps) // 2], 2) if cps else None,
        "longest_line": max(widths, default=0),
        "over_cps": over_cps,
        "over_line": over_line,
    }


@dataclass
class FileJob:
    src: Path
    out: Path


def plan_outputs(inp: Path, out: Path, pair: str) -> list[FileJob]:
    """Which files to write: one file to OUTPUT, or every subtitle file of a folder (recursively)
    to the same place under the OUTPUT folder, its language tag switched to the target's."""
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    if inp.is_file():
        output_format(out)
        return [FileJob(inp, out)]
    src_lang, tgt_lang = pair.split("-")
    jobs = []
    for path in sorted(p for p in inp.rglob("*") if p.is_file()):
        if path.suffix.lower() not in FORMATS:
            continue
        name = path.name
        for sep in (".", "_", "-"):
            tag = f"{sep}{src_lang}{path.suffix}"
            if name.lower().endswith(tag.lower()):
                name = name[: -len(tag)] + f"{sep}{tgt_lang}{path.suffix}"
                break
        else:
            name = f"{path.stem}.{tgt_lang}{path.suffix}"
        jobs.append(FileJob(path, out / path.parent.relative_to(inp) / name))
    if not jobs:
        raise InputError(f"{inp}: no subtitle files ({', '.join(sorted(FORMATS))}) in this folder")
    return jobs


def check_request(inp: Path, out: Path, pair: str, settings: TranslateSettings) -> list[FileJob]:
    """The files to write, once the pair, the settings and the paths are known to be good;
    cheap, so a command can call it before loading a model."""
    from alpo.align import parse_pair

    parse_pair(pair)
    settings.check()
    return plan_outputs(inp, out, pair)


def translate_files(
    inp: Path,
    out: Path,
    pair: str,
    backend: Backend,
    tokenizer: Any,
    settings: TranslateSettings,
    *,
    glossary: dict[str, list[tuple[str, str]]] | None = None,
    force: bool = False,
    on_round: Callable[[int, int, int], None] | None = None,
) -> dict[str, Any]:
    """Translate a file or a folder; returns the summary with a report per file. Outputs that
    already exist are kept unless `force` (a rerun finishes an interrupted folder)."""
    started = time.perf_counter()
    jobs = check_request(inp, out, pair, settings)
    todo = [j for j in jobs if force or not j.out.exists()]
    reports: list[dict[str, Any]] = []
    tracks: list[Track] = []
    for job in todo:
        try:
            tracks.append(read_track(job.src))
        except (InputError, EncodingError, ParseError) as e:
            if inp.is_file():
                raise
            # In a folder, a bad file is reported and the others go on.
            reports.append({"file": str(job.src), "error": str(e).split(": ", 1)[-1]})
            tracks.append(Track(job.src, "", "", []))
    units, where = [], []
    for t in tracks:
        lines = [i for i, c in enumerate(t.cues) if c.plain]
        terms = _file_terms(t.path, glossary or {})
        units.append(Unit([t.cues[i].plain for i in lines], terms))
        where.append(lines)
    results = translate_units(units, backend, tokenizer, pair, settings, on_round)
    tgt_lang = pair.split("-")[1]
    cps_default, line_default = limits_for(tgt_lang)
    max_cps = settings.max_cps or cps_default
    max_line = settings.max_line or line_default
    for job, track, lines, result in zip(todo, tracks, where, results, strict=True):
        if not track.cues:
            continue
        texts = [c.plain for c in track.cues]
        failed = []
        for i, translated in zip(lines, result.lines, strict=True):
            if translated is None:
                failed.append({"cue": i + 1, "source": track.cues[i].plain})
            else:
                texts[i] = translated
        write_track(track, texts, job.out)
        reports.append(
            {
                "file": str(job.src),
                "out": str(job.out),
                "cues": len(track.cues),
                "translated": len(lines) - len(failed),
                "empty": len(track.cues) - len(lines),
                "kept_source": failed,
                "retries": result.retries,
                "splits": result.splits,
                "reading": reading_stats(
                    [c.start_ms for c in track.cues],
                    [c.end_ms for c in track.cues],
                    texts,
                    max_cps,
                    max_line,
                ),
            }
        )
    return {
        "files": len(jobs),
        "translated_files": sum(1 for r in reports if "out" in r),
        "skipped_existing": len(jobs) - len(todo),
        "bad_files": [r for r in reports if "error" in r],
        "kept_source": sum(len(r.get("kept_source", [])) for r in reports),
        "reports": [r for r in reports if "out" in r],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _file_terms(path: Path, glossary: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Glossary entries for a file: those for every title (`*`) and those of its title."""
    return [*glossary.get("*", []), *glossary.get(_title_of(path), [])]


def _title_of(path: Path) -> str:
    """The title part of a subtitle file name: before the episode tag, else before the
    language tag ("Harbor Lights.S01E01.zh.ass" -> "Harbor Lights")."""
    stem = path.stem
    match = re.match(r"(.+?)[ ._-]+(?:S\d+E\d+|E\d+|\d+)\b", stem, flags=re.IGNORECASE)
    return (match.group(1) if match else stem.rsplit(".", 1)[0]).strip()
