"""The handler's OpenTelemetry instruments, exported by OTLP and exposed on /metrics from one set."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry import metrics, trace
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
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

E = TypeVar("E")
_INSTRUMENT_TYPES = (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)

# Seconds. 0.25 ms steps up to 20 ms resolve a p50 SLO of 10 ms well; coarser steps reach 10 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    *(round(i * 0.00025, 5) for i in range(1, 81)),
    0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# Cold starts and init run from tens of milliseconds to seconds.
INIT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip

REQUEST_DURATION = "http.server.request.duration"
STAGE_DURATION = "edgeharness.stage.duration"
INFERENCE_DURATION = "edgeharness.inference.duration"
QUEUE_DURATION = "edgeharness.queue.duration"
COLDSTARTS = "faas.coldstarts"
INIT_DURATION = "faas.init_duration"
INIT_PHASE_DURATION = "edgeharness.init.phase.duration"
ACTIVE_REQUESTS = "http.server.active_requests"
QUEUED_REQUESTS = "edgeharness.queued_requests"
SHED_REQUESTS = "edgeharness.requests.shed"
MODEL_LOADED = "edgeharness.model.loaded"
TELEMETRY_DROPPED = "edgeharness.telemetry.dropped"

# The resource attributes copied onto every /metrics series, so a scrape alone tells region and PoP apart.
LABELLED_RESOURCE_ATTRIBUTES = frozenset({"cloud.region", "edgeharness.pop", "service.instance.id"})


# Loggers that speak once per failed export: with the collector down they would flood the log.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk._shared_internal",
)


class _RateLimit(logging.Filter):
    """Lets one record through per interval and says how many it held back; drops are counted anyway."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._held += 1
                return False
            if self._held:
                record.msg = f"{record.msg} (and {self._held} similar messages in the last {self._interval_s:.0f} s)"
            self._next, self._held = now + self._interval_s, 0
            return True


def quiet_export_logs(interval_s: float = 60.0) -> None:
    """Rate-limits the exporters' failure logs (idempotent)."""
    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimit) for f in logger.filters):
            logger.addFilter(_RateLimit(interval_s))


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

    def __init__(self, exporter: SpanExporter, max_queue_size: int, dropped: metrics.Counter) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size, schedule_delay_millis=1000)
        self._max_queue = max_queue_size
        self._dropped = dropped

    def on_end(self, span: ReadableSpan) -> None:
        queue = getattr(self._batch_processor, "_queue", ())
        if len(queue) >= self._max_queue:
            self._dropped.add(1, {"signal": "traces", "reason": "queue_full"})
        super().on_end(span)


class _CountingMetricExporter(MetricExporter):
    """Counts metric data points lost to a failed export; cumulative, as remote write to Prometheus needs."""

    def __init__(self, inner: _Lazy[MetricExporter], dropped: list[metrics.Counter]) -> None:
        super().__init__(preferred_temporality=dict.fromkeys(_INSTRUMENT_TYPES, AggregationTemporality.CUMULATIVE))
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
            QUEUE_DURATION, unit="s", description="Time a request waited for a free slot."
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
    """Tracer, instruments and the /metrics registry of one handler; `shutdown` flushes them."""

    def __init__(self, settings: TelemetrySettings) -> None:
        self.settings = settings
        self.instance_id = str(uuid.uuid4())
        self.registry = CollectorRegistry(auto_describe=True)
        self.propagator = TraceContextTextMapPropagator()
        self._providers: list[Any] = []
        self._model_loaded = 0
        if not settings.enabled:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            self.instruments = Instruments(metrics.NoOpMeter("edgeharness"))
            return

        # Imported here so that a handler without telemetry does not pay for them at start-up.
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

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
        readers: list[Any] = [
            PrometheusMetricReader(
                registry=self.registry,
                resource_attribute_filter=LABELLED_RESOURCE_ATTRIBUTES.__contains__,
            )
        ]
        if settings.otlp_endpoint:
            readers.append(
                PeriodicExportingMetricReader(
                    _CountingMetricExporter(_Lazy(lambda: _otlp_metric_exporter(settings)), dropped_ref),
                    export_interval_millis=settings.export_interval_s * 1000,
                    export_timeout_millis=settings.export_timeout_s * 1000,
                )
            )
        views = [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_S))
            for name in (REQUEST_DURATION, STAGE_DURATION, INFERENCE_DURATION, QUEUE_DURATION)
        ] + [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(INIT_BUCKETS_S))
            for name in (INIT_DURATION, INIT_PHASE_DURATION)
        ]
        meter_provider = MeterProvider(metric_readers=readers, resource=resource, views=views)
        meter = meter_provider.get_meter("edgeharness.handler", settings.service_version)
        self._meter = meter
        self.instruments = Instruments(meter)
        dropped_ref.append(self.instruments.telemetry_dropped)
        meter.create_observable_gauge(
            MODEL_LOADED,
            callbacks=[lambda _options: [metrics.Observation(self._model_loaded)]],
            unit="1",
            description="1 while the model is loaded, 0 when scaled to zero.",
        )

        tracer_provider = TracerProvider(resource=resource)
        if settings.otlp_endpoint:
            tracer_provider.add_span_processor(
                _CountingBatchSpanProcessor(
                    _CountingSpanExporter(
                        _Lazy(lambda: _otlp_span_exporter(settings)), self.instruments.telemetry_dropped
                    ),
                    max_queue_size=settings.span_queue_size,
                    dropped=self.instruments.telemetry_dropped,
                )
            )
        self.tracer = tracer_provider.get_tracer("edgeharness.handler", settings.service_version)
        self._providers = [tracer_provider, meter_provider]

    def add_span_processor(self, processor: Any) -> None:
        """Adds a span processor (tests use an in-memory exporter)."""
        provider = self._providers[0] if self._providers else None
        if provider is None:
            raise RuntimeError("telemetry is disabled")
        provider.add_span_processor(processor)

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
        return self.propagator.extract(headers, getter=DefaultGetter())

    def shutdown(self) -> None:
        for provider in self._providers:
            provider.shutdown()
        self._providers = []


def _otlp_metric_exporter(settings: TelemetrySettings) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=_signal_url(settings.otlp_endpoint, "metrics"), timeout=settings.export_timeout_s
    )


def _otlp_span_exporter(settings: TelemetrySettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=_signal_url(settings.otlp_endpoint, "traces"), timeout=settings.export_timeout_s)


def _signal_url(base: str, signal: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"
