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

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alpo import chat, models
from alpo.config import CONFIG_DIR, TrainConfig
from alpo.exceptions import ConfigError, InputError
from alpo.prepare import read_windows
from alpo.prompts import window_texts

__all__ = ["SFTData", "ds_config", "load_sft_data", "lr_factor", "run_sft", "step_batches"]

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
# Engine


def lr_factor(step: int, total: int, warmup_ratio: float, min_ratio: float) -> float:
    """Multiplier of the peak lr before optimizer step `step` (from 0): linear warm-up over
    ceil(warmup_ratio * total) steps, then a cosine decay down to `min_ratio`."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ds_config(
    config: TrainConfig, world: int, bf16: bool, hidden_size: int, fp16: bool = False
) -> dict[str, Any]:
    """The DeepSpeed config: the shipped `zero{N}.json` (or the user's file) with its "auto"
    values filled from the alpo config."""
    ds = config.deepspeed
    path = (
        Path(ds.config_file)
        if ds.config_file
        else (CONFIG_DIR / "deepspeed" / f"zero{ds.zero_stage}.json")
    )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable DeepSpeed JSON ({e})") from None
    sft = config.sft
    per_pass = sft.micro_batch * world
    if sft.global_batch % per_pass:
        raise ConfigError(
            f"sft.global_batch ({sft.global_batch}) must be a multiple of sft.micro_batch x "
            f"processes ({sft.micro_batch} x {world})"
        )
    auto = {
        "train_micro_batch_size_per_gpu": sft.micro_batch,
        "gradient_accumulation_steps": sft.global_batch // per_pass,
        "gradient_clipping": sft.max_grad_norm,
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    filled = _fill_auto(raw, auto)
    filled["train_batch_size"] = sft.global_batch
    filled.setdefault("bf16", {})["enabled"] = bf16
    if fp16:  # fp16 weights need DeepSpeed's loss scaling
        filled.setdefault("fp16", {})["enabled"] = True
    elif filled.get("fp16", {}).get("enabled") == "auto":
        filled["fp16"]["enabled"] = False
    zero = filled.setdefault("zero_optimization", {})
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        filled["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": sft.lr,
                "betas": [sft.adam_beta1, sft.adam_beta2],
                "weight_decay": sft.weight_decay,
            },
        }
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return filled


def _fill_auto(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {
            k: (values[k] if v == "auto" and k in values else _fill_auto(v, values))
            for k, v in node.items()
        }
    return node


def build_engine(config: TrainConfig, total_steps: int, world: int) -> Any:
    """The policy in a DeepSpeed engine with AdamW and the warm-up + cosine schedule."""
    import deepspeed
    import torch
    from transformers.integrations import HfDeepSpeedConfig

    sft = config.sft
    device = models.default_device()
    if device == "cuda":  # one GPU per process, picked by the launcher's LOCAL_RANK
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = f"cuda:{torch.cuda.current_device()}"
    dtype = models.resolve_dtype(config.model.dtype, device)
    hidden = models.model_config(config.model.policy, config.model.trust_remote_code).hidden_size
    ds = ds_config(config, world, dtype == torch.bfloat16, hidden, fp16=dtype == torch.float16)
    zero3 = ds.get("zero_optimization", {}).get("stage") == 3
    # Under ZeRO-3, transformers loads the weights already partitioned over the ranks while a
    # HfDeepSpeedConfig is alive, so no process ever holds the whole model.
    zero3_loading = HfDeepSpeedConfig(ds) if zero3 else None
    torch.manual_seed(sft.seed)  # same LoRA initialisation on every rank
    model = models.load_model(
        config.model.policy,
        dtype=config.model.dtype,
        device=device,
        move=not zero3,
        trust_remote_code=config.model.trust_remote_code,
        attn_implementation=config.model.attn_implementation,
    )
    if sft.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if sft.lora_rank:
        model = _add_lora(model, config, zero3)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if "optimizer" not in ds:
        optimizer = torch.optim.AdamW(
            params,
            lr=sft.lr,
            betas=(sft.adam_beta1, sft.adam_beta2),
            weight_decay=sft.weight_decay,
            fused=device.startswith("cuda") or None,
        )

    def schedule(opt: Any) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total_steps, sft.warmup_ratio, sft.min_lr_ratio)
        )

    # DeepSpeed prints build notes to stdout, which belongs to the command's summary.
    with contextlib.redirect_stdout(sys.stderr):
        engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=params,
            optimizer=optimizer,
            lr_scheduler=schedule,
            config=ds,
        )
    del zero3_loading  # loading is over; later loads in this process are plain again
    return engine


def _add_lora(model: Any, config: TrainConfig, zero3: bool) -> Any:
    from peft import LoraConfig, get_peft_model

    if zero3:
        raise ConfigError("LoRA runs with deepspeed.zero_stage 0-2 (ZeRO-3 is for full tuning)")
    sft = config.sft
    lora = LoraConfig(
        r=sft.lora_rank,
        lora_alpha=sft.lora_alpha,
        lora_dropout=sft.lora_dropout,
        target_modules=sft.lora_targets,
        task_type="CAUSAL_LM",
    )
    if sft.gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lora)


# ---------------------------------------------------------------------------------------------
# Checkpoints


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


def save_checkpoint(
    engine: Any,
    tokenizer: Any,
    root: Path,
    step: int,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """A checkpoint folder that is also a Hugging Face model (transformers and vLLM load it as
    it is); written under a temporary name and renamed, so a crash never leaves half of one."""
    import torch.distributed as dist

    rank = dist.get_rank()
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", save_latest=False)
    _save_rng(tmp / "rng", rank)
    export_model(engine, tokenizer, tmp)
    dist.barrier()
    if rank == 0:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        models.replace_dir(tmp, final)
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def export_model(engine: Any, tokenizer: Any, out: Path, merge_lora: bool = False) -> None:
    """Write the engine's model into `out` as a Hugging Face folder (rank 0 writes; under ZeRO-3
    every rank helps gather the weights). LoRA runs save the adapter, or the merged model."""
    import torch.distributed as dist

    state = None
    if engine.zero_optimization_stage() == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    if dist.get_rank() != 0:
        return
    module = engine.module
    if merge_lora and hasattr(module, "merge_and_unload"):
        module = module.merge_and_unload()
    module.save_pretrained(out, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(out)


def latest_checkpoint(root: Path, fingerprint: str) -> Path | None:
    """The newest checkpoint of this very run, or None; checkpoints of another run (other data,
    model or settings) are removed, since they cannot be continued."""
    found = None
    for folder in sorted(root.glob("step-*")):
        try:
            state = json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if state.get("fingerprint") == fingerprint:
            found = folder
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return found


def _save_rng(folder: Path, rank: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(folder / f"rank{rank}.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    py = random.getstate()
    (folder / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "python": [py[0], list(py[1]), py[2]],
                "numpy": [kind, np.asarray(keys).tolist(), pos, has_gauss, gauss],
            }
        )
    )


def _load_rng(folder: Path, rank: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / f"rank{rank}.safetensors"))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    saved = json.loads((folder / f"rank{rank}.json").read_text())
    version, state, gauss = saved["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------
# The loop


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
    engine = build_engine(config, total_steps, _world_size())
    rank, world = dist.get_rank(), dist.get_world_size()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    fingerprint = run_fingerprint(config, data, world)
    ckpt_root = workdir / "checkpoints" / "sft"
    log_dir = workdir / "logs" / "sft"

    if fresh and rank == 0:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    step = 0
    last: dict[str, Any] = {}
    resumed = latest_checkpoint(ckpt_root, fingerprint) if rank == 0 else None
    resumed = _broadcast(resumed)
    if resumed is not None:
        loaded, _ = engine.load_checkpoint(str(resumed / "deepspeed"), tag="state")
        if loaded is None:
            raise InputError(f"{resumed}: the DeepSpeed state of this checkpoint cannot be read")
        state = json.loads((resumed / "trainer_state.json").read_text())
        step, last = state["step"], state["metrics"]
        _load_rng(resumed / "rng", rank)
    resumed_from = step
    logger = MetricsLog(log_dir, config, rank, after_step=step)

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
            "grad_norm": _float(engine.get_global_grad_norm()),
            "tokens_per_s": tokens_seen / max(1e-9, time.perf_counter() - loop_start),
        }
        if data.eval and ((sft.eval_every and step % sft.eval_every == 0) or step == total_steps):
            last["eval_loss"] = evaluate(engine, data.eval, sft.micro_batch, pad_id)
        if step % config.logging.log_every == 0 or "eval_loss" in last or step == total_steps:
            logger.write(last)
        if on_log is not None and rank == 0:
            on_log(last)
        if (sft.save_every and step % sft.save_every == 0) or step == total_steps:
            save_checkpoint(
                engine,
                tokenizer,
                ckpt_root,
                step,
                {"step": step, "fingerprint": fingerprint, "metrics": last},
                sft.keep_checkpoints,
            )
    logger.close()

    out = workdir / "sft"
    tmp = workdir / ".sft.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    export_model(engine, tokenizer, tmp, merge_lora=True)
    dist.barrier()
    if rank == 0:
        models.replace_dir(tmp, out)
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


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard / W&B (when configured), written by rank 0. On
    resume, lines after the checkpoint's step are dropped so the log reads as one run."""

    def __init__(self, folder: Path, config: TrainConfig, rank: int, after_step: int) -> None:
        self.rank = rank
        self.tb: Any = None
        self.wandb: Any = None
        if rank != 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "metrics.jsonl"
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        kept = [ln for ln in lines if (m := _json_line(ln)) and m.get("step", 0) <= after_step]
        self.path.write_text("".join(f"{ln}\n" for ln in kept))
        if config.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder), purge_step=after_step + 1)
        if config.logging.wandb_project:
            try:
                import wandb
            except ImportError:
                raise ConfigError(
                    "logging.wandb_project is set but wandb is not installed"
                ) from None
            self.wandb = wandb.init(
                project=config.logging.wandb_project, config=config.to_dict(), resume="allow"
            )

    def write(self, metrics: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        step = metrics["step"]
        scalars = {
            k: v
            for k, v in metrics.items()
            if k not in ("step", "total_steps") and isinstance(v, (int, float)) and v is not None
        }
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(f"sft/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"sft/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _json_line(line: str) -> dict[str, Any] | None:
    """One metrics line, or None for a blank or half-written one (a killed run leaves those)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)
