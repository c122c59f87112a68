"""alpo eval: statistics, judge prompts and replies, ready translations, the whole run with the
tiny model as system and judge, resuming, agreement with human scores, bad input, and the
report rendered by headless Chromium."""

import csv
import json
import math
import shutil
import subprocess
import zlib
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from alpo.agreement import AgreementSettings, run_agreement
from alpo.evaluate import (
    DIMENSIONS,
    REFERENCE,
    EvalSettings,
    System,
    load_eval_windows,
    parse_joint,
    parse_judge,
    parse_system,
    read_translations,
    render_eval_prompt,
    run_eval,
)
from alpo.exceptions import InputError
from alpo.stats import bland_altman, bootstrap_mean, kendall_tau_b, pairwise, rank_average, spearman

# ---------------------------------------------------------------------------------------------
# Statistics


def pearson_of_average_ranks(x, y):
    """Spearman's rho by another route: polars' average ranks, numpy's correlation."""
    rx = pl.Series(x).rank("average").to_numpy()
    ry = pl.Series(y).rank("average").to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def tau_b_by_pairs(x, y):
    """Kendall's tau-b by counting every pair."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0:
            ties_x += 1
        if dy == 0:
            ties_y += 1
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    pairs = len(x) * (len(x) - 1) / 2
    return (concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y))


def test_rank_correlations_of_known_cases():
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    assert spearman(x, y) == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    assert kendall_tau_b(x, y) == pytest.approx(0.6)  # (8 - 2) / 10
    assert spearman(x, x) == pytest.approx(1.0)
    assert spearman(x, [-v for v in x]) == pytest.approx(-1.0)
    assert kendall_tau_b(x, x[::-1]) == pytest.approx(-1.0)
    assert spearman(x, [3] * 5) is None and kendall_tau_b(x, [3] * 5) is None
    assert spearman([1], [2]) is None
    assert list(rank_average([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]


@pytest.mark.parametrize("seed", range(5))
def test_rank_correlations_with_ties_match_other_computations(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 8, 40).astype(float)  # many ties
    y = x + rng.integers(-4, 5, 40)
    assert spearman(x, y) == pytest.approx(pearson_of_average_ranks(x, y), abs=1e-12)
    assert kendall_tau_b(x, y) == pytest.approx(tau_b_by_pairs(x, y), abs=1e-12)


def test_bootstrap_mean_averages_judge_means_and_is_seeded():
    m = np.array([[10, 30], [20, np.nan], [np.nan, 50], [np.nan, np.nan]])
    mean, low, high = bootstrap_mean(m, resamples=500, seed=3)
    assert mean == pytest.approx((15 + 40) / 2)  # each judge's mean, then their mean
    assert low <= mean <= high
    assert bootstrap_mean(m, resamples=500, seed=3) == (mean, low, high)
    assert bootstrap_mean(np.full((3, 2), np.nan)) == (None, None, None)
    values = np.random.default_rng(0).normal(60, 10, 400)
    mean, low, high = bootstrap_mean(values, resamples=1000, seed=1)
    assert low < 60 < high and high - low == pytest.approx(2 * 1.96 * 10 / 20, rel=0.25)


def test_pairwise_counts_wins_ties_and_losses():
    r = pairwise([1, 2, 3, np.nan, 9], [1, 1, 4, 5, 8.5], resamples=100)
    assert (r["n"], r["win"], r["tie"], r["loss"]) == (4, 2, 1, 1)
    assert r["mean_diff"] == pytest.approx((0 + 1 - 1 + 0.5) / 4)
    r = pairwise([1, 2, 3, np.nan, 9], [1, 1, 4, 5, 8.5], tie_margin=0.5, resamples=100)
    assert (r["win"], r["tie"], r["loss"]) == (1, 2, 1)


def test_bland_altman_summary():
    human = np.array([10.0, 40.0, 70.0, 90.0])
    ba = bland_altman(human + [4, 6, 4, 6], human)
    assert ba["mean_diff"] == pytest.approx(5.0)
    sd = np.std([4, 6, 4, 6], ddof=1)
    assert ba["loa_low"] == pytest.approx(5 - 1.96 * sd)
    assert ba["loa_high"] == pytest.approx(5 + 1.96 * sd)


# ---------------------------------------------------------------------------------------------
# Judge prompts and replies


def test_eval_prompt_shows_context_rated_lines_and_missing_lines():
    prompt = render_eval_prompt(
        ["Before."], ["Hello.", "Bye."], ["After."], ["你好。", None], "en", "zh", "vividness"
    )
    assert "[context] Before." in prompt and "[context] After." in prompt
    assert "[rate] 1. Hello." in prompt and "[rate] 2. Bye." in prompt
    assert "1. 你好。" in prompt and "2. (missing)" in prompt
    assert "ignore accuracy" in prompt and '{"A": 73}' in prompt
    joint = render_eval_prompt([], ["Hello."], [], ["你好。"], "en", "zh", None, "zh")
    assert "准确性" in joint and "自然度" in joint and "生动性" in joint
    assert '{"A": 80, "B": 65, "C": 50}' in joint


@pytest.mark.parametrize(
    ("reply", "scores", "why"),
    [
        ('{"A": 80, "B": 80, "C": 80}', [80, 80, 80], None),  # equal scores are fine
        ('Scores: {"C": 1, "B": 2, "A": 3} done', [3, 2, 1], None),
        ('{"A": 80, "B": 60}', None, "keys do not match"),
        ('{"A": 80, "B": 60, "C": 101}', None, "out of 0..100"),
        ('{"A": 80, "B": 60.5, "C": 1}', None, "not an integer"),
        ('{"A": 1, "A": 2, "B": 3, "C": 4}', None, "duplicate"),
        ("no idea", None, "no JSON object"),
    ],
)
def test_joint_reply_validation(reply, scores, why):
    got, reason = parse_joint(reply)
    assert got == scores
    assert (reason is None) if why is None else (why in reason)


# ---------------------------------------------------------------------------------------------
# Ready translations


def core_lines(row):
    return list(row["ref_lines"][row["core_start"] : row["core_end"]])


def test_ready_translations_read_the_same_in_every_format(tmp_path, examples_data):
    data = examples_data / "sft.parquet"
    windows, _ = load_eval_windows(data)
    frame = pl.read_parquet(data)
    expected = {}
    rows = []
    for k, row in enumerate(frame.iter_rows(named=True)):
        lines = core_lines(row)
        lines[k % len(lines)] = None  # a missing line
        expected[row["window_id"]] = lines
        rows.append({"window_id": row["window_id"], "lines": lines, "note": "extra column"})
    rows.append({"window_id": "not-in-the-test-data", "lines": ["x"], "note": ""})
    pl.DataFrame(rows).write_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    with (tmp_path / "t.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["window_id", "lines"])
        for r in rows:
            w.writerow([r["window_id"], json.dumps(r["lines"], ensure_ascii=False)])
    per_line = tmp_path / "lines.csv"
    with per_line.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["window_id", "line", "text"])
        for r in rows[:-1]:
            for i, text in enumerate(r["lines"], 1):
                if text is not None:
                    w.writerow([r["window_id"], i, text])
    for name in ("t.parquet", "t.jsonl", "t.csv", "lines.csv"):
        assert read_translations(tmp_path / name, windows) == expected, name
    # Lines of the whole window (context included): the core is kept.
    whole = [
        {"window_id": r["window_id"], "lines": [f"w{i}" for i in range(len(r["src_lines"]))]}
        for r in frame.iter_rows(named=True)
    ]
    pl.DataFrame(whole).write_parquet(tmp_path / "whole.parquet")
    got = read_translations(tmp_path / "whole.parquet", windows)
    for r in frame.iter_rows(named=True):
        assert got[r["window_id"]] == [f"w{i}" for i in range(r["core_start"], r["core_end"])]


def test_ready_translations_errors_name_the_file_and_the_problem(tmp_path, examples_data):
    windows, _ = load_eval_windows(examples_data / "sft.parquet")
    first = windows[0]
    good = [{"window_id": w.window_id, "lines": w.reference()} for w in windows]

    def write(name, rows):
        path = tmp_path / name
        path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
        return path

    with pytest.raises(InputError, match="no translation of 1 test window"):
        read_translations(write("a.jsonl", good[1:]), windows)
    short = [{"window_id": first.window_id, "lines": first.reference()[:-1]}, *good[1:]]
    with pytest.raises(InputError, match=f"window {first.window_id} has"):
        read_translations(write("b.jsonl", short), windows)
    with pytest.raises(InputError, match="appears twice"):
        read_translations(write("c.jsonl", [*good, good[0]]), windows)
    mapping = [{"window_id": first.window_id, "lines": {"1": "a"}}, *good[1:]]
    with pytest.raises(InputError, match="lines must be a list"):
        read_translations(write("m.jsonl", mapping), windows)
    with pytest.raises(InputError, match="unknown translations format .txt"):
        read_translations(write("d.txt", good), windows)
    (tmp_path / "e.txt").write_text("x")
    with pytest.raises(InputError, match="unknown translations format"):
        parse_system(f"s={tmp_path / 'e.txt'}")
    with pytest.raises(InputError, match="not a model folder"):
        parse_system(f"s={tmp_path}")
    with pytest.raises(Exception, match="human reference"):
        parse_system(f"reference={tmp_path / 'a.jsonl'}")


# ---------------------------------------------------------------------------------------------
# The run with scripted backends: core lines kept, judge failures counted, never filled in


class ScriptedBackend:
    """Translates by echoing each source line upper-cased (ending the answer with the
    end-of-sequence token, as a model does); judges with scores derived from the prompt text.
    `fail_first` makes every prompt's first reply invalid; `never_valid` every reply."""

    def __init__(self, tokenizer, fail_first=False, never_valid=False):
        self.tokenizer = tokenizer
        self.fail_first = fail_first
        self.never_valid = never_valid
        self.asked = Counter()

    def decode(self, ids):
        return self.tokenizer.decode(list(ids))

    def sample(self, requests):
        out = []
        for r in requests:
            prompt = self.tokenizer.decode(r.prompt_ids)
            body = prompt.split("Source:\n", 1)[1].split("\nTranslation:", 1)[0]
            answer = "\n".join(
                f"{i}. {line.split('. ', 1)[1].upper()}"
                for i, line in enumerate(body.splitlines(), 1)
            )
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            out.append([ids + [self.tokenizer.eos_token_id]] * r.n)
        return out

    def chat(self, prompts, *, temperature=0.3, max_new_tokens=256, score_letters=0, seed=0):
        replies = []
        for p in prompts:
            self.asked[p] += 1
            if self.never_valid or (self.fail_first and self.asked[p] == 1):
                replies.append("The translation reads well.")
                continue
            base = zlib.crc32(p.encode()) % 101
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:score_letters]
            replies.append(json.dumps({c: (base + 37 * i) % 101 for i, c in enumerate(letters)}))
        return replies


def scripted_factory(tokenizer, **judges):
    made = {}

    def factory(kind, model, **_):
        made[model] = ScriptedBackend(tokenizer, **judges.get(model, {}))
        return made[model]

    return factory, made


@pytest.mark.parametrize("rubric", ["separate", "joint"])
def test_run_keeps_core_lines_and_counts_judge_failures(
    tmp_path, examples_data, tiny_model, rubric
):
    from alpo.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    data = examples_data / "sft.parquet"
    factory, made = scripted_factory(tok, flaky={"fail_first": True}, mute={"never_valid": True})
    judges = [
        parse_judge(f"{name}={name}", backend="openai", base_url="http://x")
        for name in ("steady", "flaky", "mute")
    ]
    echo = System("echo", "model", str(tiny_model))
    settings = EvalSettings(rubric=rubric, bootstrap=100, shard_size=2, retries=2)
    summary = run_eval(data, [echo], judges, tmp_path / "out", settings, backend_factory=factory)
    frame = pl.read_parquet(data)
    translations = pl.read_parquet(tmp_path / "out" / "translations.parquet")
    for row in frame.iter_rows(named=True):
        got = translations.filter(
            (pl.col("system") == "echo") & (pl.col("window_id") == row["window_id"])
        )["lines"][0].to_list()
        src = row["src_lines"][row["core_start"] : row["core_end"]]
        assert got == [line.upper() for line in src]  # the core of the whole-window answer
    assert summary["systems"]["echo"]["missing_lines"] == 0
    judged = 3 * 2 * 3  # windows x systems x dimensions
    asked = judged if rubric == "separate" else judged // 3
    assert summary["judges"]["steady"]["rejected_replies"] == 0
    assert summary["judges"]["flaky"]["rejected_replies"] == asked  # each asked once more
    assert summary["judges"]["flaky"]["unscored"] == 0
    assert summary["judges"]["mute"]["unscored"] == judged
    assert summary["judges"]["mute"]["rejected_replies"] == asked * 3  # first try + 2 retries
    for system in (REFERENCE, "echo"):
        for d in DIMENSIONS:
            mute = summary["scores"]["en-zh"][system]["mute"][d]
            assert mute == {"mean": None, "ci": [None, None], "n": 0}  # nothing made up
            steady = summary["scores"]["en-zh"][system]["steady"][d]
            flaky = summary["scores"]["en-zh"][system]["flaky"][d]
            assert steady["n"] == 3 and steady["mean"] == flaky["mean"]
            assert summary["scores"]["en-zh"][system]["all"][d]["mean"] == steady["mean"]
    judgements = pl.read_parquet(tmp_path / "out" / "judgements.parquet")
    assert judgements.filter(pl.col("judge") == "mute")["score"].null_count() == judged
    assert (tmp_path / "out" / "report.html").is_file()


# ---------------------------------------------------------------------------------------------
# The command with the tiny model as system and judge


def eval_args(data, out, model, ready, *extra):
    return [
        "eval",
        "--data",
        str(data),
        "--system",
        f"tiny={model}",
        "--system",
        f"ready={ready}",
        "--judge",
        str(model),
        "--out",
        str(out),
        "--tokens-per-line",
        "2",
        "--translate-retries",
        "0",
        "--judge-temperature",
        "1.0",
        "--bootstrap",
        "200",
        "--shard-size",
        "1",
        "--limit",
        "2",
        "--json",
        *extra,
    ]


def shard_times(out):
    return {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("part-*.parquet")}


def test_eval_with_the_tiny_model_as_judge(cli, examples_data, tiny_model, tmp_path):
    data = examples_data / "sft.parquet"
    frame = pl.read_parquet(data)
    n = 2  # windows kept by --limit 2
    ready = tmp_path / "ready.jsonl"
    with ready.open("w", encoding="utf-8") as f:
        for row in frame.iter_rows(named=True):
            lines = core_lines(row)
            lines[0] = None
            f.write(json.dumps({"window_id": row["window_id"], "lines": lines}) + "\n")
    out = tmp_path / "out"
    proc = cli(*eval_args(data, out, tiny_model, ready))
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    scores = json.loads((out / "scores.json").read_text())
    judge = tiny_model.name
    assert set(scores["systems"]) == {REFERENCE, "tiny", "ready"}
    assert scores["dimensions"] == list(DIMENSIONS)
    assert list(scores["scores"]) == ["en-zh"]
    for system in (REFERENCE, "tiny", "ready"):
        for who in ("all", judge):
            for d in DIMENSIONS:
                v = scores["scores"]["en-zh"][system][who][d]
                assert v["n"] == n
                if v["mean"] is not None:
                    assert 0 <= v["ci"][0] <= v["mean"] <= v["ci"][1] <= 100
    # The tiny judge writes under the score-JSON constraint: every score is there.
    assert scores["judges"][judge]["unscored"] == 0
    assert scores["judges"][judge]["judged"] == n * 3 * 3
    assert scores["data"]["windows"] == n and scores["data"]["left_out"]["over_limit"] == 1
    assert scores["systems"]["ready"]["missing_lines"] == n
    tiny = scores["systems"]["tiny"]
    assert tiny["kind"] == "model" and 0 <= tiny["missing_lines"] <= tiny["lines"]
    assert {(p["system"], p["other"]) for p in scores["pairwise"]["en-zh"]["vividness"]} == {
        (REFERENCE, "tiny"),
        (REFERENCE, "ready"),
        ("tiny", "ready"),
    }
    assert summary["scores"] == scores["scores"]
    judgements = pl.read_parquet(out / "judgements.parquet")
    assert judgements.height == n * 3 * 3
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 4  # 3 bar charts and the distributions
    assert 'src="http' not in html and "<script" not in html  # one self-contained file

    # A rerun resumes: nothing is translated or judged again (see also test_resume_...).
    stamps = shard_times(out)
    assert len(stamps) == n + 3 * n  # one window per shard: translations of `tiny`, judgements
    again = json.loads(cli(*eval_args(data, out, tiny_model, ready)).stdout.splitlines()[-1])
    assert shard_times(out) == stamps and again["scores"] == scores["scores"]


def test_resume_redoes_only_what_is_missing_or_changed(tmp_path, examples_data, tiny_model):
    from alpo.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    data = examples_data / "sft.parquet"
    windows, _ = load_eval_windows(data)
    ready = tmp_path / "ready.jsonl"

    def write_ready(changed=""):
        rows = [{"window_id": w.window_id, "lines": w.reference()} for w in windows]
        rows[0]["lines"][0] = changed or rows[0]["lines"][0]
        ready.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")

    write_ready()
    out = tmp_path / "out"
    judge = parse_judge("j=j", backend="openai", base_url="http://x")
    systems = [System("echo", "model", str(tiny_model)), parse_system(f"ready={ready}")]
    settings = EvalSettings(bootstrap=50, shard_size=1)

    def run(**kwargs):
        factory, made = scripted_factory(tok)
        summary = run_eval(data, systems, [judge], out, settings, backend_factory=factory, **kwargs)
        return summary, made

    first, made = run()
    assert set(made) == {str(tiny_model), "j"}
    stamps = shard_times(out)
    assert len(stamps) == 3 + 3 * 3  # translations of echo; judgements of three systems
    again, made = run()
    assert made == {} and shard_times(out) == stamps  # no model even loaded
    assert again["scores"] == first["scores"]
    # A shard that was never written (a killed run) is the only one redone.
    lost = sorted(p for p in stamps if "judge" in p.parts and "echo" in str(p))[1]
    lost.unlink()
    again, made = run()
    assert set(made) == {"j"}
    now = shard_times(out)
    assert [p for p in now if now[p] != stamps.get(p)] == [lost]
    assert again["scores"] == first["scores"]
    # A changed translation redoes the judgements of its window only.
    write_ready(changed="另一个译文")
    stamps = now
    again, _ = run()
    now = shard_times(out)
    redone = [p for p in now if p not in stamps]
    assert len(redone) == 1 and "ready" in str(redone[0]) and len(now) == len(stamps)
    # force redoes everything.
    run(force=True)
    assert all(t != now.get(p) for p, t in shard_times(out).items())


# ---------------------------------------------------------------------------------------------
# Agreement with human scores


def write_human_csv(path, rows, human):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["direction", "source", "translation", "human", "system"])
        for r, h in zip(rows, human, strict=True):
            w.writerow([r[0], r[1], r[2], h, r[3]])


def test_agreement_returns_the_known_rank_correlation(cli, examples_data, tiny_model, tmp_path):
    frame = pl.read_parquet(examples_data / "sft.parquet")
    rows = []  # (direction, source, translation, system): three translations per source
    for row in frame.head(2).iter_rows(named=True):
        for i in range(row["core_start"], row["core_start"] + 2):
            src, ref = row["src_lines"][i], row["ref_lines"][i]
            other = row["ref_lines"][i + 1]
            for direction, s, t, t2 in (("en-zh", src, ref, other), ("zh-en", ref, src, ref)):
                rows += [(direction, s, t, "human"), (direction, s, t2, "other")]
                rows.append((direction, s, f"{t} {t2}", "joined"))
    # First the judge's scores through the library, with placeholder human scores.
    first = tmp_path / "first.csv"
    write_human_csv(first, rows, [50] * len(rows))
    judge = parse_judge(str(tiny_model))
    settings = AgreementSettings(votes=1, temperature=1.0, retries=2)
    run_agreement(first, [judge], tmp_path / "first", settings)
    scored = pl.read_parquet(tmp_path / "first" / "agreement.parquet").sort("row")
    judged = scored["score"].to_list()
    assert sum(s is not None for s in judged) >= len(rows) - 3  # the constrained judge answers
    # Human scores with a known rank correlation to the judge's: the same order in en-zh
    # (rho = tau = 1), the reverse order in zh-en (-1).
    human = [
        (50 if j is None else (j / 2 + 10 if r[0] == "en-zh" else 100 - j))
        for r, j in zip(rows, judged, strict=True)
    ]
    path = tmp_path / "human.csv"
    write_human_csv(path, rows, human)
    out = tmp_path / "agreement"
    args = [
        "eval",
        "agreement",
        "--human",
        str(path),
        "--judge",
        str(tiny_model),
        "--out",
        str(out),
    ]
    args += ["--votes", "1", "--judge-temperature", "1.0", "--judge-retries", "2", "--json"]
    result = json.loads(cli(*args).stdout.strip().splitlines()[-1])
    again = pl.read_parquet(out / "agreement.parquet").sort("row")
    assert again["score"].to_list() == judged  # the same judge, the same scores
    r = result["judges"][tiny_model.name]
    assert r["directions"]["en-zh"]["spearman"] == pytest.approx(1.0)
    assert r["directions"]["en-zh"]["kendall"] == pytest.approx(1.0)
    assert r["directions"]["zh-en"]["spearman"] == pytest.approx(-1.0)
    assert r["directions"]["zh-en"]["kendall"] == pytest.approx(-1.0)
    assert r["directions"]["en-zh"]["trusted"] and not r["directions"]["zh-en"]["trusted"]
    assert not r["trusted"]
    both = [(j, h) for j, h in zip(judged, human, strict=True) if j is not None]
    js, hs = [j for j, _ in both], [h for _, h in both]
    assert r["all"]["n"] == len(both)
    assert r["all"]["spearman"] == pytest.approx(pearson_of_average_ranks(js, hs), abs=1e-4)
    assert r["all"]["kendall"] == pytest.approx(tau_b_by_pairs(js, hs), abs=1e-4)
    en = [
        (j, h)
        for (j, h), row in zip(zip(judged, human, strict=True), rows, strict=True)
        if j is not None and row[0] == "en-zh"
    ]
    diffs = [j - h for j, h in en]
    ba = r["directions"]["en-zh"]["bland_altman"]
    assert ba["mean_diff"] == pytest.approx(np.mean(diffs), abs=1e-3)
    assert ba["loa_high"] - ba["loa_low"] == pytest.approx(
        2 * 1.96 * np.std(diffs, ddof=1), abs=1e-2
    )
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Agreement with human scores" in html and "data:image/png;base64," in html


# ---------------------------------------------------------------------------------------------
# Bad input: exit 1 with one line


def one_line_error(proc):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_bad_input_exits_1_with_one_line(cli, examples_data, tiny_model, tmp_path):
    data = examples_data / "sft.parquet"
    base = ["eval", "--data", str(data), "--judge", str(tiny_model), "--out", str(tmp_path / "o")]
    odd = tmp_path / "translations.txt"
    odd.write_text("window_id\tlines\n")
    line = one_line_error(cli(*base, "--system", f"mine={odd}", check=False))
    assert str(odd) in line and "unknown translations format .txt" in line
    empty = tmp_path / "no-model"
    empty.mkdir()
    line = one_line_error(cli(*base, "--system", f"mine={empty}", check=False))
    assert str(empty) in line and "not a model folder" in line
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"window_id": "x", "lines": ["a"]}) + "\n")
    line = one_line_error(cli(*base, "--system", f"mine={partial}", check=False))
    assert str(partial) in line and "no translation of" in line
    bad = tmp_path / "human.csv"
    bad.write_text("direction,source,translation\nen-zh,a,b\n")
    line = one_line_error(
        cli("eval", "agreement", "--human", str(bad), "--judge", str(tiny_model), check=False)
    )
    assert str(bad) in line and "missing column(s) human" in line
    assert not (tmp_path / "o").exists()  # nothing was started


def test_both_forms_of_the_command_have_help(cli):
    assert "--system" in cli("eval", "--help").stdout
    assert "--human" in cli("eval", "agreement", "--help").stdout


# ---------------------------------------------------------------------------------------------
# The report in a browser

CHROMIUM = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)


def render_screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400):
    """Render a page with headless Chromium into a PNG (the check docs/eval.md describes)."""
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            html.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH")
def test_report_renders_in_headless_chromium(tmp_path, examples_data, tiny_model):
    from alpo.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    factory, _ = scripted_factory(tok)
    out = tmp_path / "out"
    judge = parse_judge("scripted=scripted", backend="openai", base_url="http://x")
    echo = System("echo", "model", str(tiny_model))
    run_eval(
        examples_data / "sft.parquet",
        [echo],
        [judge],
        out,
        EvalSettings(bootstrap=50),
        backend_factory=factory,
    )
    frame = pl.read_parquet(examples_data / "sft.parquet")
    rows = [
        ("en-zh", s, r, "x")
        for row in frame.iter_rows(named=True)
        for s, r in zip(row["src_lines"], row["ref_lines"], strict=True)
    ]
    human = tmp_path / "human.csv"
    write_human_csv(human, rows, [(7 * i) % 101 for i in range(len(rows))])
    run_agreement(
        human, [judge], out, AgreementSettings(rubric="accuracy", votes=1), backend_factory=factory
    )
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Mean scores" in html and "Agreement with human scores" in html
    png = tmp_path / "report.png"
    render_screenshot(out / "report.html", png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    assert len(data) > 50_000  # tables and plots, not a blank page
