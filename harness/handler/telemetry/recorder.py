"""Turns what requests left behind (`telemetry_link`'s items) into spans and metrics.

`RequestRecorder` does the recording wherever the SDK lives: in the telemetry process
(`telemetry_worker`), or in the handler's own process (`InProcessTelemetry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from harness.handler.telemetry.records import (
    CLASSIFY_ROUTE,
    InitEvent,
    ModelLoaded,
    RequestRecord,
    Scrape,
    TelemetryItem,
    TelemetrySettings,
)
from harness.handler.telemetry.sdk import Telemetry
from harness.handler.telemetry.spans import span_in_context

STAGES = ("decode", "preprocess", "inference", "postprocess")
EXEMPLAR_INTERVAL_NS = 10_000_000


class RequestRecorder:
    """Records items into one `Telemetry`: a request's server span, its stage spans and its metrics."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.instruments = telemetry.instruments
        self._last_exemplar_ns = 0
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
        spans = self.telemetry.spans
        ctx = None
        if spans is not None:
            span_attrs = {**attrs, "url.path": CLASSIFY_ROUTE}
            if rec.model_name is not None:
                span_attrs["edgeharness.model.name"] = rec.model_name
                span_attrs["edgeharness.model.version"] = rec.model_version
            parent = None
            if rec.traceparent is not None:
                carrier = {"traceparent": rec.traceparent}
                if rec.tracestate is not None:
                    carrier["tracestate"] = rec.tracestate
                parent = self.telemetry.extract_context(carrier)
            span = spans.root(
                f"POST {CLASSIFY_ROUTE}",
                parent,
                kind=SpanKind.SERVER,
                start_ns=rec.start_ns,
                end_ns=rec.start_ns + int(rec.duration_s * 1e9),
                attributes=span_attrs,
                status=Status(StatusCode.ERROR, rec.error_code) if rec.status >= 500 else None,
            )
            if span is not None:
                spans.children(span, rec.marks)
                ctx = span_in_context(span)
        # The request histogram is recorded in the span's context, so its exemplars link to this trace;
        # the others carry none (span metrics have them too). An exemplar has a cost, and the SDK
        # keeps only the latest per bucket until the next export, so at most one request per
        # EXEMPLAR_INTERVAL_NS offers one: every request at light load, about a third at 300 req/s.
        if ctx is not None and rec.start_ns - self._last_exemplar_ns >= EXEMPLAR_INTERVAL_NS:
            self._last_exemplar_ns = rec.start_ns
        else:
            ctx = None
        self.instruments.request_duration.record(rec.duration_s, attrs, context=ctx)
        self._record_metrics(rec)

    def _record_metrics(self, rec: RequestRecord) -> None:
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

    def count_dropped(self, n: int, signal: str, reason: str) -> None:
        self.instruments.telemetry_dropped.add(n, {"signal": signal, "reason": reason})

    def scrape(self) -> Scrape:
        return Scrape(generate_latest(self.telemetry.registry), CONTENT_TYPE_LATEST)


class InProcessTelemetry:
    """Records on a thread of the handler's own process (`DeferredRecorder`): spans can be inspected in
    memory (`add_span_processor`), at the price of sharing the serving process's GIL."""

    def __init__(self, settings: TelemetrySettings) -> None:
        self.telemetry = Telemetry(settings)
        self.instance_id = self.telemetry.instance_id
        self.recorder = RequestRecorder(self.telemetry)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self.telemetry.add_span_processor(processor)

    def start(self, active: Callable[[], int], queued: Callable[[], int], idle: Callable[[], bool]) -> None:
        self.telemetry.observe_load(active, queued)
        self.telemetry.defer(self.recorder.record, idle=idle)

    def launch(self) -> None:
        pass  # the recorder's thread started with `start`: it costs nothing until there is work

    def submit(self, item: TelemetryItem) -> None:
        deferred = self.telemetry.deferred
        if deferred is not None:
            deferred.submit(item)
        else:
            self.recorder.record(item)

    def scrape(self) -> Scrape:
        return self.recorder.scrape()  # the reader records what is pending first

    def force_flush(self) -> None:
        self.telemetry.force_flush()

    def shutdown(self) -> None:
        self.telemetry.shutdown()
