"""The stock OpenTelemetry SDK, wired for the handler: one resource, the instruments, /metrics and OTLP.

Traces: `TracerProvider` + `BatchSpanProcessor` + `OTLPSpanExporter`. Metrics: a `MeterProvider` with a
`PrometheusMetricReader` (the /metrics text) and a `PeriodicExportingMetricReader` + `OTLPMetricExporter`.
What the SDK does not count is counted here through its public interfaces only (`CountingSpanExporter`,
`CountingMetricExporter`, `Telemetry.span_room`).

The hand-made parts this replaced (span builder, OTLP span encoder and exporter, one reader for scrape and
push, SCHED_IDLE threads) were measured against it with `bench_handler.py --tree` in three interleaved runs
on two shared cores: CPU per request (handler and telemetry process, ~5.4 ms) +29, +294 and +114 us;
saturation throughput -8.5, +1.7 and -2.3 %; client p50 at 20 req/s -0.16, +0.58 and -0.44 ms. Within
the noise of this machine and under 3 %: none was kept.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
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
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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
from harness.handler.telemetry.records import Scrape, TelemetrySettings

# Every instrument kind, cumulative: what remote write to Prometheus (and a Prometheus scrape) needs.
CUMULATIVE_TEMPORALITY = dict.fromkeys(
    (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge),
    AggregationTemporality.CUMULATIVE,
)
SCOPE = "edgeharness.handler"


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
            TELEMETRY_DROPPED, unit="{item}", description="Spans, metric points or request records lost."
        )


class CountingSpanExporter(SpanExporter):
    """Counts the spans the batch processor hands to the exporter, and those whose export failed.

    Spans handed to the SDK minus spans that reached the exporter is an upper bound of the batch processor's
    queue: `Telemetry.span_room` keeps it below the queue's size, so the SDK never drops a span silently."""

    def __init__(self, inner: SpanExporter, on_failed: Any) -> None:
        self._inner = inner
        self._on_failed = on_failed
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.received += len(spans)
        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_failed(len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """Counts metric data points lost to a failed export; cumulative, as remote write to Prometheus needs."""

    def __init__(self, inner: MetricExporter, on_failed: Any) -> None:
        super().__init__(preferred_temporality=CUMULATIVE_TEMPORALITY)
        self._inner = inner
        self._on_failed = on_failed

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            points = sum(
                len(metric.data.data_points)
                for rm in metrics_data.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            )
            self._on_failed(points)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


class Telemetry:
    """The SDK's providers for one handler instance: `tracer`, `instruments`, `scrape`, `force_flush`, `shutdown`.

    Spans are sampled always, whatever the caller's trace flags say: the handler's spans feed the collector's
    span metrics, and a client must not be able to hide its requests from them (a `traceparent` ending in
    `-00` still gives the trace id and parent)."""

    def __init__(self, settings: TelemetrySettings, instance_id: str | None = None) -> None:
        self.settings = settings
        self.instance_id = instance_id or str(uuid.uuid4())
        self.registry = CollectorRegistry(auto_describe=True)
        self._model_loaded = 0
        self._load = (0, 0)  # requests in flight and queued, as last reported
        self._lock = threading.Lock()
        self._closed = False
        quiet_export_logs()
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
        readers: list[Any] = [
            PrometheusMetricReader(
                registry=self.registry, resource_attribute_filter=LABELLED_RESOURCE_ATTRIBUTES.__contains__
            )
        ]
        self._push: PeriodicExportingMetricReader | None = None
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            self._push = PeriodicExportingMetricReader(
                CountingMetricExporter(
                    OTLPMetricExporter(
                        endpoint=_signal_url(settings.otlp_endpoint, "metrics"), timeout=settings.export_timeout_s
                    ),
                    lambda n: self.count_dropped(n, "metrics", "export_failed"),
                ),
                export_interval_millis=settings.export_interval_s * 1000,
                export_timeout_millis=settings.export_timeout_s * 1000,
            )
            readers.append(self._push)
        views = [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_S))
            for name in (REQUEST_DURATION, STAGE_DURATION, INFERENCE_DURATION, QUEUE_DURATION)
        ] + [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(INIT_BUCKETS_S))
            for name in (INIT_DURATION, INIT_PHASE_DURATION)
        ]
        self.meter_provider = MeterProvider(
            metric_readers=readers, resource=resource, views=views, shutdown_on_exit=False
        )
        meter = self.meter_provider.get_meter(SCOPE, settings.service_version)
        self.instruments = Instruments(meter)
        meter.create_observable_gauge(
            MODEL_LOADED,
            callbacks=[lambda _o: [metrics.Observation(self._model_loaded)]],
            unit="1",
            description="1 while the model is loaded, 0 when scaled to zero.",
        )
        meter.create_observable_up_down_counter(
            ACTIVE_REQUESTS,
            callbacks=[lambda _o: [metrics.Observation(self._load[0])]],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        meter.create_observable_up_down_counter(
            QUEUED_REQUESTS,
            callbacks=[lambda _o: [metrics.Observation(self._load[1])]],
            unit="{request}",
            description="Requests waiting for a free slot.",
        )

        self.tracer_provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)
        self.tracer = self.tracer_provider.get_tracer(SCOPE, settings.service_version)
        self.tracing = False  # whether any span processor takes spans (none: spans are not built at all)
        self._spans: CountingSpanExporter | None = None
        self._handed = 0
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)HEADERS itself, e.g. for an authenticating gateway.
            self._spans = CountingSpanExporter(
                OTLPSpanExporter(
                    endpoint=_signal_url(settings.otlp_endpoint, "traces"), timeout=settings.export_timeout_s
                ),
                lambda n: self.count_dropped(n, "traces", "export_failed"),
            )
            # Batches of up to 2048 spans (the SDK's default is 512): a quarter of the HTTP requests at load.
            self.add_span_processor(
                BatchSpanProcessor(
                    self._spans,
                    max_queue_size=settings.span_queue_size,
                    schedule_delay_millis=1000,
                    max_export_batch_size=min(2048, settings.span_queue_size),
                )
            )

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Adds a span processor (tests add an in-memory exporter's)."""
        self.tracer_provider.add_span_processor(processor)
        self.tracing = True

    def span_room(self, n: int) -> bool:
        """Whether `n` more spans fit in the batch processor's queue; if not, they are counted as dropped
        (`queue_full`) and the caller builds none of them."""
        if self._spans is None:
            return True
        if self._handed - self._spans.received + n > self.settings.span_queue_size:
            self.count_dropped(n, "traces", "queue_full")
            return False
        self._handed += n
        return True

    def count_dropped(self, n: int, signal: str, reason: str) -> None:
        if n:
            self.instruments.telemetry_dropped.add(n, {"signal": signal, "reason": reason})

    def set_model_loaded(self, loaded: bool) -> None:
        self._model_loaded = 1 if loaded else 0

    def set_load(self, active: int, queued: int) -> None:
        self._load = (active, queued)

    def scrape(self) -> Scrape:
        return Scrape(generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def force_flush(self) -> None:
        """Exports what is buffered: spans, then metrics. (The Prometheus reader is left alone: a collection
        into it would show every series twice in the next scrape.)"""
        self.tracer_provider.force_flush()
        if self._push is not None:
            self._push.force_flush()

    def shutdown(self) -> None:
        """Exports what is buffered and stops (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _signal_url(base: str, signal: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"
