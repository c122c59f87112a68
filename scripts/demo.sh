#!/usr/bin/env bash
# Set up, then run the main job on the bundled examples with the embedded default model: align
# the sample episodes in examples/ into runs/examples/aligned.parquet, cut prompt windows for
# en-zh into runs/examples/data, show what came out, fine-tune SmolLM2-135M-Instruct on the
# windows (runs/examples/sft/, checkpoints and logs beside it), sample and judge candidate
# translations per segment (runs/examples/candidates.parquet, scores.parquet), and build the
# preference records with their reference log-probs (runs/examples/records.parquet).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
alpo align examples/ --out runs/examples/aligned.parquet --force
alpo prepare runs/examples/aligned.parquet --pair en-zh --out runs/examples/data --prompts \
    --window 8 --context 2 --min-fragment 4 --force
python - <<'PY'
import polars as pl
df = pl.read_parquet("runs/examples/aligned.parquet")
with pl.Config(tbl_rows=8, fmt_str_lengths=40):
    print(df.select("pair", "episode", "line", "fragment", "src_text", "tgt_text"))
sft = pl.read_parquet("runs/examples/data/sft.parquet")
print(sft["prompt"][0])
print(sft["answer"][0])
PY
# The training chain with the embedded model: SFT on the example windows, segment-wise sampling
# of candidates judged by the same model, preference records and their reference log-probs
# (about four minutes on two CPU cores).
alpo train --pair en-zh --preset tiny --data runs/examples/data --workdir runs/examples
python - <<'PY'
import polars as pl
cands = pl.read_parquet("runs/examples/candidates.parquet")
scores = pl.read_parquet("runs/examples/scores.parquet")
table = cands.join(scores, on=["window_id", "segment", "candidate"]).filter(pl.col("segment") == 2)
with pl.Config(tbl_rows=16, fmt_str_lengths=40):
    print(table.select("segment", "candidate", "is_reference", "text", "score"))
PY
