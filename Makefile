# Usual verbs. `make help` lists them. The two README commands are scripts/demo.sh and
# scripts/test.sh; these targets are shortcuts for working on the code.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/alpo/target
VENV := .venv/bin

.PHONY: help setup build test test-rust test-py lint fmt bench fuzz demo

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## Create .venv, install dependencies, build the extension
	bash scripts/setup.sh

build:  ## Rebuild the extension (release) into .venv
	$(VENV)/maturin develop --release

test:  ## Everything CI runs
	bash scripts/test.sh

test-rust:  ## Rust tests of the core
	cargo nextest run --workspace --exclude alpo-py

test-py:  ## pytest only
	$(VENV)/python -m pytest -q

lint:  ## fmt, clippy, ruff, mypy, stubtest
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/ruff check
	$(VENV)/python -m mypy python/alpo cli/alpo_cli
	$(VENV)/python -m mypy.stubtest alpo._core --allowlist .stubtest-allowlist

fmt:  ## Format Rust and Python code
	cargo fmt --all
	$(VENV)/ruff format

bench:  ## The align benchmark (see bench/README.md)
	$(VENV)/python bench/align_speed.py --pairs 1000000

fuzz:  ## Two minutes of fuzzing the parsers (see fuzz/README.md)
	cd fuzz && cargo +nightly fuzz run parse -- -max_total_time=120

demo:  ## Align the bundled examples
	bash scripts/demo.sh
