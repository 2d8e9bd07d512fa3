"""Prometheus recording and alerting rules from an SLO file: per-region SLIs, burn rates, budget alerts.

The SLO file that `edgeharness run` judges a test run by also describes production: each server-side
objective becomes an SLI (the fraction of bad events per region, from the handlers' histogram
`http.server.request.duration` as the collectors export it), a burn rate (how fast the error budget of
the file's `objective` over its `window` is spent), and the multi-window, multi-burn-rate alerts of the
Google SRE workbook (chapter "Alerting on SLOs").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from harness.verdict.slo import SloSpec

REQUESTS = "http_server_request_duration_seconds"
# The SLO metric measured by the handlers' own histogram; other latency metrics (client, e2e, Server-
# Timing) exist only in a load test, so they have no production SLI.
LATENCY_METRIC = "server_latency_ms"
ERROR_METRIC = "error_rate"

ERROR_RATIO = "slo:sli_error:ratio_rate{window}"
BURN_RATE = "slo:burn_rate:rate{window}"
BUDGET_REMAINING = "slo:error_budget_remaining:ratio"
ALERT = "SloErrorBudgetBurn"


@dataclass(frozen=True)
class BurnTier:
    """Alert when both windows burn faster than `factor` times the sustainable rate."""

    long: str
    short: str
    factor: float
    severity: str


# The SRE workbook's recommendation for a 30-day window: 2 % of the budget in an hour, 5 % in six
# hours (page); 10 % in a day, 10 % in three days (ticket).
TIERS: tuple[BurnTier, ...] = (
    BurnTier("1h", "5m", 14.4, "page"),
    BurnTier("6h", "30m", 6.0, "page"),
    BurnTier("1d", "2h", 3.0, "ticket"),
    BurnTier("3d", "6h", 1.0, "ticket"),
)


class RulesError(ValueError):
    """The SLO file cannot be turned into rules; the message says why."""


@dataclass(frozen=True)
class Sli:
    """One objective for a set of regions: its bad-event ratio over a range, and its budget."""

    slo: str  # the `slo` label: "error_rate", "server_latency_ms_p99"
    selector: str  # the regions it covers, as a PromQL label matcher
    objective: float
    description: str
    bucket: float | None = None  # latency: the bucket bound that counts as good (s)
    region: str | None = None  # the one region it covers, when it has thresholds of its own

    @property
    def budget(self) -> float:
        return 1.0 - self.objective

    def error_ratio(self, window: str) -> str:
        total = f"sum by (cloud_region) (rate({REQUESTS}_count{{{self.selector}}}[{window}]))"
        if self.bucket is None:
            bad = f'{REQUESTS}_count{{{self.selector}, http_response_status_code=~"5.."}}'
            # No failed request yet means no 5xx series: zero, not "no data", for every region with traffic.
            return f"(sum by (cloud_region) (rate({bad}[{window}])) or {total} * 0)\n/\n{total}"
        ok = f'{self.selector}, http_response_status_code="200"'
        good = f"sum by (cloud_region) (rate({REQUESTS}_bucket{{{ok}, {le_matcher(self.bucket)}}}[{window}]))"
        served = f"sum by (cloud_region) (rate({REQUESTS}_count{{{ok}}}[{window}]))"
        return f"1 - (\n  {good}\n/\n  {served}\n)"


def le_matcher(bound: float) -> str:
    """Matches the bucket whatever way its bound was written: 0.01, and 1 or 1.0 (Prometheus 3 writes
    whole numbers with .0 on scrape; the collectors' exporters write them bare)."""
    if bound == int(bound):
        return f'le=~"{int(bound)}(\\\\.0)?"'
    # Plain decimal as Go's strconv.FormatFloat(b, 'f', -1, 64) writes it (0.00025, never 2.5e-04).
    return f'le="{Decimal(repr(float(bound))):f}"'


def latency_bucket(threshold_ms: float, buckets_s: Sequence[float]) -> float:
    """The largest bucket bound at or under the threshold: requests under it are surely good."""
    fitting = [b for b in buckets_s if b <= threshold_ms / 1000 + 1e-12]
    if not fitting:
        raise RulesError(
            f"{LATENCY_METRIC} threshold {threshold_ms:g} ms is under the handler's smallest latency bucket "
            f"({buckets_s[0] * 1000:g} ms): the histogram cannot tell good from bad requests there"
        )
    return max(fitting)


def handler_latency_buckets() -> tuple[float, ...]:
    from harness.handler.telemetry import LATENCY_BUCKETS_S

    return LATENCY_BUCKETS_S


def objective_for(spec: SloSpec, percentile: str | None, error_rate: float | None) -> float:
    """The file's objective, else one derived from the check: p99 -> 0.99, error_rate e -> 1 - e."""
    if spec.objective is not None:
        return spec.objective
    if percentile is not None:
        return float(percentile[1:]) / 100.0
    assert error_rate is not None
    return 1.0 - error_rate


def slis(spec: SloSpec, buckets_s: Sequence[float] | None = None) -> list[Sli]:
    """Every SLI of the file: the defaults for regions without their own threshold, then each region's."""
    buckets = tuple(buckets_s) if buckets_s is not None else handler_latency_buckets()
    # (slo label) -> {region or None (defaults): (threshold, objective, bucket)}
    table: dict[str, dict[str | None, tuple[float, float, float | None]]] = {}
    for region in [None, *sorted(spec.regions)]:
        slo = spec.defaults if region is None else spec.for_region(region)
        for pct, threshold in sorted(slo.latency.get(LATENCY_METRIC, {}).items()):
            objective = objective_for(spec, pct, None)
            table.setdefault(f"{LATENCY_METRIC}_{pct}", {})[region] = (
                threshold,
                objective,
                latency_bucket(threshold, buckets),
            )
        if slo.error_rate is not None:
            table.setdefault(ERROR_METRIC, {})[region] = (
                slo.error_rate,
                objective_for(spec, None, slo.error_rate),
                None,
            )
    out: list[Sli] = []
    for name, by_region in table.items():
        default = by_region.get(None)
        # A region states its own rule only where it differs from the defaults.
        own = {r: v for r, v in by_region.items() if r is not None and v != default}
        if default is not None:
            others = "|".join(promql_regex_literal(r) for r in sorted(own))
            selector = f"cloud_region!~{promql_string(others)}" if own else 'cloud_region=~".+"'
            out.append(
                _sli(name, selector, default, "every region" + (" but " + ", ".join(sorted(own)) if own else ""))
            )
        for region, value in sorted(own.items()):
            out.append(_sli(name, f"cloud_region={promql_string(region)}", value, region, region=region))
    for sli in out:
        if not 0 < sli.objective < 1:
            raise RulesError(f"{sli.slo}: objective {sli.objective:g} leaves no error budget; set `objective` < 1")
    return out


# RE2's metacharacters: a region name is matched as itself, whatever it holds.
_REGEX_META = frozenset("\\.+*?()|[]{}^$")


def promql_regex_literal(text: str) -> str:
    """`text` as an RE2 pattern that matches exactly it (Python's re.escape also escapes characters RE2
    refuses to see escaped, such as spaces)."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in text)


def promql_string(text: str) -> str:
    """`text` as a double-quoted PromQL string (Go's escapes, which JSON's are a subset of)."""
    return json.dumps(text, ensure_ascii=False)


def _sli(
    name: str, selector: str, value: tuple[float, float, float | None], where: str, *, region: str | None = None
) -> Sli:
    threshold, objective, bucket = value
    if bucket is None:
        text = f"{objective:.4g} of requests answered without a 5xx ({where})"
    else:
        text = f"{objective:.4g} of 200 responses within {bucket * 1000:g} ms ({where}; SLO file: {threshold:g} ms)"
    return Sli(slo=name, selector=selector, objective=objective, description=text, bucket=bucket, region=region)


def windows(spec: SloSpec) -> list[str]:
    """Every range a burn rate is recorded over: the tiers' windows and the SLO window, shortest first."""
    found = {w for tier in TIERS for w in (tier.long, tier.short)} | {spec.window}
    return sorted(found, key=duration_s)


UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_s(text: str) -> float:
    """A Prometheus duration ("1h30m", "30d") in seconds."""
    parts = re.findall(r"([0-9]+)(ms|[smhdwy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise RulesError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * UNITS_S[u] for n, u in parts)


def rule_groups(spec: SloSpec, buckets_s: Sequence[float] | None = None) -> dict[str, Any]:
    """The rule file's content: one group of recording rules, one of alerts."""
    items = slis(spec, buckets_s)
    if not items:
        raise RulesError(
            f"{spec.file or 'the SLO file'} has no objective Prometheus can measure: "
            f"give `{ERROR_METRIC}` or `{LATENCY_METRIC}` thresholds"
        )
    records: list[dict[str, Any]] = []
    for sli in items:
        # Static labels tell the rules of one SLO (and of a region with its own thresholds) apart, so no two
        # rules record the same series name and labels (promtool's duplicate-rules lint).
        labels = {"slo": sli.slo}
        if sli.region is not None:
            labels["cloud_region"] = sli.region
        for window in windows(spec):
            records.append(
                {
                    "record": ERROR_RATIO.format(window=window),
                    "expr": sli.error_ratio(window),
                    "labels": labels,
                }
            )
        for window in windows(spec):
            ratio = ERROR_RATIO.format(window=window)
            records.append(
                {
                    "record": BURN_RATE.format(window=window),
                    "expr": f'{ratio}{{slo="{sli.slo}", {sli.selector}}} / {_number(sli.budget)}',
                    "labels": labels,
                }
            )
        records.append(
            {
                "record": BUDGET_REMAINING,
                "expr": f'1 - {BURN_RATE.format(window=spec.window)}{{slo="{sli.slo}", {sli.selector}}}',
                "labels": labels,
            }
        )
    alerts = [_alert(tier, spec.window) for tier in TIERS]
    return {
        "groups": [
            {"name": "edgeharness-slo-records", "rules": records},
            {"name": "edgeharness-slo-alerts", "rules": alerts},
        ]
    }


def _alert(tier: BurnTier, window: str) -> dict[str, Any]:
    long_rate = BURN_RATE.format(window=tier.long)
    short_rate = BURN_RATE.format(window=tier.short)
    factor = _number(tier.factor)
    return {
        "alert": ALERT,
        # Both windows: the long one says the burn is significant, the short one that it is still going on
        # (so the alert resets minutes after the burn stops, not hours).
        "expr": f"{long_rate} > {factor}\nand\n{short_rate} > {factor}",
        "labels": {
            "severity": tier.severity,
            "long_window": tier.long,
            "short_window": tier.short,
            "burn_rate": factor,
        },
        "annotations": {
            "summary": "{{ $labels.cloud_region }}: {{ $labels.slo }} burns its error budget "
            f'{{{{ $value | printf "%.1f" }}}}x too fast ({tier.long} and {tier.short} above {factor}x)',
            "description": f"Burning {factor}x as fast as the objective allows spends the whole {window} error "
            f"budget in {_human(duration_s(window) / tier.factor)}.",
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line PromQL as YAML block scalars, readable in the file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _human(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"


def _number(value: float) -> str:
    return f"{value:.10g}"


def _shown(file: str) -> str:
    """The SLO file's path relative to the repository when it lies inside, so the output is the same anywhere."""
    if not file:
        return "an SLO file"
    root = Path(__file__).resolve().parents[1]
    path = Path(file).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def render(spec: SloSpec, buckets_s: Sequence[float] | None = None) -> str:
    """The rule file as text, with a header saying where it came from and what each SLI means."""
    items = slis(spec, buckets_s)
    header = [
        f"# Generated by `edgeharness slo rules` from {_shown(spec.file)}: do not edit by hand.",
        f"# Error budget: 1 - objective over {spec.window}; burn rate 1 spends it in exactly {spec.window}.",
        "# SLIs (slo label: objective):",
        *(f"#   {sli.slo}: {sli.description}" for sli in items),
    ]
    infeasible = list(
        dict.fromkeys(
            f"{sli.slo} ({tier.factor:g}x)" for sli in items for tier in TIERS if tier.factor * sli.budget > 1
        )
    )
    if infeasible:
        header.append("# Burn rates that cannot happen (the bad fraction would exceed 1), so their alerts never fire:")
        header.append("#   " + ", ".join(infeasible))
    body = yaml.dump(rule_groups(spec, buckets_s), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    return "\n".join(header) + "\n" + body


__all__ = ["TIERS", "RulesError", "Sli", "duration_s", "render", "rule_groups", "slis"]
