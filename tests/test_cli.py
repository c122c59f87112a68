"""The `alpo align` command as a user runs it."""

import json
import shutil
from pathlib import Path

import polars as pl

import alpo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_help_explains(cli):
    out = cli("align", "--help").stdout
    for option in ["--out", "--pair", "--max-gap", "--mode", "--no-sync", "--report", "--json"]:
        assert option in out
    assert "alpo" in cli("--version").stdout


def test_examples_align_with_contract_columns(tmp_path, cli):
    out = tmp_path / "aligned.parquet"
    proc = cli("align", str(EXAMPLES), "--out", str(out), "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    df = pl.read_parquet(out)
    assert df.schema == pl.Schema(alpo.ALIGNED_SCHEMA)
    assert summary["aligned"] == df.height > 0
    assert set(df["pair"].unique()) == {"en-zh", "en-th", "th-zh"}
    # the GB18030 episode whose times run 2.5 s late is corrected and fully aligned
    report = json.loads(Path(summary["report"]).read_text())
    ep2 = next(e for e in report["episodes"] if e["episode"] == "S01E02")
    assert ep2["sync_applied"] and abs(ep2["offset_ms"] - 2500) < 50
    assert ep2["aligned_share"] == 1.0
    assert report["encodings"]["gb18030"] == 1
    # the top-positioned title sign and the Thai annotation cue are dropped, not aligned
    assert report["removed"]["top"] == 1 and report["removed"]["annotation"] == 1
    assert not df["src_text"].str.contains("港湾灯火").any()


def test_pair_keeps_one_direction(tmp_path, cli):
    out = tmp_path / "zh-en.parquet"
    cli("align", str(EXAMPLES), "--out", str(out), "--pair", "zh-en")
    df = pl.read_parquet(out)
    assert df["pair"].unique().to_list() == ["zh-en"]
    assert (df["src_lang"] == "zh").all()


def test_rerun_is_skipped_until_inputs_change(tmp_path, cli):
    raw = tmp_path / "raw"
    shutil.copytree(EXAMPLES, raw)
    out = tmp_path / "a.parquet"
    first = json.loads(cli("align", str(raw), "--out", str(out), "--json").stdout)
    assert not first["skipped_run"]
    again = json.loads(cli("align", str(raw), "--out", str(out), "--json").stdout)
    assert again["skipped_run"] and again["aligned"] == first["aligned"]
    (raw / "Harbor Lights.S01E02.zh.srt").unlink()
    third = json.loads(cli("align", str(raw), "--out", str(out), "--json").stdout)
    assert not third["skipped_run"] and third["aligned"] < first["aligned"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_duplicate_episode_files_keep_one(tmp_path, cli):
    raw = tmp_path / "raw"
    shutil.copytree(EXAMPLES, raw)
    # the same English episode again, as WebVTT
    df = alpo.read_subtitles(raw / "Harbor Lights.S01E02.en.srt")
    vtt = "WEBVTT\n\n" + "".join(
        f"{ms(s)} --> {ms(e)}\n{t}\n\n"
        for s, e, t in df.select("start_ms", "end_ms", "text").rows()
    )
    (raw / "Harbor Lights.S01E02.en.vtt").write_text(vtt)
    out = tmp_path / "a.parquet"
    summary = json.loads(cli("align", str(raw), "--out", str(out), "--json").stdout)
    dups = summary["duplicate_files"]
    assert len(dups) == 1 and "same content" in dups[0]["reason"]
    assert pl.read_parquet(out).filter(pl.col("episode") == "S01E02").height == 14


def ms(t: int) -> str:
    return f"{t // 3600000:02d}:{t // 60000 % 60:02d}:{t // 1000 % 60:02d}.{t % 1000:03d}"


def test_corpus_repeats_are_flagged_not_dropped(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # the same episode again under another episode number, as a recap would be
    for ep in ("S01E02", "S01E03"):
        for lang in ("en", "zh"):
            src = EXAMPLES / f"Harbor Lights.S01E02.{lang}.srt"
            (raw / f"Harbor Lights.{ep}.{lang}.srt").write_bytes(src.read_bytes())
    df, report = alpo.align_report(raw)
    first = df.filter(pl.col("episode") == "S01E02")
    again = df.filter(pl.col("episode") == "S01E03")
    assert first.height == again.height == 14
    assert not first["dup"].any() and again["dup"].all()
    assert report["corpus_repeats"] == 14
