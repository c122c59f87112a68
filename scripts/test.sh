#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, then Rust checks (fmt, clippy, tests),
# Python checks (ruff, mypy, stub check) and pytest over the library and the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alpo/target}"
# shellcheck disable=SC1091
source .venv/bin/activate

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo nextest"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --exclude alpo-py --no-fail-fast
else
    cargo test --workspace --exclude alpo-py
fi
echo "== ruff"
ruff check
ruff format --check
echo "== mypy"
python -m mypy python/alpo cli/alpo_cli
python -m mypy.stubtest alpo._core --allowlist .stubtest-allowlist
echo "== pytest"
python -m pytest -q
