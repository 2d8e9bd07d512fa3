"""SLO files and the verdict: per-region thresholds, validity rules (MLPerf LoadGen style), exit codes.

An invalid run (too short, too few samples for a claimed percentile, a generator that fell behind) is
reported as invalid and exits 2, whatever its checks say; otherwise any failed check exits 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.load.yamlfile import ConfigError, Document, load

EXIT_PASS, EXIT_FAIL, EXIT_INVALID = 0, 1, 2
PCT_KEYS = ("p50", "p90", "p95", "p99", "p99.9")
# Latency metrics an SLO may bound, each by percentile; where the figures live in a region's results.
METRICS = {
    "client_latency_ms": ("client_latency_ms", "warm"),  # loopback client latency, emulated RTT excluded
    "e2e_latency_ms": ("e2e_latency_ms", "warm"),  # client latency plus the emulated network RTT
    "server_inference_ms": ("server_inference_ms", None),  # the handler's own inference time
    "server_total_ms": ("server_total_ms", None),
    # The handlers' own request latency from Prometheus; present only in runs with the telemetry stack.
    "server_latency_ms": ("server_latency_ms", None),
    "cold_start_ms": ("client_latency_ms", "cold"),  # client latency of requests that met a cold PoP
}
DEFAULT_MIN_SAMPLES = {"p50": 100, "p90": 100, "p95": 200, "p99": 1000, "p99.9": 10000}


@dataclass
class Validity:
    """The rules a run must meet for its percentiles to mean anything."""

    min_duration_s: float = 30.0
    min_samples: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIN_SAMPLES))
    min_cold_samples: int = 5
    max_late_fraction: float = 0.05


@dataclass
class RegionSlo:
    """Thresholds for one region: {metric: {percentile: ms}} and a maximum error rate."""

    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    error_rate: float | None = None


@dataclass
class SloSpec:
    """A parsed SLO file."""

    defaults: RegionSlo
    regions: dict[str, RegionSlo]
    validity: Validity
    file: str = ""
    # For `edgeharness slo rules`: the fraction of good events (None: derived per check) and its window.
    objective: float | None = None
    window: str = "30d"

    def for_region(self, region: str) -> RegionSlo:
        """The defaults overlaid with the region's own thresholds."""
        own = self.regions.get(region)
        merged = RegionSlo({k: dict(v) for k, v in self.defaults.latency.items()}, self.defaults.error_rate)
        if own:
            for metric, pcts in own.latency.items():
                merged.latency.setdefault(metric, {}).update(pcts)
            if own.error_rate is not None:
                merged.error_rate = own.error_rate
        return merged


def slo_dir() -> Path:
    """Where the shipped SLO files live."""
    return Path(__file__).resolve().parents[2] / "loadtests" / "slo"


def load_slo(path: str | Path | None = None) -> SloSpec:
    """Load and check an SLO file (default loadtests/slo/default.yaml); errors name file and line."""
    p = Path(path) if path else slo_dir() / "default.yaml"
    if path and not p.exists() and (slo_dir() / f"{path}.yaml").exists():
        p = slo_dir() / f"{path}.yaml"
    return parse_slo(load(p))


def _threshold(doc: Document, value: Any, *path: str | int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise doc.error(f"threshold must be a positive number, got {value!r}", *path)
    return float(value)


def _region_slo(doc: Document, data: Any, *path: str) -> RegionSlo:
    if not isinstance(data, dict):
        raise doc.error("expected a mapping of metric to thresholds", *path)
    out = RegionSlo()
    for metric, value in data.items():
        if metric == "error_rate":
            rate = _threshold(doc, value, *path, metric)
            if rate > 1:
                raise doc.error("error_rate is a fraction in (0, 1]", *path, metric)
            out.error_rate = rate
        elif metric in METRICS:
            if not isinstance(value, dict) or not value:
                raise doc.error(f"{metric} needs percentiles, e.g. {{p50: 10, p99: 50}}", *path, metric)
            for pct, ms in value.items():
                if pct not in PCT_KEYS:
                    raise doc.error(f"unknown percentile {pct!r} (one of {', '.join(PCT_KEYS)})", *path, metric, pct)
                out.latency.setdefault(metric, {})[pct] = _threshold(doc, ms, *path, metric, pct)
        else:
            known = ", ".join([*METRICS, "error_rate"])
            raise doc.error(f"unknown SLO metric {metric!r} (one of {known})", *path, metric)
    return out


def parse_slo(doc: Document) -> SloSpec:
    """Check an SLO document; every error carries the file and line."""
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("an SLO file must be a mapping with `defaults`, `regions`, `validity`")
    for key in data:
        if key not in ("defaults", "regions", "validity", "description", "objective", "window"):
            raise doc.error(f"unknown key `{key}` (defaults, regions, validity, description, objective, window)", key)
    objective = data.get("objective")
    if objective is not None and (isinstance(objective, bool) or not isinstance(objective, int | float)
                                  or not 0 < objective < 1):  # fmt: skip
        raise doc.error(f"objective is the fraction of good events, in (0, 1); got {objective!r}", "objective")
    window = data.get("window", "30d")
    if not isinstance(window, str) or not re.fullmatch(r"([0-9]+(ms|[smhdwy]))+", window):
        raise doc.error(f"window is a Prometheus duration such as 30d or 4w; got {window!r}", "window")
    defaults = _region_slo(doc, data.get("defaults") or {}, "defaults")
    regions: dict[str, RegionSlo] = {}
    raw_regions = data.get("regions") or {}
    if not isinstance(raw_regions, dict):
        raise doc.error("`regions` maps region name to thresholds", "regions")
    for name, value in raw_regions.items():
        regions[str(name)] = _region_slo(doc, value, "regions", name)
    validity = Validity()
    raw_v = data.get("validity") or {}
    if not isinstance(raw_v, dict):
        raise doc.error("`validity` must be a mapping", "validity")
    for key, value in raw_v.items():
        if key == "min_samples":
            if not isinstance(value, dict):
                raise doc.error("validity.min_samples maps percentile to a count", "validity", key)
            for pct, n in value.items():
                if pct not in PCT_KEYS or not isinstance(n, int) or n < 1:
                    raise doc.error(
                        f"validity.min_samples: {pct!r}: {n!r} is not a percentile and count", "validity", key, pct
                    )
                validity.min_samples[pct] = n
        elif key in ("min_duration_s", "max_late_fraction"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise doc.error(f"validity.{key} must be a non-negative number", "validity", key)
            setattr(validity, key, float(value))
        elif key == "min_cold_samples":
            if not isinstance(value, int) or value < 1:
                raise doc.error("validity.min_cold_samples must be a positive integer", "validity", key)
            validity.min_cold_samples = value
        else:
            raise doc.error(f"unknown validity rule `{key}`", "validity", key)
    return SloSpec(defaults=defaults, regions=regions, validity=validity, file=doc.file,
                   objective=None if objective is None else float(objective), window=window)  # fmt: skip


@dataclass
class Check:
    """One SLO check: a threshold, the measured value and the outcome."""

    region: str
    metric: str
    percentile: str | None
    threshold: float
    measured: float | None
    samples: int
    required_samples: int
    status: str  # pass | fail | insufficient (invalidates the run) | not_observed (too few cold starts, unclaimed)
    unit: str = "ms"

    @property
    def name(self) -> str:
        """`nairobi client_latency_ms p50 < 10`."""
        what = f"{self.metric} {self.percentile}" if self.percentile else self.metric
        return f"{self.region} {what} <= {self.threshold:g}"


def required_samples(pct: str, validity: Validity) -> int:
    """Samples a region needs before `pct` may be claimed: the file's table, else 10 beyond the percentile."""
    q = float(pct[1:]) / 100.0
    return validity.min_samples.get(pct, math.ceil(10 / (1 - q)))


def evaluate(spec: SloSpec, figures: dict[str, Any], *, duration_s: float, expects_cold_starts: bool) -> dict[str, Any]:
    """Judge a run: every check, the validity rules, and the verdict with its exit code."""
    checks: list[Check] = []
    problems: list[str] = []
    v = spec.validity
    if duration_s < v.min_duration_s:
        problems.append(f"run lasted {duration_s:g} s, under the minimum of {v.min_duration_s:g} s")
    for region, fig in figures["regions"].items():
        slo = spec.for_region(region)
        late = fig.get("late_fraction", 0.0)
        if late > v.max_late_fraction:
            problems.append(
                f"{region}: {late:.1%} of sends were late (max {v.max_late_fraction:.1%}): "
                "the load generator fell behind its schedule"
            )
        for metric, pcts in slo.latency.items():
            block, sub = METRICS[metric]
            if block not in fig:
                continue  # measured only by some runs (server_latency_ms needs --stack): nothing to judge
            summ = fig.get(block, {})
            summ = summ.get(sub, {}) if sub else summ
            n = int(summ.get("count", 0))
            for pct, threshold in sorted(pcts.items(), key=lambda kv: PCT_KEYS.index(kv[0])):
                cold = metric == "cold_start_ms"
                need = v.min_cold_samples if cold else required_samples(pct, v)
                measured = summ.get(pct)
                if cold and n < need and not expects_cold_starts:
                    # A profile that does not aim at cold starts meets few (each PoP's first request):
                    # too few to judge, and no reason to invalidate the run; reported as such.
                    status = "not_observed"
                elif n < need or measured is None:
                    status = "insufficient"
                    problems.append(f"{region}: {metric} {pct} needs {need} samples, has {n}")
                else:
                    status = "pass" if measured <= threshold else "fail"
                checks.append(Check(region, metric, pct, threshold, measured, n, need, status))
        if slo.error_rate is not None:
            scheduled = fig["counts"]["scheduled"]
            rate = fig.get("error_rate", 0.0)
            status = "pass" if rate <= slo.error_rate else "fail"
            if scheduled == 0:
                status = "insufficient"
                problems.append(f"{region}: no requests were scheduled")
            checks.append(
                Check(region, "error_rate", None, slo.error_rate, rate, scheduled, 1, status, unit="fraction")
            )
    failed = [c for c in checks if c.status == "fail"]
    if problems:
        status, code = "invalid", EXIT_INVALID
    elif failed:
        status, code = "fail", EXIT_FAIL
    else:
        status, code = "pass", EXIT_PASS
    return {
        "status": status,
        "exit_code": code,
        "valid": not problems,
        "invalid_reasons": problems,
        "failed": [c.name for c in failed],
        "checks": [asdict(c) | {"name": c.name} for c in checks],
        "slo_file": spec.file,
        "validity_rules": asdict(v),
    }


__all__ = ["EXIT_FAIL", "EXIT_INVALID", "EXIT_PASS", "ConfigError", "SloSpec", "evaluate", "load_slo"]
