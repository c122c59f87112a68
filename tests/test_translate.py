"""`alpo translate`: every cue kept with its timing and style, answers checked, retried and
split, failures listed, reading speed reported."""

import json
import re
import shutil
from pathlib import Path

import pytest

from alpo.exceptions import InputError
from alpo.subtitles import read_track
from alpo.translate import TranslateSettings, reading_stats, translate_files

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SRT = EXAMPLES / "Harbor Lights.S01E01.en.srt"
ASS = EXAMPLES / "Harbor Lights.S01E01.zh.ass"
VTT = EXAMPLES / "Harbor Lights.S01E01.th.vtt"


class EchoBackend:
    """A backend double that reads the numbered source lines out of each prompt and answers
    them tagged (so a test can tell which cue each output came from), except for
    windows with more than `max_lines` lines, which it answers with one line too few."""

    def __init__(self, tokenizer, max_lines=10**9):
        self.tokenizer = tokenizer
        self.max_lines = max_lines
        self.calls = []

    def decode(self, ids):
        return self.tokenizer.decode(list(ids))

    def sample(self, requests):
        out = []
        for q in requests:
            prompt = self.decode(q.prompt_ids)
            block = prompt.rsplit("Source:\n", 1)[1].split("\nTranslation:", 1)[0]
            lines = [re.sub(r"^\d+\. ", "", ln) for ln in block.split("\n")]
            self.calls.append(len(lines))
            if len(lines) > self.max_lines:
                lines = lines[:-1]
            answer = "\n".join(f"{i}. <{ln}>" for i, ln in enumerate(lines, 1))
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            out.append([[*ids, self.tokenizer.eos_token_id]])  # as a model ends its turn
        return out


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from alpo.models import load_tokenizer

    return load_tokenizer(str(tiny_model))


def expected(cue):
    return f"<{cue.plain}>"


@pytest.mark.parametrize(
    ("src", "out_name"),
    [(SRT, "out.srt"), (ASS, "out.ass"), (VTT, "out.vtt"), (SRT, "out.ass"), (VTT, "out.srt")],
)
def test_every_cue_keeps_its_timing_and_gets_its_own_translation(
    tokenizer, tmp_path, src, out_name
):
    settings = TranslateSettings(window=4, context=2)
    out = tmp_path / out_name
    summary = translate_files(src, out, "zh-th", EchoBackend(tokenizer), tokenizer, settings)
    source, result = read_track(src), read_track(out)
    assert len(result.cues) == len(source.cues)
    # ASS keeps centiseconds
    tolerance = 10 if out.suffix == ".ass" and src.suffix != ".ass" else 0
    for a, b in zip(source.cues, result.cues, strict=True):
        assert abs(a.start_ms - b.start_ms) <= tolerance
        assert abs(a.end_ms - b.end_ms) <= tolerance
        assert b.plain == expected(a)
    (report,) = summary["reports"]
    assert report["translated"] == len(source.cues) and report["kept_source"] == []


def test_ass_to_ass_keeps_header_styles_fields_and_position_tags(tokenizer, tmp_path):
    out = tmp_path / "out.ass"
    translate_files(
        ASS, out, "zh-th", EchoBackend(tokenizer), tokenizer, TranslateSettings(window=5)
    )
    before = ASS.read_text(encoding="utf-8-sig").splitlines()
    after = out.read_text(encoding="utf-8").splitlines()
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        if a.startswith("Dialogue:"):
            assert a.split(",", 9)[:9] == b.split(",", 9)[:9]  # layer, times, style, margins
        else:
            assert a == b  # header and styles untouched
    sign = next(b for b in after if "{\\an8}" in b)
    assert sign.split(",", 9)[9].startswith("{\\an8}<")
    assert [c.style for c in read_track(out).cues] == [c.style for c in read_track(ASS).cues]


def test_wrong_line_counts_are_retried_then_split_down_to_what_works(tokenizer, tmp_path):
    backend = EchoBackend(tokenizer, max_lines=3)
    settings = TranslateSettings(window=8, context=1, retries=1)
    summary = translate_files(SRT, tmp_path / "o.srt", "en-zh", backend, tokenizer, settings)
    (report,) = summary["reports"]
    assert report["retries"] > 0 and report["splits"] > 0
    assert report["kept_source"] == []
    for a, b in zip(read_track(SRT).cues, read_track(tmp_path / "o.srt").cues, strict=True):
        assert b.plain == expected(a)


def test_a_model_that_always_miscounts_leaves_every_cue_with_its_source(tokenizer, tmp_path):
    backend = EchoBackend(tokenizer, max_lines=0)  # every answer is one line short
    settings = TranslateSettings(window=6, context=2, retries=1)
    out = tmp_path / "o.vtt"
    summary = translate_files(VTT, out, "th-zh", backend, tokenizer, settings)
    source = read_track(VTT)
    (report,) = summary["reports"]
    assert [f["cue"] for f in report["kept_source"]] == list(range(1, len(source.cues) + 1))
    assert summary["kept_source"] == len(source.cues)
    result = read_track(out)
    assert [c.plain for c in result.cues] == [c.plain for c in source.cues]
    assert [(c.start_ms, c.end_ms) for c in result.cues] == [
        (c.start_ms, c.end_ms) for c in source.cues
    ]


def test_a_folder_translates_into_a_folder_and_reruns_skip_finished_files(tokenizer, tmp_path):
    inp = tmp_path / "in"
    (inp / "season").mkdir(parents=True)
    shutil.copy(SRT, inp / "season" / SRT.name)
    shutil.copy(ASS, inp / ASS.name)
    (inp / "notes.txt").write_text("not a subtitle")
    (inp / "empty.srt").write_text("")
    out = tmp_path / "out"
    backend = EchoBackend(tokenizer)
    first = translate_files(inp, out, "en-th", backend, tokenizer, TranslateSettings())
    assert (out / "season" / "Harbor Lights.S01E01.th.srt").is_file()  # language tag switched
    assert (out / "Harbor Lights.S01E01.zh.th.ass").is_file()  # not the source language: added
    assert [b["file"] for b in first["bad_files"]] == [str(inp / "empty.srt")]
    again = translate_files(inp, out, "en-th", backend, tokenizer, TranslateSettings())
    assert again["skipped_existing"] == 2 and again["translated_files"] == 0


def test_reading_speed_counts_what_a_reader_sees():
    thai = "กินข้าว"  # 7 code points, two of them vowel and tone marks above the line
    stats = reading_stats([0, 0, 0], [1000, 2000, 500], [thai, "ab\ncdef", ""], 4.0, 4)
    assert stats["over_cps"] == [1]  # 5 visible characters in one second; "abcdef" is 3/s
    assert stats["over_line"] == [1]  # the Thai line is 5 wide; "cdef" is exactly 4
    assert stats["longest_line"] == 5
    assert stats["median_cps"] == 5.0


def test_cli_translates_with_a_real_model_and_bad_input_is_one_line(cli, sft_model, tmp_path):
    for src in (SRT, ASS, VTT):
        out = tmp_path / f"out{src.suffix}"
        proc = cli(
            "translate", str(src), "--model", str(sft_model), "--pair", "en-zh",
            "--out", str(out), "--window", "8", "--context", "2", "--json",
        )  # fmt: skip
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        (report,) = summary["reports"]
        source, result = read_track(src), read_track(out)
        assert len(result.cues) == len(source.cues) == report["cues"]
        assert [(c.start_ms, c.end_ms, c.style) for c in result.cues] == [
            (c.start_ms, c.end_ms, c.style) for c in source.cues
        ]
        assert report["translated"] + len(report["kept_source"]) == report["cues"]
        assert report["reading"]["max_cps"] == 9.0  # Chinese target: the CJK default
    bad = [
        (["--out", str(tmp_path / "out.txt")], "unknown subtitle extension"),
        (["--out", str(tmp_path / "o.srt"), "--pair", "xx"], "must look like SRC-TGT"),
    ]
    for extra, message in bad:
        args = ["translate", str(SRT), "--model", str(sft_model), "--pair", "en-zh", *extra]
        proc = cli(*args, check=False)
        assert proc.returncode == 1
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.srt"
    empty.write_text("")
    proc = cli(
        "translate", str(empty), "--model", str(sft_model), "--pair", "en-zh", "--out",
        str(tmp_path / "e.srt"), check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and str(empty) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(InputError, match="no such file"):
        translate_files(tmp_path / "none.srt", out, "en-zh", None, None, TranslateSettings())
