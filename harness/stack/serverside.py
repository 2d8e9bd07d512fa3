"""Server-side figures of a run, computed from Prometheus: what the handlers measured, per region."""

from __future__ import annotations

import math
from typing import Any

from harness.stack.prometheus import PrometheusClient, PrometheusError

QUANTILES = (0.5, 0.9, 0.95, 0.99)
REQUESTS = "http_server_request_duration_seconds"
INFERENCE = "edgeharness_inference_duration_seconds"


def _window(seconds: float) -> str:
    return f"{max(math.ceil(seconds), 1)}s"  # PromQL durations are whole seconds here


def server_side(prom: PrometheusClient, window_s: float | None) -> dict[str, dict[str, Any]]:
    """Per region: request count, error count, and server latency and inference-time percentiles (ms)
    interpolated from the handlers' histograms; over the last `window_s`, or, with None, everything
    since the handlers started (a stack started for this run)."""

    def over(selector: str) -> str:
        # What the counters gained since the window began: now minus then, or all of it for series born
        # since. (increase() would extrapolate from the first sample and miss what came before it.)
        if window_s is None:
            return selector
        return f"(({selector}) - ({selector} offset {_window(window_s)}) or ({selector}))"

    regions: dict[str, dict[str, Any]] = {}

    def entry(region: str) -> dict[str, Any]:
        return regions.setdefault(region, {"requests": 0, "errors": 0, "latency_ms": {}, "inference_ms": {}})

    def by_region(promql: str) -> dict[str, float]:
        return prom.scalar_by(promql, "cloud_region")

    for region, count in by_region(f"sum by (cloud_region) ({over(REQUESTS + '_count')})").items():
        entry(region)["requests"] = round(count)
    failed = REQUESTS + '_count{http_response_status_code=~"5.."}'
    for region, count in by_region(f"sum by (cloud_region) ({over(failed)})").items():
        entry(region)["errors"] = round(count)
    ok = REQUESTS + '_bucket{http_response_status_code="200"}'
    for q in QUANTILES:
        key = f"p{q * 100:g}"
        for region, seconds in by_region(f"histogram_quantile({q}, sum by (le, cloud_region) ({over(ok)}))").items():
            entry(region)["latency_ms"][key] = round(seconds * 1000, 3)
        inference = over(INFERENCE + "_bucket")
        for region, seconds in by_region(f"histogram_quantile({q}, sum by (le, cloud_region) ({inference}))").items():
            entry(region)["inference_ms"][key] = round(seconds * 1000, 3)
    return regions


def try_server_side(url: str, window_s: float | None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """server_side(), or an empty result and the reason when Prometheus cannot answer."""
    try:
        return server_side(PrometheusClient(url), window_s), None
    except PrometheusError as exc:
        return {}, str(exc)
