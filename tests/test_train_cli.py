"""`alpo train` on bad input: exit 1, one line naming the problem, nothing half-written."""

import pytest


def train(cli, data, work, *extra):
    return cli(
        "train", "--pair", "en-zh", "--data", str(data), "--workdir", str(work), *extra, check=False
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def assert_nothing_written(work):
    assert not (work / "sft").exists()
    assert not list(work.glob("checkpoints/sft/*")) and not list(work.glob(".*tmp*"))


def test_missing_model_folder(cli, examples_data, tmp_path):
    work = tmp_path / "run"
    proc = train(cli, examples_data, work, "--set", f"model.policy='{tmp_path}/no/model'")
    assert_one_line_error(proc, f"{tmp_path}/no/model", "model folder not found")
    assert_nothing_written(work)


def test_a_gguf_that_is_not_one(cli, examples_data, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    work = tmp_path / "run"
    proc = train(cli, examples_data, work, "--set", f"model.policy='{fake}'")
    assert_one_line_error(proc, str(fake), "not a GGUF file")
    assert_nothing_written(work)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[sft]\nlearning_rate = 1e-5\n", "unknown key sft.learning_rate"),
        ("[sft]\nglobal_batch = 0\n", "sft.global_batch must be >= 1"),
        ("[deepspeed]\nzero_stage = 5\n", "deepspeed.zero_stage must be 0, 1, 2 or 3"),
    ],
)
def test_bad_config_file(cli, examples_data, tmp_path, toml, needle):
    path = tmp_path / "run.toml"
    path.write_text(toml)
    work = tmp_path / "run"
    proc = train(cli, examples_data, work, "--config", str(path))
    assert_one_line_error(proc, str(path), needle)
    assert not work.exists()


def test_bad_override_and_unknown_preset(cli, examples_data, tmp_path):
    work = tmp_path / "run"
    assert_one_line_error(
        train(cli, examples_data, work, "--set", "sft.lr=fast"), "sft.lr must be float"
    )
    assert_one_line_error(train(cli, examples_data, work, "--set", "lr=1"), "SECTION.KEY=VALUE")
    assert_one_line_error(train(cli, examples_data, work, "--preset", "huge"), "unknown preset")
    assert_one_line_error(
        train(cli, examples_data, work, "--stage", "rlhf"), "unknown stage 'rlhf'"
    )
    assert not work.exists()


def test_missing_data(cli, tmp_path):
    proc = train(cli, tmp_path / "nodata", tmp_path / "run")
    assert_one_line_error(proc, "nodata", "run alpo prepare first")


def test_help_explains_the_stages(cli):
    out = cli("train", "--help").stdout
    for word in ("--preset", "--stage", "--set", "--config", "sft", "torchrun"):
        assert word in out


def test_sample_stage_needs_an_sft_model(cli, examples_data, tmp_path):
    work = tmp_path / "run"
    proc = train(cli, examples_data, work, "--stage", "sample")
    assert_one_line_error(proc, "no SFT model", "run the sft stage first")
    assert not (work / "candidates.parquet").exists()


def test_sample_stage_with_a_broken_pool(cli, examples_data, tiny_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pool.parquet").write_text("not parquet")
    proc = train(
        cli,
        data,
        tmp_path / "run",
        "--stage",
        "sample",
        "--set",
        f"sample.model='{tiny_model}'",
        "--set",
        f"judge.model='{tiny_model}'",
    )
    assert_one_line_error(proc, "pool.parquet", "not a readable Parquet file")
