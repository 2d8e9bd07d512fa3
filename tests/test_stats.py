"""Order-statistic confidence intervals: exact against brute force, coverage, tightness, LoadGen's figures."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.verdict.stats import (
    binomial_cdf,
    interval_ranks,
    min_samples_one_sided,
    percentile_interval,
    samples_to_decide,
)


def _exact_cdf(n: int, q: Fraction) -> list[Fraction]:
    """S[k] = P(B < k), B ~ Binomial(n, q), in exact rational arithmetic."""
    pmf = [math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(n + 1)]
    out = [Fraction(0)]
    for p in pmf:
        out.append(out[-1] + p)
    return out


def _brute_force(n: int, q: Fraction, conf: Fraction) -> tuple[int, Fraction]:
    """Narrowest (hi - lo) over every rank pair 0 <= lo < hi <= n + 1 with exact coverage >= conf."""
    s = _exact_cdf(n, q)
    best = None
    for lo in range(0, n + 1):
        for hi in range(lo + 1, n + 2):
            cover = s[hi] - s[lo]
            if cover >= conf and (best is None or hi - lo < best[0] or (hi - lo == best[0] and cover > best[1])):
                best = (hi - lo, cover)
    assert best is not None
    return best


@pytest.mark.parametrize("n", [1, 5, 20, 57, 100, 230])
@pytest.mark.parametrize("q,conf", [("1/2", "95/100"), ("9/10", "99/100"), ("95/100", "99/100"), ("99/100", "9/10")])
def test_binomial_cdf_matches_exact_arithmetic(n, q, conf):
    s = binomial_cdf(n, float(Fraction(q)))
    exact = _exact_cdf(n, Fraction(q))
    assert np.allclose(s, [float(x) for x in exact], atol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 10, 44, 64, 100, 199])
@pytest.mark.parametrize("q,conf", [("1/2", "95/100"), ("9/10", "99/100"), ("95/100", "99/100"), ("99/100", "99/100")])
def test_interval_is_the_tightest_rank_pair_with_the_coverage(n, q, conf):
    r = interval_ranks(float(Fraction(q)), n, float(Fraction(conf)))
    width, cover = _brute_force(n, Fraction(q), Fraction(conf))
    s = _exact_cdf(n, Fraction(q))
    assert s[r.hi] - s[r.lo] >= Fraction(conf)  # the coverage it claims, exactly
    assert r.hi - r.lo == width  # and no narrower pair has it
    assert r.coverage == pytest.approx(float(cover), abs=1e-9)


def test_the_interval_covers_the_true_percentile_at_the_stated_rate():
    # 1000 seeded trials of 400 samples from a known distribution at 95 %: at least 93 % must cover.
    rng = np.random.default_rng(20261130)
    for q in (0.5, 0.9, 0.99):
        true = float(np.exp(8.0 + 0.5 * math.sqrt(2) * _erfinv(2 * q - 1)))  # lognormal(8, 0.5) quantile
        inside = 0
        for _ in range(1000):
            v = np.sort(rng.lognormal(8.0, 0.5, 400))
            iv = percentile_interval(v, q, 0.95)
            lo = -math.inf if iv.lo is None else iv.lo
            hi = math.inf if iv.hi is None else iv.hi
            inside += lo <= true <= hi
        assert inside >= 930, (q, inside)


def _erfinv(y: float) -> float:
    # Inverse of math.erf by bisection (the standard library has erf, not its inverse).
    lo, hi = -6.0, 6.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.erf(mid) < y:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_loadgen_minimum_query_counts_are_reproduced():
    # MLPerf LoadGen's early stopping (confidence 0.99, tolerance 0, one over-latency query discarded)
    # asks for at least 64 queries to estimate p90, 662 for p99 and 6636 for p99.9.
    assert min_samples_one_sided(0.90, 0.99, discarded=1) == 64
    assert min_samples_one_sided(0.99, 0.99, discarded=1) == 662
    assert min_samples_one_sided(0.999, 0.99, discarded=1) == 6636
    # With nothing discarded it is ceil(log(1 - c) / log(q)): LoadGen's starting point in its search.
    assert min_samples_one_sided(0.90, 0.99) == math.ceil(math.log(0.01) / math.log(0.9))


def test_too_few_samples_give_an_open_upper_bound():
    r = interval_ranks(0.99, 100, 0.99)
    assert r.hi == 101  # no finite upper bound: a p99 over 100 samples can never pass at 99 %
    iv = percentile_interval(np.arange(1, 101, dtype=float), 0.99, 0.99)
    assert iv.hi is None and iv.value == 99.0


def test_samples_to_decide_is_what_the_check_would_have_needed():
    # 1 of 200 over the threshold at p99 is undecided; at that rate about N samples decide a pass.
    n_needed = samples_to_decide(0.99, 200, 1, 0.99)
    assert n_needed is not None and n_needed > 200
    r = interval_ranks(0.99, n_needed, 0.99)
    assert n_needed - r.hi >= round(n_needed / 200)  # at n_needed the upper bound is within the threshold
    assert samples_to_decide(0.99, 200, 2, 0.99) is None  # exactly at 1 - q: more samples would not tell


def test_one_estimator_the_point_is_the_nearest_rank():
    rng = random.Random(3)
    v = np.sort(np.array([rng.randint(1, 10_000) for _ in range(999)], dtype=float))
    for q in (0.5, 0.9, 0.99, 0.999):
        assert percentile_interval(v, q, 0.99).value == v[math.ceil(q * len(v)) - 1]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    q=st.sampled_from(["1/20", "1/4", "1/2", "3/4", "9/10", "19/20", "99/100", "999/1000"]),
    conf=st.sampled_from(["1/2", "4/5", "9/10", "19/20", "99/100", "999/1000"]),
)
def test_any_size_quantile_and_confidence_agree_with_brute_force(n, q, conf):
    r = interval_ranks(float(Fraction(q)), n, float(Fraction(conf)))
    width, _ = _brute_force(n, Fraction(q), Fraction(conf))
    s = _exact_cdf(n, Fraction(q))
    assert 0 <= r.lo < r.hi <= n + 1
    assert s[r.hi] - s[r.lo] >= Fraction(conf) and r.hi - r.lo == width
    assert r.lo <= r.point <= r.hi  # the estimate lies within its interval
