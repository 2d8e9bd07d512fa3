"""Turns the serving process's records into spans and metrics, with the SDK's public API."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from harness.handler.telemetry.records import (
    CLASSIFY_ROUTE,
    InitEvent,
    ModelLoaded,
    RequestRecord,
    TelemetryItem,
)
from harness.handler.telemetry.sdk import Telemetry

STAGES = ("decode", "preprocess", "inference", "postprocess")
SERVER_SPAN = f"POST {CLASSIFY_ROUTE}"


class RequestRecorder:
    """Records items into one `Telemetry`: a request's server span, its stage spans and its metrics."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.instruments = telemetry.instruments
        self._propagator = TraceContextTextMapPropagator()
        self._base_attrs = {"http.request.method": "POST", "http.route": CLASSIFY_ROUTE}
        self._stage_attrs = {name: {"edgeharness.stage": name} for name in STAGES}

    def record(self, item: TelemetryItem) -> None:
        if isinstance(item, RequestRecord):
            self.record_request(item)
        elif isinstance(item, InitEvent):
            self.record_init(item)
        elif isinstance(item, ModelLoaded):
            self.telemetry.set_model_loaded(item.loaded)
        else:
            raise TypeError(f"not a telemetry item: {type(item).__name__}")

    def record_init(self, event: InitEvent) -> None:
        ins = self.instruments
        ins.init_duration.record(event.total_ms / 1000, event.attrs)
        for phase, ms in event.phases_ms.items():
            ins.init_phase_duration.record(ms / 1000, {**event.attrs, "edgeharness.init.phase": phase})

    def record_request(self, rec: RequestRecord) -> None:
        """The request's server span, its stage spans and its metrics, from the marks taken on the way."""
        attrs: dict[str, Any] = {
            **self._base_attrs,
            "http.response.status_code": rec.status,
            "faas.coldstart": rec.cold_kind is not None,
        }
        if rec.error_code:
            attrs["error.type"] = rec.error_code
        ctx = None
        telemetry = self.telemetry
        if telemetry.tracing and telemetry.span_room(1 + len(rec.marks)):
            ctx = self._spans(rec, attrs)
        # In the server span's context, the request histogram's measurement carries it as an exemplar.
        self.instruments.request_duration.record(rec.duration_s, attrs, context=ctx)
        ins = self.instruments
        if rec.error_code == "overloaded":
            ins.shed_requests.add(1)
        if rec.queue_s is not None:
            ins.queue_duration.record(rec.queue_s)
        if rec.cold_kind is not None:
            ins.coldstarts.add(1, {"edgeharness.coldstart.kind": rec.cold_kind})
        for name, start_ns, end_ns in rec.marks:
            ins.stage_duration.record((end_ns - start_ns) / 1e9, self._stage_attrs[name])
            if name == "inference" and rec.model_name is not None:
                ins.inference_duration.record((end_ns - start_ns) / 1e9, {"edgeharness.model.name": rec.model_name})

    def _spans(self, rec: RequestRecord, attrs: dict[str, Any]) -> Any:
        span_attrs = {**attrs, "url.path": CLASSIFY_ROUTE}
        if rec.model_name is not None:
            span_attrs["edgeharness.model.name"] = rec.model_name
            span_attrs["edgeharness.model.version"] = rec.model_version
        parent = None
        if rec.traceparent is not None:
            carrier = {"traceparent": rec.traceparent}
            if rec.tracestate is not None:
                carrier["tracestate"] = rec.tracestate
            parent = self._propagator.extract(carrier)
        tracer = self.telemetry.tracer
        span = tracer.start_span(
            SERVER_SPAN, parent, kind=SpanKind.SERVER, attributes=span_attrs, start_time=rec.start_ns
        )
        if rec.status >= 500:
            span.set_status(Status(StatusCode.ERROR, rec.error_code))
        ctx = trace.set_span_in_context(span)
        for name, start_ns, end_ns in rec.marks:
            tracer.start_span(name, ctx, start_time=start_ns).end(end_time=end_ns)
        span.end(end_time=rec.start_ns + int(rec.duration_s * 1e9))
        return ctx

    def count_dropped(self, n: int, signal: str, reason: str) -> None:
        self.telemetry.count_dropped(n, signal, reason)
