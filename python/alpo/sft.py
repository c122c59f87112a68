"""The SFT stage: supervised fine-tuning on `sft.parquet` in a DeepSpeed engine.

Read top to bottom, `run_sft` does this: render each window's prompt (chat template) and answer
(its numbered reference lines), tokenize them with exact ids (`alpo.chat`), hold out a seeded
slice for eval loss, then train with AdamW under a cosine schedule with warm-up, gradient
accumulation and clipping. The loss is the negative log-likelihood of the answer tokens, summed
and divided by the number of answer tokens in the whole optimizer step (all accumulation steps
and ranks), so every token weighs the same whatever the batch layout.

The data order is a pure function of the seed and the step: step s takes the next
`global_batch` windows of an endless stream of seeded per-epoch shuffles, and each rank takes
its micro-batches from them. A checkpoint therefore only needs the step number besides the
DeepSpeed state (model, optimizer, scheduler) and each rank's RNG state, and resuming from it
continues exactly as an uninterrupted run would.

Layout under `workdir`: `sft/` (the final Hugging Face model), `checkpoints/sft/step-NNNNNN/` (a
Hugging Face model folder plus `deepspeed/` and `trainer_state.json`), and `logs/sft/`
(`metrics.jsonl`, TensorBoard events).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alpo import chat, models
from alpo import engine as eng
from alpo.config import TrainConfig
from alpo.exceptions import InputError
from alpo.prepare import read_windows
from alpo.prompts import window_texts

__all__ = ["SFTData", "load_sft_data", "run_sft", "step_batches"]

IGNORE = -100


@dataclass
class SFTData:
    """Tokenized windows: training and held-out examples, and how many were too long."""

    train: list[chat.Encoded]
    eval: list[chat.Encoded]
    too_long: int


# ---------------------------------------------------------------------------------------------
# Data


def load_sft_data(data_dir: Path, pair: str, tokenizer: Any, config: TrainConfig) -> SFTData:
    """Tokenized SFT windows of `data_dir/sft.parquet`, prompts rendered with the options that
    `alpo prepare` recorded in its manifest."""
    path = data_dir / "sft.parquet"
    windows = read_windows(path, ("src_lines", "ref_lines"))
    if "pair" in windows.columns and windows.height and windows["pair"][0] != pair:
        raise InputError(f"{path}: windows are for {windows['pair'][0]}, not {pair}")
    options = prepare_options(data_dir)
    prompts, answers = window_texts(
        windows,
        pair,
        instruction_language=options.get("instruction_language", "en"),
        paraphrase_seed=options.get("seed", 1024) if options.get("paraphrase") else None,
    )
    cfg = config.sft
    encoded = [chat.encode(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    kept = [e for e in encoded if len(e) <= cfg.cutoff]
    if not kept:
        raise InputError(f"{path}: no window fits sft.cutoff = {cfg.cutoff} tokens")
    order = list(range(len(kept)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = min(round(len(kept) * cfg.eval_share), len(kept) - 1)
    if cfg.eval_share > 0 and len(kept) > 1:
        n_eval = max(n_eval, 1)
    held_out = set(order[:n_eval])
    return SFTData(
        train=[e for i, e in enumerate(kept) if i not in held_out],
        eval=[e for i, e in enumerate(kept) if i in held_out],
        too_long=len(encoded) - len(kept),
    )


def prepare_options(data_dir: Path) -> dict[str, Any]:
    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        return dict(json.loads(manifest.read_text()).get("options", {}))
    except (OSError, ValueError):
        raise InputError(f"{manifest}: not a readable manifest") from None


def step_batches(
    n_examples: int,
    step: int,
    global_batch: int,
    micro_batch: int,
    rank: int,
    world: int,
    seed: int,
) -> tuple[list[list[int]], list[int]]:
    """Example indices of optimizer step `step` (from 0): this rank's micro-batches, and every
    index of the step (all ranks), from an endless stream of seeded per-epoch shuffles."""
    start = step * global_batch
    stream: list[int] = []
    epoch = start // n_examples
    offset = start - epoch * n_examples
    while len(stream) < offset + global_batch:
        order = list(range(n_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        stream.extend(order)
        epoch += 1
    step_ids = stream[offset : offset + global_batch]
    per_pass = micro_batch * world
    mine = [
        step_ids[i + rank * micro_batch : i + (rank + 1) * micro_batch]
        for i in range(0, global_batch, per_pass)
    ]
    return mine, step_ids


def collate(examples: list[chat.Encoded], pad_id: int) -> dict[str, Any]:
    """Right-padded ids, attention mask, and next-token labels for the answer tokens only.

    `labels[:, t]` is the token at t+1 when that token belongs to an answer, else IGNORE. Only
    the last `keep` positions can carry a label (from the shortest prompt's end on), so the model
    computes logits only there: on long prompts that saves most of the vocabulary projection.
    """
    import torch

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        seq = torch.tensor(e.input_ids, dtype=torch.long)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
        p = len(e.prompt_ids)
        labels[row, p - 1 : len(seq) - 1] = seq[p:]
    keep = width - min(len(e.prompt_ids) for e in examples) + 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels[:, -keep:], "keep": keep}


def answer_nll(model: Any, batch: dict[str, Any], device: Any) -> Any:
    """Summed negative log-likelihood of the batch's answer tokens."""
    import torch.nn.functional as F

    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        logits_to_keep=batch["keep"],
        use_cache=False,
    )
    labels = batch["labels"].to(device)
    logits = out.logits.float()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def answer_tokens(examples: list[chat.Encoded]) -> int:
    return sum(len(e.answer_ids) for e in examples)


# ---------------------------------------------------------------------------------------------
# The loop


def run_fingerprint(config: TrainConfig, data: SFTData, world: int) -> str:
    """What decides the training trajectory: the model, the data, the SFT and DeepSpeed
    settings (not how often to eval or save) and the number of processes."""
    sft = {
        k: v
        for k, v in asdict(config.sft).items()
        if k not in ("eval_every", "save_every", "keep_checkpoints")
    }
    h = hashlib.sha256(
        json.dumps(
            {
                "model": asdict(config.model),
                "sft": sft,
                "deepspeed": asdict(config.deepspeed),
                "world": world,
            },
            sort_keys=True,
        ).encode()
    )
    for e in data.train + data.eval:
        h.update(repr((e.prompt_ids, e.answer_ids)).encode())
    return h.hexdigest()


def evaluate(engine: Any, examples: list[chat.Encoded], micro_batch: int, pad_id: int) -> float:
    """Mean answer-token NLL over the held-out examples (split across ranks)."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    mine = examples[rank::world]
    # Every rank runs the same number of forwards (ZeRO-3 gathers weights in each one, so an
    # uneven count would hang); a rank out of examples runs one it does not count.
    passes = math.ceil(math.ceil(len(examples) / world) / micro_batch)
    totals = torch.zeros(2, dtype=torch.float64)
    engine.eval()
    with torch.no_grad():
        for i in range(passes):
            chunk = mine[i * micro_batch : (i + 1) * micro_batch]
            nll = answer_nll(engine, collate(chunk or examples[:1], pad_id), engine.device)
            if chunk:
                totals[0] += nll.item()
                totals[1] += answer_tokens(chunk)
    engine.train()
    totals = totals.to(engine.device)
    dist.all_reduce(totals)
    return float(totals[0] / totals[1]) if totals[1] else float("nan")


def run_sft(
    config: TrainConfig,
    data_dir: Path,
    workdir: Path,
    pair: str,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train the SFT stage; returns a summary. Resumes from the newest checkpoint of the same run
    (same model, data and settings) unless `fresh`; the final model is written to
    `workdir/sft/`."""
    import torch
    import torch.distributed as dist

    started = time.perf_counter()
    sft = config.sft
    tokenizer = models.load_tokenizer(config.model.policy, config.model.trust_remote_code)
    data = load_sft_data(data_dir, pair, tokenizer, config)
    total_steps = sft.max_steps or max(
        1, math.ceil(sft.epochs * len(data.train) / sft.global_batch)
    )
    engine = eng.build_engine(config, total_steps, eng.world_size())
    rank, world = dist.get_rank(), dist.get_world_size()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    fingerprint = run_fingerprint(config, data, world)
    ckpt_root = workdir / "checkpoints" / "sft"
    log_dir = workdir / "logs" / "sft"

    if fresh and rank == 0:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    state = eng.resume(engine, ckpt_root, fingerprint) or {"step": 0, "metrics": {}}
    step, last = state["step"], state["metrics"]
    resumed_from = step
    logger = eng.MetricsLog(log_dir, config, rank, after_step=step)

    tokens_seen = 0
    loop_start = time.perf_counter()
    while step < total_steps:
        mine, step_ids = step_batches(
            len(data.train), step, sft.global_batch, sft.micro_batch, rank, world, sft.seed
        )
        step_tokens = answer_tokens([data.train[i] for i in step_ids])
        lr = engine.get_lr()[0]
        nll_sum = torch.zeros((), dtype=torch.float64)
        for ids in mine:
            batch = collate([data.train[i] for i in ids], pad_id)
            nll = answer_nll(engine, batch, engine.device)
            # DeepSpeed averages gradients over ranks; scaling by world makes it a global sum.
            engine.backward(nll * (world / step_tokens), scale_wrt_gas=False)
            engine.step()
            nll_sum += nll.detach().double().cpu()
        step += 1
        tokens_seen += sum(len(data.train[i]) for i in step_ids)
        nll_sum = nll_sum.to(engine.device)
        dist.all_reduce(nll_sum)
        last = {
            "step": step,
            "total_steps": total_steps,
            "loss": float(nll_sum) / step_tokens,
            "lr": lr,
            "grad_norm": eng.as_float(engine.get_global_grad_norm()),
            "tokens_per_s": tokens_seen / max(1e-9, time.perf_counter() - loop_start),
        }
        if data.eval and ((sft.eval_every and step % sft.eval_every == 0) or step == total_steps):
            last["eval_loss"] = evaluate(engine, data.eval, sft.micro_batch, pad_id)
        eng.end_step(
            engine,
            tokenizer,
            logger,
            last,
            sft,
            ckpt_root,
            fingerprint,
            config.logging.log_every,
            on_log,
            always_log="eval_loss" in last,
        )
    logger.close()

    out = workdir / "sft"
    eng.export_final(engine, tokenizer, out)
    return {
        "steps": total_steps,
        "resumed_from_step": resumed_from,
        "train_windows": len(data.train),
        "eval_windows": len(data.eval),
        "too_long": data.too_long,
        "loss": last.get("loss"),
        "eval_loss": last.get("eval_loss"),
        "tokens_per_s": last.get("tokens_per_s"),
        "processes": world,
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }
