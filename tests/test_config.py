"""Configuration: presets, layering, strict checking; DeepSpeed config, schedule, data order."""

import json
import os

import pytest

from alpo import launch
from alpo.config import CONFIG_DIR, LaunchConfig, TrainConfig, load_config
from alpo.engine import ds_config, lr_factor
from alpo.exceptions import ConfigError
from alpo.sft import step_batches


def test_paper_preset_is_the_papers_recipe():
    c = load_config("paper")
    assert c.model.policy == "Qwen/Qwen2.5-14B" and c.model.dtype == "bfloat16"
    assert (c.sft.cutoff, c.sft.lr, c.sft.epochs, c.sft.warmup_ratio) == (8192, 1e-6, 5.0, 0.1)
    assert (c.sft.global_batch, c.sft.micro_batch, c.launch.num_gpus) == (96, 3, 8)
    assert c.sft.eval_share == 0.03 and c.sft.eval_every == 200
    assert c.deepspeed.zero_stage == 3
    assert (c.sample.mode, c.sample.k, c.sample.temperature, c.sample.top_k, c.sample.top_p) == (
        "segment",
        15,
        1.0,
        40,
        0.9,
    )
    assert (c.sample.backend, c.judge.backend, c.judge.model) == ("vllm", "vllm", "Qwen/Qwen3-14B")
    assert (c.judge.votes, c.judge.temperature, c.judge.context_lines) == (4, 0.3, 7)
    ds = ds_config(c, world=8, bf16=True, hidden_size=5120)
    assert ds["gradient_accumulation_steps"] == 4  # 96 = 3 x 8 x 4
    assert ds["bf16"]["enabled"] is True
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 5120 * 5120)
    assert "auto" not in json.dumps(ds)


def test_tiny_preset_uses_the_embedded_model():
    c = load_config("tiny")
    assert c.model.policy == "embedded"
    assert c.deepspeed.zero_stage == 2


def test_layers_override_in_order(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[sft]\nlr = 2e-5\nglobal_batch = 12\n[deepspeed]\nzero_stage = 1\n")
    c = load_config("paper", path, {"sft": {"lr": 3}})
    assert c.sft.lr == 3.0 and isinstance(c.sft.lr, float)  # ints widen to floats
    assert c.sft.global_batch == 12 and c.sft.micro_batch == 3  # the rest from the preset
    assert c.deepspeed.zero_stage == 1
    assert TrainConfig().sft.lr == 1e-5  # defaults untouched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sft]\nlrr = 1\n", "unknown key sft.lrr"),
        ("[trainer]\nlr = 1\n", r"unknown section \[trainer\]"),
        ("[sft]\nlr = 'fast'\n", "sft.lr must be float"),
        ("[sft]\nmicro_batch = 1.5\n", "sft.micro_batch must be int"),
        ("[sft]\nlora_targets = 'q_proj'\n", "sft.lora_targets must be list"),
        ("[sft]\nlr = -1.0\n", "sft.lr must be > 0"),
        ("[sft]\nglobal_batch = 10\nmicro_batch = 3\n", "multiple of sft.micro_batch"),
        ("[deepspeed]\nzero_stage = 4\n", "zero_stage must be 0, 1, 2 or 3"),
        ("[model]\ndtype = 'int8'\n", "model.dtype must be one of"),
        ("[sft\nlr = 1\n", "not valid TOML"),
        ("[sample]\nmode = 'beam'\n", "sample.mode must be one of"),
        ("[sample]\nbackend = 'openai'\n", "needs sample.base_url"),
        ("[judge]\nlanguage = 'fr'\n", "judge.language must be one of"),
        ("[vllm]\ngpu_memory_utilization = 1.5\n", "gpu_memory_utilization"),
        ("sft = 3\n", r"\[sft\] must be a table"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(None, tmp_path / "none.toml")


def test_every_zero_stage_ships_and_fills():
    c = TrainConfig()
    for stage in range(4):
        c.deepspeed.zero_stage = stage
        assert (CONFIG_DIR / "deepspeed" / f"zero{stage}.json").is_file()
        ds = ds_config(c, world=2, bf16=False, hidden_size=64)
        assert ds["zero_optimization"]["stage"] == stage
        assert ds["train_micro_batch_size_per_gpu"] == 1
        assert ds["gradient_accumulation_steps"] == 4  # 8 = 1 x 2 x 4
        assert ds["gradient_clipping"] == 1.0
        assert "auto" not in json.dumps(ds)
    with pytest.raises(ConfigError, match="multiple of sft.micro_batch x processes"):
        ds_config(c, world=3, bf16=False, hidden_size=64)


def test_offload_adds_a_cpu_optimizer():
    c = TrainConfig()
    c.deepspeed.zero_stage = 3
    c.deepspeed.offload_optimizer = True
    c.deepspeed.offload_params = True
    ds = ds_config(c, world=1, bf16=True, hidden_size=64)
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["optimizer"]["type"] == "AdamW"


def test_schedule_warms_up_then_decays_to_the_floor():
    total = 100
    factors = [lr_factor(s, total, 0.1, 0.1) for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_factor(0, 1, 0.0, 0.0) == 1.0


def test_data_order_partitions_steps_and_covers_epochs():
    n, g, mb, world = 10, 4, 1, 2
    seen = []
    for step in range(5):  # 20 examples = 2 epochs
        per_rank = [step_batches(n, step, g, mb, r, world, seed=5) for r in range(world)]
        step_ids = per_rank[0][1]
        assert per_rank[1][1] == step_ids
        mine = [i for r in range(world) for batch in per_rank[r][0] for i in batch]
        assert sorted(mine) == sorted(step_ids)  # the ranks split the step exactly
        seen.extend(step_ids)
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # each epoch has its own shuffle
    assert step_batches(n, 3, g, mb, 0, world, 5) == step_batches(n, 3, g, mb, 0, world, 5)


def test_launcher_commands(tmp_path, monkeypatch):
    argv = ["train", "--pair", "zh-th"]
    cfg = LaunchConfig(master_port=29999)
    cmd = launch.launch_command(cfg, 8, argv)
    assert cmd[:5] == ["torchrun", "--nproc_per_node", "8", "--master_port", "29999"]
    assert cmd[5:] == ["-m", "alpo_cli", *argv]
    cfg.launcher = "deepspeed"
    assert launch.launch_command(cfg, 4, argv)[:3] == ["deepspeed", "--num_gpus", "4"]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=8\nnode2 slots=8\n")
    cfg.hostfile = str(hostfile)
    cmd = launch.launch_command(cfg, 8, argv)
    assert cmd[:3] == ["deepspeed", "--hostfile", str(hostfile)]
    assert cmd[-4:] == ["alpo_cli", *argv] and "--module" in cmd
    cfg.hostfile = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="hostfile not found"):
        launch.launch_command(cfg, 8, argv)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert launch.plan(LaunchConfig(num_gpus=8), argv) is None  # already launched


def test_cpu_runs_in_process_and_sets_up_gloo(monkeypatch):
    # Set then delete, so that monkeypatch restores the environment whatever happens here.
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("PATH", os.environ["PATH"])
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.environ.get("TORCH_EXTENSIONS_DIR", ""))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert launch.plan(LaunchConfig(), ["train"]) is None
    with pytest.raises(ConfigError, match="GPU"):
        launch.plan(LaunchConfig(num_gpus=2), ["train"])
    launch.prepare_environment()
    assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    assert int(os.environ["MASTER_PORT"]) > 0


def test_with_stage_runs_one_stage_alone():
    argv = ["train", "--pair", "zh-th", "--stage", "sft", "--stage=sample", "--json"]
    assert launch.with_stage(argv, "sft") == [
        "train",
        "--pair",
        "zh-th",
        "--json",
        "--stage",
        "sft",
    ]
