"""What the serving process hands to its telemetry: plain record types, with no OpenTelemetry import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLASSIFY_ROUTE = "/v1/classify"  # the route whose requests a RequestRecord describes


@dataclass(frozen=True)
class TelemetrySettings:
    service_name: str
    service_version: str
    region: str
    pop: str
    otlp_endpoint: str = ""  # OTLP/HTTP base URL; empty: no export
    enabled: bool = True
    export_interval_s: float = 5.0
    export_timeout_s: float = 2.0
    span_queue_size: int = 4096


class RequestRecord(NamedTuple):
    """What one classify request did: gathered on its path, recorded after its response."""

    start_ns: int  # wall clock, nanoseconds
    duration_s: float
    status: int
    error_code: str | None
    queue_s: float | None  # from admission until a worker took it up; None when never admitted
    cold_kind: str | None  # "process" (first request of the process), "model" (a load), or None
    model_name: str | None
    model_version: str | None
    marks: list[tuple[str, int, int]]  # (stage, start_ns, end_ns)
    traceparent: str | None
    tracestate: str | None


class InitEvent(NamedTuple):
    """A process start or a model load, with its phases."""

    attrs: dict[str, str]
    total_ms: float
    phases_ms: dict[str, float]


class ModelLoaded(NamedTuple):
    loaded: bool


TelemetryItem = RequestRecord | InitEvent | ModelLoaded


class Scrape(NamedTuple):
    payload: bytes
    content_type: str


class TelemetryUnavailable(Exception):
    """The telemetry process cannot answer (it died, or is restarting)."""
