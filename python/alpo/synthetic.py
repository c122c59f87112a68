"""Synthetic bilingual episodes with known true cue pairs, for tests and benchmarks.

An episode is a timeline of utterances. Each gets a source cue and a target cue, with what real
releases do to the target track: start/end jitter, a constant offset, a frame-rate drift, cues
split in two or two utterances merged into one, cues missing on either side. The true pairs are
kept, so an aligner's precision and recall can be measured exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_WORD_LISTS = {
    "en": "the a we you they go come see know time night boat harbor light rain coffee letter "
    "door keys home late early storm ferry tell ask wait never always maybe",
    "de": "der die das wir ihr gehen kommen sehen wissen Zeit Nacht Boot Hafen Licht Regen "
    "Kaffee Brief Tür Schlüssel spät früh Sturm Fähre schön größer über",
    "zh": "我 你 他们 来 去 看 知道 时间 夜 船 港 灯 雨 咖啡 信 门 钥匙 家 "
    "晚 早 风暴 渡轮 说 问 等 从不 总 也许",
    "th": "เรา คุณ เขา ไป มา ดู รู้ เวลา คืน เรือ ท่า ไฟ ฝน กาแฟ จดหมาย ประตู กุญแจ บ้าน สาย เช้า "
    "พายุ บอก ถาม รอ ไม่เคย เสมอ",
}
WORDS = {lang: text.split() for lang, text in _WORD_LISTS.items()}
JOINER = {"zh": "", "th": " "}


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str


@dataclass
class Episode:
    src: list[Cue]
    tgt: list[Cue]
    #: (source index, target index) of every true pair, indices in start-time order
    truth: set[tuple[int, int]] = field(default_factory=set)
    offset_ms: int = 0
    speed: float = 1.0


def sentence(rng: random.Random, lang: str, serial: int) -> str:
    words = WORDS.get(lang, WORDS["en"])
    body = JOINER.get(lang, " ").join(rng.choice(words) for _ in range(rng.randint(3, 8)))
    # A serial number keeps every text distinct, so no two cues are rolling duplicates.
    return f"{body} {serial}"


def make_episode(
    rng: random.Random,
    n: int = 400,
    *,
    src_lang: str = "en",
    tgt_lang: str = "zh",
    offset_ms: int = 0,
    speed: float = 1.0,
    jitter_ms: int = 120,
    split: float = 0.0,
    merge: float = 0.0,
    drop: float = 0.0,
) -> Episode:
    """An episode of about `n` utterances. `split`, `merge` and `drop` are per-utterance rates;
    the target track is shifted by `offset_ms` and stretched by `speed` (target = speed * source
    + offset)."""
    src: list[tuple[Cue, int]] = []  # cue, utterance id
    tgt: list[tuple[Cue, tuple[int, ...]]] = []  # cue, utterance ids it carries
    utt_src: dict[int, int] = {}
    t = 60_000
    k = 0
    mapped = lambda ms: round(speed * ms + offset_ms)  # noqa: E731
    jit = lambda: rng.randint(-jitter_ms, jitter_ms)  # noqa: E731
    while k < n:
        dur = rng.randint(1000, 4500)
        start, end = t, t + dur
        event = rng.random()
        if event < drop / 2:  # target only
            tgt.append((Cue(mapped(start + jit()), mapped(end), sentence(rng, tgt_lang, k)), ()))
        elif event < drop:  # source only
            src.append((Cue(start, end, sentence(rng, src_lang, k)), k))
        elif event < drop + merge:  # two utterances, one target cue
            gap = rng.randint(150, 600)
            dur2 = rng.randint(1000, 3000)
            src.append((Cue(start, end, sentence(rng, src_lang, k)), k))
            src.append((Cue(end + gap, end + gap + dur2, sentence(rng, src_lang, k + 1)), k + 1))
            text = sentence(rng, tgt_lang, k)
            tgt.append((Cue(mapped(start + jit()), mapped(end + gap + dur2), text), (k, k + 1)))
            end = end + gap + dur2
            k += 1
        elif event < drop + merge + split:  # one utterance, two target cues
            src.append((Cue(start, end, sentence(rng, src_lang, k)), k))
            mid = start + dur // 2
            s0, s1 = mapped(start + jit()), mapped(mid)
            tgt.append((Cue(s0, s1, sentence(rng, tgt_lang, k)), (k,)))
            tgt.append((Cue(s1 + 80, mapped(end), sentence(rng, tgt_lang, -k - 1)), (k,)))
        else:
            src.append((Cue(start, end, sentence(rng, src_lang, k)), k))
            s0 = mapped(start + jit())
            tgt.append(
                (Cue(s0, max(s0 + 300, mapped(end + jit())), sentence(rng, tgt_lang, k)), (k,))
            )
        t = end + rng.randint(150, 2500)
        k += 1
    src.sort(key=lambda x: (x[0].start_ms, x[0].end_ms))
    tgt.sort(key=lambda x: (x[0].start_ms, x[0].end_ms))
    for i, (_, u) in enumerate(src):
        utt_src[u] = i
    truth = {(utt_src[u], j) for j, (_, us) in enumerate(tgt) for u in us if u in utt_src}
    return Episode(
        src=[c for c, _ in src],
        tgt=[c for c, _ in tgt],
        truth=truth,
        offset_ms=offset_ms,
        speed=speed,
    )


def _clock(ms: int, frac_sep: str = ",", digits: int = 3) -> str:
    h, ms = divmod(max(ms, 0), 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    frac = f"{ms:03d}" if digits == 3 else f"{ms // 10:02d}"
    hours = f"{h:02d}" if digits == 3 else f"{h}"
    return f"{hours}:{m:02d}:{s:02d}{frac_sep}{frac}"


def render(cues: Sequence[Cue], fmt: str) -> str:
    """Subtitle text of `cues` in `fmt` ("srt", "vtt" or "ass")."""
    if fmt == "srt":
        return "".join(
            f"{i}\n{_clock(c.start_ms)} --> {_clock(c.end_ms)}\n{c.text}\n\n"
            for i, c in enumerate(cues, 1)
        )
    if fmt == "vtt":
        body = "".join(
            f"{_clock(c.start_ms, '.')} --> {_clock(c.end_ms, '.')}\n{c.text}\n\n" for c in cues
        )
        return "WEBVTT\n\n" + body
    if fmt == "ass":
        head = (
            "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\n"
            "Format: Name, Fontname, Fontsize, Alignment\nStyle: Default,Arial,20,2\n\n"
            "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, "
            "Effect, Text\n"
        )
        return head + "".join(
            f"Dialogue: 0,{_clock(c.start_ms, '.', 2)},{_clock(c.end_ms, '.', 2)},"
            f"Default,,0,0,0,,{c.text}\n"
            for c in cues
        )
    raise ValueError(f"unknown format {fmt!r}")


def write(path: Path, cues: Sequence[Cue], fmt: str, encoding: str = "utf-8") -> Path:
    """Write `cues` to `path` in `fmt` and `encoding` (any Python codec: utf-8-sig, utf-16,
    gb18030, cp874, ...). ASS keeps centiseconds, as the format does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render(cues, fmt).encode(encoding))
    return path
