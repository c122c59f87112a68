"""Write a synthetic bilingual subtitle corpus for the `alpo align` benchmark.

    python bench/gen_corpus.py --pairs 10000000 --out bench/data/corpus-10000000-s1 [--seed 1]

Episodes of 500-1200 cues (about 850 on average), each with two tracks named
`Title_NNNN/Title_NNNN.S01E02.LANG.EXT` so that alpo pairs them by name. Language pairs:
en-zh 30 %, en-th 25 %, en-de 25 %, zh-th 20 % (alpo aligns that last one as th -> zh: without
`--pair` it puts English first, else the alphabetical order; the generator writes the source
track in that direction so that its cue count is the count of pairs).

Per file, independently: format srt 60 %, ass 25 %, vtt 15 %; encoding utf-8 70 %, utf-8 with
BOM 10 %, utf-16-le with BOM 7 %, the language's legacy code page 13 % (gb18030 for zh, cp874
for th, cp1252 for de; English stays utf-8). SRT files use CRLF line ends a third of the time.

Timing: the source track is the episode's timeline; the target track is the same timeline with
independent jitter below 150 ms on every start and end, about 1 % of its cues missing (so some
source cues are unaligned and cut fragments) and about 0.5 % extra cues. 12 % of episodes carry a
constant offset of 1-5 s (either sign) on the target track. About 10 % of cues touch the next one
(no gap). Cue text: one or two made-up sentences from small per-language phrase lists, two-line
cues about a third of the time, a few in italics.

The corpus for (pairs, seed) is the same on every run. A finished corpus holds `.complete.json`
(written last); a second run with the same pairs and seed finds it and returns at once.
`episodes.tsv` lists every episode in generation order with its files and cue counts (the
benchmark takes its prefix subsets from it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from multiprocessing import get_context
from pathlib import Path

GEN_VERSION = 1
MARKER = ".complete.json"
IN_PROGRESS = ".generating"
MANIFEST = "episodes.tsv"

LANG_PAIRS = [
    (("en", "zh"), 0.30),
    (("en", "th"), 0.25),
    (("en", "de"), 0.25),
    (("th", "zh"), 0.20),
]
FORMATS = [("srt", 0.60), ("ass", 0.25), ("vtt", 0.15)]
LEGACY = {"zh": "gb18030", "th": "cp874", "de": "cp1252"}

# Phrase lists per language, "|"-separated: subject, predicate, object, tail, question, short
# lines. Sentences are made up by chance and need not make sense; they look like dialogue
# lines in each script.
PHRASES: dict[str, dict[str, str]] = {
    "en": {
        "subj": (
            "I|You|We|They|She|He|My brother|The captain|Your mother|Nobody|"
            "Everyone|The old man|This city|Our teacher|The doctor|My neighbour"
        ),
        "verb": (
            "want|need|found|lost|remember|saw|love|hate|can't find|will bring|"
            "forgot|keep|sold|painted|opened|are looking for"
        ),
        "obj": (
            "the key|a letter|the money|that song|your car|the truth|my phone|"
            "the old map|a small boat|the answer|the red door|his promise|"
            "the last train|a cup of tea|the photographs|her name"
        ),
        "tail": (
            "|||tonight|right now|in the kitchen|before dawn|at the station|again|"
            "for you|last summer|after the rain|on the bridge|without a word"
        ),
        "q": "Where is|Did you see|Who took|Why do you need|Can you find",
        "short": (
            "Yes.|No.|Wait!|Come on.|Really?|Thank you.|I'm sorry.|Let's go.|"
            "Hurry up!|Who's there?|Okay.|Listen to me."
        ),
    },
    "de": {
        "subj": (
            "Ich|Du|Wir|Sie|Er|Mein Bruder|Der Kapitän|Deine Mutter|Niemand|Jeder|"
            "Der alte Mann|Diese Stadt|Unser Lehrer|Die Ärztin|Mein Nachbar|"
            "Die Bäckerin"
        ),
        "verb": (
            "brauche|will|fand|verlor|vermisse|sah|liebt|hasst|sucht|bringt|vergaß|"
            "behält|verkaufte|öffnete|müssen|möchte"
        ),
        "obj": (
            "den Schlüssel|einen Brief|das Geld|dieses Lied|dein Auto|die Wahrheit|"
            "mein Handy|die alte Karte|ein kleines Boot|die Antwort|die rote Tür|"
            "sein Versprechen|den letzten Zug|eine Tasse Tee|die Fotos|ihren Namen|"
            "die Brötchen"
        ),
        "tail": (
            "|||heute Abend|sofort|in der Küche|vor dem Frühstück|am Bahnhof|"
            "schon wieder|für dich|letzten Sommer|nach dem Regen|auf der Brücke|"
            "über die Straße|zu Fuß|ohne ein Wort"
        ),
        "q": "Wo ist|Hast du gesehen|Wer nahm|Warum brauchst du|Findest du",
        "short": (
            "Ja.|Nein.|Warte!|Komm schon.|Wirklich?|Danke schön.|Es tut mir leid.|"
            "Gehen wir.|Beeil dich!|Wer ist da?|Gut.|Hör mir zu.|Grüß dich!|"
            "Schöne Grüße."
        ),
    },
    "zh": {
        "subj": (
            "我|你|我们|他们|她|他|我哥哥|船长|你妈妈|没有人|大家|那个老人|这座城市|我们老师|"
            "医生|我的邻居"
        ),
        "verb": (
            "想要|需要|找到了|丢了|记得|看见了|喜欢|讨厌|找不到|会带来|忘了|留着|卖掉了|画了|"
            "打开了|在找"
        ),
        "obj": (
            "钥匙|一封信|那笔钱|那首歌|你的车|真相|我的手机|那张旧地图|一条小船|答案|那扇红门|"
            "他的承诺|最后一班火车|一杯茶|那些照片|"
            "她的名字"
        ),
        "tail": (
            "|||今天晚上|现在|在厨房里|天亮之前|在车站|又一次|为了你|去年夏天|雨停以后|在桥上|"
            "一句话也没说"
        ),
        "q": "在哪里|你看见了吗|是谁拿走的|为什么需要|你能找到吗",
        "short": (
            "是的。|不。|等等！|快点。|真的吗？|谢谢你。|对不起。|我们走吧。|快一点！|"
            "谁在那儿？|好吧。|听我说。"
        ),
    },
    "th": {
        "subj": (
            "ฉัน|คุณ|เรา|พวกเขา|เธอ|เขา|พี่ชายของฉัน|กัปตัน|แม่ของคุณ|ไม่มีใคร|"
            "ทุกคน|ชายแก่คนนั้น|เมืองนี้|ครูของเรา|หมอ|เพื่อนบ้านของฉัน"
        ),
        "verb": (
            "ต้องการ|หา|เจอ|ทำหาย|จำ|เห็น|รัก|เกลียด|หาไม่เจอ|จะเอามา|ลืม|เก็บ|ขาย|วาด|เปิด|กำลังตามหา"
        ),
        "obj": (
            "กุญแจ|จดหมาย|เงิน|เพลงนั้น|รถของคุณ|ความจริง|โทรศัพท์ของฉัน|"
            "แผนที่เก่า|เรือลำเล็ก|คำตอบ|ประตูสีแดง|คำสัญญาของเขา|รถไฟขบวนสุดท้าย|"
            "ชาหนึ่งถ้วย|รูปถ่าย|ชื่อของเธอ"
        ),
        "tail": (
            "|||คืนนี้|เดี๋ยวนี้|ในครัว|ก่อนรุ่งสาง|ที่สถานี|อีกแล้ว|เพื่อคุณ|ฤดูร้อนที่แล้ว|หลังฝนตก|บนสะพาน|โดยไม่พูดอะไรเลย"
        ),
        "q": "อยู่ที่ไหน|คุณเห็นไหม|ใครเอาไป|ทำไมต้องการ|หาเจอไหม",
        "short": (
            "ใช่|ไม่|เดี๋ยวก่อน!|เร็วเข้า|จริงเหรอ?|ขอบคุณ|ขอโทษ|ไปกันเถอะ|รีบหน่อย!|ใครอยู่ตรงนั้น?|ก็ได้|ฟังฉันนะ"
        ),
    },
}
WORDS = {lang: {k: v.split("|") for k, v in d.items()} for lang, d in PHRASES.items()}

POOL_SIZE = 4096


def _sentence(lang: str, rng: random.Random) -> str:
    w = WORDS[lang]
    r = rng.random()
    if r < 0.15:
        return rng.choice(w["short"])
    if lang == "en" or lang == "de":
        if r < 0.3:
            q = rng.choice(w["q"])
            return f"{q} {rng.choice(w['obj'])}?"
        tail = rng.choice(w["tail"])
        s = f"{rng.choice(w['subj'])} {rng.choice(w['verb'])} {rng.choice(w['obj'])}"
        if tail:
            s += " " + tail
        return s + rng.choice([".", ".", ".", "!", "..."])
    if lang == "zh":
        if r < 0.3:
            return f"{rng.choice(w['obj'])}{rng.choice(w['q'])}？"
        tail = rng.choice(w["tail"])
        s = f"{rng.choice(w['subj'])}{tail}{rng.choice(w['verb'])}{rng.choice(w['obj'])}"
        # Chinese tracks often carry no final punctuation.
        return s + rng.choice(["", "", "", "。", "！"])
    # Thai: no spaces inside a phrase, a space between phrases, polite particles.
    if r < 0.3:
        return f"{rng.choice(w['obj'])}{rng.choice(w['q'])}"
    tail = rng.choice(w["tail"])
    s = f"{rng.choice(w['subj'])}{rng.choice(w['verb'])}{rng.choice(w['obj'])}"
    if tail:
        s += " " + tail
    return s + rng.choice(["", "", "ครับ", "ค่ะ", "นะ"])


def sentence_pools(seed: int) -> dict[str, list[str]]:
    pools = {}
    for lang in WORDS:
        rng = random.Random(f"pool:{seed}:{lang}")
        pools[lang] = [_sentence(lang, rng) for _ in range(POOL_SIZE)]
    return pools


def _pick(rng: random.Random, table: list[tuple[object, float]]) -> object:
    r = rng.random()
    for value, p in table:
        r -= p
        if r < 0:
            return value
    return table[-1][0]


def plan(pairs: int, seed: int) -> list[dict]:
    """Episodes in generation order until their source cues reach `pairs`."""
    rng = random.Random(f"plan:{seed}")
    episodes: list[dict] = []
    total = 0
    title = 0
    while total < pairs:
        title += 1
        langs = _pick(rng, LANG_PAIRS)
        n_eps = rng.randint(8, 24)
        for k in range(n_eps):
            if total >= pairs:
                break
            cues = rng.randint(500, 1200)
            if rng.random() < 0.5:  # pull the mean toward ~800
                cues = rng.randint(600, 950)
            name = f"Title_{title:04d}"
            episodes.append(
                {
                    "index": len(episodes),
                    "title": name,
                    "episode": f"S{k // 12 + 1:02d}E{k % 12 + 1:02d}",
                    "src": langs[0],
                    "tgt": langs[1],
                    "cues": cues,
                }
            )
            total += cues
    return episodes


# ---- time stamps per format -------------------------------------------------------------------


def _hms(ms: int) -> tuple[int, int, int, int]:
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return h, m, s, ms


def srt_time(ms: int) -> str:
    h, m, s, ms = _hms(ms)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def vtt_time(ms: int) -> str:
    h, m, s, ms = _hms(ms)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def ass_time(ms: int) -> str:
    h, m, s, ms = _hms(ms)
    return f"{h:d}:{m:02d}:{s:02d}.{ms // 10:02d}"


ASS_HEADER = """[Script Info]
; generated by alpo bench/gen_corpus.py
Title: {title}
ScriptType: v4.00+
PlayResX: 1920
PlayResY: 1080
WrapStyle: 0

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,64,&H00FFFFFF,&H000000FF,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,\
2,1,2,60,60,50,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


def render(fmt: str, cues: list[tuple[int, int, str, bool]], title: str) -> str:
    """Cues (start, end, text with '\\n' between lines, italic) as a file of `fmt`."""
    parts: list[str] = []
    if fmt == "srt":
        for i, (a, b, text, it) in enumerate(cues, 1):
            if it:
                text = f"<i>{text}</i>"
            parts.append(f"{i}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n")
        return "\n".join(parts)
    if fmt == "vtt":
        parts.append("WEBVTT\n")
        for a, b, text, it in cues:
            if it:
                text = f"<i>{text}</i>"
            parts.append(f"{vtt_time(a)} --> {vtt_time(b)}\n{text}\n")
        return "\n".join(parts)
    parts.append(ASS_HEADER.format(title=title))
    for a, b, text, it in cues:
        text = text.replace("\n", "\\N")
        if it:
            text = "{\\i1}" + text + "{\\i0}"
        parts.append(f"Dialogue: 0,{ass_time(a)},{ass_time(b)},Default,,0,0,0,,{text}\n")
    return "".join(parts)


def encode(text: str, lang: str, rng: random.Random) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.70 or (r >= 0.87 and lang not in LEGACY):
        return text.encode("utf-8"), "utf-8"
    if r < 0.80:
        return b"\xef\xbb\xbf" + text.encode("utf-8"), "utf-8-bom"
    if r < 0.87:
        return b"\xff\xfe" + text.encode("utf-16-le"), "utf-16-le-bom"
    return text.encode(LEGACY[lang]), LEGACY[lang]


# ---- one episode ------------------------------------------------------------------------------

_POOLS: dict[str, list[str]] = {}


def _init(seed: int) -> None:
    _POOLS.update(sentence_pools(seed))


def _texts(lang: str, n: int, rng: random.Random) -> list[tuple[str, bool]]:
    pool = _POOLS[lang]
    size = len(pool)
    rand = rng.random
    out = []
    for _ in range(n):
        text = pool[int(rand() * size)]
        if rand() < 0.33:
            text = text + "\n" + pool[int(rand() * size)]
        out.append((text, rand() < 0.04))
    return out


def make_episode(args: tuple[dict, int, str]) -> dict:
    ep, seed, out_dir = args
    rng = random.Random(seed * 1_000_003 + ep["index"])
    rand = rng.random
    n = ep["cues"]
    # The timeline: starts after 6 s, cues of 0.8-4 s, gaps of 0.1-2 s (touching 10 % of the time).
    timeline = []
    t = 6000 + int(rand() * 54000)
    for _ in range(n):
        dur = 800 + int(rand() * 3200)
        timeline.append((t, t + dur))
        gap = 0 if rand() < 0.10 else 100 + int(rand() * 1900)
        t += dur + gap
    src_texts = _texts(ep["src"], n, rng)
    tgt_texts = _texts(ep["tgt"], n, rng)
    src = [(a, b, tx, it) for (a, b), (tx, it) in zip(timeline, src_texts, strict=True)]

    offset = 0
    if rand() < 0.12:
        offset = (1000 + int(rand() * 4000)) * (1 if rand() < 0.5 else -1)
    tgt = []
    for (a, b), (tx, it) in zip(timeline, tgt_texts, strict=True):
        r = rand()
        if r < 0.01:
            continue  # no translation for this cue
        ja = int(rand() * 299) - 149
        jb = int(rand() * 299) - 149
        ta, tb = a + offset + ja, b + offset + jb
        tgt.append((ta, max(tb, ta + 200), tx, it))
        if r > 0.995:  # an extra cue (a sign, a song line) right after this one
            tgt.append((tb + 20, tb + 900, tgt_texts[int(rand() * n)][0], False))

    files = []
    for lang, cues in ((ep["src"], src), (ep["tgt"], tgt)):
        fmt = _pick(rng, FORMATS)
        text = render(fmt, cues, ep["title"])
        if fmt == "srt" and rand() < 0.33:
            text = text.replace("\n", "\r\n")
        data, enc = encode(text, lang, rng)
        rel = f"{ep['title']}/{ep['title']}.{ep['episode']}.{lang}.{fmt}"
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append((rel, fmt, enc, len(cues), len(data)))
    return {**ep, "offset_ms": offset, "files": files}


# ---- the corpus -------------------------------------------------------------------------------


def read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_complete(out: Path, pairs: int, seed: int) -> bool:
    m = read_marker(out)
    return (
        bool(m)
        and m.get("pairs") == pairs
        and m.get("seed") == seed
        and m.get("version") == GEN_VERSION
    )


def generate(
    pairs: int, out: Path, seed: int = 1, processes: int | None = None, quiet: bool = False
) -> dict:
    """Write the corpus (or find it written) and return its marker."""
    out = Path(out)
    if is_complete(out, pairs, seed):
        marker = read_marker(out)
        assert marker is not None
        if not quiet:
            print(f"{out}: corpus for {pairs} pairs, seed {seed} already there", file=sys.stderr)
        return {**marker, "reused": True}
    if out.exists() and any(out.iterdir()):
        if not ((out / MARKER).exists() or (out / IN_PROGRESS).exists()):
            raise SystemExit(f"{out}: not empty and not a corpus of gen_corpus.py; not touching it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / IN_PROGRESS).write_text("")
    started = time.perf_counter()
    episodes = plan(pairs, seed)
    procs = processes or min(2, os.cpu_count() or 1)
    stats = {"formats": {}, "encodings": {}, "offset_episodes": 0}
    total_src = total_tgt = total_bytes = 0
    lines = ["index\ttitle\tepisode\tsrc\ttgt\tsrc_cues\ttgt_cues\toffset_ms\tsrc_file\ttgt_file"]
    jobs = [(ep, seed, str(out)) for ep in episodes]
    ctx = get_context("fork")
    with ctx.Pool(procs, initializer=_init, initargs=(seed,)) as pool:
        for i, done in enumerate(pool.imap(make_episode, jobs, chunksize=8)):
            (sf, sfmt, senc, sn, sb), (tf, tfmt, tenc, tn, tb) = done["files"]
            for fmt, enc in ((sfmt, senc), (tfmt, tenc)):
                stats["formats"][fmt] = stats["formats"].get(fmt, 0) + 1
                stats["encodings"][enc] = stats["encodings"].get(enc, 0) + 1
            stats["offset_episodes"] += done["offset_ms"] != 0
            total_src += sn
            total_tgt += tn
            total_bytes += sb + tb
            lines.append(
                f"{done['index']}\t{done['title']}\t{done['episode']}\t{done['src']}\t"
                f"{done['tgt']}\t{sn}\t{tn}\t{done['offset_ms']}\t{sf}\t{tf}"
            )
            if not quiet and (i + 1) % 1000 == 0:
                print(f"  {i + 1}/{len(jobs)} episodes", file=sys.stderr)
    (out / MANIFEST).write_text("\n".join(lines) + "\n")
    marker = {
        "version": GEN_VERSION,
        "pairs": pairs,
        "seed": seed,
        "episodes": len(episodes),
        "files": 2 * len(episodes),
        "src_cues": total_src,
        "tgt_cues": total_tgt,
        "bytes": total_bytes,
        **stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / MARKER).write_text(json.dumps(marker, indent=1))
    (out / IN_PROGRESS).unlink()
    if not quiet:
        print(
            f"{out}: {len(episodes)} episodes, {total_src} source cues, "
            f"{total_bytes / 1e6:.0f} MB in {marker['seconds']} s",
            file=sys.stderr,
        )
    return {**marker, "reused": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, required=True, help="about this many source cues")
    ap.add_argument("--out", type=Path, required=True, help="corpus folder")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--processes", type=int, default=None, help="default: up to 2")
    a = ap.parse_args()
    print(json.dumps(generate(a.pairs, a.out, a.seed, a.processes)))


if __name__ == "__main__":
    main()
