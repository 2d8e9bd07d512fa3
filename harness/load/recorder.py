"""From raw samples to figures: per region and PoP, cold and warm apart, in HDR histograms at 1 µs.

Every load process writes its samples (µs integers) as CSV; this module merges them and computes the
percentiles reported and judged. Locust's own (rounded) statistics decide nothing here.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
HDR_MAX_US = 3_600_000_000  # an hour: nothing a run measures is longer
DROPPED = -1  # status of an arrival never sent (the outstanding limit was reached)
UNFINISHED = -2  # status of an arrival sent but unanswered when its load process stopped


@dataclass(frozen=True)
class Sample:
    """One arrival's outcome; times in µs except t_s (seconds from the run's t=0)."""

    region: str
    pop: str
    t_s: float
    send_delay_us: int
    latency_us: int
    status: int
    cold: int  # 1 cold, 0 warm, -1 unknown (no X-Cold-Start header)
    server_total_us: int
    inference_us: int
    rtt_ms: float
    rtt_source: str
    rtt_injected: int
    e2e_us: int
    error: str
    process: str = ""  # the load process that generated the arrival ("local", "worker-0", ...); "": unknown

    @property
    def ok(self) -> bool:
        """A 2xx response."""
        return 200 <= self.status < 300

    @property
    def dropped(self) -> bool:
        """Never sent: the outstanding limit was reached."""
        return self.status == DROPPED


def read_samples(out_dir: str | Path) -> list[Sample]:
    """All samples under out_dir/raw (one file per load process), sorted by intended time."""
    out: list[Sample] = []
    for path in sorted((Path(out_dir) / "raw").glob("samples-*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out.append(
                    Sample(
                        region=row["region"],
                        pop=row["pop"],
                        t_s=float(row["t_s"]),
                        send_delay_us=int(row["send_delay_us"]),
                        latency_us=int(row["latency_us"]),
                        status=int(row["status"]),
                        cold=int(row["cold"]),
                        server_total_us=int(row["server_total_us"]),
                        inference_us=int(row["inference_us"]),
                        rtt_ms=float(row["rtt_ms"]),
                        rtt_source=row["rtt_source"],
                        rtt_injected=int(row["rtt_injected"]),
                        e2e_us=int(row["e2e_us"]),
                        error=row["error"],
                        process=row.get("process") or "",
                    )
                )
    out.sort(key=lambda s: s.t_s)
    return out


def histogram(values_us: Iterable[int]) -> Any:
    """An HDR histogram (1 µs .. 1 h, 3 significant digits) of the given µs values."""
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, HDR_MAX_US, 3)
    for v in values_us:
        h.record_value(min(max(int(v), 1), HDR_MAX_US))
    return h


def summary(values_us: list[int]) -> dict[str, Any]:
    """Count, min, mean, max and p50..p99.9 in ms (3 decimals) of µs values; empty -> count 0."""
    if not values_us:
        return {"count": 0}
    h = histogram(values_us)
    out: dict[str, Any] = {
        "count": len(values_us),
        "min": round(min(values_us) / 1000, 3),
        "mean": round(sum(values_us) / len(values_us) / 1000, 3),
        "max": round(max(values_us) / 1000, 3),
    }
    for p in PERCENTILES:
        out[pct_key(p)] = round(h.get_value_at_percentile(p) / 1000, 3)
    return out


def pct_key(p: float) -> str:
    """50.0 -> "p50", 99.9 -> "p99.9"."""
    return f"p{p:g}"


def _latency_block(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    return {
        "all": summary([s.latency_us for s in ok]),
        "warm": summary([s.latency_us for s in ok if s.cold != 1]),
        "cold": summary([s.latency_us for s in ok if s.cold == 1]),
    }


def counts(samples: list[Sample], late_threshold_ms: float) -> dict[str, int]:
    """Arrival accounting: scheduled, sent, ok, errors, dropped, late, cold, warm."""
    late_us = late_threshold_ms * 1000
    sent = [s for s in samples if not s.dropped]
    return {
        "scheduled": len(samples),
        "sent": len(sent),
        "ok": sum(s.ok for s in sent),
        "errors": sum(not s.ok for s in sent),
        "dropped": len(samples) - len(sent),
        "late": sum(s.send_delay_us > late_us for s in sent),
        "cold": sum(s.ok and s.cold == 1 for s in sent),
        "warm": sum(s.ok and s.cold == 0 for s in sent),
    }


def aggregate(samples: list[Sample], late_threshold_ms: float) -> dict[str, Any]:
    """Per client region (and per PoP within it) and per PoP overall: counts and latency summaries."""
    regions: dict[str, Any] = {}
    for region in sorted({s.region for s in samples}):
        rs = [s for s in samples if s.region == region]
        c = counts(rs, late_threshold_ms)
        ok = [s for s in rs if s.ok]
        with_timing = [s for s in ok if s.server_total_us > 0]
        pops: dict[str, Any] = {}
        for pop in sorted({s.pop for s in rs if s.pop}):
            ps = [s for s in rs if s.pop == pop]
            pops[pop] = {
                "counts": counts(ps, late_threshold_ms),
                "rtt_ms": ps[0].rtt_ms,
                "rtt_source": ps[0].rtt_source,
                "client_latency_ms": _latency_block(ps),
            }
        regions[region] = {
            "counts": c,
            # Dropped arrivals are requests the user never got answered: they count as errors.
            "error_rate": round((c["errors"] + c["dropped"]) / c["scheduled"], 6) if c["scheduled"] else 0.0,
            "late_fraction": round(c["late"] / c["sent"], 6) if c["sent"] else 0.0,
            "client_latency_ms": _latency_block(rs),
            "e2e_latency_ms": {
                "warm": summary([s.e2e_us for s in ok if s.cold != 1]),
                "rtt_injected": any(s.rtt_injected for s in ok),
            },
            "server_total_ms": summary([s.server_total_us for s in with_timing]),
            "server_inference_ms": summary([s.inference_us for s in ok if s.inference_us > 0]),
            "send_delay_ms": summary([max(s.send_delay_us, 1) for s in rs if not s.dropped]),
            "pops": pops,
        }
    pops_all: dict[str, Any] = {}
    for pop in sorted({s.pop for s in samples if s.pop}):
        ps = [s for s in samples if s.pop == pop]
        ok = [s for s in ps if s.ok]
        pops_all[pop] = {
            "counts": counts(ps, late_threshold_ms),
            "client_regions": sorted({s.region for s in ps}),
            "client_latency_ms": _latency_block(ps),
            "server_inference_ms": summary([s.inference_us for s in ok if s.inference_us > 0]),
        }
    return {"regions": regions, "pops": pops_all}


def timeseries(samples: list[Sample], bucket_s: float = 1.0) -> dict[str, Any]:
    """Per region and time bucket: arrivals, ok, errors, and p50/p99 client latency (ms)."""
    import numpy as np

    out: dict[str, Any] = {}
    for region in sorted({s.region for s in samples}):
        rs = [s for s in samples if s.region == region]
        if not rs:
            continue
        n = int(max(s.t_s for s in rs) // bucket_s) + 1
        lat: list[list[int]] = [[] for _ in range(n)]
        arrivals, errors = [0] * n, [0] * n
        for s in rs:
            i = int(s.t_s // bucket_s)
            arrivals[i] += 1
            if s.ok:
                lat[i].append(s.latency_us)
            else:
                errors[i] += 1
        p50 = [round(float(np.percentile(v, 50)) / 1000, 3) if v else None for v in lat]
        p99 = [round(float(np.percentile(v, 99)) / 1000, 3) if v else None for v in lat]
        out[region] = {
            "t_s": [round(i * bucket_s, 3) for i in range(n)],
            "arrivals": arrivals,
            "ok": [len(v) for v in lat],
            "errors": errors,
            "p50_ms": p50,
            "p99_ms": p99,
        }
    return out
