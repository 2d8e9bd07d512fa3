"""Distribution-free confidence intervals for percentiles, from order statistics (binomial), as MLPerf
LoadGen's early stopping derives its bounds.

Of n samples from any continuous distribution, the number B that fall below the true q-quantile is
Binomial(n, q). So with x_(1) <= ... <= x_(n) sorted, P(x_(l) <= true quantile < x_(u)) = P(l <= B <= u - 1),
whatever the distribution. The interval reported is the narrowest pair of ranks (l, u) whose coverage is at
least the confidence asked for; rank 0 stands for "unbounded below" and rank n + 1 for "unbounded above"
(too few samples for a finite bound at that confidence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class RankInterval:
    """1-based ranks into the sorted samples: the point estimate and the interval's ends (0 / n+1: none)."""

    n: int
    point: int  # nearest rank, ceil(q n): the estimator every figure uses
    lo: int  # 0: no finite lower bound
    hi: int  # n + 1: no finite upper bound
    coverage: float  # P(lo <= B <= hi - 1) under Binomial(n, q)


def nearest_rank(q: float, n: int) -> int:
    """The rank of the q-quantile's point estimate (nearest rank, as HDR histograms and LoadGen use)."""
    return min(n, max(1, math.ceil(q * n - 1e-9)))


def binomial_cdf(n: int, q: float) -> np.ndarray:
    """S with S[k] = P(B < k) for k = 0..n+1, B ~ Binomial(n, q); computed in log space."""
    if q <= 0.0 or q >= 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    j = np.arange(n, dtype=float)
    # log b(j+1) - log b(j) = log((n - j) / (j + 1)) + log(q / (1 - q)); b(0) = (1 - q)^n.
    steps = np.log((n - j) / (j + 1)) + math.log(q / (1 - q))
    log_pmf = np.concatenate(([n * math.log1p(-q)], n * math.log1p(-q) + np.cumsum(steps)))
    pmf = np.exp(log_pmf - log_pmf.max())
    pmf /= pmf.sum()
    return np.concatenate(([0.0], np.minimum(np.cumsum(pmf), 1.0)))


@lru_cache(maxsize=4096)
def interval_ranks(q: float, n: int, confidence: float) -> RankInterval:
    """The narrowest rank pair (lo, hi) with P(x_(lo) <= q-quantile < x_(hi)) >= confidence."""
    if n < 1:
        raise ValueError("no samples")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    s = binomial_cdf(n, q)
    s[-1] = 1.0  # S[n+1] = P(B <= n) = 1 exactly: the unbounded upper end
    lows = np.arange(0, n + 1)
    # For every lower rank, the smallest upper rank reaching the coverage (rounding slack of 1e-12).
    his = np.searchsorted(s, s[lows] + confidence - 1e-12, side="left")
    ok = his <= n + 1
    lows, his = lows[ok], his[ok]
    widths = his - lows
    best = widths.min()
    candidates = np.flatnonzero(widths == best)
    # Among equally narrow pairs, the one with the most coverage (then the lowest) is reported.
    cover = s[his[candidates]] - s[lows[candidates]]
    pick = candidates[int(np.argmax(cover))]
    lo, hi = int(lows[pick]), int(his[pick])
    return RankInterval(n, nearest_rank(q, n), lo, hi, float(s[hi] - s[lo]))


def passes_at(q: float, n: int, above: int, confidence: float) -> bool:
    """With `above` of n samples over a threshold, is the interval's upper end within it?"""
    r = interval_ranks(q, n, confidence)
    return r.hi <= n and n - r.hi >= above


def fails_at(q: float, n: int, above: int, confidence: float) -> bool:
    """With `above` of n samples over a threshold, is the interval's lower end over it?"""
    r = interval_ranks(q, n, confidence)
    return r.lo >= 1 and n - r.lo + 1 <= above


def samples_to_decide(q: float, n: int, above: int, confidence: float, limit: int = 10_000_000) -> int | None:
    """How many samples in all would decide the check if the fraction over the threshold stayed
    `above / n`; None when no count would (the fraction sits at 1 - q, or beyond `limit`)."""
    frac = above / n if n else 0.0
    if math.isclose(frac, 1 - q, rel_tol=1e-9, abs_tol=1e-12):
        return None
    decide = passes_at if frac < 1 - q else fails_at

    def decided(m: int) -> bool:
        return decide(q, m, round(frac * m), confidence)

    hi = max(n, 16)
    while not decided(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = 1
    # Decisions are monotone in m except for rounding ripples; a binary search finds the first decided
    # count up to those (the answer is "about N").
    while lo < hi:
        mid = (lo + hi) // 2
        if decided(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def min_samples_to_pass(q: float, confidence: float, limit: int = 10_000_000) -> int:
    """The fewest samples whose interval of the q-quantile has a finite upper end: below it, no set of
    samples can pass a check on the q-quantile at this confidence (7 for p50, 107 for p95 at 99 %)."""
    n = 1
    while n < limit and interval_ranks(q, n, confidence).hi > n:
        n += 1
    return n


def min_samples_one_sided(q: float, confidence: float, discarded: int = 0) -> int:
    """The fewest samples for which the one-sided upper confidence bound of the q-quantile is at or below
    the (discarded + 1)-th largest sample: MLPerf LoadGen's early-stopping minimum query count when
    `discarded` is its number of over-latency queries t (SingleStream uses t = 1, tolerance 0)."""
    n = discarded + 1
    while True:
        # P(B >= n - discarded) under Binomial(n, q) = P(at most `discarded` samples above the quantile).
        tail = float(1.0 - binomial_cdf(n, q)[n - discarded])
        if tail <= 1 - confidence:
            return n
        n += 1


@dataclass(frozen=True)
class Interval:
    """A percentile's point estimate and confidence interval in the samples' unit (None: unbounded)."""

    value: float
    lo: float | None
    hi: float | None


def percentile_interval(sorted_values: np.ndarray, q: float, confidence: float) -> Interval:
    """Point estimate and interval of the q-quantile of already sorted values."""
    n = len(sorted_values)
    r = interval_ranks(q, n, confidence)
    return Interval(
        value=float(sorted_values[r.point - 1]),
        lo=float(sorted_values[r.lo - 1]) if r.lo >= 1 else None,
        hi=float(sorted_values[r.hi - 1]) if r.hi <= n else None,
    )
