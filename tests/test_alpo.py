"""The alpo stage: packed log-probs, training on records from a fixed score table, step
normalization across ranks, the DPO baselines, and resume."""

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch

from alpo.logprobs import chains, record_logps

# Candidate variants of a segment's reference lines, with the score the "judge" gives them.
VARIANTS = [
    (lambda s: s, 90.0),
    (lambda s: s + " indeed", 70.0),
    (lambda s: "~" + s, 45.0),
    (lambda s: s[::-1] + "?", 20.0),
    (lambda s: s + s, 10.0),
]


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def metrics(work):
    path = Path(work) / "logs" / "alpo" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Packing


def test_chains_group_consecutive_records_whose_prompts_extend_each_other():
    prompts = [[1, 2], [1, 2, 3], [1, 2, 3, 4], [9], [9, 8], [1, 2]]
    assert chains(prompts) == [[0, 1, 2], [3, 4], [5]]
    assert chains([[1, 2, 3], [1, 2], [1]]) == [[0, 1, 2]]  # shorter prompts join too
    assert chains([[1], [2], [1]]) == [[0], [1], [2]]  # only neighbours share a sequence


def random_records(vocab, seed=0):
    """Chains of growing prompts (as one window's prefix stage gives) mixed with loose ones,
    with empty and one-token answers among them."""
    rng = random.Random(seed)
    prompts, chosen, rejected = [], [], []
    for _ in range(4):
        base = [rng.randrange(vocab) for _ in range(rng.randint(3, 40))]
        for _ in range(rng.randint(1, 6)):
            prompts.append(list(base))
            chosen.append([rng.randrange(vocab) for _ in range(rng.randint(1, 9))])
            rejected.append([rng.randrange(vocab) for _ in range(rng.randint(0, 9))])
            base += [rng.randrange(vocab) for _ in range(rng.randint(1, 7))]
    return prompts, chosen, rejected


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_paths_give_the_plain_paths_log_probs_and_gradients(tiny_model, attn):
    from alpo.models import load_model

    model = load_model(str(tiny_model), dtype="float32", attn_implementation=attn)
    prompts, chosen, rejected = random_records(model.config.vocab_size)
    assert len(chains(prompts)) < len(prompts)  # the chain path really shares trunks
    results, grads = {}, {}
    for packing in ("plain", "pair", "chain"):
        model.zero_grad()
        c, r = record_logps(model, prompts, chosen, rejected, packing=packing)
        (c.sum() - 0.5 * r.sum()).backward()
        results[packing] = (c.detach(), r.detach())
        grads[packing] = torch.cat([p.grad.flatten() for p in model.parameters()])
    plain_c, plain_r = results["plain"]
    assert (plain_c < 0).all() and (plain_r[[len(x) > 0 for x in rejected]] < 0).all()
    assert (plain_r[[len(x) == 0 for x in rejected]] == 0).all()
    for packing in ("pair", "chain"):
        c, r = results[packing]
        assert torch.allclose(c, plain_c, atol=1e-5, rtol=0)
        assert torch.allclose(r, plain_r, atol=1e-5, rtol=0)
        assert torch.allclose(grads[packing], grads["plain"], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Training on records from a fixed table


def fixed_table(data, model, work):
    """candidates.parquet and scores.parquet as the sample stage would write them, with
    candidates made from each core segment's reference and fixed scores."""
    from alpo.models import load_tokenizer
    from alpo.sampling import CANDIDATE_SCHEMA, SCORE_SCHEMA, load_windows, reference_piece
    from alpo.sft import prepare_options

    tokenizer = load_tokenizer(str(model))
    windows = load_windows(data / "pool.parquet", "en-zh", tokenizer, prepare_options(data))
    cands, scores = [], []
    for w in windows:
        for seg in (s for s in w.segments if s.in_core):
            seen = set()
            for change, score in VARIANTS:
                lines = [change(x) for x in w.ref_lines[seg.start : seg.end]]
                text = "\n".join(lines)
                if text in seen:
                    continue
                seen.add(text)
                varied = w.ref_lines[: seg.start] + lines + w.ref_lines[seg.end :]
                key = {"window_id": w.window_id, "segment": seg.index, "candidate": len(seen) - 1}
                cands.append(
                    {
                        **key,
                        "text": text,
                        "token_ids": reference_piece(tokenizer, replace(w, ref_lines=varied), seg),
                        "is_reference": len(seen) == 1,
                    }
                )
                scores.append({**key, "score": score, "votes": [score]})
    work.mkdir(parents=True)
    pl.DataFrame(cands, schema=CANDIDATE_SCHEMA).write_parquet(work / "candidates.parquet")
    pl.DataFrame(scores, schema=SCORE_SCHEMA).write_parquet(work / "scores.parquet")
    return work


def alpo_args(data, work, model, *extra, stages=("pairs", "ref", "alpo")):
    return [
        "train",
        "--pair",
        "en-zh",
        *(a for s in stages for a in ("--stage", s)),
        "--data",
        str(data),
        "--workdir",
        str(work),
        "--set",
        f"sample.model='{model}'",
        "--set",
        "alpo.lr=2e-3",
        "--set",
        "alpo.warmup_ratio=0.0",
        "--set",
        "alpo.micro_batch=4",
        "--set",
        "alpo.global_batch=8",
        "--set",
        "alpo.max_steps=4",
        "--set",
        "alpo.save_every=2",
        "--set",
        "model.dtype='float32'",
        "--json",
        *extra,
    ]


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory, cli, examples_data, sft_model):
    """pairs, ref and four alpo steps on records built from the fixed table."""
    work = fixed_table(examples_data, sft_model, tmp_path_factory.mktemp("alpo") / "run")
    out = last_json(cli(*alpo_args(examples_data, work, sft_model)))
    return work, out


def test_loss_falls_and_the_trained_model_is_saved(fixed_run):
    from transformers import AutoModelForCausalLM

    work, out = fixed_run
    assert out["pairs"]["records"] == 5 * out["pairs"]["gated"] > 0
    summary = out["alpo"]
    assert summary["steps"] == 4 and summary["records"] == out["pairs"]["records"]
    rows = metrics(work)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # At the start policy == reference: every record's loss is -log sigmoid(0).
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert rows[0]["margin"] == pytest.approx(0.0, abs=1e-4)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert rows[-1]["margin"] > 0 and rows[-1]["accuracy"] > 0.5
    for r in rows:
        assert r["weight_sum"] > 0 and r["grad_norm"] is not None
    ckpts = sorted(p.name for p in (work / "checkpoints" / "alpo").glob("step-*"))
    assert ckpts == ["step-000002", "step-000004"]
    model = AutoModelForCausalLM.from_pretrained(work / "alpo")
    assert model.config.vocab_size > 0
    assert (work / "alpo" / "model.safetensors").is_file()
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["alpo"]["status"] == "done"
    gate = manifest["stages"]["pairs"]["summary"]  # the gate statistics stay in the manifest
    assert gate["gated"] == out["pairs"]["gated"] and len(gate["beta_quantiles"]) == 3
    assert manifest["stages"]["alpo"]["summary"]["loss"] == rows[-1]["loss"]


def test_every_path_trains_to_the_same_losses(fixed_run, cli, examples_data, sft_model, tmp_path):
    """Reference log-probs and training losses are the same whether records are packed as
    chains, as pairs, or padded one row each."""
    work, _ = fixed_run
    chain_ref = pl.read_parquet(work / "records.parquet")
    for packing in ("plain", "pair"):
        other = fixed_table(examples_data, sft_model, tmp_path / packing)
        cli(*alpo_args(examples_data, other, sft_model, "--set", f"alpo.packing='{packing}'"))
        ref = pl.read_parquet(other / "records.parquet")
        for col in ("ref_chosen_logp", "ref_rejected_logp"):
            assert (ref[col] - chain_ref[col]).abs().max() < 1e-5
        for a, b in zip(metrics(work), metrics(other), strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
            assert b["margin"] == pytest.approx(a["margin"], abs=1e-4)


def test_finished_stage_skips_and_a_killed_checkpoint_resumes(fixed_run, cli, examples_data):
    work, _ = fixed_run
    manifest = json.loads((work / "manifest.json").read_text())
    model = manifest["config"]["sample"]["model"]
    again = last_json(cli(*alpo_args(examples_data, work, model)))
    assert all(again[s]["skipped"] for s in ("pairs", "ref", "alpo"))
    # Resume from step 2's checkpoint as a killed run would: drop the later one and the model.
    copy = work.parent / "resumed"
    shutil.copytree(work, copy)
    shutil.rmtree(copy / "checkpoints" / "alpo" / "step-000004")
    shutil.rmtree(copy / "alpo")
    manifest["stages"]["alpo"]["status"] = "running"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = last_json(cli(*alpo_args(examples_data, copy, model)))
    assert out["alpo"]["resumed_from_step"] == 2
    a, b = metrics(work), metrics(copy)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-6)


def test_two_processes_train_like_one(fixed_run, two_ranks, examples_data, tmp_path):
    """Two gloo ranks take contiguous halves of each step; with weights normalized over the
    whole step, the loss equals a single process's."""
    work, _ = fixed_run
    model = json.loads((work / "manifest.json").read_text())["config"]["sample"]["model"]
    two = tmp_path / "two"
    shutil.copytree(work, two)
    shutil.rmtree(two / "checkpoints")
    shutil.rmtree(two / "logs")
    proc = two_ranks(*alpo_args(examples_data, two, model, "--force", stages=("alpo",)))
    assert last_json(proc)["alpo"]["processes"] == 2
    for x, y in zip(metrics(work), metrics(two), strict=True):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-5)
        assert y["accuracy"] == pytest.approx(x["accuracy"])


def test_segment_and_outcome_dpo_baselines(cli, examples_data, sft_model, tmp_path):
    from transformers import AutoTokenizer

    from alpo.prompts import parse_answer

    tok = AutoTokenizer.from_pretrained(sft_model)
    pool = pl.read_parquet(examples_data / "pool.parquet")
    runs = {}
    for method in ("segment_dpo", "outcome_dpo"):
        work = fixed_table(examples_data, sft_model, tmp_path / method)
        args = alpo_args(examples_data, work, sft_model, "--set", f"alpo.method='{method}'")
        out = last_json(cli(*args, "--set", "alpo.max_steps=1", "--set", "alpo.beta=0.1"))
        assert out["alpo"]["method"] == method and out["alpo"]["steps"] == 1
        runs[method] = pl.read_parquet(work / "records.parquet")
        assert (runs[method]["weight"] == 1.0).all() and (runs[method]["beta"] == 0.1).all()
    segment = runs["segment_dpo"]
    assert segment["stage"].unique().to_list() == [0]  # chosen prefixes only, one stage
    assert not segment.select("window_id", "segment").is_duplicated().any()
    outcome = runs["outcome_dpo"]
    assert outcome["window_id"].n_unique() == outcome.height == pool.height
    for row in outcome.iter_rows(named=True):
        window = pool.filter(pl.col("window_id") == row["window_id"]).row(0, named=True)
        core = range(window["core_start"], window["core_end"])
        for key in ("chosen_ids", "rejected_ids"):
            text = tok.decode(row[key], skip_special_tokens=True)
            lines = parse_answer(text, core.stop - core.start, start=core.start + 1)
            assert lines is not None and len(lines) == len(core)
        assert row["chosen_ids"] != row["rejected_ids"]
        assert row["chosen_score"] > row["rejected_score"]
