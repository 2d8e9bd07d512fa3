"""The telemetry's SDK wiring and recorder in this process: spans and metrics from a request's record, the
sampling policy, /metrics, and drop counting through the SDK's public interfaces."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_fixtures import MakeReceiver, sample_lines, sample_value, wait_for

from harness.handler.telemetry.recorder import RequestRecorder
from harness.handler.telemetry.records import InitEvent, ModelLoaded, RequestRecord, TelemetrySettings
from harness.handler.telemetry.sdk import Telemetry

SETTINGS = TelemetrySettings(service_name="svc", service_version="1", region="lisbon", pop="lis-1")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
REQUESTS = "http_server_request_duration_seconds_count"
DROPPED = "edgeharness_telemetry_dropped_total"
STAGES = ("decode", "preprocess", "inference", "postprocess")


def request(status: int = 200, traceparent: str | None = None, error: str | None = None) -> RequestRecord:
    start = time.time_ns()
    marks = [(stage, start + i * 1000, start + (i + 1) * 1000) for i, stage in enumerate(STAGES)]
    return RequestRecord(start, 0.004, status, error, 0.0001, None, "model", "1", marks, traceparent, None)


@pytest.fixture
def telemetries() -> Iterator[Callable[..., Telemetry]]:
    made: list[Telemetry] = []

    def make(settings: TelemetrySettings = SETTINGS) -> Telemetry:
        made.append(Telemetry(settings))
        return made[-1]

    yield make
    for t in made:
        t.shutdown()


def in_memory(make: Callable[..., Telemetry]) -> tuple[Telemetry, RequestRecorder, InMemorySpanExporter]:
    telemetry = make()
    exporter = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    return telemetry, RequestRecorder(telemetry), exporter


def test_a_request_becomes_a_server_span_with_a_span_per_stage(telemetries: Callable[..., Telemetry]) -> None:
    telemetry, recorder, exporter = in_memory(telemetries)
    rec = request(503, error="overloaded")
    recorder.record(rec)
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.name == "POST /v1/classify" and server.parent is None
    assert (server.start_time, server.end_time) == (rec.start_ns, rec.start_ns + 4_000_000)
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes["http.response.status_code"] == 503
    assert server.attributes["error.type"] == "overloaded"
    assert server.attributes["edgeharness.model.name"] == "model"
    assert server.resource.attributes["cloud.region"] == "lisbon"
    assert server.resource.attributes["service.instance.id"] == telemetry.instance_id
    children = [s for s in spans if s.parent is not None]
    assert [(s.name, s.start_time, s.end_time) for s in children] == list(rec.marks)
    assert {s.parent.span_id for s in children} == {server.context.span_id}
    assert {s.context.trace_id for s in children} == {server.context.trace_id}


@pytest.mark.parametrize("flags", ["01", "00"], ids=["sampled", "not-sampled"])
def test_the_callers_trace_is_continued_and_its_sampled_flag_cannot_hide_the_request(
    telemetries: Callable[..., Telemetry], flags: str
) -> None:
    """A client's `traceparent` ending in -00 still gets the server span and stage spans (the collector's
    span metrics are built from them) and the request metrics: the handler samples every request."""
    telemetry, recorder, exporter = in_memory(telemetries)
    recorder.record(request(traceparent=f"00-{TRACE_ID}-{PARENT_ID}-{flags}"))
    spans = exporter.get_finished_spans()
    assert len(spans) == 1 + len(STAGES)
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID and server.parent.is_remote
    assert server.context.trace_flags.sampled
    assert sample_value(telemetry.scrape().payload.decode(), REQUESTS) == 1


@pytest.mark.parametrize("traceparent", [None, "garbage", f"00-{'0' * 32}-{PARENT_ID}-01"])
def test_without_a_valid_parent_each_request_starts_its_own_trace(
    telemetries: Callable[..., Telemetry], traceparent: str | None
) -> None:
    _telemetry, recorder, exporter = in_memory(telemetries)
    recorder.record(request(traceparent=traceparent))
    recorder.record(request(traceparent=traceparent))
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert all(s.parent is None for s in servers)
    assert len({s.context.trace_id for s in servers}) == 2


def test_without_a_span_processor_no_span_is_built_and_metrics_are_recorded(
    telemetries: Callable[..., Telemetry],
) -> None:
    telemetry = telemetries()
    RequestRecorder(telemetry).record(request())
    assert not telemetry.tracing
    assert sample_value(telemetry.scrape().payload.decode(), REQUESTS) == 1


def test_metrics_have_fine_buckets_resource_labels_and_every_instrument(
    telemetries: Callable[..., Telemetry],
) -> None:
    telemetry = telemetries()
    recorder = RequestRecorder(telemetry)
    for status in (200, 200, 400):
        recorder.record(request(status))
    recorder.record(InitEvent({"edgeharness.coldstart.kind": "process"}, 320.0, {"imports": 250.0, "server": 70.0}))
    recorder.record(ModelLoaded(True))
    telemetry.set_load(3, 1)
    text = telemetry.scrape().payload.decode()
    assert 'le="0.00025"' in text and 'le="0.02"' in text and 'le="10.0"' in text
    counts = {line.split('http_response_status_code="')[1][:3]: float(line.rsplit(" ", 1)[1]) for line in
              sample_lines(text, REQUESTS)}  # fmt: skip
    assert counts == {"200": 2, "400": 1}
    assert sample_value(text, "faas_init_duration_seconds_count") == 1
    assert len(sample_lines(text, "edgeharness_init_phase_duration_seconds_count")) == 2
    assert sample_value(text, "http_server_active_requests") == 3
    assert sample_value(text, "edgeharness_queued_requests") == 1
    (line,) = sample_lines(text, "edgeharness_model_loaded")
    assert 'cloud_region="lisbon"' in line and 'edgeharness_pop="lis-1"' in line
    assert f'service_instance_id="{telemetry.instance_id}"' in line and line.endswith(" 1.0")


def test_a_flush_pushes_metrics_without_duplicating_the_next_scrape(
    telemetries: Callable[..., Telemetry], receiver: MakeReceiver
) -> None:
    server = receiver()
    telemetry = telemetries(TelemetrySettings("svc", "1", "r", "p", otlp_endpoint=server.url.rsplit("/v1/", 1)[0]))
    RequestRecorder(telemetry).record(request())
    telemetry.force_flush()
    assert {path for path, _, _ in server.received} == {"/v1/traces", "/v1/metrics"}
    text = telemetry.scrape().payload.decode()
    assert len(sample_lines(text, REQUESTS)) == 1


def test_the_span_exporter_sends_the_headers_the_environment_names(
    telemetries: Callable[..., Telemetry], receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t0ken,x-tenant=edge")
    telemetry = telemetries(TelemetrySettings("svc", "1", "r", "p", otlp_endpoint=server.url.rsplit("/v1/", 1)[0]))
    RequestRecorder(telemetry).record(request())
    telemetry.force_flush()
    sent = next(h for (path, _, _), h in zip(server.received, server.headers, strict=True) if path == "/v1/traces")
    assert (sent["authorization"], sent["x-tenant"]) == ("Bearer t0ken", "edge")


def test_failed_exports_are_counted_as_dropped(telemetries: Callable[..., Telemetry], receiver: MakeReceiver) -> None:
    server = receiver([400])  # not retryable: every export fails at once
    telemetry = telemetries(TelemetrySettings("svc", "1", "r", "p", otlp_endpoint=server.url.rsplit("/v1/", 1)[0]))
    recorder = RequestRecorder(telemetry)
    for _ in range(3):
        recorder.record(request())
    telemetry.force_flush()
    text = telemetry.scrape().payload.decode()
    dropped = {line.split('signal="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in
               sample_lines(text, DROPPED) if 'reason="export_failed"' in line}  # fmt: skip
    assert dropped["traces"] == 3 * (1 + len(STAGES))
    assert dropped["metrics"] > 0


def test_spans_beyond_the_batch_queue_are_counted_and_none_is_lost_silently(
    telemetries: Callable[..., Telemetry], receiver: MakeReceiver
) -> None:
    """With the collector hanging, spans handed to the SDK beyond its queue's size are refused and counted
    (`queue_full`); every span is then either exported or counted."""
    server = receiver(hang=True)
    settings = TelemetrySettings(
        "svc", "1", "r", "p", otlp_endpoint=server.url.rsplit("/v1/", 1)[0], span_queue_size=10
    )
    telemetry = telemetries(settings)
    recorder = RequestRecorder(telemetry)
    requests = 8
    for _ in range(requests):
        recorder.record(request())
        time.sleep(0.01)

    def queue_full() -> float:
        lines = [line for line in sample_lines(telemetry.scrape().payload.decode(), DROPPED) if "queue_full" in line]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    refused = queue_full()
    # At most one batch (10 spans) is in the hanging export and 10 wait in the queue: the rest is refused.
    assert refused >= requests * (1 + len(STAGES)) - 20
    server.release.set()
    telemetry.shutdown()
    exported = sum(
        len(ss.spans)
        for path, _, body in server.received
        if path == "/v1/traces"
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
    )
    assert exported + refused == requests * (1 + len(STAGES))


def test_the_serving_side_imports_no_opentelemetry() -> None:
    """The handler's app and its link to the telemetry process leave the SDK (and the API) to the child."""
    script = (
        "import sys\n"
        "import harness.handler.app, harness.handler.telemetry.link\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_shutdown_is_idempotent_and_flushes(telemetries: Callable[..., Telemetry], receiver: MakeReceiver) -> None:
    server = receiver()
    telemetry = telemetries(TelemetrySettings("svc", "1", "r", "p", otlp_endpoint=server.url.rsplit("/v1/", 1)[0]))
    RequestRecorder(telemetry).record(request())
    telemetry.shutdown()
    telemetry.shutdown()
    assert wait_for(lambda: {path for path, _, _ in server.received} == {"/v1/traces", "/v1/metrics"})


def test_the_subpackage_has_no_import_cycle_and_its_serving_side_no_sdk() -> None:
    import ast
    import graphlib
    from pathlib import Path

    import harness.handler.telemetry as package

    folder = Path(package.__file__).parent
    graph: dict[str, set[str]] = {}
    third_party: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[path.stem] = {m.rsplit(".", 1)[1] for m in imported if m.startswith("harness.handler.telemetry.")}
        third_party[path.stem] = {m.split(".")[0] for m in imported if not m.startswith(("harness", "__future__"))}
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    for light in ("__init__", "records", "names", "logs", "link"):
        assert "opentelemetry" not in third_party[light], light
