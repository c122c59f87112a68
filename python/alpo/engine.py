"""What the training stages (SFT and ALPO) share: the DeepSpeed engine, its config, the
learning-rate schedule, checkpoints that are also Hugging Face model folders, and the metrics log.

Each stage names its section of the config (`sft` or `alpo`, both `OptimConfig`s) and its
folder names; the loops themselves live in `alpo.sft` and `alpo.alpo_train`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from alpo import models
from alpo.config import CONFIG_DIR, OptimConfig, TrainConfig
from alpo.exceptions import ConfigError, InputError

__all__ = [
    "MetricsLog",
    "broadcast",
    "build_engine",
    "ds_config",
    "end_step",
    "export_final",
    "export_model",
    "latest_checkpoint",
    "lr_factor",
    "resume",
    "save_checkpoint",
    "world_size",
]


def lr_factor(step: int, total: int, warmup_ratio: float, min_ratio: float) -> float:
    """Multiplier of the peak lr before optimizer step `step` (from 0): linear warm-up over
    ceil(warmup_ratio * total) steps, then a cosine decay down to `min_ratio`."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ds_config(
    config: TrainConfig,
    world: int,
    bf16: bool,
    hidden_size: int,
    fp16: bool = False,
    stage: str = "sft",
) -> dict[str, Any]:
    """The DeepSpeed config of training stage `stage`: the shipped `zero{N}.json` (or the
    user's file) with its "auto" values filled from that stage's section of the config."""
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
    opt: OptimConfig = getattr(config, stage)
    per_pass = opt.micro_batch * world
    if opt.global_batch % per_pass:
        raise ConfigError(
            f"{stage}.global_batch ({opt.global_batch}) must be a multiple of {stage}.micro_batch"
            f" x processes ({opt.micro_batch} x {world})"
        )
    auto = {
        "train_micro_batch_size_per_gpu": opt.micro_batch,
        "gradient_accumulation_steps": opt.global_batch // per_pass,
        "gradient_clipping": opt.max_grad_norm,
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    filled = _fill_auto(raw, auto)
    filled["train_batch_size"] = opt.global_batch
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
                "lr": opt.lr,
                "betas": [opt.adam_beta1, opt.adam_beta2],
                "weight_decay": opt.weight_decay,
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


def build_engine(
    config: TrainConfig, total_steps: int, world: int, stage: str = "sft", model_path: str = ""
) -> Any:
    """The model at `model_path` (default: the config's policy) in a DeepSpeed engine with
    AdamW and the warm-up + cosine schedule of section `stage`."""
    import deepspeed
    import torch
    from transformers.integrations import HfDeepSpeedConfig

    opt: OptimConfig = getattr(config, stage)
    model_path = model_path or config.model.policy
    device = models.default_device()
    if device == "cuda":  # one GPU per process, picked by the launcher's LOCAL_RANK
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = f"cuda:{torch.cuda.current_device()}"
    dtype = models.resolve_dtype(config.model.dtype, device)
    hidden = models.model_config(model_path, config.model.trust_remote_code).hidden_size
    bf16, fp16 = dtype == torch.bfloat16, dtype == torch.float16
    ds = ds_config(config, world, bf16, hidden, fp16=fp16, stage=stage)
    zero3 = ds.get("zero_optimization", {}).get("stage") == 3
    # Under ZeRO-3, transformers loads the weights already partitioned over the ranks while a
    # HfDeepSpeedConfig is alive, so no process ever holds the whole model.
    zero3_loading = HfDeepSpeedConfig(ds) if zero3 else None
    torch.manual_seed(opt.seed)  # same LoRA initialisation on every rank
    model = models.load_model(
        model_path,
        dtype=config.model.dtype,
        device=device,
        move=not zero3,
        trust_remote_code=config.model.trust_remote_code,
        attn_implementation=config.model.attn_implementation,
    )
    if opt.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if opt.lora_rank:
        model = _add_lora(model, opt, zero3)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if "optimizer" not in ds:
        optimizer = torch.optim.AdamW(
            params,
            lr=opt.lr,
            betas=(opt.adam_beta1, opt.adam_beta2),
            weight_decay=opt.weight_decay,
            fused=device.startswith("cuda") or None,
        )

    def schedule(optim: Any) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(
            optim, lambda s: lr_factor(s, total_steps, opt.warmup_ratio, opt.min_lr_ratio)
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


def _add_lora(model: Any, opt: OptimConfig, zero3: bool) -> Any:
    from peft import LoraConfig, get_peft_model

    if zero3:
        raise ConfigError("LoRA runs with deepspeed.zero_stage 0-2 (ZeRO-3 is for full tuning)")
    lora = LoraConfig(
        r=opt.lora_rank,
        lora_alpha=opt.lora_alpha,
        lora_dropout=opt.lora_dropout,
        target_modules=opt.lora_targets,
        task_type="CAUSAL_LM",
    )
    if opt.gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lora)


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
    save_rng(tmp / "rng", rank)
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


def end_step(
    engine: Any,
    tokenizer: Any,
    logger: MetricsLog,
    metrics: dict[str, Any],
    opt: OptimConfig,
    ckpt_root: Path,
    fingerprint: str,
    log_every: int,
    on_log: Any = None,
    always_log: bool = False,
) -> None:
    """After an optimizer step: write its metrics (every `log_every` steps, at the end, or
    `always_log`), report them to `on_log` (rank 0), and save a checkpoint every
    `opt.save_every` steps and at the end."""
    import torch.distributed as dist

    step, total = metrics["step"], metrics["total_steps"]
    if step % log_every == 0 or always_log or step == total:
        logger.write(metrics)
    if on_log is not None and dist.get_rank() == 0:
        on_log(metrics)
    if (opt.save_every and step % opt.save_every == 0) or step == total:
        state = {"step": step, "fingerprint": fingerprint, "metrics": metrics}
        save_checkpoint(engine, tokenizer, ckpt_root, step, state, opt.keep_checkpoints)


def resume(engine: Any, root: Path, fingerprint: str) -> dict[str, Any] | None:
    """Load the newest checkpoint of this run (see `latest_checkpoint`) into `engine` and this
    rank's RNG; returns its trainer state, or None when there is none (every rank calls it)."""
    import torch.distributed as dist

    rank = dist.get_rank()
    found = broadcast(latest_checkpoint(root, fingerprint) if rank == 0 else None)
    if found is None:
        return None
    loaded, _ = engine.load_checkpoint(str(found / "deepspeed"), tag="state")
    if loaded is None:
        raise InputError(f"{found}: the DeepSpeed state of this checkpoint cannot be read")
    load_rng(found / "rng", rank)
    return dict(json.loads((found / "trainer_state.json").read_text()))


def export_final(engine: Any, tokenizer: Any, out: Path) -> None:
    """Write the trained model (LoRA merged) to `out`, replacing it only once it is whole."""
    import torch.distributed as dist

    tmp = out.parent / f".{out.name}.tmp"
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    export_model(engine, tokenizer, tmp, merge_lora=True)
    dist.barrier()
    if dist.get_rank() == 0:
        models.replace_dir(tmp, out)


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


def save_rng(folder: Path, rank: int) -> None:
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


def load_rng(folder: Path, rank: int) -> None:
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


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard / W&B (when configured), written by rank 0 under
    `stage/` names. On resume, lines after the checkpoint's step are dropped so the log reads as
    one run."""

    def __init__(
        self, folder: Path, config: TrainConfig, rank: int, after_step: int, stage: str = "sft"
    ) -> None:
        self.rank = rank
        self.stage = stage
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
                self.tb.add_scalar(f"{self.stage}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{self.stage}/{k}": v for k, v in scalars.items()}, step=step)

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


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def broadcast(value: Any) -> Any:
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def as_float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)
