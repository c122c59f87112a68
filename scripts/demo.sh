#!/usr/bin/env bash
# Set up, then run the main job on the bundled examples with the embedded default model, for
# Chinese to Thai: align the sample episode's zh and th tracks (runs/zh-th/aligned.parquet), cut
# prompt windows (runs/zh-th/data), then `alpo train --preset tiny`, every stage of ALPO:
# fine-tune SmolLM2-135M-Instruct (runs/zh-th/sft/), sample and judge candidate translations
# per segment (candidates.parquet, scores.parquet), build the gated, weighted, prefix-mixed
# preference records and their reference log-probs (records.parquet), and train ALPO on them
# (runs/zh-th/alpo/). Last, the trained model translates a subtitle file. The model is tiny and
# its Thai is junk; the run proves every stage's mechanics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
alpo align examples/ --pair zh-th --out runs/zh-th/aligned.parquet --force
alpo prepare runs/zh-th/aligned.parquet --pair zh-th --out runs/zh-th/data --prompts \
    --window 8 --context 2 --min-fragment 4 --sft-share 0.5 --force
python - <<'PY'
import polars as pl
df = pl.read_parquet("runs/zh-th/aligned.parquet")
with pl.Config(tbl_rows=8, fmt_str_lengths=40):
    print(df.select("pair", "episode", "line", "fragment", "src_text", "tgt_text"))
PY
alpo train --pair zh-th --preset tiny
python - <<'PY'
import polars as pl
cands = pl.read_parquet("runs/zh-th/candidates.parquet")
scores = pl.read_parquet("runs/zh-th/scores.parquet")
table = cands.join(scores, on=["window_id", "segment", "candidate"]).filter(pl.col("segment") == 2)
with pl.Config(tbl_rows=16, fmt_str_lengths=40):
    print(table.select("segment", "candidate", "is_reference", "text", "score"))
records = pl.read_parquet("runs/zh-th/records.parquet")
with pl.Config(tbl_rows=10):
    print(records.select("segment", "stage", "lam", "weight", "beta", "chosen_score",
                         "rejected_score", "ref_chosen_logp", "ref_rejected_logp").head(10))
PY
alpo translate "examples/Harbor Lights.S01E01.zh.ass" --model runs/zh-th/alpo --pair zh-th \
    --out runs/zh-th/translated/Harbor-Lights.S01E01.th.ass --window 8 --context 2 --retries 0
