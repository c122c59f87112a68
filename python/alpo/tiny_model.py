"""A tiny random Qwen2 model with its own byte-level BPE tokenizer, built in seconds offline.

Tests and benchmarks use it to run every stage's real code path (tokenization, chat template,
DeepSpeed, checkpoints, generation) without downloads. The tokenizer is trained in-process on
the texts given (plus the prompt format's own wording), so the model sees realistic token
counts; being byte-level, it encodes any text, whatever the script.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alpo.chat import CHATML_TEMPLATE
from alpo.models import save_model
from alpo.prompts import LANGUAGES, SYSTEM_PROMPT, render_answer, render_prompt

__all__ = ["SPECIAL_TOKENS", "build_tiny_model", "build_tokenizer"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer (Qwen-style specials and ChatML template) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts) + _format_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(
    out: str | Path,
    texts: Iterable[str] = (),
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random Qwen2 model and its tokenizer to the folder `out` (safetensors)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(texts, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(model, tokenizer, Path(out))
    return Path(out)


def _format_texts() -> list[str]:
    """The prompt format's wording in both instruction languages, so it tokenizes compactly."""
    lines = ["1", "2", "3"]
    out = [SYSTEM_PROMPT, render_answer(lines)]
    for lang in ("en", "zh"):
        for src in ("zh", "en"):
            for tgt in LANGUAGES:
                if tgt != src:
                    out.append(render_prompt(lines, src, tgt, instruction_language=lang))
    return out
