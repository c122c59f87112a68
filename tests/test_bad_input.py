"""A corpus of broken files: the run succeeds, every bad file is listed with its reason, and
every good file is aligned."""

import json
import random
from pathlib import Path

import polars as pl

from alpo import synthetic


def good_pair(root, name, rng, n=40):
    ep = synthetic.make_episode(rng, n, src_lang="en", tgt_lang="zh")
    synthetic.write(root / f"{name}.en.srt", ep.src, "srt")
    synthetic.write(root / f"{name}.zh.srt", ep.tgt, "srt")
    return ep


def test_broken_files_are_skipped_and_reported(tmp_path, cli):
    rng = random.Random(3)
    raw = tmp_path / "raw"
    good = good_pair(raw, "Good.S01E01", rng)
    # Each bad file has a good partner, so the partner is what tells the file was looked at.
    for name in ["Junk", "Empty", "Wrong", "Backwards", "Long"]:
        ep = synthetic.make_episode(rng, 30, src_lang="en", tgt_lang="zh")
        synthetic.write(raw / f"{name}.S01E01.zh.srt", ep.tgt, "srt")
    (raw / "Junk.S01E01.en.srt").write_bytes(bytes(rng.randrange(256) for _ in range(20_000)))
    (raw / "Empty.S01E01.en.srt").write_bytes(b"")
    # Latin-1 bytes in a file named as Chinese: no Chinese decoder reads them.
    (raw / "Wrong.S01E01.zh.srt").write_bytes(
        b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9 cr\xe8me \xe0 la fin\n"
    )
    (raw / "Wrong.S01E01.en.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nCoffee\n")
    (raw / "Backwards.S01E01.en.srt").write_text(
        "1\n00:00:05,000 --> 00:00:01,000\nNo\n\n2\n00:00:09,000 --> 00:00:08,000\nWay\n"
    )
    (raw / "Long.S01E01.en.srt").write_text("x" * 10_000_000)
    # Truncated in the middle of a timestamp: the cues before the cut are kept.
    trunc = synthetic.make_episode(rng, 30, src_lang="en", tgt_lang="zh")
    synthetic.write(raw / "Trunc.S01E01.zh.srt", trunc.tgt, "srt")
    text = synthetic.render(trunc.src, "srt")
    cut = text.index("-->", len(text) // 2) + 8
    (raw / "Trunc.S01E01.en.srt").write_text(text[:cut])
    # A language without a partner.
    synthetic.write(raw / "Alone.S01E01.de.srt", good.src[:5], "srt")

    out = tmp_path / "aligned.parquet"
    proc = cli("align", str(raw), "--out", str(out), "--pair", "en-zh", "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "aligned.parquet.report.json").read_text())

    reasons = {k["file"].split("/")[-1]: k["reason"] for k in report["files_skipped"]}
    assert "binary" in reasons["Junk.S01E01.en.srt"]
    assert "empty file" in reasons["Empty.S01E01.en.srt"]
    assert "does not decode" in reasons["Wrong.S01E01.zh.srt"]
    assert "end before start" in reasons["Backwards.S01E01.en.srt"]
    assert "no cues" in reasons["Long.S01E01.en.srt"]
    # their partners are skipped too, saying why
    for name in ["Junk", "Empty", "Backwards", "Long"]:
        assert "partner" in reasons[f"{name}.S01E01.zh.srt"]
    assert "partner" in reasons["Wrong.S01E01.en.srt"]
    # --pair en-zh: the German file is outside the pair, not an error
    assert report["files_ignored"] == 1

    partial = {p["file"].split("/")[-1]: p for p in report["files_partial"]}
    assert partial["Trunc.S01E01.en.srt"]["line"] > 1

    df = pl.read_parquet(out)
    per_title = dict(df.group_by("title").len().iter_rows())
    assert set(per_title) == {"Good", "Trunc"}
    assert per_title["Good"] == len(good.src)
    assert 0 < per_title["Trunc"] < len(trunc.src)
    assert summary["files_paired"] == 4


def test_unreadable_input_and_bad_options_fail_with_one_line(tmp_path, cli):
    proc = cli(
        "align", str(tmp_path / "missing"), "--out", str(tmp_path / "o.parquet"), check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr

    (tmp_path / "raw").mkdir()
    for args, needle in [
        (["--pair", "xx-yy"], "unknown language"),
        (["--pair", "en"], "SRC-TGT"),
        (["--mode", "diagonal"], "unknown alignment mode"),
        (["--max-gap", "-1"], "max_gap"),
    ]:
        proc = cli(
            "align", str(tmp_path / "raw"), "--out", str(tmp_path / "o.parquet"), *args, check=False
        )
        assert proc.returncode == 1, args
        assert needle in proc.stderr, (args, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_unwritable_output_fails_with_one_line(tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    examples = Path(__file__).resolve().parent.parent / "examples"
    proc = cli("align", str(examples), "--out", str(blocker / "out.parquet"), check=False)
    assert proc.returncode == 1
    assert "a-file" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
