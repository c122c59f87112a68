"""The alpo stage: preference training on `records.parquet` in a DeepSpeed engine.

Read top to bottom, `run_alpo` does this: read the records (prompt, chosen and rejected token
ids, weight, beta, and the reference log-probs the ref stage stored, so training holds a single
model) in file order, which is the pairs stage's prefix schedule; then train with AdamW under a
cosine schedule with warm-up. The same loop trains ALPO and the two DPO baselines: they differ
only in the records the pairs stage wrote (weights of 1, a constant beta).

Step s takes the next `global_batch` records of the file order (cycled when `epochs` > 1). Each
rank takes a contiguous slice of them, cut into micro-batches: contiguous, so a window's records
of one prefix stage stay together and `packing = "chain"` computes them as one sequence (the
shared trunk with a chosen and a rejected branch per segment). Per micro-batch the policy's
log-probs go into `alpo.loss.alpo_loss`; with the default `step` normalizer the weights are
divided by their sum over the whole step (every accumulation step and rank), so the gradient is
the same whatever the batch layout. Implicit rewards, their margin and the accuracy are logged
per step, as DPO trainers do.

Layout under `workdir`: `alpo/` (the final Hugging Face model), `checkpoints/alpo/step-NNNNNN/`
and `logs/alpo/` (`metrics.jsonl`, TensorBoard events), as in the SFT stage.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alpo import engine as eng
from alpo import models
from alpo.config import TrainConfig
from alpo.exceptions import InputError
from alpo.logprobs import record_logps
from alpo.loss import alpo_loss
from alpo.prepare import read_windows

__all__ = ["Records", "load_records", "run_alpo", "step_slices"]

COLUMNS = (
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "weight",
    "beta",
    "ref_chosen_logp",
    "ref_rejected_logp",
)


@dataclass
class Records:
    """The training records as plain lists, and how many were left out as too long."""

    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    weight: list[float]
    beta: list[float]
    ref_chosen: list[float]
    ref_rejected: list[float]
    too_long: int

    def __len__(self) -> int:
        return len(self.prompts)


def load_records(path: Path, cutoff: int) -> Records:
    """The records of `path` in file order, without those longer than `cutoff` tokens."""
    import polars as pl

    frame = read_windows(path, COLUMNS)
    if frame.height and frame["ref_chosen_logp"].null_count():
        raise InputError(f"{path}: reference log-probs are missing (run the ref stage first)")
    length = pl.col("prompt_ids").list.len() + pl.max_horizontal(
        pl.col("chosen_ids").list.len(), pl.col("rejected_ids").list.len()
    )
    kept = frame.filter(length <= cutoff)
    if not kept.height:
        raise InputError(f"{path}: no record to train on (none, or none within {cutoff} tokens)")
    return Records(
        prompts=kept["prompt_ids"].to_list(),
        chosen=kept["chosen_ids"].to_list(),
        rejected=kept["rejected_ids"].to_list(),
        weight=kept["weight"].to_list(),
        beta=kept["beta"].to_list(),
        ref_chosen=kept["ref_chosen_logp"].to_list(),
        ref_rejected=kept["ref_rejected_logp"].to_list(),
        too_long=frame.height - kept.height,
    )


def step_slices(
    n_records: int, step: int, global_batch: int, micro_batch: int, rank: int, world: int
) -> tuple[list[list[int]], list[int]]:
    """Record indices of optimizer step `step` (from 0): this rank's micro-batches (a
    contiguous slice of the step, so chains stay whole), and every index of the step."""
    start = step * global_batch
    step_ids = [(start + j) % n_records for j in range(global_batch)]
    per_rank = global_batch // world
    mine = step_ids[rank * per_rank : (rank + 1) * per_rank]
    return [mine[i : i + micro_batch] for i in range(0, per_rank, micro_batch)], step_ids


def run_fingerprint(config: TrainConfig, records_path: Path, policy: str, world: int) -> str:
    """What decides the training trajectory: the records, the starting model, the alpo, model
    and DeepSpeed settings (not how often to save) and the number of processes."""
    from alpo.prepare import file_digest

    alpo = {
        k: v for k, v in asdict(config.alpo).items() if k not in ("save_every", "keep_checkpoints")
    }
    stamp = [(p.name, p.stat().st_size) for p in sorted(Path(policy).glob("*")) if p.is_file()]
    blob = {
        "records": file_digest(records_path),
        "policy": [policy, stamp],
        "alpo": alpo,
        "model": asdict(config.model),
        "deepspeed": asdict(config.deepspeed),
        "world": world,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def run_alpo(
    config: TrainConfig,
    workdir: Path,
    policy: str,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train the alpo stage from the model at `policy` on `workdir/records.parquet`; returns a
    summary. Resumes from the newest checkpoint of the same run unless `fresh`; the final model
    is written to `workdir/alpo/`."""
    import torch
    import torch.distributed as dist

    started = time.perf_counter()
    opt = config.alpo
    records_path = workdir / "records.parquet"
    data = load_records(records_path, opt.cutoff)
    tokenizer = models.load_tokenizer(policy, config.model.trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_steps = opt.max_steps or max(1, math.ceil(opt.epochs * len(data) / opt.global_batch))
    engine = eng.build_engine(
        config, total_steps, eng.world_size(), stage="alpo", model_path=policy
    )
    rank, world = dist.get_rank(), dist.get_world_size()
    accumulation = opt.global_batch // (opt.micro_batch * world)
    # DeepSpeed averages gradients over ranks (hence x world). `micro` averages the
    # micro-batches' own normalized losses, as the release's trainer does.
    scale = world if opt.normalizer != "micro" else 1.0 / accumulation
    fingerprint = run_fingerprint(config, records_path, policy, world)
    ckpt_root = workdir / "checkpoints" / "alpo"
    if fresh and rank == 0:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    state = eng.resume(engine, ckpt_root, fingerprint) or {"step": 0, "metrics": {}}
    step, last = state["step"], state["metrics"]
    resumed_from = step
    logger = eng.MetricsLog(workdir / "logs" / "alpo", config, rank, after_step=step, stage="alpo")

    def tensor(values: list[float], ids: list[int]) -> Any:
        return torch.tensor([values[i] for i in ids], dtype=torch.float64, device=engine.device)

    seen = 0
    loop_start = time.perf_counter()
    while step < total_steps:
        mine, step_ids = step_slices(
            len(data), step, opt.global_batch, opt.micro_batch, rank, world
        )
        weight_total = sum(data.weight[i] for i in step_ids)
        lr = engine.get_lr()[0]
        # loss, chosen reward, rejected reward, correct, records
        sums = torch.zeros(5, dtype=torch.float64)
        for ids in mine:
            policy_c, policy_r = record_logps(
                engine,
                [data.prompts[i] for i in ids],
                [data.chosen[i] for i in ids],
                [data.rejected[i] for i in ids],
                packing=opt.packing,
                pad_id=pad_id,
            )
            ref_c, ref_r = tensor(data.ref_chosen, ids), tensor(data.ref_rejected, ids)
            beta = tensor(data.beta, ids)
            loss = alpo_loss(
                policy_c,
                policy_r,
                ref_c,
                ref_r,
                beta,
                tensor(data.weight, ids),
                normalizer=opt.normalizer,
                weight_total=weight_total,
            )
            engine.backward(loss * scale, scale_wrt_gas=False)
            engine.step()
            with torch.no_grad():
                chosen = beta * (policy_c.detach() - ref_c)
                rejected = beta * (policy_r.detach() - ref_r)
                sums += torch.stack(
                    [
                        loss.detach() * scale / world,
                        chosen.sum(),
                        rejected.sum(),
                        (chosen > rejected).double().sum(),
                        torch.tensor(float(len(ids)), dtype=torch.float64, device=chosen.device),
                    ]
                ).cpu()
        step += 1
        seen += len(step_ids)
        sums = sums.to(engine.device)
        dist.all_reduce(sums)
        n = float(sums[4])
        last = {
            "step": step,
            "total_steps": total_steps,
            "loss": float(sums[0]),
            "chosen_reward": float(sums[1]) / n,
            "rejected_reward": float(sums[2]) / n,
            "margin": float(sums[1] - sums[2]) / n,
            "accuracy": float(sums[3]) / n,
            "weight_sum": weight_total,
            "lr": lr,
            "grad_norm": eng.as_float(engine.get_global_grad_norm()),
            "records_per_s": seen / max(1e-9, time.perf_counter() - loop_start),
        }
        eng.end_step(
            engine,
            tokenizer,
            logger,
            last,
            opt,
            ckpt_root,
            fingerprint,
            config.logging.log_every,
            on_log,
        )
    logger.close()
    out = workdir / "alpo"
    eng.export_final(engine, tokenizer, out)
    return {
        "method": opt.method,
        "steps": total_steps,
        "resumed_from_step": resumed_from,
        "records": len(data),
        "too_long": data.too_long,
        "loss": last.get("loss"),
        "accuracy": last.get("accuracy"),
        "margin": last.get("margin"),
        "records_per_s": last.get("records_per_s"),
        "processes": world,
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }
