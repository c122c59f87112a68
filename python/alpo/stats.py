"""Statistics of `alpo eval` and `alpo eval agreement`, in numpy: rank correlations (Spearman's
rho with average ranks for ties, Kendall's tau-b), the Bland-Altman summary, means over judges
with seeded bootstrap intervals over windows, and pairwise win/tie/loss.

Score matrices are windows x judges with NaN for an unscored window.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "bland_altman",
    "bootstrap_mean",
    "kendall_tau_b",
    "nan_mean",
    "pairwise",
    "rank_average",
    "rounded",
    "seed_for",
    "spearman",
]


def rank_average(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of their ranks."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    cuts = np.flatnonzero(np.diff(ordered) != 0) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [n]))
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Spearman's rho: Pearson's correlation of the average ranks; None when undefined
    (fewer than 2 values, or all values of one side equal)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError("spearman needs two sequences of the same length")
    if len(a) < 2:
        return None
    return _pearson(rank_average(a), rank_average(b))


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denom == 0:
        return None
    return float(np.clip(np.dot(da, db) / denom, -1.0, 1.0))


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Kendall's tau-b (ties on either side corrected); None when undefined."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError("kendall_tau_b needs two sequences of the same length")
    n = len(a)
    if n < 2:
        return None
    s = 0.0
    for i in range(n - 1):
        s += float(np.sum(np.sign(a[i + 1 :] - a[i]) * np.sign(b[i + 1 :] - b[i])))
    pairs = n * (n - 1) / 2

    def tied(v: np.ndarray) -> float:
        _, counts = np.unique(v, return_counts=True)
        return float(np.sum(counts * (counts - 1) / 2))

    denom = math.sqrt((pairs - tied(a)) * (pairs - tied(b)))
    if denom == 0:
        return None
    return float(np.clip(s / denom, -1.0, 1.0))


def bland_altman(
    judge: Sequence[float] | np.ndarray, human: Sequence[float] | np.ndarray
) -> dict[str, float | None]:
    """Bland-Altman summary of judge - human: mean difference (systematic bias), the standard
    deviation of the differences and the 95 % limits of agreement (mean +- 1.96 sd)."""
    d = np.asarray(judge, dtype=float) - np.asarray(human, dtype=float)
    if len(d) == 0:
        return {"mean_diff": None, "sd": None, "loa_low": None, "loa_high": None}
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return {
        "mean_diff": mean,
        "sd": sd,
        "loa_low": mean - 1.96 * sd,
        "loa_high": mean + 1.96 * sd,
    }


def nan_mean(x: np.ndarray, axis: int) -> np.ndarray:
    """The mean over `axis` of the values that are not NaN; NaN where there are none."""
    valid = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(valid, x, 0.0).sum(axis=axis) / valid.sum(axis=axis)
    return out


def _mean_of_judge_means(stack: np.ndarray) -> np.ndarray:
    """(..., windows, judges) with NaN for unscored -> (...,): the mean over judges of each
    judge's mean over its scored windows (judges without any score left out)."""
    return nan_mean(nan_mean(stack, axis=-2), axis=-1)


def bootstrap_mean(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the mean over judges (columns) of each judge's mean over windows
    (rows), NaN meaning unscored, and its percentile confidence interval from resampling the
    windows with replacement (seeded). A 1-D input is one judge."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    m = m[~np.isnan(m).all(axis=1)]
    if m.shape[0] == 0:
        return None, None, None
    point = float(_mean_of_judge_means(m))
    if resamples <= 0 or m.shape[0] == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    stats = []
    batch = max(1, 2_000_000 // max(1, m.size))
    done = 0
    while done < resamples:
        size = min(batch, resamples - done)
        idx = rng.integers(0, m.shape[0], size=(size, m.shape[0]))
        stats.append(_mean_of_judge_means(m[idx]))
        done += size
    values = np.concatenate(stats)
    values = values[~np.isnan(values)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return point, float(low), float(high)


def pairwise(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    tie_margin: float = 0.0,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Win/tie/loss of system a against b over the windows both have a score for (a wins when
    its score is higher by more than `tie_margin`), and the mean difference a - b with a
    bootstrap confidence interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = ~np.isnan(x) & ~np.isnan(y)
    d = x[both] - y[both]
    n = int(len(d))
    win, loss = int(np.sum(d > tie_margin)), int(np.sum(d < -tie_margin))
    mean, low, high = bootstrap_mean(d, resamples=resamples, confidence=confidence, seed=seed)
    return {
        "n": n,
        "win": win,
        "tie": n - win - loss,
        "loss": loss,
        "mean_diff": mean,
        "ci": [low, high],
    }


def seed_for(base: int, *parts: str) -> int:
    """A seed derived from `base` and a key: stable for the key, so adding a system changes no
    other statistic (or judge shard)."""
    return (base * 1_000_003 + zlib.crc32("\x1f".join(parts).encode())) % (2**32)


def rounded(v: float | None, digits: int = 3) -> float | None:
    """`v` rounded for a summary; None for None and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), digits)
