"""`alpo train --pair zh-th --preset tiny` from raw tracks to a model `alpo translate` uses: the
whole chain on the embedded model, killed during the alpo stage and resumed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import alpo
from alpo.subtitles import read_track

REPO = Path(__file__).resolve().parent.parent
ASS = REPO / "examples" / "Harbor Lights.S01E01.zh.ass"


def test_tiny_preset_runs_every_stage_and_resumes_after_a_kill(cli, tmp_path):
    alpo.align_to_parquet([REPO / "examples"], tmp_path / "aligned.parquet", pair="zh-th")
    data = tmp_path / "data"
    alpo.prepare(
        tmp_path / "aligned.parquet",
        "zh-th",
        data,
        window=8,
        context=2,
        min_fragment=4,
        sft_share=0.5,
    )
    work = tmp_path / "run"
    args = ["train", "--pair", "zh-th", "--preset", "tiny", "--data", str(data)]
    args += ["--workdir", str(work), "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpo_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = work / "checkpoints" / "alpo" / "step-000002"
    deadline = time.time() + 1500
    while time.time() < deadline and not checkpoint.is_dir() and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.is_dir(), "the alpo stage never reached its step-2 checkpoint"
    assert len(list((work / "checkpoints" / "sft").glob("step-*"))) == 1  # keep_checkpoints
    assert not (work / "alpo").exists()  # killed before the end
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["alpo"]["status"] == "running"

    out = json.loads(cli(*args).stdout.strip().splitlines()[-1])
    for stage in ("sft", "sample", "pairs", "ref"):
        assert out[stage]["skipped"] is True, stage
    summary = out["alpo"]
    assert summary["resumed_from_step"] == 2 and summary["steps"] > 2
    steps = [json.loads(line)["step"] for line in (work / "logs" / "alpo" / "metrics.jsonl").open()]
    assert steps == list(range(1, summary["steps"] + 1))  # one line per step, none twice
    manifest = json.loads((work / "manifest.json").read_text())
    assert [s for s, r in manifest["stages"].items() if r["status"] == "done"] == [
        "sft",
        "sample",
        "pairs",
        "ref",
        "alpo",
    ]
    # The trained model translates a subtitle file (the header and first cues of an episode:
    # the embedded model decodes slowly on a CPU).
    lines = ASS.read_text(encoding="utf-8-sig").splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("Dialogue:"))
    short = tmp_path / "short.zh.ass"
    short.write_text("\n".join(lines[: first + 4]) + "\n", encoding="utf-8")
    translated = tmp_path / "short.th.ass"
    result = json.loads(
        cli(
            "translate", str(short), "--model", str(work / "alpo"), "--pair", "zh-th",
            "--out", str(translated), "--retries", "0", "--json",
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    (report,) = result["reports"]
    assert len(read_track(translated).cues) == len(read_track(short).cues) == report["cues"] == 4
    assert report["translated"] + len(report["kept_source"]) == 4
    shutil.rmtree(work)  # checkpoints of the 135M model take gigabytes
