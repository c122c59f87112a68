#!/usr/bin/env bash
# Set up, then run the main job on the bundled examples: align the sample episodes in
# examples/ into runs/examples/aligned.parquet, cut prompt windows for en-zh into
# runs/examples/data, and show what came out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
alpo align examples/ --out runs/examples/aligned.parquet --force
alpo prepare runs/examples/aligned.parquet --pair en-zh --out runs/examples/data --prompts --force
python - <<'PY'
import polars as pl
df = pl.read_parquet("runs/examples/aligned.parquet")
with pl.Config(tbl_rows=8, fmt_str_lengths=40):
    print(df.select("pair", "episode", "line", "fragment", "src_text", "tgt_text"))
sft = pl.read_parquet("runs/examples/data/sft.parquet")
print(sft["prompt"][0])
print(sft["answer"][0])
PY
