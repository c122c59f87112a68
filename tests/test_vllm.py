"""The vLLM backend. vLLM runs on GPUs only: these tests run where vllm and a GPU are present
(skipped elsewhere; run them on a GPU machine)."""

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM needs a GPU", allow_module_level=True)

from alpo.generation import SampleRequest, VLLMBackend  # noqa: E402
from alpo.judging import parse_scores  # noqa: E402


@pytest.fixture(scope="module")
def backend(tiny_model):
    return VLLMBackend(str(tiny_model), gpu_memory_utilization=0.3, max_model_len=4096)


def test_samples_are_token_ids_with_line_stops(backend):
    prompt = backend.tokenizer("1. hello\n2.", add_special_tokens=False)["input_ids"]
    (pieces,) = backend.sample([SampleRequest(prompt, n=4, max_new_tokens=30, stop_lines=1)])
    assert len(pieces) == 4
    for ids in pieces:
        assert backend.decode(ids).count("\n") <= 1


def test_judge_replies_follow_the_schema(backend):
    for reply in backend.chat(["Rate A, B and C."] * 3, score_letters=3, temperature=0.7):
        scores, why = parse_scores(reply, 3)
        assert scores is not None or "degenerate" in why


def test_sample_stage_with_vllm(cli, examples_data, tiny_model, tmp_path):
    from test_sampling import check_outputs

    work = tmp_path / "vllm"
    cli(
        "train",
        "--pair",
        "en-zh",
        "--stage",
        "sample",
        "--data",
        str(examples_data),
        "--workdir",
        str(work),
        "--set",
        f"sample.model='{tiny_model}'",
        "--set",
        "sample.backend='vllm'",
        "--set",
        f"judge.model='{tiny_model}'",
        "--set",
        "judge.backend='vllm'",
        "--set",
        "sample.k=4",
        "--set",
        "judge.votes=1",
    )
    check_outputs(work, examples_data, tiny_model)
