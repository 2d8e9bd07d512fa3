"""The handler's OpenTelemetry instruments, exported by OTLP and exposed on /metrics from one set."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import metrics
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from harness.handler.telemetry.deferred import DeferredRecorder
from harness.handler.telemetry.logs import quiet_export_logs
from harness.handler.telemetry.names import (
    ACTIVE_REQUESTS,
    COLDSTARTS,
    INFERENCE_DURATION,
    INIT_BUCKETS_S,
    INIT_DURATION,
    INIT_PHASE_DURATION,
    LABELLED_RESOURCE_ATTRIBUTES,
    LATENCY_BUCKETS_S,
    MODEL_LOADED,
    QUEUE_DURATION,
    QUEUED_REQUESTS,
    REQUEST_DURATION,
    SHED_REQUESTS,
    STAGE_DURATION,
    TELEMETRY_DROPPED,
)
from harness.handler.telemetry.records import TelemetrySettings
from harness.handler.telemetry.spans import SpanRecorder
from harness.handler.telemetry.threads import background_priority

E = TypeVar("E")
# Every instrument kind, cumulative: what remote write to Prometheus (and a Prometheus scrape) needs.
CUMULATIVE_TEMPORALITY = dict.fromkeys(
    (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge),
    AggregationTemporality.CUMULATIVE,
)

logger = logging.getLogger(__name__)


class _Lazy(Generic[E]):
    """Builds an exporter on first use, in the exporting thread: its imports (requests, protobuf) are
    then paid after the handler is ready, not in its cold start."""

    def __init__(self, factory: Callable[[], E]) -> None:
        self._factory = factory
        self._built: E | None = None
        self._lock = threading.Lock()

    def get(self) -> E:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._factory()
        return self._built

    @property
    def built(self) -> E | None:
        return self._built


class _CountingSpanExporter(SpanExporter):
    """Counts spans lost to a failed export: telemetry may be dropped, but never silently."""

    def __init__(self, inner: _Lazy[SpanExporter], dropped: metrics.Counter) -> None:
        self._inner = inner
        self._dropped = dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.get().export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._dropped.add(len(spans), {"signal": "traces", "reason": "export_failed"})
        return result

    def shutdown(self) -> None:
        if self._inner.built is not None:
            self._inner.built.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.built.force_flush(timeout_millis) if self._inner.built is not None else True


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that also counts spans it drops because its bounded queue is full."""

    def __init__(
        self, exporter: SpanExporter, max_queue_size: int, dropped: metrics.Counter, idle_priority: bool
    ) -> None:
        # Batches of up to 2048 spans (the SDK's default is 512): a quarter of the HTTP requests at load.
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=1000,
            max_export_batch_size=min(2048, max_queue_size),
        )
        self._max_queue = max_queue_size
        self._dropped = dropped
        worker = getattr(getattr(self, "_batch_processor", None), "_worker_thread", None)
        if idle_priority and isinstance(worker, threading.Thread):
            background_priority(worker)

    def on_end(self, span: ReadableSpan) -> None:
        if len(getattr(self._batch_processor, "_queue", ())) >= self._max_queue:
            self._dropped.add(1, {"signal": "traces", "reason": "queue_full"})
        super().on_end(span)


class _CountingMetricExporter(MetricExporter):
    """Counts metric data points lost to a failed export; cumulative, as remote write to Prometheus needs."""

    def __init__(self, inner: _Lazy[MetricExporter], dropped: list[metrics.Counter]) -> None:
        super().__init__(preferred_temporality=CUMULATIVE_TEMPORALITY)
        self._inner = inner
        # Filled once the meter exists; the exporter has to be built before the provider.
        self._dropped = dropped

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self._inner.get().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS and self._dropped:
            points = sum(
                len(metric.data.data_points)
                for rm in metrics_data.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            )
            self._dropped[0].add(points, {"signal": "metrics", "reason": "export_failed"})
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.built.force_flush(timeout_millis) if self._inner.built is not None else True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._inner.built is not None:
            self._inner.built.shutdown(timeout_millis=timeout_millis)


class Instruments:
    """Every instrument the handler records, created once per telemetry instance."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.request_duration = meter.create_histogram(
            REQUEST_DURATION, unit="s", description="Duration of HTTP server requests."
        )
        self.stage_duration = meter.create_histogram(
            STAGE_DURATION, unit="s", description="Duration of each pipeline stage (decode, preprocess, ...)."
        )
        self.inference_duration = meter.create_histogram(
            INFERENCE_DURATION, unit="s", description="ONNX Runtime run duration."
        )
        self.queue_duration = meter.create_histogram(
            QUEUE_DURATION,
            unit="s",
            description="Time from admission until a worker took the request up (queueing and hand-over).",
        )
        self.coldstarts = meter.create_counter(
            COLDSTARTS, unit="{coldstart}", description="Number of invocation cold starts."
        )
        self.init_duration = meter.create_histogram(
            INIT_DURATION, unit="s", description="Initialization duration: process start to ready, or a model load."
        )
        self.init_phase_duration = meter.create_histogram(
            INIT_PHASE_DURATION, unit="s", description="Duration of each initialization phase."
        )
        self.shed_requests = meter.create_counter(
            SHED_REQUESTS, unit="{request}", description="Requests refused with 503 because of overload."
        )
        self.telemetry_dropped = meter.create_counter(
            TELEMETRY_DROPPED, unit="{item}", description="Spans or metric points lost by the exporters."
        )


class Telemetry:
    """Spans, instruments and the /metrics registry of one handler; `shutdown` flushes them."""

    def __init__(self, settings: TelemetrySettings, instance_id: str | None = None) -> None:
        self.settings = settings
        self.instance_id = instance_id or str(uuid.uuid4())
        self.registry = CollectorRegistry(auto_describe=True)
        self.propagator = TraceContextTextMapPropagator()
        self.spans: SpanRecorder | None = None
        self.deferred: DeferredRecorder[Any] | None = None
        self._reader: Any = None
        self._meter_provider: MeterProvider | None = None
        self._model_loaded = 0
        if not settings.enabled:
            self.instruments = Instruments(metrics.NoOpMeter("edgeharness"))
            return

        # Imported here so that a handler without telemetry does not pay for them at start-up.
        from harness.handler.telemetry.metric_reader import ScrapeAndPushReader

        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": settings.service_version,
                "service.instance.id": self.instance_id,
                "cloud.region": settings.region,
                "edgeharness.pop": settings.pop,
                "faas.name": settings.service_name,
            }
        )
        quiet_export_logs()
        dropped_ref: list[metrics.Counter] = []
        # One reader serves /metrics and pushes the same aggregation by OTLP: a measurement is aggregated
        # once, not once per reader.
        reader = ScrapeAndPushReader(
            _CountingMetricExporter(_Lazy(lambda: _otlp_metric_exporter(settings)), dropped_ref)
            if settings.otlp_endpoint
            else None,
            interval_s=settings.export_interval_s,
            timeout_s=settings.export_timeout_s,
            registry=self.registry,
            resource_attribute_filter=LABELLED_RESOURCE_ATTRIBUTES.__contains__,
            idle_priority=settings.idle_priority_exporters,
        )
        views = [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_S))
            for name in (REQUEST_DURATION, STAGE_DURATION, INFERENCE_DURATION, QUEUE_DURATION)
        ] + [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(INIT_BUCKETS_S))
            for name in (INIT_DURATION, INIT_PHASE_DURATION)
        ]
        self._reader = reader
        self._meter_provider = MeterProvider(metric_readers=[reader], resource=resource, views=views)
        meter = self._meter_provider.get_meter("edgeharness.handler", settings.service_version)
        self._meter = meter
        self.instruments = Instruments(meter)
        dropped_ref.append(self.instruments.telemetry_dropped)
        meter.create_observable_gauge(
            MODEL_LOADED,
            callbacks=[lambda _options: [metrics.Observation(self._model_loaded)]],
            unit="1",
            description="1 while the model is loaded, 0 when scaled to zero.",
        )

        self.spans = SpanRecorder(resource, InstrumentationScope("edgeharness.handler", settings.service_version))
        if settings.otlp_endpoint:
            self.spans.add_processor(
                _CountingBatchSpanProcessor(
                    _CountingSpanExporter(
                        _Lazy(lambda: _otlp_span_exporter(settings)), self.instruments.telemetry_dropped
                    ),
                    max_queue_size=settings.span_queue_size,
                    dropped=self.instruments.telemetry_dropped,
                    idle_priority=settings.idle_priority_exporters,
                )
            )

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Adds a span processor (tests use an in-memory exporter)."""
        if self.spans is None:
            raise RuntimeError("telemetry is disabled")
        self.spans.add_processor(processor)

    def observe_load(self, active: Callable[[], int], queued: Callable[[], int]) -> None:
        """In-flight and queued requests, read when metrics are collected: nothing to do per request."""
        if not self.settings.enabled:
            return
        self._meter.create_observable_up_down_counter(
            ACTIVE_REQUESTS,
            callbacks=[lambda _o: [metrics.Observation(active())]],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self._meter.create_observable_up_down_counter(
            QUEUED_REQUESTS,
            callbacks=[lambda _o: [metrics.Observation(queued())]],
            unit="{request}",
            description="Requests waiting for a free slot.",
        )

    def set_model_loaded(self, loaded: bool) -> None:
        self._model_loaded = 1 if loaded else 0

    def extract_context(self, headers: Mapping[str, str]) -> Any:
        """The caller's trace context (W3C traceparent/tracestate), or None when it sent none."""
        if "traceparent" not in headers:
            return None
        return self.propagator.extract(headers, getter=DefaultGetter())

    def defer(self, record: Callable[[E], None], idle: Callable[[], bool] | None = None) -> DeferredRecorder[E] | None:
        """Starts recording through `record` on a telemetry thread (see DeferredRecorder); scrapes and
        exports record what is pending first. None when telemetry is off: there is nothing to record."""
        if not self.settings.enabled:
            return None
        deferred = DeferredRecorder(
            record,
            idle=idle,
            on_drop=lambda n: self.instruments.telemetry_dropped.add(
                n, {"signal": "requests", "reason": "record_queue_full"}
            ),
        )
        self.deferred = deferred
        self._reader.before_collect = deferred.drain
        return deferred

    def force_flush(self) -> None:
        """Records what is pending, then exports what is buffered (spans, then metrics)."""
        if self.deferred is not None:
            self.deferred.drain()
        if self.spans is not None:
            self.spans.force_flush()
        if self._meter_provider is not None:
            self._meter_provider.force_flush()

    def shutdown(self) -> None:
        if self.deferred is not None:
            self.deferred.close()
            self.deferred = None
        if self.spans is not None:
            self.spans.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()
        self.spans, self._meter_provider = None, None


def _otlp_metric_exporter(settings: TelemetrySettings) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=_signal_url(settings.otlp_endpoint, "metrics"), timeout=settings.export_timeout_s
    )


def _otlp_span_exporter(settings: TelemetrySettings) -> SpanExporter:
    from harness.handler.telemetry.otlp_traces import OTLPHTTPSpanExporter

    return OTLPHTTPSpanExporter(
        _signal_url(settings.otlp_endpoint, "traces"),
        timeout_s=settings.export_timeout_s,
        headers=_otlp_headers("TRACES"),
    )


def _otlp_headers(signal: str) -> dict[str, str]:
    """Extra request headers from OTEL_EXPORTER_OTLP_{signal}_HEADERS or OTEL_EXPORTER_OTLP_HEADERS, in the
    specification's format (comma-separated key=value, URL-encoded), e.g. for an authenticating gateway."""
    from opentelemetry.util.re import parse_env_headers

    raw = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    return parse_env_headers(raw, liberal=True) if raw else {}


def _signal_url(base: str, signal: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"
