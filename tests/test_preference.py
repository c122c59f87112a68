"""Preference pairs from score tables, and the ALPO loss."""

import json
import math

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from alpo.exceptions import ConfigError, InputError
from alpo.loss import alpo_loss, reward_stats
from alpo.preference import PAIR_SCHEMA, build_pairs


def table(rows):
    """(window, segment, [(score, text), ...]) -> a scores table with texts."""
    out = []
    for window, segment, cands in rows:
        for c, (score, text) in enumerate(cands):
            out.append(
                {
                    "window_id": window,
                    "segment": segment,
                    "candidate": c,
                    "score": score,
                    "text": text,
                }
            )
    return pl.DataFrame(
        out,
        schema={
            "window_id": pl.String,
            "segment": pl.UInt32,
            "candidate": pl.UInt32,
            "score": pl.Float32,
            "text": pl.String,
        },
    )


ROWS = [
    # w1 s0: 5 candidates, spread 80, gated; top1 -> chosen 90 (#0), 3rd lowest 50 (#2), gap 40
    ("w1", 0, [(90, "a"), (10, "b"), (50, "c"), (70, "d"), (30, "e")]),
    # w1 s1: only 3 candidates: gated out (|T| must exceed 3)
    ("w1", 1, [(90, "a"), (10, "b"), (50, "c")]),
    # w1 s2: 4 candidates but spread 4: gated out
    ("w1", 2, [(52, "a"), (50, "b"), (49, "c"), (48, "d")]),
    # w1 s3: ties at 60 broken by length: ascending 20, 30, 60 ("xx", #3), 60 ("xxx", #0)
    ("w1", 3, [(60, "xxx"), (20, "a"), (30, "b"), (60, "xx")]),
    # w2 s0: no valid vote: no pair
    ("w2", 0, [(None, "a"), (None, "b"), (None, "c"), (None, "d")]),
    # w2 s1: gated, the window's only gated segment: beta = beta0
    ("w2", 1, [(80, "a"), (20, "b"), (40, "c"), (70, "d")]),
]


def test_hand_made_table_follows_every_rule():
    pairs = build_pairs(table(ROWS), top_chosen=1, beta0=2.0)
    assert dict(pairs.schema) == PAIR_SCHEMA
    rows = {(r["window_id"], r["segment"]): r for r in pairs.iter_rows(named=True)}
    assert [k for k in rows] == [("w1", 0), ("w1", 1), ("w1", 2), ("w1", 3), ("w2", 0), ("w2", 1)]
    r = rows[("w1", 0)]
    assert (r["gated"], r["chosen"], r["rejected"], r["gap"]) == (True, 0, 2, 40.0)
    assert r["weight"] == pytest.approx(5 / 16) and r["beta"] == pytest.approx(2.0)
    assert not rows[("w1", 1)]["gated"] and rows[("w1", 1)]["weight"] == 0.0
    assert not rows[("w1", 2)]["gated"] and rows[("w1", 2)]["beta"] == 0.0
    r = rows[("w1", 3)]
    # chosen: best by score, ties to the shorter text -> "xx" (#3); rejected: 3rd lowest -> #3
    # too, which is the chosen one -> the lowest other (#1, score 20); gap 40
    assert (r["chosen"], r["rejected"], r["gap"], r["gated"]) == (3, 1, 40.0, True)
    assert r["weight"] == pytest.approx(4 / 16) and r["beta"] == pytest.approx(2.0)
    r = rows[("w2", 0)]
    assert (r["gated"], r["chosen"], r["rejected"], r["weight"]) == (False, None, None, 0.0)
    r = rows[("w2", 1)]
    assert (r["chosen"], r["rejected"], r["gap"]) == (0, 3, 10.0)
    assert r["weight"] == pytest.approx(4 / 8) and r["beta"] == pytest.approx(2.0)


def test_chosen_is_uniform_among_the_top_three_and_seeded():
    rows = [
        (f"w{i}", 0, [(90, "a"), (85, "b"), (80, "c"), (10, "d"), (5, "e")]) for i in range(300)
    ]
    pairs = build_pairs(table(rows), seed=7)
    counts = pairs["chosen"].value_counts().sort("chosen")
    assert counts["chosen"].to_list() == [0, 1, 2]
    assert all(70 < n < 130 for n in counts["count"])
    assert pairs.equals(build_pairs(table(rows), seed=7))
    assert not pairs.equals(build_pairs(table(rows), seed=8))
    assert pairs.equals(build_pairs(table(rows[::-1]), seed=7))  # order-independent


def test_ablations():
    pairs = build_pairs(table(ROWS), gate=False, importance=False, dynamic_beta=False, beta=0.3)
    with_pair = pairs.filter(pl.col("chosen").is_not_null())
    assert with_pair["gated"].all() and (with_pair["weight"] == 1.0).all()
    assert (with_pair["beta"] == 0.3).all()


def test_bad_tables_are_input_errors():
    with pytest.raises(InputError, match="missing column"):
        build_pairs(table(ROWS).drop("text"))
    bad = table(ROWS).with_columns(candidate=pl.col("candidate") + 1)
    with pytest.raises(InputError, match="run 0, 1"):
        build_pairs(bad)


def batch():
    pc = torch.tensor([-10.0, -20.0, -5.0])
    pr = torch.tensor([-12.0, -18.0, -9.0])
    rc = torch.tensor([-11.0, -19.0, -6.0])
    rr = torch.tensor([-11.0, -19.0, -7.0])
    return pc, pr, rc, rr


def test_loss_by_hand_under_each_normalizer():
    pc, pr, rc, rr = batch()
    beta = torch.tensor([0.5, 1.0, 0.25])
    weight = torch.tensor([0.2, 0.0, 0.5])
    # margins: (1 - (-1)) = 2, (-1 - 1) = -2, (1 - (-2)) = 3
    h = [0.5 * 2, 1.0 * -2, 0.25 * 3]
    terms = [w * math.log1p(math.exp(-x)) for w, x in zip([0.2, 0.0, 0.5], h, strict=True)]
    total = sum(terms)
    assert float(alpo_loss(pc, pr, rc, rr, beta, weight, "none")) == pytest.approx(total)
    assert float(alpo_loss(pc, pr, rc, rr, beta, weight, "micro")) == pytest.approx(total / 0.7)
    step = alpo_loss(pc, pr, rc, rr, beta, weight, "step", weight_total=2.0)
    assert float(step) == pytest.approx(total / 2.0)
    with pytest.raises(ConfigError):
        alpo_loss(pc, pr, rc, rr, beta, weight, "step")
    with pytest.raises(ConfigError):
        alpo_loss(pc, pr, rc, rr, beta, weight, "mean")
    zero = alpo_loss(pc, pr, rc, rr, beta, torch.zeros(3), "micro")
    assert float(zero) == 0.0


def test_equals_dpo_sigmoid_loss_with_unit_weights_and_constant_beta():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8) * 5 for _ in range(4))
    beta = torch.full((8,), 0.1)
    ours = alpo_loss(pc, pr, rc, rr, beta, torch.ones(8), "micro")
    dpo = -F.logsigmoid(0.1 * ((pc - pr) - (rc - rr))).mean()
    assert float(ours) == pytest.approx(float(dpo), abs=1e-6)


def test_gradients_flow_only_through_the_policy_and_weighted_records():
    pc, pr, rc, rr = batch()
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss = alpo_loss(pc, pr, rc, rr, torch.ones(3), torch.tensor([1.0, 0.0, 1.0]), "none")
    loss.backward()
    assert pc.grad[1] == 0 and pr.grad[1] == 0  # weight 0: no gradient
    assert pc.grad[0] < 0 < pr.grad[0]  # raise chosen, lower rejected


def test_reward_stats():
    pc, pr, rc, rr = batch()
    stats = reward_stats(pc, pr, rc, rr, torch.ones(3))
    assert stats.chosen_reward == pytest.approx((1 - 1 + 1) / 3)
    assert stats.accuracy == pytest.approx(2 / 3)
    assert stats.margin == pytest.approx((2 - 2 + 3) / 3)


def test_pairs_stage_builds_prefix_mixed_records(cli, examples_data, sft_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alpo.preference import RECORD_SCHEMA
    from alpo.prompts import parse_answer

    work = tmp_path / "run"
    common = [
        "--pair",
        "en-zh",
        "--data",
        str(examples_data),
        "--workdir",
        str(work),
        "--set",
        f"sample.model='{sft_model}'",
        "--set",
        f"judge.model='{sft_model}'",
        "--set",
        "sample.k=6",
        "--set",
        "judge.votes=1",
        "--set",
        "sample.max_new_tokens=60",
        "--set",
        "alpo.min_candidates=1",
        "--set",
        "alpo.min_spread=0.0",
        "--json",
    ]
    cli("train", "--stage", "sample", *common)
    out = json.loads(cli("train", "--stage", "pairs", *common).stdout.strip().splitlines()[-1])
    summary = out["pairs"]
    records = pl.read_parquet(work / "records.parquet")
    assert dict(records.schema) == RECORD_SCHEMA
    assert summary["records"] == records.height > 0
    assert records.height == 5 * summary["gated"]  # every gated segment once per prefix stage
    assert records["stage"].to_list() == sorted(records["stage"].to_list())  # a schedule
    lams = records.group_by("stage").agg(pl.col("lam").first()).sort("stage")["lam"].to_list()
    assert lams == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert records["ref_chosen_logp"].null_count() == records.height  # the ref stage fills them
    tok = AutoTokenizer.from_pretrained(sft_model)
    pool = pl.read_parquet(examples_data / "pool.parquet")
    prompt_len = {}
    for row in records.iter_rows(named=True):
        window = pool.filter(pl.col("window_id") == row["window_id"]).row(0, named=True)
        labels = window["segment_of_line"]
        start = labels.index(row["segment"])
        n = labels.count(row["segment"])
        # prompt + chosen decodes to a numbered answer whose last lines are the segment's
        for ids in (row["chosen_ids"], row["rejected_ids"]):
            assert ids
            text = tok.decode(ids, skip_special_tokens=True)
            assert parse_answer(text, n, start=start + 1) is not None
        assert row["weight"] > 0 and 0 < row["beta"] <= 1.0
        assert row["chosen_score"] > row["rejected_score"]
        prompt_len.setdefault(row["window_id"], []).append(len(row["prompt_ids"]))
    # a later segment's prompt holds the prefix of the earlier ones
    first = records.sort("segment").row(0, named=True)
    later = records.filter(
        (pl.col("window_id") == first["window_id"]) & (pl.col("stage") == first["stage"])
    ).sort("segment")
    lengths = [len(p) for p in later["prompt_ids"]]
    assert lengths == sorted(lengths)
    again = cli("train", "--stage", "pairs", *common).stdout.strip().splitlines()[-1]
    assert json.loads(again)["pairs"]["skipped"] is True

    # The ref stage fills the reference log-probs, as plain transformers computes them.
    ref = json.loads(cli("train", "--stage", "ref", *common).stdout.strip().splitlines()[-1])
    assert ref["ref"]["records"] == records.height
    filled = pl.read_parquet(work / "records.parquet")
    assert filled.drop("ref_chosen_logp", "ref_rejected_logp").equals(
        records.drop("ref_chosen_logp", "ref_rejected_logp")
    )
    assert filled["ref_chosen_logp"].null_count() == 0
    assert (filled["ref_chosen_logp"] < 0).all()
    model = AutoModelForCausalLM.from_pretrained(sft_model)
    for row in filled.head(3).iter_rows(named=True):
        for key in ("chosen", "rejected"):
            ids = torch.tensor([row["prompt_ids"] + row[f"{key}_ids"]])
            with torch.no_grad():
                logits = model(ids).logits[0].double().log_softmax(-1)
            n = len(row["prompt_ids"])
            expected = sum(float(logits[n - 1 + j, t]) for j, t in enumerate(row[f"{key}_ids"]))
            assert row[f"ref_{key}_logp"] == pytest.approx(expected, abs=1e-4)
    again = json.loads(cli("train", "--stage", "ref", *common).stdout.strip().splitlines()[-1])
    assert again["ref"]["skipped"] is True
    assert (
        json.loads(cli("train", "--stage", "pairs", *common).stdout.strip().splitlines()[-1])[
            "pairs"
        ]["skipped"]
        is True
    )  # filling the ref columns does not make pairs stale


def test_continuation_logps_batched_equals_one_at_a_time(tiny_model):
    from transformers import AutoModelForCausalLM

    from alpo.logprobs import continuation_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 900, (n,), generator=gen).tolist() for n in (40, 7, 25)]
    conts = [torch.randint(3, 900, (n,), generator=gen).tolist() for n in (5, 12, 1)]
    with torch.no_grad():
        batched = continuation_logps(model, prompts, conts)
        alone = [
            float(continuation_logps(model, [p], [c])[0])
            for p, c in zip(prompts, conts, strict=True)
        ]
    assert batched.dtype == torch.float64
    assert batched.tolist() == pytest.approx(alone, abs=1e-5)
    assert all(v < 0 for v in alone)
    with pytest.raises(ValueError):
        continuation_logps(model, prompts, conts[:2])
