"""From samples to figures: per region and PoP, cold and warm apart, each percentile with its interval.

One estimator everywhere: the nearest-rank order statistic of the exact µs values (what an HDR histogram
reports, without its bucket rounding), with the order-statistic confidence interval of harness.verdict.stats.
The time series uses the same estimator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from harness.load.recorder import DROPPED, UNFINISHED, Sample
from harness.verdict.model import (
    PCT_KEYS,
    Accounting,
    Estimate,
    LatencyBlock,
    PopEvent,
    PopFigures,
    PopResult,
    RegionResult,
    Summary,
    TimeSeries,
    pct_fraction,
)
from harness.verdict.stats import nearest_rank, percentile_interval


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


def summary(values_us: Iterable[int], confidence: float = 0.99) -> Summary:
    """Count, min, mean, max and p50..p99.9 with intervals, in ms (3 decimals), of µs values."""
    v = np.sort(np.fromiter(values_us, dtype=np.int64))
    if not len(v):
        return Summary()
    pcts = {}
    for key in PCT_KEYS:
        iv = percentile_interval(v, pct_fraction(key), confidence)
        pcts[key] = Estimate(_ms(iv.value), _ms(iv.lo), _ms(iv.hi))  # type: ignore[arg-type]
    return Summary(
        count=len(v),
        min=_ms(float(v[0])),
        mean=_ms(float(v.mean())),
        max=_ms(float(v[-1])),
        confidence=confidence,
        percentiles=pcts,
    )


def nearest_rank_ms(values_us: Sequence[int], q: float) -> float | None:
    """The nearest-rank q-quantile in ms, or None without values."""
    if not values_us:
        return None
    v = sorted(values_us)
    return _ms(v[nearest_rank(q, len(v)) - 1])


def accounting(samples: Sequence[Sample], late_threshold_ms: float, planned: int | None = None) -> Accounting:
    """Every outcome counted once; lost = planned - recorded when the plan is known."""
    late_us = late_threshold_ms * 1000
    sent = [s for s in samples if s.status != DROPPED]
    ok = sum(s.ok for s in sent)
    unfinished = sum(s.status == UNFINISHED for s in sent)
    recorded = len(samples)
    return Accounting(
        planned=planned,
        recorded=recorded,
        sent=len(sent),
        ok=ok,
        errors=len(sent) - ok - unfinished,
        dropped=recorded - len(sent),
        late=sum(s.send_delay_us > late_us for s in sent),
        unfinished=unfinished,
        lost=None if planned is None else max(planned - recorded, 0),
        cold=sum(s.ok and s.cold == 1 for s in sent),
        warm=sum(s.ok and s.cold == 0 for s in sent),
    )


def latency_block(samples: Sequence[Sample], confidence: float) -> LatencyBlock:
    """Client latency of answered requests: all, warm (not known cold), cold."""
    ok = [s for s in samples if s.ok]
    return LatencyBlock(
        all=summary((s.latency_us for s in ok), confidence),
        warm=summary((s.latency_us for s in ok if s.cold != 1), confidence),
        cold=summary((s.latency_us for s in ok if s.cold == 1), confidence),
    )


def region_result(
    samples: Sequence[Sample],
    late_threshold_ms: float,
    confidence: float,
    planned: int | None = None,
    rtt_measured: bool = False,
) -> RegionResult:
    """One client region's accounting and figures."""
    c = accounting(samples, late_threshold_ms, planned)
    ok = [s for s in samples if s.ok]
    pops = {}
    for pop in sorted({s.pop for s in samples if s.pop}):
        ps = [s for s in samples if s.pop == pop]
        pops[pop] = PopFigures(
            counts=accounting(ps, late_threshold_ms),
            rtt_ms=ps[0].rtt_ms,
            rtt_source=ps[0].rtt_source,
            client_latency_ms=latency_block(ps, confidence),
        )
    bad = c.errors + c.dropped + c.unfinished
    return RegionResult(
        counts=c,
        # Dropped and unanswered arrivals are requests the user never got answered: they count as errors.
        error_rate=round(bad / c.recorded, 6) if c.recorded else 0.0,
        late_fraction=round(c.late / c.sent, 6) if c.sent else 0.0,
        processes=sorted({s.process for s in samples if s.process}),
        rtt_measured=rtt_measured,
        client_latency_ms=latency_block(samples, confidence),
        e2e_latency_ms=summary((s.e2e_us for s in ok if s.cold != 1), confidence),
        rtt_injected=any(s.rtt_injected for s in ok),
        server_total_ms=summary((s.server_total_us for s in ok if s.server_total_us > 0), confidence),
        server_inference_ms=summary((s.inference_us for s in ok if s.inference_us > 0), confidence),
        send_delay_ms=summary((max(s.send_delay_us, 1) for s in samples if s.status != DROPPED), confidence),
        server_latency_ms=None,
        pops=pops,
    )


def pop_result(
    samples: Sequence[Sample],
    late_threshold_ms: float,
    confidence: float,
    *,
    url: str,
    local: bool,
    ready_s: float | None,
    events: list[PopEvent],
) -> PopResult:
    """One PoP over every client region it served (`samples`: those it served): accounting and latency."""
    ok = [s for s in samples if s.ok]
    return PopResult(
        url=url,
        local=local,
        ready_s=ready_s,
        events=events,
        counts=accounting(samples, late_threshold_ms),
        client_regions=sorted({s.region for s in samples}),
        client_latency_ms=latency_block(samples, confidence),
        server_inference_ms=summary((s.inference_us for s in ok if s.inference_us > 0), confidence),
    )


def timeseries(samples: Sequence[Sample], bucket_s: float = 1.0) -> dict[str, TimeSeries]:
    """Per region and time bucket (by intended send time): arrivals, ok, errors, nearest-rank p50/p99."""
    out: dict[str, TimeSeries] = {}
    for region in sorted({s.region for s in samples}):
        rs = [s for s in samples if s.region == region]
        n = int(max(s.t_s for s in rs) // bucket_s) + 1
        lat: list[list[int]] = [[] for _ in range(n)]
        arrivals, errors = [0] * n, [0] * n
        for s in rs:
            i = max(int(s.t_s // bucket_s), 0)
            arrivals[i] += 1
            if s.ok:
                lat[i].append(s.latency_us)
            else:
                errors[i] += 1
        out[region] = TimeSeries(
            bucket_s=bucket_s,
            t_s=[round(i * bucket_s, 3) for i in range(n)],
            arrivals=arrivals,
            ok=[len(v) for v in lat],
            errors=errors,
            p50_ms=[nearest_rank_ms(v, 0.5) for v in lat],
            p99_ms=[nearest_rank_ms(v, 0.99) for v in lat],
        )
    return out
