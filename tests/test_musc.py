"""The real MuSC sample aligns (skipped where ../shared/data/musc-sample is absent)."""

import pytest

import alpo
from conftest import MUSC

pytestmark = pytest.mark.skipif(not MUSC.is_dir(), reason="MuSC sample not present")


def test_musc_sample_aligns():
    df, report = alpo.align_report(MUSC)
    pairs = report["pairs"]
    assert set(pairs) == {"zh-th", "en-de", "en-fr"}
    assert pairs["zh-th"]["episodes"] == 24 and pairs["en-de"]["episodes"] == 10
    # shares recorded in bench/RESULTS.md; these floors catch a regression
    assert pairs["zh-th"]["aligned_share"] > 0.95
    assert pairs["en-de"]["aligned_share"] > 0.7
    assert pairs["en-fr"]["aligned_share"] > 0.7
    assert not report["files_skipped"]
    # the platform notices at the top ({\an8}) never reach the corpus
    for col in ["src_text", "tgt_text"]:
        assert not df[col].str.contains("YoukuGlobalConnect").any()
