"""The handler's telemetry plumbing on its own: the OTLP span encoder and exporter, the span recorder, the
scrape-and-push metric reader, the deferred recorder and their wiring in `Telemetry`."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.status import Status, StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from telemetry_fixtures import DEADLINE_S, MakeReceiver, sample_lines, sample_value, wait_for

from harness.handler.telemetry import sdk as telemetry_module
from harness.handler.telemetry.metric_reader import ScrapeAndPushReader
from harness.handler.telemetry.otlp_traces import OTLPHTTPSpanExporter, SpanEncoder
from harness.handler.telemetry.records import TelemetrySettings
from harness.handler.telemetry.sdk import CUMULATIVE_TEMPORALITY, DeferredRecorder, Telemetry
from harness.handler.telemetry.spans import SpanRecorder, span_in_context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SAMPLED = TraceFlags(TraceFlags.SAMPLED)


# --- SpanEncoder -------------------------------------------------------------------------------------

RESOURCE_A = Resource(
    {"service.name": "handler", "cloud.region": "nairobi", "service.instance.id": "i-1"},
    schema_url="https://opentelemetry.io/schemas/1.26.0",
)
RESOURCE_B = Resource({"service.name": "other", "process.pid": 4242, "host.arch.bits": 64})
SCOPE_PLAIN = InstrumentationScope("edgeharness.handler", "1.2.3")
SCOPE_RICH = InstrumentationScope(
    "edgeharness.client",
    "0.9",
    schema_url="https://opentelemetry.io/schemas/1.21.0",
    attributes={"scope.kind": "client", "scope.level": 2},
)


def context(trace_id: int, span_id: int, *, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=SAMPLED, trace_state=state)


def varied_spans() -> list[ReadableSpan]:
    """Spans that exercise every field the encoder writes, under two resources and two scopes, interleaved."""
    state = TraceState([("vendor", "v1"), ("congo", "t61rcWkgMzE")])
    root = context(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, state=state)
    remote_parent = context(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, remote=True)
    linked = context(0x1234, 0x5678, remote=True)
    events = BoundedList(1)  # two events into room for one: dropped_events_count is 1
    events.append(Event("discarded", {"x": 1}, timestamp=1_500))
    events.append(Event("retry", {"attempt": 2, "reason": "timeout", "backoff.s": 0.25}, timestamp=1_700))
    attributes = BoundedAttributes(
        maxlen=7,
        attributes={
            "http.route": "/v1/classify",
            "http.response.status_code": 500,
            "error": True,
            "ratio": 0.25,
            "tags": ("fast", "edge"),
            "input.shape": (1, 3, 224, 224),
            "negative": -7,
            "dropped": "no room for this one",
        },
    )
    return [
        ReadableSpan(
            name="POST /v1/classify",
            context=root,
            parent=None,
            resource=RESOURCE_A,
            attributes=attributes,
            events=events,
            links=[Link(linked, {"link.kind": "follows_from", "link.n": 3})],
            kind=SpanKind.SERVER,
            status=Status(StatusCode.ERROR, "model failed"),
            start_time=1_000,
            end_time=9_000,
            instrumentation_scope=SCOPE_PLAIN,
        ),
        ReadableSpan(
            name="outbound",
            context=context(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x1111),
            parent=remote_parent,
            resource=RESOURCE_B,
            attributes={"server.address": "collector", "server.port": 4318, "retry": False},
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.OK),
            start_time=2_000,
            end_time=3_000,
            instrumentation_scope=SCOPE_RICH,
        ),
        ReadableSpan(
            name="infer",
            context=context(root.trace_id, 0x2222, state=state),
            parent=root,
            resource=RESOURCE_A,
            attributes={"http.route": "/v1/classify", "ratio": 0.25},  # repeated values: cache hits
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.UNSET),
            start_time=4_000,
            end_time=8_000,
            instrumentation_scope=SCOPE_PLAIN,
        ),
        ReadableSpan(
            name="client-side",
            context=context(0x99, 0x3333),
            parent=None,
            resource=RESOURCE_A,
            kind=SpanKind.CLIENT,
            start_time=5_000,
            end_time=6_000,
            instrumentation_scope=SCOPE_RICH,
        ),
    ]


def sdk_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializePartialToString()


def test_encoder_fixture_is_as_varied_as_intended() -> None:
    # Guards the equivalence test: two resources, the first with two scopes, and every optional field set.
    request = ExportTraceServiceRequest.FromString(sdk_bytes(varied_spans()))
    assert [len(rs.scope_spans) for rs in request.resource_spans] == [2, 1]
    root = request.resource_spans[0].scope_spans[0].spans[0]
    assert root.trace_state and root.events and root.links and root.status.message
    assert root.dropped_attributes_count == 1
    assert root.dropped_events_count == 1


def test_encoder_matches_the_sdk_encoder_byte_for_byte() -> None:
    spans = varied_spans()
    assert SpanEncoder().encode(spans) == sdk_bytes(spans)


def test_encoder_with_warm_caches_gives_the_same_bytes() -> None:
    spans = varied_spans()
    encoder = SpanEncoder()
    first = encoder.encode(spans)
    assert encoder.encode(spans) == first
    assert encoder.encode(list(reversed(spans))) == sdk_bytes(list(reversed(spans)))
    assert encoder.encode(spans[:1]) == sdk_bytes(spans[:1])


@pytest.mark.parametrize("max_cached_values", [4, 16, 4096])
def test_encoder_cache_never_confuses_values(max_cached_values: int) -> None:
    # Unique values (ids), values that repeat (cache hits) and the same value under different types.
    encoder = SpanEncoder(max_cached_values=max_cached_values)
    spans = [
        ReadableSpan(
            name=f"request {i}",
            context=context(0xABC + i, 0x100 + i),
            resource=RESOURCE_A,
            attributes={
                "request.id": f"r{i}",
                "n": i,
                "half": i / 2,
                "status": 500 if i % 3 == 0 else 200,
                "mod": i % 4,
                "mod.float": float(i % 4),
                "mod.bool": bool(i % 2),
                "mod.str": str(i % 4),
                "route": "/v1/classify",
            },
            kind=SpanKind.SERVER,
            start_time=i,
            end_time=i + 10,
            instrumentation_scope=SCOPE_PLAIN,
        )
        for i in range(60)
    ]
    for batch in (spans, spans[10:25], spans[::-1], spans):
        assert encoder.encode(batch) == sdk_bytes(batch)


def test_encoder_of_no_spans_is_an_empty_request() -> None:
    assert SpanEncoder().encode([]) == sdk_bytes([]) == b""


def test_encoder_merges_equal_but_distinct_resources_like_the_sdk() -> None:
    spans = [
        ReadableSpan(name=name, context=context(1, i + 1), resource=Resource({"service.name": "s"}))
        for i, name in enumerate(("a", "b"))
    ]
    assert SpanEncoder().encode(spans) == sdk_bytes(spans)


def test_encoder_merges_equal_but_distinct_scopes_like_the_sdk() -> None:
    spans = [
        ReadableSpan(
            name=name, context=context(1, i + 1), resource=RESOURCE_A, instrumentation_scope=InstrumentationScope("s")
        )
        for i, name in enumerate(("a", "b"))
    ]
    assert SpanEncoder().encode(spans) == sdk_bytes(spans)


def test_encoder_keeps_negative_zero_apart_from_zero() -> None:
    spans = [
        ReadableSpan(name=str(value), context=context(1, i + 1), resource=RESOURCE_A, attributes={"x": value})
        for i, value in enumerate((0.0, -0.0))
    ]
    assert SpanEncoder().encode(spans) == sdk_bytes(spans)


def test_encoder_skips_an_unencodable_attribute_like_the_sdk() -> None:
    spans = [ReadableSpan(name="a", context=context(1, 1), resource=RESOURCE_A, attributes={"big": 2**64, "ok": "x"})]
    assert SpanEncoder().encode(spans) == sdk_bytes(spans)


def test_encoder_matches_the_sdk_on_random_spans() -> None:
    # Lengths past one varint byte, extreme timestamps and ids, every kind and status, unicode, remote and
    # local parents, trace states, and attributes of every type, in one batch over both resources.
    rng = random.Random(20261128)
    kinds = list(SpanKind)
    codes = [StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR]
    values: list[Any] = [
        "", "ü" * rng.randint(1, 300), True, False, 0, -1, 2**63 - 1, -(2**63), 0.5, -1e300, (1, 2), ("a", ""),
    ]  # fmt: skip
    spans = []
    for i in range(300):
        parent = None
        if rng.random() < 0.6:
            parent = context(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, remote=rng.random() < 0.5)
        state = TraceState([("k", "v" * rng.randint(1, 200))]) if rng.random() < 0.2 else None
        code = rng.choice(codes)
        spans.append(
            ReadableSpan(
                name="span-" + "é" * rng.choice((0, 1, 70, 200)) + str(i),
                context=context(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, state=state),
                parent=parent,
                resource=rng.choice((RESOURCE_A, RESOURCE_B)),
                attributes={f"a{j}": rng.choice(values) for j in range(rng.randint(0, 6))},
                kind=rng.choice(kinds),
                status=Status(code, "why " * rng.randint(1, 50) if code is StatusCode.ERROR else None),
                start_time=rng.choice((0, 1, 2**63 - 1, rng.getrandbits(63))),
                end_time=rng.choice((0, 2**64 - 1, rng.getrandbits(64))),
                instrumentation_scope=rng.choice((SCOPE_PLAIN, SCOPE_RICH, None)),
            )
        )
    encoder = SpanEncoder(max_cached_values=64)
    assert encoder.encode(spans) == sdk_bytes(spans)
    assert encoder.encode(spans[::-1]) == sdk_bytes(spans[::-1])


# --- OTLPHTTPSpanExporter ----------------------------------------------------------------------------


MakeExporter = Callable[..., OTLPHTTPSpanExporter]


@pytest.fixture
def exporters() -> Iterator[Callable[..., OTLPHTTPSpanExporter]]:
    made: list[OTLPHTTPSpanExporter] = []

    def make(endpoint: str, timeout_s: float = 1.5) -> OTLPHTTPSpanExporter:
        made.append(OTLPHTTPSpanExporter(endpoint, timeout_s=timeout_s))
        return made[-1]

    yield make
    for e in made:
        e.shutdown()


def test_exporter_posts_protobuf_to_the_endpoint(receiver: MakeReceiver, exporters: MakeExporter) -> None:
    server = receiver()
    spans = varied_spans()
    assert exporters(server.url).export(spans) is SpanExportResult.SUCCESS
    assert server.count == 1
    path, content_type, body = server.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(s.name for s in spans)
    assert body == sdk_bytes(spans)


def test_span_exporter_sends_the_headers_the_environment_names(
    receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-general=no")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t0ken,x-tenant=edge")
    settings = TelemetrySettings(
        service_name="s", service_version="1", region="r", pop="p", otlp_endpoint=server.url.rsplit("/v1/", 1)[0]
    )
    exporter = telemetry_module._otlp_span_exporter(settings)
    try:
        assert exporter.export(varied_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    sent = server.headers[0]
    assert (sent["authorization"], sent["x-tenant"]) == ("Bearer t0ken", "edge")
    assert "x-general" not in sent  # the signal's own variable wins, as the specification says


def test_exporter_retries_503_until_it_succeeds(receiver: MakeReceiver, exporters: MakeExporter) -> None:
    server = receiver([503, 503, 200])
    assert exporters(server.url).export(varied_spans()) is SpanExportResult.SUCCESS
    assert server.count == 3
    assert len({body for _, _, body in server.received}) == 1  # the same request each time


@pytest.mark.parametrize("status", [429, 502, 504])
def test_exporter_retries_each_retryable_status(receiver: MakeReceiver, exporters: MakeExporter, status: int) -> None:
    server = receiver([status, 200])
    assert exporters(server.url).export(varied_spans()) is SpanExportResult.SUCCESS
    assert server.count == 2


@pytest.mark.parametrize("status", [400, 404, 413, 500])
def test_exporter_fails_at_once_on_a_non_retryable_status(
    receiver: MakeReceiver, exporters: MakeExporter, status: int
) -> None:
    server = receiver([status, 200])
    assert exporters(server.url).export(varied_spans()) is SpanExportResult.FAILURE
    assert server.count == 1


def test_exporter_gives_up_on_persistent_503_at_the_timeout(receiver: MakeReceiver, exporters: MakeExporter) -> None:
    server = receiver([503])
    started = time.monotonic()
    assert exporters(server.url, timeout_s=1.0).export(varied_spans()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 1.0 + 1.0
    assert server.count > 1


def test_exporter_fails_when_nothing_listens(exporters: MakeExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    timeout_s = 1.5
    started = time.monotonic()
    result = exporters(f"http://127.0.0.1:{port}/v1/traces", timeout_s=timeout_s).export(varied_spans())
    assert result is SpanExportResult.FAILURE
    assert time.monotonic() - started < timeout_s + 1.0


def test_exporter_does_not_wait_past_the_timeout_for_a_silent_server(
    receiver: MakeReceiver, exporters: MakeExporter
) -> None:
    server = receiver([200], hang=True)
    timeout_s = 1.0
    started = time.monotonic()
    assert exporters(server.url, timeout_s=timeout_s).export(varied_spans()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < timeout_s + 1.0
    assert server.count >= 1


def test_exporter_after_shutdown_sends_nothing(receiver: MakeReceiver, exporters: MakeExporter) -> None:
    server = receiver()
    exporter = exporters(server.url)
    exporter.shutdown()
    assert exporter.export(varied_spans()) is SpanExportResult.FAILURE
    assert server.count == 0


# --- SpanRecorder ------------------------------------------------------------------------------------

RECORDER_RESOURCE = Resource({"service.name": "handler"})
RECORDER_SCOPE = InstrumentationScope("edgeharness.handler", "1")


def memory_recorder() -> tuple[SpanRecorder, InMemorySpanExporter]:
    recorder = SpanRecorder(RECORDER_RESOURCE, RECORDER_SCOPE)
    exporter = InMemorySpanExporter()
    recorder.add_processor(SimpleSpanProcessor(exporter))
    return recorder, exporter


def record_request(recorder: SpanRecorder, parent: Any) -> SpanContext | None:
    """A request's span and two stage spans, as the handler records them."""
    root = recorder.root(
        "POST /v1/classify",
        parent,
        kind=SpanKind.SERVER,
        start_ns=1_000,
        end_ns=9_000,
        attributes={"http.route": "/v1/classify", "http.response.status_code": 200},
        status=Status(StatusCode.ERROR, "boom"),
    )
    if root is not None:
        recorder.children(root, [("decode", 1_100, 2_000), ("infer", 2_000, 8_500)])
    return root


def test_root_without_parent_starts_a_trace_and_children_hang_under_it() -> None:
    recorder, exporter = memory_recorder()
    root_context = record_request(recorder, None)
    assert root_context is not None
    root, decode, infer = exporter.get_finished_spans()

    assert root.context == root_context
    assert root.parent is None
    assert root.context.trace_id != 0 and root.context.span_id != 0
    assert root.context.trace_flags.sampled
    assert root.kind is SpanKind.SERVER
    assert (root.name, root.start_time, root.end_time) == ("POST /v1/classify", 1_000, 9_000)
    assert dict(root.attributes) == {"http.route": "/v1/classify", "http.response.status_code": 200}
    assert root.status.status_code is StatusCode.ERROR and root.status.description == "boom"
    assert root.resource is RECORDER_RESOURCE and root.instrumentation_scope is RECORDER_SCOPE

    for child, (name, start, end) in ((decode, ("decode", 1_100, 2_000)), (infer, ("infer", 2_000, 8_500))):
        assert (child.name, child.start_time, child.end_time) == (name, start, end)
        assert child.context.trace_id == root.context.trace_id
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.kind is SpanKind.INTERNAL
        assert child.status.status_code is StatusCode.UNSET
        assert child.context.trace_flags.sampled
    assert len({s.context.span_id for s in (root, decode, infer)}) == 3


def test_each_root_without_parent_gets_its_own_trace() -> None:
    recorder, _ = memory_recorder()
    ids = {record_request(recorder, None).trace_id for _ in range(20)}  # type: ignore[union-attr]
    assert len(ids) == 20


def test_sampled_remote_parent_is_continued() -> None:
    recorder, exporter = memory_recorder()
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc"}
    )
    root_context = record_request(recorder, parent)
    assert root_context is not None
    root, *children = exporter.get_finished_spans()
    assert root.context.trace_id == int(TRACE_ID, 16)
    assert root.parent is not None
    assert root.parent.span_id == int(PARENT_ID, 16)
    assert root.parent.is_remote is True
    assert root.context.is_remote is False
    assert root.context.span_id != int(PARENT_ID, 16)
    assert root.context.trace_state.get("vendor") == "abc"
    assert len(children) == 2
    for child in children:
        assert child.context.trace_id == int(TRACE_ID, 16)
        assert child.parent is not None and child.parent.is_remote is False
        assert child.parent.span_id == root.context.span_id


def test_unsampled_remote_parent_records_nothing() -> None:
    recorder, exporter = memory_recorder()
    parent = TraceContextTextMapPropagator().extract({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    assert record_request(recorder, parent) is None
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "carrier",
    [{}, {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"}],
    ids=["none", "malformed", "zero-trace-id"],
)
def test_invalid_parent_starts_a_new_trace(carrier: dict[str, str]) -> None:
    recorder, exporter = memory_recorder()
    root_context = record_request(recorder, TraceContextTextMapPropagator().extract(carrier))
    assert root_context is not None
    root = exporter.get_finished_spans()[0]
    assert root.parent is None
    assert root.context.trace_id not in (0, int(TRACE_ID, 16))


class CountingProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []
        self.flushes = 0
        self.shutdowns = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushes += 1
        return True

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_every_processor_receives_every_span_and_the_flush_and_shutdown() -> None:
    recorder, exporter = memory_recorder()
    counting = CountingProcessor()
    recorder.add_processor(counting)
    record_request(recorder, None)
    record_request(recorder, None)
    assert len(exporter.get_finished_spans()) == 6
    assert [s.context for s in counting.ended] == [s.context for s in exporter.get_finished_spans()]
    assert recorder.force_flush() is True
    assert counting.flushes == 1
    recorder.shutdown()
    assert counting.shutdowns == 1


def test_span_in_context_makes_the_span_current() -> None:
    span_context = context(int(TRACE_ID, 16), int(PARENT_ID, 16))
    assert trace.get_current_span(span_in_context(span_context)).get_span_context() == span_context


# --- ScrapeAndPushReader -----------------------------------------------------------------------------

ROUTE = {"http.route": "/v1/classify"}


class StoringMetricExporter(MetricExporter):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(preferred_temporality=CUMULATIVE_TEMPORALITY)
        self.exported: list[MetricsData] = []
        self.shutdowns = 0
        self.fail = fail
        self._lock = threading.Lock()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.fail:
            raise RuntimeError("collector down")
        with self._lock:
            self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shutdowns += 1

    @property
    def pushes(self) -> int:
        with self._lock:
            return len(self.exported)


def points(data: MetricsData, name: str) -> list[Any]:
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


class MetricsRig:
    """A meter provider whose only reader is a ScrapeAndPushReader on a private registry."""

    def __init__(self, exporter: MetricExporter | None, interval_s: float = 3600.0) -> None:
        self.exporter = exporter
        self.registry = CollectorRegistry()
        self.reader = ScrapeAndPushReader(exporter, interval_s=interval_s, timeout_s=2.0, registry=self.registry)
        self.provider = MeterProvider(
            metric_readers=[self.reader], resource=Resource({"service.name": "rig"}), shutdown_on_exit=False
        )
        meter = self.provider.get_meter("rig")
        self.counter = meter.create_counter("requests", unit="{request}")
        self.histogram = meter.create_histogram("latency", unit="s")
        self.closed = False

    def scrape(self) -> str:
        return generate_latest(self.registry).decode()

    def shutdown(self) -> None:
        if not self.closed:
            self.closed = True
            self.provider.shutdown()


@pytest.fixture
def rigs() -> Iterator[Callable[..., MetricsRig]]:
    made: list[MetricsRig] = []

    def make(exporter: MetricExporter | None, interval_s: float = 3600.0) -> MetricsRig:
        made.append(MetricsRig(exporter, interval_s))
        return made[-1]

    yield make
    for rig in made:
        rig.shutdown()


def record_some(rig: MetricsRig) -> None:
    rig.counter.add(3, ROUTE)
    rig.histogram.record(0.5, ROUTE)
    rig.histogram.record(1.5, ROUTE)


def test_scrape_shows_recorded_values(rigs: Callable[..., MetricsRig]) -> None:
    rig = rigs(StoringMetricExporter())
    record_some(rig)
    text = rig.scrape()
    assert sample_value(text, "requests_total") == 3
    assert sample_value(text, "latency_seconds_count") == 2
    assert sample_value(text, "latency_seconds_sum") == 2.0


def test_push_exports_the_same_cumulative_values(rigs: Callable[..., MetricsRig]) -> None:
    exporter = StoringMetricExporter()
    rig = rigs(exporter)
    record_some(rig)
    rig.reader.push()
    assert exporter.pushes == 1
    (counter_point,) = points(exporter.exported[0], "requests")
    assert counter_point.value == 3
    assert dict(counter_point.attributes) == ROUTE
    (histogram_point,) = points(exporter.exported[0], "latency")
    assert (histogram_point.count, histogram_point.sum) == (2, 2.0)

    rig.counter.add(2, ROUTE)
    rig.reader.push()
    assert points(exporter.exported[1], "requests")[0].value == 5  # cumulative, not reset by the first push
    assert sample_value(rig.scrape(), "requests_total") == 5  # the scrape sees the same aggregation


@pytest.mark.parametrize("with_exporter", [True, False])
def test_push_and_force_flush_do_not_duplicate_series_in_the_next_scrape(
    rigs: Callable[..., MetricsRig], with_exporter: bool
) -> None:
    exporter = StoringMetricExporter() if with_exporter else None
    rig = rigs(exporter)
    record_some(rig)
    rig.reader.push()
    assert rig.reader.force_flush() is True
    rig.provider.force_flush()
    if exporter is not None:
        assert exporter.pushes == 3  # flushing means pushing
    text = rig.scrape()
    for name in ("requests_total", "latency_seconds_count", "latency_seconds_sum"):
        assert len(sample_lines(text, name)) == 1, text
    assert sample_value(text, "requests_total") == 3
    assert len(sample_lines(rig.scrape(), "requests_total")) == 1


def test_before_collect_runs_first_on_scrape_and_on_push(rigs: Callable[..., MetricsRig]) -> None:
    exporter = StoringMetricExporter()
    rig = rigs(exporter)
    calls: list[str] = []

    def hook() -> None:
        # What the hook records must be in the very collection it precedes.
        calls.append("collect")
        rig.counter.add(1, ROUTE)

    rig.reader.before_collect = hook
    assert sample_value(rig.scrape(), "requests_total") == 1
    assert calls == ["collect"]
    rig.reader.push()
    assert calls == ["collect", "collect"]
    assert points(exporter.exported[-1], "requests")[0].value == 2
    rig.provider.force_flush()
    assert len(calls) == 3


def test_shutdown_pushes_a_last_time_and_shuts_the_exporter_down(rigs: Callable[..., MetricsRig]) -> None:
    exporter = StoringMetricExporter()
    rig = rigs(exporter)
    record_some(rig)
    rig.reader.push()
    rig.counter.add(4, ROUTE)
    rig.shutdown()
    assert exporter.pushes == 2
    assert points(exporter.exported[-1], "requests")[0].value == 7
    assert exporter.shutdowns == 1
    assert sample_lines(rig.scrape(), "requests_total") == []  # no longer on the registry


def test_timer_pushes_every_interval(rigs: Callable[..., MetricsRig]) -> None:
    exporter = StoringMetricExporter()
    rig = rigs(exporter, interval_s=0.05)
    record_some(rig)
    assert wait_for(lambda: exporter.pushes >= 2)
    assert points(exporter.exported[-1], "requests")[0].value == 3


def test_a_failing_export_neither_raises_nor_stops_the_timer(rigs: Callable[..., MetricsRig]) -> None:
    exporter = StoringMetricExporter(fail=True)
    rig = rigs(exporter, interval_s=0.05)
    record_some(rig)
    rig.reader.push()  # logged, not raised
    time.sleep(0.15)  # let the timer fail a few times too
    exporter.fail = False
    assert wait_for(lambda: exporter.pushes >= 1)
    assert sample_value(rig.scrape(), "requests_total") == 3


# --- DeferredRecorder --------------------------------------------------------------------------------


class Sink:
    """A `record` callable that keeps what it got; `gate` (when given) holds each call until set."""

    def __init__(self, gate: threading.Event | None = None, fail_on: object = None) -> None:
        self.items: list[Any] = []
        self.started = threading.Event()
        self._gate = gate
        self._fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> None:
        self.started.set()
        if self._gate is not None:
            self._gate.wait(DEADLINE_S)
        if item == self._fail_on:
            raise ValueError(f"cannot record {item!r}")
        with self._lock:
            self.items.append(item)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.items)


@pytest.fixture
def recorders() -> Iterator[Callable[..., DeferredRecorder[Any]]]:
    """Factory of DeferredRecorders, all closed at teardown (close cuts a long window short)."""
    made: list[DeferredRecorder[Any]] = []

    def make(record: Callable[[Any], None], **kwargs: Any) -> DeferredRecorder[Any]:
        recorder: DeferredRecorder[Any] = DeferredRecorder(record, **kwargs)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.close()


def test_submitted_items_are_recorded_by_the_thread(recorders: Callable[..., DeferredRecorder[Any]]) -> None:
    sink = Sink()
    recorder = recorders(sink, window_s=0.01)
    for i in range(5):
        recorder.submit(i)
    assert wait_for(lambda: sink.snapshot() == [0, 1, 2, 3, 4])
    assert recorder.pending == 0
    recorder.submit(5)  # a later batch wakes the thread again
    assert wait_for(lambda: sink.snapshot() == [0, 1, 2, 3, 4, 5])


def test_the_thread_pauses_between_records_and_an_explicit_drain_does_not(
    recorders: Callable[..., DeferredRecorder[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[tuple[str, float]] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # `time` is one module: wait_for's sleeps pass here too
        if threading.current_thread().name == "telemetry-recorder" or seconds == 0.0002:
            pauses.append((threading.current_thread().name, seconds))
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    sink = Sink()
    recorder = recorders(sink, window_s=0.05, pause_s=0.0002)
    for i in range(4):
        recorder.submit(i)
    assert wait_for(lambda: sink.snapshot() == [0, 1, 2, 3])
    assert pauses == [("telemetry-recorder", 0.0002)] * 3  # between records, not after the last
    pauses.clear()
    recorder2 = recorders(sink, window_s=10.0, pause_s=0.0002)
    for i in range(4):
        recorder2.submit(i)
    recorder2.drain()  # as a scrape does: at once
    assert pauses == []


def test_when_idle_items_are_recorded_soon_and_when_busy_after_the_window(
    recorders: Callable[..., DeferredRecorder[Any]],
) -> None:
    busy = [False]
    sink = Sink()
    recorder = recorders(sink, window_s=10.0, idle=lambda: not busy[0], idle_delay_s=0.001)
    recorder.submit("idle")
    assert wait_for(lambda: sink.snapshot() == ["idle"])  # well before the 10 s window
    busy[0] = True
    recorder.submit("busy")
    time.sleep(0.3)
    assert sink.snapshot() == ["idle"]  # gathered for the window
    assert recorder.pending == 1
    recorder.drain()
    assert sink.snapshot() == ["idle", "busy"]


def test_drain_records_everything_pending_before_returning(
    recorders: Callable[..., DeferredRecorder[Any]],
) -> None:
    sink = Sink()
    recorder = recorders(sink, window_s=10.0)
    for i in range(4):
        recorder.submit(i)
    assert recorder.pending == 4
    recorder.drain()
    assert sink.snapshot() == [0, 1, 2, 3]
    assert recorder.pending == 0


def test_drain_waits_for_the_batch_the_thread_is_recording(
    recorders: Callable[..., DeferredRecorder[Any]],
) -> None:
    gate = threading.Event()
    sink = Sink(gate)
    recorder = recorders(sink, window_s=0.0)
    recorder.submit(0)
    assert sink.started.wait(DEADLINE_S)  # the thread has taken item 0 and is held in `record`
    recorder.submit(1)
    recorder.submit(2)
    drained = threading.Event()
    drainer = threading.Thread(target=lambda: (recorder.drain(), drained.set()), daemon=True)
    drainer.start()
    assert not drained.wait(0.2)  # item 0 is not recorded yet, so drain must not have returned
    gate.set()
    assert drained.wait(DEADLINE_S)
    assert sink.snapshot() == [0, 1, 2]


def test_pending_items_are_bounded_and_drops_are_reported(
    recorders: Callable[..., DeferredRecorder[Any]],
) -> None:
    gate = threading.Event()
    sink = Sink(gate)
    dropped: list[int] = []
    recorder = recorders(sink, window_s=0.0, max_pending=3, on_drop=dropped.append)
    recorder.submit("taken")
    assert sink.started.wait(DEADLINE_S)  # held in `record`: the rest stays pending
    for item in ("a", "b", "c"):
        recorder.submit(item)
    assert dropped == []
    recorder.submit("d")
    recorder.submit("e")
    assert dropped == [1, 1]
    assert recorder.pending == 3
    gate.set()
    recorder.drain()
    assert sink.snapshot() == ["taken", "a", "b", "c"]


def test_bounded_without_on_drop_just_drops(recorders: Callable[..., DeferredRecorder[Any]]) -> None:
    sink = Sink()
    recorder = recorders(sink, window_s=10.0, max_pending=2)
    for item in range(4):
        recorder.submit(item)
    recorder.drain()
    assert sink.snapshot() == [0, 1]


def test_a_failing_record_does_not_stop_the_others(
    recorders: Callable[..., DeferredRecorder[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink(fail_on=2)
    recorder = recorders(sink, window_s=0.01)
    for i in range(5):
        recorder.submit(i)
    assert wait_for(lambda: sink.snapshot() == [0, 1, 3, 4])
    recorder.submit(5)  # the thread survived
    assert wait_for(lambda: sink.snapshot() == [0, 1, 3, 4, 5])
    assert any("recording" in r.getMessage() for r in caplog.records)


def test_batches_go_whole_in_order_and_at_most_max_batch_long() -> None:
    batches: list[list[int]] = []
    recorder: DeferredRecorder[int] = DeferredRecorder(record_batch=batches.append, window_s=1.0, max_batch=4)
    try:
        for n in range(10):
            recorder.submit(n)
        recorder.drain()
        assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    finally:
        recorder.close()


def test_a_recorder_not_started_holds_items_until_begin() -> None:
    recorded: list[int] = []
    recorder: DeferredRecorder[int] = DeferredRecorder(recorded.append, window_s=0.0, started=False)
    try:
        recorder.submit(1)
        time.sleep(0.1)
        assert recorded == [] and recorder.pending == 1  # no thread records it yet
        recorder.begin()
        recorder.begin()  # idempotent
        assert wait_for(lambda: recorded == [1])
    finally:
        recorder.close()
    never: DeferredRecorder[int] = DeferredRecorder(recorded.append, started=False)
    never.submit(2)
    never.close()  # records what is pending although its thread never ran
    assert recorded == [1, 2]


def test_a_recorder_takes_one_way_of_recording() -> None:
    with pytest.raises(ValueError):
        DeferredRecorder()
    with pytest.raises(ValueError):
        DeferredRecorder(print, record_batch=print)


def test_close_records_what_is_pending_and_stops_the_thread() -> None:
    gate = threading.Event()
    sink = Sink(gate)
    recorder: DeferredRecorder[Any] = DeferredRecorder(sink, window_s=0.0)
    recorder.submit(0)
    assert sink.started.wait(DEADLINE_S)
    recorder.submit(1)
    recorder.submit(2)
    gate.set()
    recorder.close()
    assert sink.snapshot() == [0, 1, 2]
    assert recorder.pending == 0
    recorder.submit(3)  # nobody records it any more but an explicit drain
    time.sleep(0.1)
    assert sink.snapshot() == [0, 1, 2]
    recorder.drain()
    assert sink.snapshot() == [0, 1, 2, 3]


# --- Telemetry ---------------------------------------------------------------------------------------

SETTINGS = TelemetrySettings(service_name="s", service_version="1", region="r", pop="p")


def forcing(**forced: Any) -> Callable[..., DeferredRecorder[Any]]:
    """A DeferredRecorder factory that overrides whatever `Telemetry.defer` passes for `forced`'s keys."""

    def make(record: Callable[[Any], None], **kwargs: Any) -> DeferredRecorder[Any]:
        return DeferredRecorder(record, **{**kwargs, **forced})

    return make


@pytest.fixture
def slow_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Telemetry.defer` makes recorders that wait 1 s to gather a batch: long enough that a test sees
    whether something other than the recorder's thread recorded the items."""
    monkeypatch.setattr(telemetry_module, "DeferredRecorder", forcing(window_s=1.0))


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry(SETTINGS)
    yield t
    t.shutdown()


def record_into(t: Telemetry) -> Callable[[int], None]:
    def record(n: int) -> None:
        t.instruments.shed_requests.add(n)
        t.instruments.request_duration.record(0.001 * n, ROUTE)

    return record


SHED = "edgeharness_requests_shed_total"
DURATION_COUNT = "http_server_request_duration_seconds_count"


@pytest.mark.usefixtures("slow_window")
def test_scrape_records_deferred_items_first(telemetry: Telemetry) -> None:
    deferred = telemetry.defer(record_into(telemetry))
    assert deferred is not None and telemetry.deferred is deferred
    for n in (1, 2, 3):
        deferred.submit(n)
    text = generate_latest(telemetry.registry).decode()
    assert sample_value(text, SHED) == 6
    assert sample_value(text, DURATION_COUNT) == 3
    assert deferred.pending == 0
    (line,) = sample_lines(text, SHED)
    assert 'cloud_region="r"' in line and 'edgeharness_pop="p"' in line
    assert f'service_instance_id="{telemetry.instance_id}"' in line


@pytest.mark.usefixtures("slow_window")
def test_force_flush_records_deferred_items_without_duplicating_series(telemetry: Telemetry) -> None:
    deferred = telemetry.defer(record_into(telemetry))
    assert deferred is not None
    deferred.submit(4)
    telemetry.force_flush()
    assert deferred.pending == 0
    text = generate_latest(telemetry.registry).decode()
    assert len(sample_lines(text, SHED)) == 1
    assert sample_value(text, SHED) == 4


@pytest.mark.usefixtures("slow_window")
def test_shutdown_records_deferred_items_and_flushes_spans() -> None:
    t = Telemetry(SETTINGS)
    exporter = InMemorySpanExporter()
    t.add_span_processor(SimpleSpanProcessor(exporter))
    recorded: list[int] = []

    def record(n: int) -> None:
        assert t.spans is not None
        t.spans.root("req", None, kind=SpanKind.SERVER, start_ns=n, end_ns=n + 1, attributes={"n": n})
        recorded.append(n)

    deferred = t.defer(record)
    assert deferred is not None
    deferred.submit(1)
    deferred.submit(2)
    t.shutdown()
    assert recorded == [1, 2]
    assert [s.attributes["n"] for s in exporter.get_finished_spans()] == [1, 2]
    assert t.spans is None and t.deferred is None


def test_deferred_queue_overflow_is_counted_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry_module, "DeferredRecorder", forcing(window_s=1.0, max_pending=2))
    t = Telemetry(SETTINGS)
    try:
        deferred = t.defer(record_into(t))
        assert deferred is not None
        for _ in range(5):
            deferred.submit(1)
        text = generate_latest(t.registry).decode()
        (line,) = sample_lines(text, "edgeharness_telemetry_dropped_total")
        assert 'reason="record_queue_full"' in line and 'signal="requests"' in line
        assert float(line.rsplit(" ", 1)[1]) == 3
        assert sample_value(text, SHED) == 2
    finally:
        t.shutdown()


def test_disabled_telemetry_defers_nothing() -> None:
    t = Telemetry(TelemetrySettings(service_name="s", service_version="1", region="r", pop="p", enabled=False))
    assert t.spans is None
    assert t.defer(record_into(t)) is None
    assert t.deferred is None
    t.instruments.shed_requests.add(1)  # no-op instruments accept measurements
    with pytest.raises(RuntimeError):
        t.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert sample_lines(generate_latest(t.registry).decode(), SHED) == []
    t.force_flush()
    t.shutdown()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's; elsewhere threads keep theirs")
def test_telemetry_threads_run_at_idle_priority_and_the_caller_keeps_its_own() -> None:
    # The endpoint is never reached: the span exporter is built lazily, and no push happens in this test.
    t = Telemetry(
        TelemetrySettings(
            service_name="s", service_version="1", region="r", pop="p", otlp_endpoint="http://127.0.0.1:9"
        )
    )
    try:
        deferred = t.defer(record_into(t))
        assert deferred is not None and t.spans is not None
        threads = {
            "recorder": deferred._thread,
            "metric push": t._reader._thread,
            "span export": t.spans._processors[0]._batch_processor._worker_thread,  # type: ignore[attr-defined]
        }
        deadline = time.monotonic() + 5  # each thread sets its own class as it starts
        while time.monotonic() < deadline:
            policies = {name: os.sched_getscheduler(th.native_id) for name, th in threads.items()}
            if all(p == os.SCHED_IDLE for p in policies.values()):
                break
            time.sleep(0.01)
        assert policies == dict.fromkeys(threads, os.SCHED_IDLE)
        assert os.sched_getscheduler(0) != os.SCHED_IDLE
    finally:
        t.shutdown()
