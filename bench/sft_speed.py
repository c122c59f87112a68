"""Benchmark SFT throughput on CPU: `alpo train --stage sft` against a plain PyTorch loop.

Both train the same model on the same prepared windows (zh-th, 35 lines each: 25 core + 2 x 5
context, synthetic sentences from `alpo.synthetic`) with AdamW, one window per micro-batch and
`--global-batch` windows per optimizer step, for `--steps` steps, and count tokens the same way
(prompt + answer of every window trained on, per second of the training loop; model loading,
DeepSpeed start-up and the final save are left out).

- alpo: the `alpo train` command as a user runs it (DeepSpeed ZeRO-2 on gloo, one process,
  answer-only logits, loss normalized over the step), its loop speed read from the run summary.
- baseline: the loop one writes with transformers alone: `model(input_ids, labels=...)` (full
  logits over the whole window, transformers' own loss), `loss.backward()`, `torch.optim.AdamW`.

Models: `tiny` (the test suite's random Qwen2, 2 layers, hidden 64, tokenizer trained on the
windows) and `embedded` (SmolLM2-135M-Instruct). Each is run `--runs` times, alternating alpo and
baseline; the medians and their ratio are printed and written to `bench/out/sft_speed.json`.

    python bench/sft_speed.py                      # both models, 3 runs each
    python bench/sft_speed.py --models tiny --runs 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from align_speed import machine  # noqa: E402

from alpo import chat, models, synthetic  # noqa: E402
from alpo.prompts import window_texts  # noqa: E402

PAIR = "zh-th"
LINES = 35


def make_windows(n: int, folder: Path, seed: int = 1) -> Path:
    """`folder/sft.parquet` with n windows of LINES synthetic zh lines and their th lines."""
    rng = random.Random(seed)
    serial = iter(range(10**9))
    rows = []
    for i in range(n):
        src = [synthetic.sentence(rng, "zh", next(serial)) for _ in range(LINES)]
        ref = [synthetic.sentence(rng, "th", next(serial)) for _ in range(LINES)]
        rows.append({"window_id": f"w{i}", "pair": PAIR, "src_lines": src, "ref_lines": ref})
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(folder / "sft.parquet")
    return folder


def run_alpo(model: str, data: Path, work: Path, steps: int, batch: int) -> float:
    """Tokens/s of the `alpo train` loop."""
    cmd = [
        sys.executable,
        "-m",
        "alpo_cli",
        "train",
        "--pair",
        PAIR,
        "--stage",
        "sft",
        "--data",
        str(data),
        "--workdir",
        str(work),
        "--force",
        "--json",
        "--set",
        f"model.policy='{model}'",
        "--set",
        f"sft.max_steps={steps}",
        "--set",
        f"sft.global_batch={batch}",
        "--set",
        "sft.eval_share=0.0",
        "--set",
        "logging.tensorboard=false",
        "--set",
        "deepspeed.zero_stage=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"alpo train failed:\n{proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["sft"]["tokens_per_s"])


def run_baseline(model_name: str, data: Path, steps: int, batch: int) -> float:
    """Tokens/s of a plain transformers + torch.optim.AdamW loop on the same windows."""
    import torch

    tokenizer = models.load_tokenizer(model_name)
    model = models.load_model(model_name, device="cpu")
    model.train()
    prompts, answers = window_texts(pl.read_parquet(data / "sft.parquet"), PAIR)
    examples = [chat.encode(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        for k in range(batch):
            e = examples[(step * batch + k) % len(examples)]
            ids = torch.tensor([e.input_ids])
            labels = ids.clone()
            labels[0, : len(e.prompt_ids)] = -100
            loss = model(input_ids=ids, labels=labels).loss / batch
            loss.backward()
            tokens += len(e)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "embedded"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--windows", type=int, default=32)
    args = ap.parse_args()
    shapes = {"tiny": (20, 4), "embedded": (3, 2)}  # (steps, global batch) per model
    data = make_windows(args.windows, HERE / "data" / f"sft-windows-{args.windows}")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    results: dict = {"machine": machine(), "windows": args.windows, "lines": LINES, "models": {}}
    for name in args.models:
        if name == "tiny":
            from alpo.tiny_model import build_tiny_model

            frame = pl.read_parquet(data / "sft.parquet")
            texts = [t for col in ("src_lines", "ref_lines") for row in frame[col] for t in row]
            model = str(build_tiny_model(out / "sft-tiny-model", texts))
        else:
            model = "embedded"
            models.embedded_model_dir()  # convert once, outside the timings
        steps, batch = shapes[name]
        tok = models.load_tokenizer(model)
        p, a = window_texts(pl.read_parquet(data / "sft.parquet").head(1), PAIR)
        window_tokens = len(chat.encode(tok, p[0], a[0]))
        alpo_runs, base_runs = [], []
        for _ in range(args.runs):
            alpo_runs.append(run_alpo(model, data, out / f"sft-{name}", steps, batch))
            base_runs.append(run_baseline(model, data, steps, batch))
        row = {
            "steps": steps,
            "global_batch": batch,
            "tokens_per_window": window_tokens,
            "alpo_tokens_per_s": alpo_runs,
            "baseline_tokens_per_s": base_runs,
            "alpo_median": statistics.median(alpo_runs),
            "baseline_median": statistics.median(base_runs),
        }
        row["ratio"] = row["alpo_median"] / row["baseline_median"]
        results["models"][name] = row
        print(f"{name}: {window_tokens} tokens/window, {steps} steps x {batch} windows")
        print(f"  alpo (DeepSpeed ZeRO-2, gloo): {row['alpo_median']:,.0f} tokens/s (median)")
        print(f"  baseline (plain torch loop):   {row['baseline_median']:,.0f} tokens/s (median)")
        print(f"  ratio: {row['ratio']:.2f}x")
    (out / "sft_speed.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()
