"""SLO files and their checks: per-region thresholds judged with confidence intervals.

A percentile check passes when the upper end of its confidence interval is within the threshold, fails
when the lower end is above it, and is inconclusive otherwise (too few samples to tell at the SLO file's
`validity.confidence`). The file's structure is checked by a JSON Schema (with file:line messages);
rules that span fields are checked here in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.load.yamlfile import ConfigError, Document, load
from harness.verdict.model import EXIT_CODES, FAIL, INVALID, PASS, PCT_KEYS, Check, ValidityRules, pct_fraction
from harness.verdict.stats import interval_ranks, samples_to_decide

EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_INTERRUPTED = EXIT_CODES[PASS], EXIT_CODES[FAIL], EXIT_CODES[INVALID], 3
# Latency metrics an SLO may bound, each by percentile: what each one measures.
METRICS = {
    "client_latency_ms": "loopback client latency of warm requests, emulated RTT excluded",
    "e2e_latency_ms": "warm client latency plus the emulated network RTT",
    "server_inference_ms": "the handler's own inference time (Server-Timing)",
    "server_total_ms": "the handler's own total time (Server-Timing)",
    "server_latency_ms": "the handlers' request latency from Prometheus (runs with the telemetry stack)",
    "cold_start_ms": "model-level cold start: client latency of requests that met a cold PoP",
    "process_cold_start_ms": "process-level cold start: spawn to first answer, per start strategy",
}
PROM_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"

_PERCENTILES = {
    "type": "object",
    "propertyNames": {"enum": list(PCT_KEYS)},
    "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
    "minProperties": 1,
}
_REGION = {
    "type": "object",
    "properties": {
        **{m: _PERCENTILES for m in METRICS},
        "error_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        # Cost per million requests (the pricing file's currency), judged with `run --pricing FILE`.
        "cost_per_million": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
}
# Tolerances of `edgeharness compare` and `run --baseline` (harness.compare).
_REGRESSION = {
    "type": "object",
    "properties": {
        "metric": {"enum": ["client_latency_ms", "server_total_ms", "e2e_latency_ms"]},
        "percentiles": {"type": "array", "items": {"enum": list(PCT_KEYS)}, "minItems": 1},
        "tolerance_ms": {"type": "number", "minimum": 0},
        "tolerance_pct": {"type": "number", "minimum": 0},
    },
    "additionalProperties": False,
}
SLO_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "objective": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "window": {"type": "string", "pattern": PROM_DURATION},
        "defaults": _REGION,
        "regions": {"type": "object", "additionalProperties": _REGION},
        "regression": _REGRESSION,
        "validity": {
            "type": "object",
            "properties": {
                "confidence": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1},
                "min_duration_s": {"type": "number", "minimum": 0},
                "duration_tolerance_s": {"type": "number", "minimum": 0},
                "min_cold_samples": {"type": "integer", "minimum": 1},
                "max_late_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "max_unanswered_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "min_samples": {},  # refused in code with a message that says what replaced it
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


@dataclass
class RegionSlo:
    """Thresholds for one region: {metric: {percentile: ms}} and a maximum error rate."""

    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    error_rate: float | None = None
    cost_per_million: float | None = None


@dataclass
class SloSpec:
    """A parsed SLO file."""

    defaults: RegionSlo
    regions: dict[str, RegionSlo]
    validity: ValidityRules
    file: str = ""
    objective: float | None = None  # fraction of good events for burn-rate alerts (None: per check)
    window: str = "30d"
    regression: dict[str, Any] = field(default_factory=dict)  # tolerances of `edgeharness compare`

    def for_region(self, region: str) -> RegionSlo:
        """The defaults overlaid with the region's own thresholds."""
        own = self.regions.get(region)
        merged = RegionSlo(
            {k: dict(v) for k, v in self.defaults.latency.items()},
            self.defaults.error_rate,
            self.defaults.cost_per_million,
        )
        if own:
            for metric, pcts in own.latency.items():
                merged.latency.setdefault(metric, {}).update(pcts)
            if own.error_rate is not None:
                merged.error_rate = own.error_rate
            if own.cost_per_million is not None:
                merged.cost_per_million = own.cost_per_million
        return merged


def slo_dir() -> Path:
    """Where the shipped SLO files live."""
    return Path(__file__).resolve().parents[2] / "loadtests" / "slo"


def load_slo(path: str | Path | None = None) -> SloSpec:
    """Load and check an SLO file (default loadtests/slo/default.yaml, or a shipped name such as
    `lenient`); errors name file and line."""
    p = Path(path) if path else slo_dir() / "default.yaml"
    if path and not p.exists() and (slo_dir() / f"{path}.yaml").exists():
        p = slo_dir() / f"{path}.yaml"
    return parse_slo(load(p))


def _region_slo(data: dict[str, Any] | None) -> RegionSlo:
    out = RegionSlo()
    for metric, value in (data or {}).items():
        if metric == "error_rate":
            out.error_rate = float(value)
        elif metric == "cost_per_million":
            out.cost_per_million = float(value)
        else:
            out.latency[metric] = {pct: float(ms) for pct, ms in value.items()}
    return out


def parse_slo(doc: Document) -> SloSpec:
    """Check an SLO document; every error carries the file and line."""
    if not isinstance(doc.data, dict):
        raise doc.error("an SLO file must be a mapping with `defaults`, `regions`, `validity`")
    for key in ("defaults", "regions", "validity"):
        if key in doc.data and doc.data[key] is None:
            doc.data[key] = {}  # an empty section (`regions:` followed by comments) means none
    raw_v = doc.data.get("validity") or {}
    if isinstance(raw_v, dict) and "min_samples" in raw_v:
        raise doc.error(
            "validity.min_samples is gone: a percentile is now claimed with a confidence interval, so the "
            "samples it needs follow from the data; delete min_samples (and set validity.confidence, default "
            "0.99, to choose the level)",
            "validity",
            "min_samples",
        )
    doc.validate(SLO_SCHEMA)
    data = doc.data
    validity = ValidityRules(**{k: (int(v) if k == "min_cold_samples" else float(v)) for k, v in raw_v.items()})
    defaults = _region_slo(data.get("defaults"))
    regions = {str(name): _region_slo(value) for name, value in (data.get("regions") or {}).items()}
    spec = SloSpec(
        defaults=defaults,
        regions=regions,
        validity=validity,
        file=doc.file,
        objective=float(data["objective"]) if "objective" in data else None,
        window=str(data.get("window", "30d")),
        regression=dict(data.get("regression") or {}),
    )
    # Cross-field rule: a region listed must say something. (An `objective` stricter than error_rate is
    # allowed: production alerts may hold a service to more than one load test's pass mark.)
    for name, own in regions.items():
        if not own.latency and own.error_rate is None and own.cost_per_million is None:
            raise doc.error(f"region {name!r} lists no thresholds (remove it, or give it some)", "regions", name)
    return spec


def check_name(region: str, metric: str, percentile: str | None, threshold: float, strategy: str | None) -> str:
    """`nairobi client_latency_ms p50 <= 10`."""
    what = f"{metric} {percentile}" if percentile else metric
    if strategy:
        what += f" [{strategy}]"
    return f"{region} {what} <= {threshold:g}"


def judge_percentile(
    region: str,
    metric: str,
    pct: str,
    threshold: float,
    values_ms: list[float],
    confidence: float,
    strategy: str | None = None,
) -> Check:
    """pass when the interval's upper end is within the threshold, fail when its lower end is over it,
    inconclusive otherwise (with the sample count that would decide it at the present rate)."""
    name = check_name(region, metric, pct, threshold, strategy)
    n = len(values_ms)
    if n == 0:
        return Check(
            name,
            region,
            metric,
            pct,
            threshold,
            None,
            None,
            None,
            0,
            "no_data",
            strategy=strategy,
            reason=f"{name}: no samples",
        )
    v = sorted(values_ms)
    q = pct_fraction(pct)
    r = interval_ranks(q, n, confidence)
    measured = v[r.point - 1]
    lo = v[r.lo - 1] if r.lo >= 1 else None
    hi = v[r.hi - 1] if r.hi <= n else None
    check = Check(name, region, metric, pct, threshold, measured, lo, hi, n, "inconclusive", strategy=strategy)
    if hi is not None and hi <= threshold:
        check.status = "pass"
    elif lo is not None and lo > threshold:
        check.status = "fail"
    else:
        above = sum(x > threshold for x in v)
        check.needed_samples = samples_to_decide(q, n, above, confidence)
        if check.needed_samples is None:
            check.reason = (
                f"{name}: {pct} is at the threshold ({above} of {n} samples above it); more samples at this "
                "rate would not decide it"
            )
        else:
            more = check.needed_samples - n
            check.reason = (
                f"{name}: {pct} needs about {more} more samples at this rate "
                f"({check.needed_samples} in all would have sufficed, has {n}; {confidence:.0%} confidence)"
            )
    return check


def judge_error_rate(region: str, limit: float, rate: float, recorded: int) -> Check:
    """The error rate is counted, not estimated: compared as is."""
    name = check_name(region, "error_rate", None, limit, None)
    if recorded == 0:
        return Check(
            name,
            region,
            "error_rate",
            None,
            limit,
            None,
            None,
            None,
            0,
            "no_data",
            unit="fraction",
            reason=f"{region}: no requests were recorded",
        )
    status = "pass" if rate <= limit else "fail"
    return Check(name, region, "error_rate", None, limit, rate, None, None, recorded, status, unit="fraction")


__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_PASS",
    "METRICS",
    "SLO_SCHEMA",
    "ConfigError",
    "RegionSlo",
    "SloSpec",
    "judge_error_rate",
    "judge_percentile",
    "load_slo",
    "parse_slo",
]
