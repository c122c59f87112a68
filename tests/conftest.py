import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MUSC = REPO.parent / "shared" / "data" / "musc-sample"


def run_cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `alpo` command the way a user does (`env` adds variables)."""
    proc = subprocess.run(
        [sys.executable, "-m", "alpo_cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"alpo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_two_ranks(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `alpo` command as two gloo ranks under torchrun, as a 2-GPU job would run."""
    from alpo.launch import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        + ["--master_port", str(free_port()), "-m", "alpo_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def two_ranks():
    return run_two_ranks


@pytest.fixture(scope="session")
def examples_data(tmp_path_factory) -> Path:
    """The examples/ tracks aligned and prepared for en-zh in small windows (sft/pool/test)."""
    import alpo

    root = tmp_path_factory.mktemp("examples")
    alpo.align_to_parquet([REPO / "examples"], root / "aligned.parquet")
    alpo.prepare(
        root / "aligned.parquet", "en-zh", root / "data", window=8, context=2, min_fragment=4
    )
    return root / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, examples_data) -> Path:
    """A tiny random Qwen2 model whose tokenizer was trained on the examples' texts."""
    import polars as pl

    from alpo.tiny_model import build_tiny_model

    aligned = pl.read_parquet(examples_data.parent / "aligned.parquet")
    texts = aligned["src_text"].to_list() + aligned["tgt_text"].to_list()
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts)


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory, examples_data, tiny_model):
    """The tiny model after SFT on every sft and pool window of the examples, so that it answers
    pool prompts in the numbered-line format and sampling gives several valid candidates."""
    import polars as pl

    root = tmp_path_factory.mktemp("sft-model")
    data = root / "data"
    data.mkdir()
    windows = [pl.read_parquet(examples_data / f"{s}.parquet") for s in ("sft", "pool")]
    pl.concat(windows, how="diagonal_relaxed").write_parquet(data / "sft.parquet")
    run_cli(
        "train",
        "--pair",
        "en-zh",
        "--stage",
        "sft",
        "--data",
        str(data),
        "--workdir",
        str(root / "run"),
        "--set",
        f"model.policy='{tiny_model}'",
        "--set",
        "sft.max_steps=200",
        "--set",
        "sft.global_batch=1",
        "--set",
        "sft.lr=3e-3",
        "--set",
        "sft.eval_share=0.0",
        "--set",
        "logging.tensorboard=false",
        "--json",
    )
    return root / "run" / "sft"
