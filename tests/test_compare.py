"""`edgeharness compare`: the exact bootstrap of a percentile, the change's interval judged against a
tolerance, and what cannot be compared. Synthetic samples here; tests/test_ci_outputs_integration.py
compares real runs of the known-latency test server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.compare.diff import (
    EXIT_INCOMPARABLE,
    IMPROVED,
    NO_CHANGE,
    REGRESSED,
    TOO_FEW,
    IncomparableRuns,
    Options,
    RunData,
    bootstrap_quantile,
    compare_percentile,
    compare_runs,
    options_from_slo,
)
from harness.load.profiles import Profile
from harness.load.recorder import Sample
from harness.load.yamlfile import ConfigError, loads
from harness.verdict.facts import LoadProcessFacts, RunFacts
from harness.verdict.results import build_results
from harness.verdict.slo import parse_slo
from harness.verdict.stats import nearest_rank

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("n", "q"), [(40, 0.5), (60, 0.9), (25, 0.95)])
def test_the_beta_bootstrap_draws_what_resampling_draws(n, q):
    rng = np.random.default_rng(7)
    values = np.sort(rng.integers(1000, 9000, size=n))
    fast = bootstrap_quantile(values, q, np.random.default_rng(1), 40_000)
    r = nearest_rank(q, n)
    brute = np.sort(np.random.default_rng(2).choice(values, size=(40_000, n)), axis=1)[:, r - 1]
    # The two distributions over the sample's values agree (total variation distance of 40 000 draws each).
    keys = np.unique(values)
    pf = np.array([(fast == k).mean() for k in keys])
    pb = np.array([(brute == k).mean() for k in keys])
    assert 0.5 * np.abs(pf - pb).sum() < 0.02


def _us(rng: np.random.Generator, n: int, median_ms: float, shift_ms: float = 0.0) -> np.ndarray:
    return np.sort(((rng.lognormal(np.log(median_ms), 0.1, n) + shift_ms) * 1000).astype(np.int64))


def test_a_shift_beyond_the_tolerance_is_a_regression_and_back_is_an_improvement():
    rng = np.random.default_rng(3)
    base, slower = _us(rng, 400, 3.0), _us(rng, 400, 3.0, 0.4)
    opts = Options(tolerance_ms=0.2, tolerance_pct=0)
    ch = compare_percentile(base, slower, "p50", opts, np.random.default_rng(1))
    assert ch.verdict == REGRESSED and ch.lo_ms > 0.2 and ch.lo_ms <= ch.change_ms <= ch.hi_ms
    assert compare_percentile(slower, base, "p50", opts, np.random.default_rng(1)).verdict == IMPROVED


def test_two_samples_of_one_distribution_show_no_change_and_the_seed_fixes_the_interval():
    rng = np.random.default_rng(4)
    a, b = _us(rng, 400, 3.0), _us(rng, 400, 3.0)
    opts = Options(tolerance_ms=0.2, tolerance_pct=0)
    one = compare_percentile(a, b, "p90", opts, np.random.default_rng(5))
    assert one.verdict == NO_CHANGE and one.lo_ms < 0 < one.hi_ms
    assert compare_percentile(a, b, "p90", opts, np.random.default_rng(5)) == one


def test_a_change_inside_its_interval_is_not_a_regression_whatever_the_point_estimate():
    # 0.4 ms slower at the point estimate, but with 30 samples the interval is too wide to claim it.
    rng = np.random.default_rng(6)
    base = np.sort((rng.uniform(1, 6, 30) * 1000).astype(np.int64))
    ch = compare_percentile(base, base + 400, "p50", Options(tolerance_ms=0.2, tolerance_pct=0), rng)
    assert ch.change_ms == pytest.approx(0.4) and ch.verdict == NO_CHANGE and ch.hi_ms > 0.2 > ch.lo_ms


def test_a_percentile_without_a_finite_interval_is_not_compared():
    rng = np.random.default_rng(8)
    ch = compare_percentile(_us(rng, 200, 3.0), _us(rng, 200, 9.0), "p99", Options(), rng)
    assert ch.verdict == TOO_FEW and ch.lo_ms is None  # p99 of 200 samples is their maximum


def test_the_relative_tolerance_counts_when_it_is_the_larger():
    assert Options(tolerance_ms=0.2, tolerance_pct=5).allowed(10.0) == pytest.approx(0.5)
    assert Options(tolerance_ms=0.2, tolerance_pct=5).allowed(2.0) == pytest.approx(0.2)


def _run(samples: list[Sample], min_duration_s: float = 5) -> RunData:
    regions = sorted({s.region for s in samples})
    counts = {r: sum(s.region == r for s in samples) for r in regions}
    now = time.time()
    facts = RunFacts(
        settings={}, profile=Profile(name="t", shape="steady", regions=regions, duration_s=20.0, rate=20.0),
        slo=parse_slo(loads(f"validity:\n  min_duration_s: {min_duration_s}\n", "slo.yaml")), started_at=now, t0=now,
        finished_at=now + 20, planned_duration_s=20.0,
        load_processes=[LoadProcessFacts("local", regions, counts, "finished", 20.0)],
    )  # fmt: skip
    return RunData("run", build_results(facts, samples), samples)


def _samples(region: str, pops: list[str], values_us: np.ndarray) -> list[Sample]:
    n = len(values_us)
    return [
        Sample(region, pops[i % len(pops)], i * 20.0 / n, 100, int(v), 200, 0, int(v) - 300, int(v) - 500, 5.0,
               "local", 0, int(v) + 5000, "", "local")
        for i, v in enumerate(values_us)
    ]  # fmt: skip


def test_runs_are_compared_per_region_and_per_pop_and_a_region_in_one_run_only_is_named():
    rng = np.random.default_rng(9)
    base = _run(
        _samples("paris", ["paris", "frankfurt"], _us(rng, 600, 3.0)) + _samples("tokyo", ["tokyo"], _us(rng, 300, 3.0))
    )
    cur = _run(
        _samples("paris", ["paris", "frankfurt"], _us(rng, 600, 3.0, 0.5))
        + _samples("lima", ["lima"], _us(rng, 300, 3.0))
    )
    cmp = compare_runs(base, cur, Options(percentiles=("p50",), tolerance_ms=0.2, tolerance_pct=0))
    assert [(s.region, s.pop) for s in cmp.scopes] == [("paris", None), ("paris", "frankfurt"), ("paris", "paris")]
    assert all(s.verdict == REGRESSED for s in cmp.scopes)
    assert cmp.verdict == REGRESSED and cmp.exit_code == 1
    assert cmp.only_in_baseline == ["tokyo"] and cmp.only_in_current == ["lima"]


def test_runs_without_a_common_region_or_with_an_invalid_run_cannot_be_compared():
    rng = np.random.default_rng(10)
    a = _run(_samples("paris", ["paris"], _us(rng, 300, 3.0)))
    b = _run(_samples("lima", ["lima"], _us(rng, 300, 3.0)))
    with pytest.raises(IncomparableRuns, match="no client region"):
        compare_runs(a, b)
    short = _run(_samples("paris", ["paris"], _us(rng, 300, 3.0)), min_duration_s=50)
    assert short.results.verdict.status == "invalid"
    with pytest.raises(IncomparableRuns, match="invalid"):
        compare_runs(a, short)
    cmp = compare_runs(a, short, Options(allow_invalid=True))
    assert any("invalid" in w for w in cmp.warnings)


def test_runs_with_too_few_samples_for_every_percentile_are_incomparable_not_ok():
    rng = np.random.default_rng(11)
    a = _run(_samples("paris", ["paris"], _us(rng, 300, 3.0)))
    b = _run(_samples("paris", ["paris"], _us(rng, 300, 9.0)))
    cmp = compare_runs(a, b, Options(percentiles=("p99",)))  # p99 needs 530 samples at 99 %
    assert cmp.verdict == TOO_FEW and cmp.exit_code == EXIT_INCOMPARABLE == 2


def test_tolerances_come_from_the_slo_file_and_the_command_line_overrides_them():
    slo = parse_slo(
        loads("regression:\n  percentiles: [p50, p90]\n  tolerance_ms: 0.3\n  tolerance_pct: 0\n", "s.yaml")
    )
    opts = options_from_slo(slo, tolerance_ms=None, seed=4)
    assert (opts.percentiles, opts.tolerance_ms, opts.tolerance_pct, opts.seed) == (("p50", "p90"), 0.3, 0, 4)
    assert options_from_slo(slo, tolerance_ms=0.1).tolerance_ms == 0.1
    with pytest.raises(ConfigError, match="unknown key `tolerance`"):
        parse_slo(loads("regression:\n  tolerance: 1\n", "s.yaml"))
    with pytest.raises(ConfigError, match=r"s.yaml:2"):
        parse_slo(loads("regression:\n  percentiles: [p42]\n", "s.yaml"))


def test_the_command_exits_2_naming_what_is_missing(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "harness", "compare", str(tmp_path / "nope"), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == EXIT_INCOMPARABLE and "no results.json" in r.stderr and "Traceback" not in r.stderr


def test_the_terminal_table_shows_names_from_files_literally():
    from rich.console import Console

    from harness.compare.table import print_comparison

    rng = np.random.default_rng(11)
    name = "[bold]x[/]$"
    a = _run(_samples(name, [name], _us(rng, 300, 3.0)))
    b = _run(_samples(name, [name], _us(rng, 300, 3.0, 0.5)))
    console = Console(record=True, width=200)
    print_comparison(compare_runs(a, b, Options(percentiles=("p50",))), console)
    text = console.export_text()
    assert name in text and "regressed" in text and "COMPARISON: REGRESSED" in text
