"""The SFT stage through the `alpo train` command: real DeepSpeed on gloo, the tiny Qwen2 model."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alpo import chat, prompts


def train_args(data, workdir, model, *extra):
    return [
        "train",
        "--pair",
        "en-zh",
        "--stage",
        "sft",
        "--data",
        str(data),
        "--workdir",
        str(workdir),
        "--set",
        f"model.policy='{model}'",
        "--json",
        *extra,
    ]


def summary(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])["sft"]


def metrics(workdir):
    lines = (workdir / "logs" / "sft" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


STEPS = ("--set", "sft.max_steps=3", "--set", "sft.global_batch=2", "--set", "sft.lr=1e-3")


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory, cli, examples_data, tiny_model):
    """An uninterrupted 3-step ZeRO-2 run that saves a checkpoint after every step."""
    work = tmp_path_factory.mktemp("sft") / "run"
    args = train_args(
        examples_data,
        work,
        tiny_model,
        *STEPS,
        "--set",
        "sft.save_every=1",
        "--set",
        "sft.keep_checkpoints=3",
        "--set",
        "deepspeed.zero_stage=2",
    )
    return work, summary(cli(*args)), args


def test_three_zero2_steps_write_checkpoints_logs_and_manifest(three_steps):
    work, s, _ = three_steps
    assert s["steps"] == 3 and s["processes"] == 1 and s["resumed_from_step"] == 0
    rows = metrics(work)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert rows[0]["loss"] > rows[-1]["loss"]  # lr 1e-3 on the same few windows: it learns
    assert "eval_loss" in rows[-1]
    assert list((work / "logs" / "sft").glob("events.out.tfevents.*"))
    steps = sorted(p.name for p in (work / "checkpoints" / "sft").iterdir())
    assert steps == ["step-000001", "step-000002", "step-000003"]  # no temporary leftovers
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["sft"]["status"] == "done"
    assert manifest["config"]["deepspeed"]["zero_stage"] == 2


def test_checkpoints_reload_with_plain_transformers_and_generate(three_steps):
    work, _, _ = three_steps
    for folder in (work / "sft", work / "checkpoints" / "sft" / "step-000003"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        ids = chat.encode(tokenizer, "1. Hello", "1. 你好").prompt_ids
        out = model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False)
        assert out.shape[1] > len(ids)
    final = AutoModelForCausalLM.from_pretrained(work / "sft")
    last = AutoModelForCausalLM.from_pretrained(work / "checkpoints" / "sft" / "step-000003")
    for a, b in zip(final.parameters(), last.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_after_step_2_matches_the_uninterrupted_run(three_steps, cli, tmp_path):
    work, s, args = three_steps
    crashed = tmp_path / "crashed"
    shutil.copytree(work, crashed)
    # As if the run died after saving step 2: no step-3 checkpoint, no final model.
    shutil.rmtree(crashed / "checkpoints" / "sft" / "step-000003")
    shutil.rmtree(crashed / "sft")
    manifest = json.loads((crashed / "manifest.json").read_text())
    manifest["stages"]["sft"]["status"] = "running"
    (crashed / "manifest.json").write_text(json.dumps(manifest))
    resumed = summary(cli(*[str(crashed) if a == str(work) else a for a in args]))
    assert resumed["resumed_from_step"] == 2
    before, after = metrics(work), metrics(crashed)
    assert [r["step"] for r in after] == [1, 2, 3]
    assert after[2]["loss"] == pytest.approx(before[2]["loss"], abs=1e-5)
    assert after[2]["lr"] == pytest.approx(before[2]["lr"])
    assert after[2]["eval_loss"] == pytest.approx(before[2]["eval_loss"], abs=1e-5)


def test_finished_stage_is_skipped_and_force_restarts(three_steps, cli, tmp_path):
    work, _, args = three_steps
    again = json.loads(cli(*args).stdout.strip().splitlines()[-1])["sft"]
    assert again["skipped"] is True
    # prepare rerun with the same options: only its manifest's timing changes -> still skipped
    data = Path(args[args.index("--data") + 1])
    redone = tmp_path / "data"
    shutil.copytree(data, redone)
    manifest = json.loads((redone / "manifest.json").read_text())
    manifest["seconds"] += 1.0
    (redone / "manifest.json").write_text(json.dumps(manifest))
    moved = [str(redone) if a == str(data) else a for a in args]
    assert json.loads(cli(*moved).stdout.strip().splitlines()[-1])["sft"]["skipped"] is True
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    forced = summary(cli(*[str(copy) if a == str(work) else a for a in args], "--force"))
    assert forced["resumed_from_step"] == 0 and forced["steps"] == 3
    assert [r["loss"] for r in metrics(copy)] == pytest.approx([r["loss"] for r in metrics(work)])


def test_two_processes_train_like_one(cli, two_ranks, examples_data, tiny_model, tmp_path):
    """Two gloo ranks under torchrun split each step's windows, and the loss (normalized by
    the whole step's answer tokens) equals a single process's."""
    one = tmp_path / "one"
    cli(*train_args(examples_data, one, tiny_model, *STEPS[:4]))
    two = tmp_path / "two"
    proc = two_ranks(*train_args(examples_data, two, tiny_model, *STEPS[:4]))
    assert summary(proc)["processes"] == 2
    a, b = metrics(one), metrics(two)
    assert [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-5)


@pytest.mark.parametrize("stage", [0, 3])
def test_other_zero_stages_train_and_export(cli, examples_data, tiny_model, tmp_path, stage):
    work = tmp_path / f"zero{stage}"
    s = summary(
        cli(
            *train_args(
                examples_data,
                work,
                tiny_model,
                *STEPS[:4],
                "--set",
                f"deepspeed.zero_stage={stage}",
            )
        )
    )
    assert s["steps"] == 3
    model = AutoModelForCausalLM.from_pretrained(work / "sft", use_safetensors=True)
    assert model.num_parameters() > 0


def test_lora_saves_adapters_and_a_merged_model(cli, examples_data, tiny_model, tmp_path):
    work = tmp_path / "lora"
    cli(
        *train_args(
            examples_data,
            work,
            tiny_model,
            *STEPS[:4],
            "--set",
            "sft.lora_rank=4",
            "--set",
            "sft.lora_targets=['q_proj','v_proj']",
        )
    )
    checkpoint = work / "checkpoints" / "sft" / "step-000003"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(work / "sft", use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    names = {n for n, _ in merged.named_parameters()}
    assert not any("lora" in n for n in names)
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    k_merged = merged.model.layers[0].self_attn.k_proj.weight
    k_base = base.model.layers[0].self_attn.k_proj.weight
    assert not torch.equal(q_merged, q_base)  # the adapter is merged in
    assert torch.equal(k_merged, k_base)  # untargeted modules unchanged


def test_overfits_one_window_until_greedy_decoding_returns_it(
    cli, examples_data, tiny_model, tmp_path
):
    one = tmp_path / "one-window"
    one.mkdir()
    window = pl.read_parquet(examples_data / "sft.parquet").head(1)
    window.write_parquet(one / "sft.parquet")
    work = tmp_path / "overfit"
    cli(
        *train_args(
            one,
            work,
            tiny_model,
            "--set",
            "sft.max_steps=150",
            "--set",
            "sft.global_batch=1",
            "--set",
            "sft.lr=3e-3",
            "--set",
            "sft.eval_share=0.0",
            "--set",
            "logging.tensorboard=false",
        )
    )
    (prompt,), (answer,) = prompts.window_texts(window, "en-zh")
    tokenizer = AutoTokenizer.from_pretrained(work / "sft")
    model = AutoModelForCausalLM.from_pretrained(work / "sft")
    ids = chat.encode(tokenizer, prompt, answer).prompt_ids
    out = model.generate(torch.tensor([ids]), max_new_tokens=200, do_sample=False)
    text = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert text == answer
    assert (
        prompts.parse_answer(text, len(window["ref_lines"][0])) == window["ref_lines"][0].to_list()
    )


@pytest.mark.slow
def test_embedded_model_takes_an_sft_step(cli, examples_data, tmp_path):
    work = tmp_path / "embedded"
    s = summary(
        cli(
            "train",
            "--pair",
            "en-zh",
            "--data",
            str(examples_data),
            "--workdir",
            str(work),
            "--preset",
            "tiny",
            "--stage",
            "sft",
            "--set",
            "sft.max_steps=1",
            "--set",
            "sft.global_batch=1",
            "--set",
            "sft.eval_share=0.0",
            "--json",
        )
    )
    assert s["steps"] == 1 and s["loss"] > 0
    config = json.loads((work / "sft" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 576
    assert json.loads((work / "manifest.json").read_text())["base_model"] == "embedded"
