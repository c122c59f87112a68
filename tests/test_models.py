"""The model layer: loading rules, the tiny test model, chat rendering and exact tokenization."""

import json
import random

import polars as pl
import pytest
import torch

from alpo import chat, models, prompts
from alpo.exceptions import InputError
from alpo.tiny_model import build_tokenizer


def test_tiny_model_loads_and_generates(tiny_model):
    tokenizer = models.load_tokenizer(str(tiny_model))
    model = models.load_model(str(tiny_model), device="cpu")
    assert model.dtype == torch.float32  # auto on CPU
    assert model.config.model_type == "qwen2"
    assert len(tokenizer) == model.config.vocab_size
    ids = chat.encode(tokenizer, "1. hello", "1. 你好").prompt_ids
    out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > len(ids)


def test_byte_level_tokenizer_round_trips_any_script():
    tokenizer = build_tokenizer(["hello world", "你好"], vocab_size=400)
    for text in ["ภาษาไทย ok", "Здравствуй, мир", "🎬 — «¿qué?»", "你好\n世界"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_chat_prompt_ends_with_the_generation_prompt(tiny_model):
    tokenizer = models.load_tokenizer(str(tiny_model))
    text = chat.chat_prompt(tokenizer, "Translate this.")
    assert text.startswith(f"<|im_start|>system\n{prompts.SYSTEM_PROMPT}<|im_end|>")
    assert text.endswith("<|im_start|>user\nTranslate this.<|im_end|>\n<|im_start|>assistant\n")


def windows_texts(data_dir, pair="en-zh"):
    frames = [pl.read_parquet(data_dir / f"{s}.parquet") for s in ("sft", "pool", "test")]
    return prompts.window_texts(pl.concat(frames), pair, paraphrase_seed=7)


def check_exact(tokenizer, prompt, answer):
    e = chat.encode(tokenizer, prompt, answer)
    prompt_text = chat.chat_prompt(tokenizer, prompt)
    whole = tokenizer(prompt_text + answer + tokenizer.eos_token, add_special_tokens=False)
    alone = tokenizer(prompt_text, add_special_tokens=False)
    assert e.prompt_ids + e.answer_ids == whole["input_ids"]
    assert e.prompt_ids == alone["input_ids"]
    assert tokenizer.decode(e.answer_ids) == answer + tokenizer.eos_token
    assert e.answer_ids[-1] == tokenizer.eos_token_id


def test_encode_keeps_exact_ids_on_real_windows(tiny_model, examples_data):
    tokenizer = models.load_tokenizer(str(tiny_model))
    ps, answers = windows_texts(examples_data)
    assert ps
    for p, a in zip(ps, answers, strict=True):
        check_exact(tokenizer, p, a)


def test_encode_keeps_exact_ids_on_awkward_answers(tiny_model):
    tokenizer = models.load_tokenizer(str(tiny_model))
    rng = random.Random(3)
    pieces = ["1.", " ", "\n", "  ", "你", "ไทย", "!", "<|im_end|>", "a b", "\t", "..."]
    for _ in range(200):
        answer = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        check_exact(tokenizer, "Translate:\n1. x", answer)


@pytest.mark.slow
def test_embedded_model_converts_once_and_reloads(tmp_path):
    gguf = models.embedded_gguf()
    assert gguf.read_bytes()[:4] == b"GGUF"
    folder = models.embedded_model_dir(cache=tmp_path)
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # saved dense, trainable
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert models.embedded_model_dir(cache=tmp_path) == folder  # reused, not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    tokenizer = models.load_tokenizer(str(folder))
    model = models.load_model(str(folder), device="cpu")
    assert model.num_parameters() > 100_000_000
    ids = chat.encode(tokenizer, "Say hi.", "Hi!").prompt_ids
    out = model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == len(ids) + 3 or out[0, -1].item() == tokenizer.eos_token_id


def test_missing_model_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        models.resolve(str(tmp_path / "nope" / "model"))
    with pytest.raises(InputError, match="model folder not found"):
        models.resolve("./no-such-model")


def test_not_a_gguf_file_is_an_input_error(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(InputError, match="not a GGUF file"):
        models.resolve(str(fake))
    with pytest.raises(InputError, match="GGUF file not found"):
        models.resolve(str(tmp_path / "missing.gguf"))


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(InputError, match="only pickled weights"):
        models.resolve(str(tmp_path))
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="no weights"):
        models.resolve(str(tmp_path))


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="no config.json"):
        models.resolve(str(tmp_path))


def test_hub_ids_pass_through():
    source = models.resolve("Qwen/Qwen2.5-14B")
    assert source.location == "Qwen/Qwen2.5-14B" and source.gguf_file is None


def test_dtype_follows_the_device():
    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert models.resolve_dtype("float16", "cpu") == torch.float16
