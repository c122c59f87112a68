#!/usr/bin/env bash
# Set up, then run the main job on the bundled examples: align the sample episodes in
# examples/ into runs/examples/aligned.parquet and print the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
alpo align examples/ --out runs/examples/aligned.parquet --force
python - <<'PY'
import polars as pl
df = pl.read_parquet("runs/examples/aligned.parquet")
with pl.Config(tbl_rows=8, fmt_str_lengths=40):
    print(df.select("pair", "episode", "line", "fragment", "src_text", "tgt_text"))
PY
