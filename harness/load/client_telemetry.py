"""The load generator's client-side measurements as OpenTelemetry metrics, beside the servers' own.

Each client region reports to its own regional collector (as real clients would), with `cloud.region`
set to the client region; the target PoP is an attribute, so client and server latency sit side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CLIENT_DURATION = "edgeharness.client.request.duration"
CLIENT_ARRIVALS = "edgeharness.client.arrivals"
SERVICE_NAME = "edgeharness-loadgen"


@dataclass(frozen=True)
class _Instruments:
    provider: Any
    duration: Any
    arrivals: Any


class ClientTelemetry:
    """One meter provider per client region, each exporting OTLP/HTTP to that region's collector."""

    def __init__(self, endpoints: Mapping[str, str], export_interval_s: float = 2.0, timeout_s: float = 2.0) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource

        from harness.handler.telemetry import LATENCY_BUCKETS_S, quiet_export_logs

        quiet_export_logs()
        self._regions: dict[str, _Instruments] = {}
        for region, endpoint in endpoints.items():
            exporter = OTLPMetricExporter(endpoint=f"{endpoint.rstrip('/')}/v1/metrics", timeout=timeout_s)
            provider = MeterProvider(
                metric_readers=[
                    PeriodicExportingMetricReader(
                        exporter,
                        export_interval_millis=export_interval_s * 1000,
                        export_timeout_millis=timeout_s * 1000,
                    )
                ],
                resource=Resource.create({"service.name": SERVICE_NAME, "cloud.region": region}),
                views=[
                    View(
                        instrument_name=CLIENT_DURATION,
                        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_S),
                    )
                ],
            )
            meter = provider.get_meter("edgeharness.loadgen")
            self._regions[region] = _Instruments(
                provider=provider,
                duration=meter.create_histogram(
                    CLIENT_DURATION, unit="s", description="Client-observed latency from the intended send time."
                ),
                arrivals=meter.create_counter(
                    CLIENT_ARRIVALS, unit="{arrival}", description="Scheduled arrivals by outcome: sent, late, dropped."
                ),
            )

    @classmethod
    def from_spec(cls, spec: str, regions: list[str]) -> ClientTelemetry | None:
        """`region=url,...` (one collector per client region) or one URL for all; empty: no telemetry."""
        spec = spec.strip()
        if not spec:
            return None
        if "=" not in spec.split(",", 1)[0]:
            return cls(dict.fromkeys(regions, spec))
        endpoints = dict(part.split("=", 1) for part in spec.split(",") if part.strip())
        return cls({region: endpoints[region] for region in regions if region in endpoints})

    def request(self, region: str, pop: str, latency_s: float, status: int, cold: int) -> None:
        inst = self._regions.get(region)
        if inst is None:
            return
        attrs: dict[str, Any] = {
            "edgeharness.client.region": region,
            "edgeharness.target.pop": pop or "none",
            "http.response.status_code": status,
        }
        if cold >= 0:
            attrs["faas.coldstart"] = bool(cold)
        inst.duration.record(latency_s, attrs)

    def arrival(self, region: str, outcome: str) -> None:
        inst = self._regions.get(region)
        if inst is not None:
            inst.arrivals.add(1, {"edgeharness.client.region": region, "outcome": outcome})

    def shutdown(self) -> None:
        for inst in self._regions.values():
            inst.provider.shutdown()
