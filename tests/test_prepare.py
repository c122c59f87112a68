"""`alpo prepare`: windows, segments and leak-free splits."""

import json
import random

import polars as pl
import pytest

import alpo
from alpo import synthetic
from alpo.exceptions import ConfigError, InputError


def aligned_table(rows: list[tuple[str, str, int, str]], pair: str = "en-zh") -> pl.DataFrame:
    """(title, episode, fragment, source text) rows -> an aligned table as `alpo align` writes."""
    src, tgt = pair.split("-")
    n = len(rows)
    return pl.DataFrame(
        {
            "pair": [pair] * n,
            "title": [r[0] for r in rows],
            "episode": [r[1] for r in rows],
            "src_lang": [src] * n,
            "tgt_lang": [tgt] * n,
            "line": list(range(n)),
            "fragment": [r[2] for r in rows],
            "src_text": [r[3] for r in rows],
            "tgt_text": [f"<{r[3]}>" for r in rows],
        },
        schema_overrides={"line": pl.UInt32, "fragment": pl.UInt32},
    )


def test_golden_windows_and_segments(tmp_path):
    texts = ["A.", "B,", "C.", "D.", "E", "F", "G.", "H.", "I.", "J,", "K.", "L."]
    rows = [("T", "01", 0, t) for t in texts] + [("T", "01", 1, t) for t in "MNOP"]
    aligned_table(rows).write_parquet(tmp_path / "aligned.parquet")
    manifest = alpo.prepare(
        tmp_path / "aligned.parquet",
        "en-zh",
        tmp_path / "data",
        window=4,
        context=2,
        segmenter="punct",
        sft_share=1.0,
        test_titles=0,
    )
    sft = pl.read_parquet(tmp_path / "data" / "sft.parquet")
    # segments: A. | B, C. | D. | E F G. | H. | I. | J, K. | L.   (fragment 1 is too short)
    assert sft["src_lines"].to_list() == [
        texts[0:7],
        texts[1:11],
        texts[4:12],
    ]
    assert sft["ref_lines"][1].to_list() == [f"<{t}>" for t in texts[1:11]]
    assert sft.select("core_start", "core_end").rows() == [(0, 4), (3, 7), (4, 8)]
    assert sft["segment_of_line"].to_list() == [
        [0, 1, 1, 2, 3, 3, 3],
        [0, 0, 1, 2, 2, 2, 3, 4, 5, 5],
        [0, 0, 0, 1, 2, 3, 3, 4],
    ]
    assert manifest["dropped"] == {
        "short_fragments": 1,
        "short_fragment_lines": 4,
        "open_segment_lines": 0,
    }
    assert manifest["splits"]["sft"]["windows"] == 3


def test_line_segmenter_and_open_segments(tmp_path):
    # 12 lines; under punct the last segment runs on past the fragment's end and is cut back
    texts = [f"line {i}." for i in range(9)] + ["and then", "we went", "home"]
    rows = [("T", "01", 0, t) for t in texts] + [("T", "01", 1, f"x{i}.") for i in range(10)]
    aligned_table(rows).write_parquet(tmp_path / "a.parquet")
    m = alpo.prepare(
        tmp_path / "a.parquet",
        "en-zh",
        tmp_path / "p",
        segmenter="punct",
        min_fragment=5,
        test_titles=0,
        sft_share=1.0,
    )
    assert m["dropped"]["open_segment_lines"] == 3
    m = alpo.prepare(
        tmp_path / "a.parquet",
        "en-zh",
        tmp_path / "l",
        min_fragment=5,
        test_titles=0,
        sft_share=1.0,
    )
    assert m["dropped"]["open_segment_lines"] == 0
    sft = pl.read_parquet(tmp_path / "l" / "sft.parquet")
    assert all(s == list(range(len(s))) for s in sft["segment_of_line"].to_list())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six titles of synthetic episodes with dropped cues (so fragments), aligned by alpo."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(5)
    for t in range(6):
        for e in range(2):
            ep = synthetic.make_episode(rng, 150, src_lang="zh", tgt_lang="th", drop=0.06)
            name = f"Title{t}.S01E{e + 1:02d}"
            synthetic.write(root / "raw" / f"{name}.zh.srt", ep.src, "srt")
            synthetic.write(root / "raw" / f"{name}.th.srt", ep.tgt, "srt")
    alpo.align_to_parquet(root / "raw", root / "aligned.parquet", pair="zh-th")
    return root


def test_invariants_no_leak_no_crossing(corpus):
    m = alpo.prepare(corpus / "aligned.parquet", "zh-th", corpus / "data", test_titles=2)
    parts = {s: pl.read_parquet(corpus / "data" / f"{s}.parquet") for s in ("sft", "pool", "test")}
    test_titles = set(parts["test"]["title"])
    assert len(test_titles) == 2 and set(m["test_titles"]) == test_titles
    for s in ("sft", "pool"):
        assert not set(parts[s]["title"]) & test_titles
    ids = pl.concat([p["window_id"] for p in parts.values()])
    assert ids.n_unique() == ids.len()
    aligned = pl.read_parquet(corpus / "aligned.parquet")
    by_text = {
        r["src_text"]: (r["title"], r["episode"], r["fragment"], r["line"])
        for r in aligned.iter_rows(named=True)
    }
    for df in parts.values():
        for w in df.iter_rows(named=True):
            n = len(w["src_lines"])
            assert n == len(w["ref_lines"]) == len(w["segment_of_line"])
            assert 0 <= w["core_start"] < w["core_end"] <= n
            where = [by_text[t] for t in w["src_lines"]]
            # one title, episode and fragment; consecutive lines
            assert len({x[:3] for x in where}) == 1
            assert [x[3] for x in where] == list(range(where[0][3], where[0][3] + n))
            assert (w["title"], w["episode"]) == where[0][:2]
    sizes = {s: p.height for s, p in parts.items()}
    assert abs(sizes["sft"] - 0.8 * (sizes["sft"] + sizes["pool"])) <= 1


def test_same_input_same_bytes_and_resume(corpus, tmp_path, cli):
    def run(out, seed, *extra):
        return cli(
            "prepare", str(corpus / "aligned.parquet"), "--pair", "zh-th", "--out", str(out),
            "--seed", str(seed), "--test-titles", "1", *extra,
        )  # fmt: skip

    a, b = tmp_path / "a", tmp_path / "b"
    run(a, 7)
    run(b, 7)
    for s in ("sft", "pool", "test"):
        assert (a / f"{s}.parquet").read_bytes() == (b / f"{s}.parquet").read_bytes()
    assert json.loads(run(a, 7, "--json").stdout)["skipped"]
    assert not json.loads(run(a, 8, "--json").stdout)["skipped"]


def test_named_test_titles_and_glossary(corpus, tmp_path):
    gloss = tmp_path / "glossary.tsv"
    gloss.write_text("title\tterm\ttranslation\nTitle1\t港\tท่าเรือ\nTitle1\t不存在\tไม่มี\n")
    m = alpo.prepare(
        corpus / "aligned.parquet",
        "zh-th",
        tmp_path / "d",
        test_titles=["Title0", "Title3"],
        glossary=str(gloss),
        prompts=True,
    )
    assert m["test_titles"] == ["Title0", "Title3"]
    df = pl.concat([pl.read_parquet(tmp_path / "d" / f"{s}.parquet") for s in ("sft", "pool")])
    t1 = df.filter(pl.col("title") == "Title1")
    with_term = t1.filter(pl.col("src_lines").list.join("\n").str.contains("港"))
    assert with_term.height > 0
    for row in with_term.iter_rows(named=True):
        assert row["glossary"] == [{"term": "港", "translation": "ท่าเรือ"}]
        assert "港 - ท่าเรือ" in row["prompt"]
    others = df.filter(pl.col("title") != "Title1")
    assert others["glossary"].list.len().max() == 0
    with pytest.raises(ConfigError, match="Nope"):
        alpo.prepare(corpus / "aligned.parquet", "zh-th", tmp_path / "e", test_titles=["Nope"])


def test_bad_input_one_line_errors(tmp_path, cli, corpus):
    good = aligned_table([("T", "01", 0, f"l{i}.") for i in range(12)])
    cases = {
        "missing.parquet": good.drop("fragment"),
        "empty.parquet": good.clear(),
    }
    for name, df in cases.items():
        df.write_parquet(tmp_path / name)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    expect = [
        (["missing.parquet", "--pair", "en-zh"], "missing column(s) fragment"),
        (["empty.parquet", "--pair", "en-zh"], "table is empty"),
        (["junk.parquet", "--pair", "en-zh"], "not a readable Parquet file"),
        (["missing.parquet", "--pair", "xx-zh"], "unknown language"),
        (["nothere.parquet", "--pair", "en-zh"], "no such file"),
    ]
    for args, needle in expect:
        proc = cli(
            "prepare", str(tmp_path / args[0]), *args[1:], "--out", str(tmp_path / "o"), check=False
        )
        assert proc.returncode == 1, args
        assert needle in proc.stderr, (args, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
    proc = cli(
        "prepare",
        str(corpus / "aligned.parquet"),
        "--pair",
        "en-de",
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert (
        proc.returncode == 1 and "no rows for pair en-de (pairs in the file: zh-th)" in proc.stderr
    )
    proc = cli(
        "prepare",
        str(corpus / "aligned.parquet"),
        "--pair",
        "zh-th",
        "--segmenter",
        "llm",
        check=False,
    )
    assert proc.returncode == 1 and "needs --segment-model" in proc.stderr
    with pytest.raises(InputError):
        alpo.prepare(tmp_path / "nothere.parquet", "en-zh")


def test_rows_out_of_order_are_sorted(tmp_path):
    rows = [("T", "01", 0, f"l{i}.") for i in range(12)]
    table = aligned_table(rows)
    table.reverse().write_parquet(tmp_path / "rev.parquet")
    table.write_parquet(tmp_path / "fwd.parquet")
    for name in ("rev", "fwd"):
        alpo.prepare(
            tmp_path / f"{name}.parquet",
            "en-zh",
            tmp_path / name,
            test_titles=0,
            sft_share=1.0,
            window=4,
            context=1,
        )
    a = pl.read_parquet(tmp_path / "rev" / "sft.parquet")
    b = pl.read_parquet(tmp_path / "fwd" / "sft.parquet")
    assert a.equals(b) and a["src_lines"][0][0] == "l0."
