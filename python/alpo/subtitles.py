"""Subtitle files as the translator sees them, and writers that give them back.

`read_track` keeps every cue of a file in file order (the Rust parser, without the cleaning that
drops or merges cues for training), with its timing, style, raw text and plain text. `write_track`
writes a track with new texts as SRT, WebVTT or ASS, chosen by the output's extension, keeping
each cue's timing; from an ASS input to an ASS output every other field, the styles and the
header stay as they were, and leading override tags such as `{\\an8}` are kept.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path

from alpo import _core
from alpo.align import read_subtitles_info
from alpo.exceptions import InputError

__all__ = ["FORMATS", "Cue", "Track", "output_format", "read_track", "write_track"]

#: Output formats by file extension.
FORMATS = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ass"}

_LEADING_TAGS = re.compile(r"^(?:\{[^}]*\})*")
_MARKUP = re.compile(r"\{[^}]*\}|<[^>]*>")
_ASS_HEADER = """[Script Info]
ScriptType: v4.00+
PlayResX: 1920
PlayResY: 1080
WrapStyle: 0

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,64,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,1,\
2,20,20,40,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


@dataclass
class Cue:
    start_ms: int
    end_ms: int
    #: the text as written (markup included)
    raw: str
    #: one line of plain text, what gets translated ("" for a cue with nothing to translate)
    plain: str
    style: str
    #: the 1-based line of the file where the cue is written
    line: int


@dataclass
class Track:
    path: Path
    format: str
    encoding: str
    cues: list[Cue]


def read_track(path: Path) -> Track:
    """Every cue of a subtitle file, in file order. A file with no cue is an InputError."""
    frame, info = read_subtitles_info(path, clean=False)
    raws = frame["text"].to_list()
    # Cleaning for training cuts annotation cues (Thai "=...=" sound notes); a translation
    # keeps them, with only their markup removed.
    plains = [
        plain or _MARKUP.sub("", raw.replace("\\N", " ").replace("\\n", " ")).strip()
        for raw, plain in zip(raws, _core.clean_texts(raws), strict=True)
    ]
    cues = [
        Cue(int(s), int(e), raw, plain, style, int(line))
        for s, e, raw, plain, style, line in zip(
            frame["start_ms"],
            frame["end_ms"],
            raws,
            plains,
            frame["style"],
            frame["line"],
            strict=True,
        )
    ]
    return Track(Path(path), info["format"], info["encoding"], cues)


def output_format(path: Path) -> str:
    """The format an output path asks for, from its extension."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(f"{path}: unknown subtitle extension (use one of {known})")
    return fmt


def write_track(track: Track, texts: list[str], out: Path) -> None:
    """Write `track` with `texts` (one per cue, lines separated by "\\n") to `out`, in the
    format of its extension, atomically."""
    if len(texts) != len(track.cues):
        raise ValueError("need one text per cue")
    fmt = output_format(out)
    if fmt == "srt":
        body = _srt(track.cues, texts)
    elif fmt == "vtt":
        body = _vtt(track.cues, texts)
    elif track.format == "ass":
        body = _ass_rewrite(track, texts)
    else:
        body = _ass_new(track.cues, texts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, out)


def _clock(ms: int, sep: str, hour_digits: int = 2) -> str:
    ms = max(0, ms)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:0{hour_digits}d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _srt(cues: list[Cue], texts: list[str]) -> str:
    blocks = []
    for i, (cue, text) in enumerate(zip(cues, texts, strict=True), 1):
        span = f"{_clock(cue.start_ms, ',')} --> {_clock(cue.end_ms, ',')}"
        blocks.append(f"{i}\n{span}\n{text}\n")
    return "\n".join(blocks)


def _vtt(cues: list[Cue], texts: list[str]) -> str:
    blocks = ["WEBVTT\n"]
    for cue, text in zip(cues, texts, strict=True):
        span = f"{_clock(cue.start_ms, '.')} --> {_clock(cue.end_ms, '.')}"
        blocks.append(f"{span}\n{text}\n")
    return "\n".join(blocks)


def _ass_time(ms: int) -> str:
    cs = max(0, ms) // 10
    h, rest = divmod(cs, 360_000)
    m, rest = divmod(rest, 6000)
    s, cs = divmod(rest, 100)
    return f"{h}:{m:02d}:{s:02d}.{cs:02d}"


def _ass_text(raw: str, text: str) -> str:
    """The new text with the raw text's leading override tags (position, fades) kept."""
    tags = _LEADING_TAGS.match(raw)
    return (tags.group(0) if tags else "") + text.replace("\n", "\\N")


def _ass_new(cues: list[Cue], texts: list[str]) -> str:
    lines = [
        f"Dialogue: 0,{_ass_time(c.start_ms)},{_ass_time(c.end_ms)},{c.style or 'Default'},,"
        f"0,0,0,,{_ass_text(c.raw, t)}"
        for c, t in zip(cues, texts, strict=True)
    ]
    return _ASS_HEADER + "\n".join(lines) + "\n"


def _ass_rewrite(track: Track, texts: list[str]) -> str:
    """The input file with each Dialogue line's Text field replaced; everything else as it was."""
    source = _decode(track)
    lines = source.split("\n")
    for cue, text in zip(track.cues, texts, strict=True):
        i = cue.line - 1
        head, sep, rest = lines[i].partition(":")
        fields = rest.split(",", 9)
        if not sep or len(fields) != 10:
            raise InputError(f"{track.path}: line {cue.line}: not a Dialogue line")
        cr = "\r" if fields[9].endswith("\r") else ""
        fields[9] = _ass_text(fields[9].rstrip("\r"), text) + cr
        lines[i] = head + sep + ",".join(fields)
    return "\n".join(lines)


def _decode(track: Track) -> str:
    data = track.path.read_bytes()
    name = track.encoding.lower()
    if name.startswith("utf-8"):
        name = "utf-8-sig"
    try:
        codecs.lookup(name)
    except LookupError:
        name = name.replace("windows-", "cp")
    return data.decode(name, errors="replace")
