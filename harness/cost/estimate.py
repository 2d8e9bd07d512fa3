"""A run's cost under each pricing plan: per region, the cost per million requests and per day at the rate
the run measured; for the account (every region together), per day with the free tier and monthly fee.

Billed requests are those the server answered (any HTTP status); server time per request is the
handler's Server-Timing `total` (wall time in the handler), which stands in for CPU time: an upper bound
when the handler waits, exact for a CPU-bound one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.cost.pricing import DAYS_PER_MONTH, PricePlan, Pricing
from harness.load.recorder import Sample
from harness.verdict.model import FAIL, INCONCLUSIVE, INTERRUPTED, INVALID, PASS, Check, Results

SECONDS_PER_DAY = 86_400


@dataclass
class PlanCost:
    """One region under one plan; None: the plan bills server time and the run measured none."""

    per_million: float | None  # marginal: beyond the free tier, without the monthly fee
    per_day: float | None  # marginal, at the region's measured rate


@dataclass
class RegionCost:
    """What one client region's traffic measured, and what it costs under each plan."""

    requests: int
    rate_rps: float
    timed_requests: int  # requests that carried Server-Timing total
    server_ms_mean: float | None
    client_p50_ms: float | None
    plans: dict[str, PlanCost]


@dataclass
class AccountCost:
    """Every region together under one plan, with its free tier and monthly fee."""

    requests_per_day: float
    per_day: float | None
    per_month: float | None
    per_million: float | None  # effective: the month's bill over its requests


@dataclass
class PlanInfo:
    """Where a plan's prices come from."""

    source: str
    date: str
    example: bool
    description: str


@dataclass
class CostReport:
    """The cost section (written as cost.json)."""

    schema: str = field(default="edgeharness.cost/1", kw_only=True)
    pricing_file: str
    currency: str
    duration_s: float
    basis: str
    plans: dict[str, PlanInfo]
    regions: dict[str, RegionCost]
    account: dict[str, AccountCost]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        from harness.verdict.typed import to_json

        return to_json(self)


def cost_schema() -> dict[str, Any]:
    """The JSON Schema of cost.json (`edgeharness schema cost`)."""
    from harness.verdict.typed import json_schema

    return json_schema(CostReport, "urn:edgeharness:cost:1", "edgeharness cost", CostReport.schema)


BASIS = (
    "billed requests: answered by the server (any status); server time: the handler's Server-Timing total per "
    "request (wall time, standing in for CPU time); rate: billed requests over the run's measured span"
)


def _billed_ms(ms: float, granularity: float) -> float:
    return math.ceil(ms / granularity - 1e-9) * granularity if granularity > 0 else ms


def time_price_per_million(plan: PricePlan, billed_ms_mean: float) -> float:
    """The server-time part of a million requests' cost at this mean billed time per request."""
    return (
        plan.per_million_cpu_ms * billed_ms_mean  # a million requests use mean x 1e6 CPU-ms
        + plan.per_gb_second * plan.memory_gb * billed_ms_mean / 1000 * 1e6
    )


def estimate(results: Results, samples: Sequence[Sample], pricing: Pricing) -> CostReport:
    """Price every region of the run under every plan of `pricing`."""
    duration = results.run.duration_s or results.run.planned_duration_s or 0.0
    notes: list[str] = []
    regions: dict[str, RegionCost] = {}
    usage: dict[str, dict[str, float | None]] = {name: {"requests": 0.0, "ms": 0.0} for name in pricing.plans}
    by_region: dict[str, list[Sample]] = {}
    for s in samples:
        by_region.setdefault(s.region, []).append(s)
    for region in sorted(results.regions):
        billed = [s for s in by_region.get(region, []) if s.status > 0]
        timed = [s.server_total_us / 1000 for s in billed if s.server_total_us > 0]
        rate = len(billed) / duration if duration > 0 else 0.0
        plans: dict[str, PlanCost] = {}
        for name, plan in pricing.plans.items():
            if plan.bills_time and not timed:
                plans[name] = PlanCost(None, None)
                usage[name]["ms"] = None
                continue
            billed_mean = (
                sum(_billed_ms(ms, plan.billing_granularity_ms) for ms in timed) / len(timed) if timed else 0.0
            )
            per_million = plan.per_million_requests + time_price_per_million(plan, billed_mean)
            plans[name] = PlanCost(round(per_million, 6), round(per_million * rate * SECONDS_PER_DAY / 1e6, 6))
            usage[name]["requests"] = (usage[name]["requests"] or 0.0) + rate * SECONDS_PER_DAY
            if usage[name]["ms"] is not None:
                usage[name]["ms"] = usage[name]["ms"] + rate * SECONDS_PER_DAY * billed_mean  # type: ignore[operator]
        if billed and not timed:
            notes.append(
                f"{region}: no Server-Timing total in its answers: plans that bill server time cannot price it"
            )
        regions[region] = RegionCost(
            requests=len(billed),
            rate_rps=round(rate, 3),
            timed_requests=len(timed),
            server_ms_mean=round(sum(timed) / len(timed), 3) if timed else None,
            client_p50_ms=results.regions[region].client_latency_ms.warm.value("p50"),
            plans=plans,
        )
    account = {name: _account(plan, usage[name]) for name, plan in pricing.plans.items()}
    for name, plan in pricing.plans.items():
        if plan.example:
            notes.append(f"plan {name}: example prices (made-up round numbers), not a provider's")
    return CostReport(
        pricing_file=pricing.file,
        currency=pricing.currency,
        duration_s=duration,
        basis=BASIS,
        plans={n: PlanInfo(p.source, p.date, p.example, p.description) for n, p in pricing.plans.items()},
        regions=regions,
        account=account,
        notes=notes,
    )


def _account(plan: PricePlan, usage: dict[str, float | None]) -> AccountCost:
    requests_day = usage["requests"] or 0.0
    ms_day = usage["ms"]
    if ms_day is None:
        return AccountCost(round(requests_day, 1), None, None, None)
    month_requests = requests_day * DAYS_PER_MONTH
    month_ms = ms_day * DAYS_PER_MONTH
    month_gbs = month_ms / 1000 * plan.memory_gb
    bill = (
        plan.monthly_fee
        + max(0.0, month_requests - plan.free.requests) / 1e6 * plan.per_million_requests
        + max(0.0, month_ms - plan.free.cpu_ms) / 1e6 * plan.per_million_cpu_ms
        + max(0.0, month_gbs - plan.free.gb_seconds) * plan.per_gb_second
    )
    per_million = bill / (month_requests / 1e6) if month_requests else None
    return AccountCost(
        round(requests_day, 1),
        round(bill / DAYS_PER_MONTH, 6),
        round(bill, 6),
        None if per_million is None else round(per_million, 6),
    )


def cost_checks(report: CostReport, slo: Any) -> list[Check]:
    """`cost_per_million` bounds of the SLO file, per region and plan: the marginal cost per million
    requests is computed, not estimated, so it is compared as is (no interval)."""
    checks: list[Check] = []
    for region, rc in report.regions.items():
        limit = slo.for_region(region).cost_per_million
        if limit is None:
            continue
        for plan, pc in rc.plans.items():
            name = f"{region} cost_per_million [{plan}] <= {limit:g}"
            if pc.per_million is None:
                reason = f"{name}: the plan bills server time and no answer carried Server-Timing total"
                checks.append(
                    Check(name, region, "cost_per_million", None, limit, None, None, None, rc.requests, INCONCLUSIVE,
                          unit=report.currency, strategy=plan, reason=reason)
                )  # fmt: skip
                continue
            status = PASS if pc.per_million <= limit else FAIL
            checks.append(
                Check(name, region, "cost_per_million", None, limit, pc.per_million, None, None, rc.requests, status,
                      unit=report.currency, strategy=plan, reason=f"{name}: marginal cost, computed (no interval)")
            )  # fmt: skip
    return checks


def add_checks(results: Results, checks: list[Check]) -> None:
    """Add checks to the verdict and decide it again with the verdict's own precedence (model.decide)."""
    from harness.verdict.model import EXIT_CODES, decide

    v = results.verdict
    v.checks.extend(checks)
    v.failed.extend(c.name for c in checks if c.status == FAIL)
    v.inconclusive_reasons.extend(c.reason for c in checks if c.status == INCONCLUSIVE)
    v.status = decide(
        interrupted=v.status == INTERRUPTED,
        invalid=v.status == INVALID,
        failed=bool(v.failed),
        inconclusive=bool(v.inconclusive_reasons),
    )
    v.exit_code = EXIT_CODES[v.status]
