"""Compare two runs' raw samples: per region (and per PoP), each percentile's change with a bootstrap
confidence interval, judged against a tolerance.

The bootstrap is exact and cheap: the q-quantile (nearest rank r of n) of a resample of n values drawn
from the sorted samples v is v[ceil(U n) - 1] with U ~ Beta(r, n - r + 1), the r-th order statistic of n
uniforms. So each of the B seeded resamples costs one Beta draw per run, whatever n is. The change's
interval is the percentile interval of (current* - baseline*) over the B resamples.

A change counts only when the whole interval lies beyond the tolerance: regressed when its lower end is
above +allowed, improved when its upper end is below -allowed, else no significant change. The allowed
change is the larger of an absolute (ms) and a relative (% of the baseline's percentile) tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.load.recorder import Sample
from harness.verdict.model import INTERRUPTED, INVALID, PCT_KEYS, Results, pct_fraction
from harness.verdict.stats import interval_ranks, nearest_rank

REGRESSED, IMPROVED, NO_CHANGE, TOO_FEW = "regressed", "improved", "no significant change", "too few samples"
# Exit codes of `edgeharness compare` (CI): 0 nothing regressed, 1 a regression, 2 bad usage or runs that
# cannot be compared.
EXIT_OK, EXIT_REGRESSED, EXIT_INCOMPARABLE = 0, 1, 2
METRICS = ("client_latency_ms", "server_total_ms", "e2e_latency_ms")
DEFAULT_PERCENTILES = ("p50", "p90", "p95", "p99")


class IncomparableRuns(ValueError):
    """The two runs cannot be compared (missing files, no region in common, an invalid run)."""


@dataclass
class Options:
    """What to compare and how strictly."""

    metric: str = "client_latency_ms"
    percentiles: tuple[str, ...] = DEFAULT_PERCENTILES
    tolerance_ms: float = 0.2
    tolerance_pct: float = 5.0
    confidence: float = 0.99
    resamples: int = 10_000
    seed: int = 1
    allow_invalid: bool = False

    def allowed(self, baseline_ms: float) -> float:
        """The largest change in ms that is not a change: max(absolute, relative to the baseline)."""
        return max(self.tolerance_ms, self.tolerance_pct / 100.0 * baseline_ms)


@dataclass
class PercentileChange:
    """One percentile of one scope: both runs' estimates, the change and its interval, the verdict."""

    percentile: str
    baseline_ms: float | None
    current_ms: float | None
    change_ms: float | None
    lo_ms: float | None
    hi_ms: float | None
    allowed_ms: float | None
    baseline_n: int
    current_n: int
    verdict: str


@dataclass
class ScopeComparison:
    """A client region over all its PoPs (pop None), or the region's traffic to one PoP."""

    region: str
    pop: str | None
    changes: list[PercentileChange]
    verdict: str


@dataclass
class Comparison:
    """The whole comparison (written as compare.json)."""

    schema: str = field(default="edgeharness.compare/1", kw_only=True)
    baseline: str
    current: str
    metric: str
    confidence: float
    resamples: int
    seed: int
    tolerance_ms: float
    tolerance_pct: float
    scopes: list[ScopeComparison]
    only_in_baseline: list[str] = field(default_factory=list)
    only_in_current: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdict: str = NO_CHANGE
    exit_code: int = EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        from harness.verdict.typed import to_json

        return to_json(self)


def compare_schema() -> dict[str, Any]:
    """The JSON Schema of compare.json (`edgeharness schema compare`, and `compare --json`)."""
    from harness.verdict.typed import json_schema

    return json_schema(Comparison, "urn:edgeharness:compare:1", "edgeharness comparison", Comparison.schema)


@dataclass
class RunData:
    """One side of a comparison: where it came from, its typed results and its raw samples."""

    label: str
    results: Results
    samples: Sequence[Sample]


def load_run(folder: str | Path) -> RunData:
    """A run directory's results.json and raw samples; IncomparableRuns says what is missing."""
    from harness.load.recorder import read_samples
    from harness.verdict.model import read_results

    d = Path(folder)
    path = d / "results.json"
    if not path.is_file():
        raise IncomparableRuns(f"{d}: no results.json (not a finished run directory)")
    try:
        results = read_results(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise IncomparableRuns(f"{path}: cannot be read ({exc})") from exc
    samples = read_samples(d)
    if not samples:
        raise IncomparableRuns(f"{d}: no raw samples under raw/ (the comparison needs them)")
    return RunData(str(d), results, samples)


def metric_values_us(samples: Sequence[Sample], metric: str) -> dict[tuple[str, str | None], np.ndarray]:
    """Sorted µs values of `metric` per (region, None) and (region, pop)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    groups: dict[tuple[str, str | None], list[int]] = {}
    for s in samples:
        if not s.ok:
            continue
        if metric == "client_latency_ms" and s.cold != 1:
            v = s.latency_us
        elif metric == "e2e_latency_ms" and s.cold != 1:
            v = s.e2e_us
        elif metric == "server_total_ms" and s.server_total_us > 0:
            v = s.server_total_us
        else:
            continue
        groups.setdefault((s.region, None), []).append(v)
        if s.pop:
            groups.setdefault((s.region, s.pop), []).append(v)
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in groups.items()}


def bootstrap_quantile(sorted_values: np.ndarray, q: float, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """`resamples` draws of the nearest-rank q-quantile of a bootstrap resample of `sorted_values`."""
    n = len(sorted_values)
    r = nearest_rank(q, n)
    u = rng.beta(r, n - r + 1, size=resamples)
    idx = np.clip(np.ceil(u * n).astype(np.int64) - 1, 0, n - 1)
    return sorted_values[idx]


def _decidable(q: float, n: int, confidence: float) -> bool:
    # A percentile with no finite order-statistic interval at this confidence (say p99 of 200 samples)
    # is mostly the sample's extreme: its bootstrap would be narrow and wrong.
    r = interval_ranks(q, n, confidence)
    return r.lo >= 1 and r.hi <= n


def compare_percentile(
    base_us: np.ndarray, cur_us: np.ndarray, pct: str, opts: Options, rng: np.random.Generator
) -> PercentileChange:
    """One percentile's change (current - baseline) with its bootstrap interval, judged."""
    q = pct_fraction(pct)
    nb, nc = len(base_us), len(cur_us)
    b = float(base_us[nearest_rank(q, nb) - 1]) / 1000 if nb else None
    c = float(cur_us[nearest_rank(q, nc) - 1]) / 1000 if nc else None
    if b is None or c is None or not _decidable(q, nb, opts.confidence) or not _decidable(q, nc, opts.confidence):
        change = None if b is None or c is None else round(c - b, 3)
        return PercentileChange(pct, b, c, change, None, None, None, nb, nc, TOO_FEW)
    diffs = (
        bootstrap_quantile(cur_us, q, rng, opts.resamples) - bootstrap_quantile(base_us, q, rng, opts.resamples)
    ) / 1000
    alpha = 1 - opts.confidence
    lo, hi = (float(x) for x in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    allowed = opts.allowed(b)
    verdict = REGRESSED if lo > allowed else IMPROVED if hi < -allowed else NO_CHANGE
    return PercentileChange(
        pct, round(b, 3), round(c, 3), round(c - b, 3), round(lo, 3), round(hi, 3), round(allowed, 3), nb, nc, verdict
    )


def _scope_verdict(changes: list[PercentileChange]) -> str:
    return _overall({ch.verdict for ch in changes})


def _overall(verdicts: set[str]) -> str:
    # Any regression decides; then any improvement; "too few samples" only when nothing was compared.
    if REGRESSED in verdicts:
        return REGRESSED
    if IMPROVED in verdicts:
        return IMPROVED
    return NO_CHANGE if NO_CHANGE in verdicts else TOO_FEW


def compare_runs(baseline: RunData, current: RunData, opts: Options | None = None) -> Comparison:
    """Compare every region (and PoP) the two runs share; IncomparableRuns when nothing can be."""
    opts = opts or Options()
    for pct in opts.percentiles:
        if pct not in PCT_KEYS:
            raise ValueError(f"unknown percentile {pct!r} (known: {', '.join(PCT_KEYS)})")
    warnings: list[str] = []
    for side, run in (("baseline", baseline), ("current", current)):
        status = run.results.verdict.status
        if status in (INVALID, INTERRUPTED):
            why = "; ".join(run.results.verdict.invalid_reasons[:2]) or run.results.run.interrupted or status
            if not opts.allow_invalid:
                raise IncomparableRuns(
                    f"the {side} run ({run.label}) is {status}: {why} (--allow-invalid to compare anyway)"
                )
            warnings.append(f"the {side} run is {status}: {why}")
    base = metric_values_us(baseline.samples, opts.metric)
    cur = metric_values_us(current.samples, opts.metric)
    b_regions = {r for r, p in base if p is None}
    c_regions = {r for r, p in cur if p is None}
    common = sorted(b_regions & c_regions)
    if not common:
        raise IncomparableRuns(
            f"no client region with {opts.metric} in both runs (baseline: {', '.join(sorted(b_regions)) or 'none'}; "
            f"current: {', '.join(sorted(c_regions)) or 'none'})"
        )
    b_rate = baseline.results.run.profile.get("rate")
    c_rate = current.results.run.profile.get("rate")
    if b_rate != c_rate:
        warnings.append(f"the runs had different base rates ({b_rate} vs {c_rate} req/s): latency depends on load")
    rng = np.random.default_rng(opts.seed)
    scopes: list[ScopeComparison] = []
    for region in common:
        pops = sorted(p for r, p in base if r == region and p is not None and (r, p) in cur)
        for pop in [None, *pops]:
            if pop is not None and len(pops) == 1:
                continue  # one PoP: the same samples as the region's own row
            key = (region, pop)
            changes = [compare_percentile(base[key], cur[key], pct, opts, rng) for pct in opts.percentiles]
            scopes.append(ScopeComparison(region, pop, changes, _scope_verdict(changes)))
    verdict = _overall({s.verdict for s in scopes})
    if verdict == TOO_FEW:
        warnings.append("no percentile had samples enough in both runs to be compared")
    return Comparison(
        baseline=baseline.label,
        current=current.label,
        metric=opts.metric,
        confidence=opts.confidence,
        resamples=opts.resamples,
        seed=opts.seed,
        tolerance_ms=opts.tolerance_ms,
        tolerance_pct=opts.tolerance_pct,
        scopes=scopes,
        only_in_baseline=sorted(b_regions - c_regions),
        only_in_current=sorted(c_regions - b_regions),
        warnings=warnings,
        verdict=verdict,
        # Nothing compared is not "nothing regressed": CI must not read it as a green light.
        exit_code={REGRESSED: EXIT_REGRESSED, TOO_FEW: EXIT_INCOMPARABLE}.get(verdict, EXIT_OK),
    )


def options_from_slo(slo: Any, **overrides: Any) -> Options:
    """Options from an SLO file's `regression` section (and its validity.confidence), then the command
    line's overrides (None: not given)."""
    section = dict(getattr(slo, "regression", None) or {})
    opts = Options(confidence=slo.validity.confidence if slo is not None else 0.99)
    if "percentiles" in section:
        opts.percentiles = tuple(section["percentiles"])
    for key in ("metric", "tolerance_ms", "tolerance_pct"):
        if key in section:
            setattr(opts, key, section[key])
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    if not math.isfinite(opts.tolerance_ms) or opts.tolerance_ms < 0 or opts.tolerance_pct < 0:
        raise ValueError("tolerances must be finite and >= 0")
    if opts.resamples < 100:
        raise ValueError("--resamples must be at least 100")
    return opts
