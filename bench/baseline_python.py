"""Pure-Python baseline of `alpo align` (default nearest mode), for the speed comparison.

    python bench/baseline_python.py DIR... --out Y.parquet [--max-gap 0.7]

What a careful Python user would write with the usual tools, one process:
- walk the folders, pair files of one episode by name (`NAME.LANG.EXT`, NAME = title + SxxEyy);
- decode: a UTF-16 byte-order mark -> utf-16, else utf-8-sig, else the language's legacy code
  page (gb18030 for zh, cp874 for th, cp1252 for de and the rest);
- parse with pysubs2 (format from the extension), take each event's `plaintext`, fold line
  breaks and runs of whitespace into single spaces, drop empty cues and cues that end before they
  start, sort by (start, end), merge rolling duplicates (consecutive cues with the same text
  whose times touch or overlap), as alpo's cleaning does for this corpus;
- align every language pair of the episode (English first, else alphabetical) with the paper's
  rule: each source cue -> the target cue whose start is nearest, if within --max-gap; ties to the
  lower index (bisect over the sorted target starts); an unaligned source cue cuts the fragment;
- write one Parquet file with polars, with alpo's columns, and `Y.parquet.report.json`.

No offset/drift correction: that is beyond the paper's rule (run alpo with `--no-sync` to compare
outputs row for row).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from bisect import bisect_left
from pathlib import Path

import polars as pl
import pysubs2

from alpo import ALIGNED_SCHEMA

EXTS = {"srt": "srt", "ass": "ass", "ssa": "ssa", "vtt": "vtt"}
LEGACY = {"zh": "gb18030", "th": "cp874", "de": "cp1252"}
LANGS = {
    "en": "en", "eng": "en", "zh": "zh", "zho": "zh", "chi": "zh", "th": "th", "tha": "th",
    "de": "de", "deu": "de", "ger": "de",
}  # fmt: skip
NAME_RE = re.compile(r"^(?P<name>.+)\.(?P<lang>[A-Za-z]{2,3})\.(?P<ext>[A-Za-z]+)$")
EPISODE_RE = re.compile(r"^(?P<title>.*?)[._ -]*[Ss](?P<s>\d{1,3})[._ -]?[Ee](?P<e>\d{1,4})")

# The output columns of the paper's rule (alpo's `dup` flag is beyond it); the work below is all
# plain Python.
SCHEMA = {k: v for k, v in ALIGNED_SCHEMA.items() if k != "dup"}


def find_episodes(roots: list[str]) -> tuple[dict[tuple[str, str], dict[str, str]], int]:
    """(title, episode) -> {lang: path}; and the number of subtitle files found."""
    episodes: dict[tuple[str, str], dict[str, str]] = {}
    found = 0
    paths = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            for f in files:
                paths.append(os.path.join(dirpath, f))
    for path in sorted(paths):
        m = NAME_RE.match(os.path.basename(path))
        if not m or m["ext"].lower() not in EXTS:
            continue
        found += 1
        lang = LANGS.get(m["lang"].lower())
        if lang is None:
            continue
        e = EPISODE_RE.match(m["name"])
        if e:
            key = (e["title"].strip("._- []"), f"S{int(e['s']):02d}E{int(e['e']):02d}")
        else:
            key = (m["name"], "")
        episodes.setdefault(key, {}).setdefault(lang, path)
    return episodes, found


def decode(path: str, lang: str) -> tuple[str, str]:
    raw = Path(path).read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16"), "utf-16"
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        enc = LEGACY.get(lang, "cp1252")
        return raw.decode(enc), enc


def read_cues(path: str, lang: str) -> tuple[list[tuple[int, int, str]], str]:
    text, enc = decode(path, lang)
    ext = path.rsplit(".", 1)[1].lower()
    subs = pysubs2.SSAFile.from_string(text, format_=EXTS[ext])
    cues = []
    for ev in subs:
        if ev.is_comment or ev.end < ev.start:
            continue
        plain = " ".join(ev.plaintext.split())
        if plain:
            cues.append((ev.start, ev.end, plain))
    cues.sort(key=lambda c: (c[0], c[1]))
    merged: list[tuple[int, int, str]] = []
    for c in cues:
        if merged and merged[-1][2] == c[2] and c[0] <= merged[-1][1]:
            prev = merged[-1]
            merged[-1] = (prev[0], max(prev[1], c[1]), prev[2])
        else:
            merged.append(c)
    return merged, enc


def nearest(src: list[int], tgt: list[int], max_gap_ms: int) -> list[int | None]:
    """The paper's rule; ties go to the lower target index."""
    out: list[int | None] = []
    n = len(tgt)
    for s in src:
        p = bisect_left(tgt, s)
        best = None
        if p > 0:
            left = bisect_left(tgt, tgt[p - 1])  # first cue of a run of equal starts
            best = left
            if p < n and tgt[p] - s < s - tgt[left]:
                best = p
        elif p < n:
            best = p
        if best is not None and abs(tgt[best] - s) <= max_gap_ms:
            out.append(best)
        else:
            out.append(None)
    return out


def directions(langs: list[str]) -> list[tuple[str, str]]:
    langs = sorted(langs)
    out = []
    for i, a in enumerate(langs):
        for b in langs[i + 1 :]:
            out.append((b, a) if b == "en" else (a, b))
    return out


def run(roots: list[str], out: Path, max_gap: float = 0.7) -> dict:
    started = time.perf_counter()
    gap = round(max_gap * 1000)
    cols: dict[str, list] = {k: [] for k in SCHEMA}
    episodes, found = find_episodes(roots)
    report = {"files_found": found, "episodes": 0, "aligned": 0, "unaligned": 0, "encodings": {}}
    for (title, episode), files in sorted(episodes.items()):
        if len(files) < 2:
            continue
        read = {}
        for lang, path in files.items():
            cues, enc = read_cues(path, lang)
            report["encodings"][enc] = report["encodings"].get(enc, 0) + 1
            if cues:
                read[lang] = cues
        for s_lang, t_lang in directions(list(read)):
            src, tgt = read[s_lang], read[t_lang]
            matches = nearest([c[0] for c in src], [c[0] for c in tgt], gap)
            pair = f"{s_lang}-{t_lang}"
            fragment, cut, rows = 0, False, 0
            for i, j in enumerate(matches):
                if j is None:
                    cut = True
                    report["unaligned"] += 1
                    continue
                if cut and rows:
                    fragment += 1
                cut = False
                rows += 1
                s, t = src[i], tgt[j]
                cols["pair"].append(pair)
                cols["title"].append(title)
                cols["episode"].append(episode)
                cols["src_lang"].append(s_lang)
                cols["tgt_lang"].append(t_lang)
                cols["line"].append(i)
                cols["fragment"].append(fragment)
                cols["src_start_ms"].append(s[0])
                cols["src_end_ms"].append(s[1])
                cols["tgt_start_ms"].append(t[0])
                cols["tgt_end_ms"].append(t[1])
                cols["src_text"].append(s[2])
                cols["tgt_text"].append(t[2])
                cols["src_file"].append(files[s_lang])
                cols["tgt_file"].append(files[t_lang])
            report["aligned"] += rows
            report["episodes"] += 1
    df = pl.DataFrame(cols, schema=SCHEMA)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(out)
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["output"] = str(out)
    Path(str(out) + ".report.json").write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description="pure-Python baseline of alpo align")
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-gap", type=float, default=0.7)
    a = ap.parse_args()
    r = run(a.roots, a.out, a.max_gap)
    print(json.dumps(r), file=sys.stdout)


if __name__ == "__main__":
    main()
