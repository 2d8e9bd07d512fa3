"""The telemetry process: a handler's spans and metrics recorded in a child process fed over a socket pair,
its /metrics answers, its OTLP export, and what happens when it dies, stops answering or cannot start."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from handler_fixtures import process_running
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from telemetry_fixtures import MakeReceiver, sample_lines, sample_value, wait_for

from harness.handler.telemetry.link import TelemetryProcess
from harness.handler.telemetry.records import (
    InitEvent,
    ModelLoaded,
    RequestRecord,
    TelemetrySettings,
    TelemetryUnavailable,
)

SETTINGS = TelemetrySettings(service_name="svc", service_version="1", region="lisbon", pop="lis-1")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
REQUESTS = "http_server_request_duration_seconds_count"
DROPPED = "edgeharness_telemetry_dropped_total"


def request(status: int = 200, traceparent: str | None = None) -> RequestRecord:
    start = time.time_ns()
    marks = [(stage, start + i * 1000, start + (i + 1) * 1000) for i, stage in enumerate(("decode", "inference"))]
    return RequestRecord(start, 0.004, status, None, 0.0001, None, "model", "1", marks, traceparent, None)


@pytest.fixture
def processes() -> Iterator[Callable[..., TelemetryProcess]]:
    """Factory of started and launched telemetry processes (3 requests in flight, 1 queued, idle)."""
    made: list[TelemetryProcess] = []

    def make(settings: TelemetrySettings = SETTINGS, **kwargs: Any) -> TelemetryProcess:
        p = TelemetryProcess(settings, **kwargs)
        p.start(active=lambda: 3, queued=lambda: 1, idle=lambda: True)
        p.launch()
        made.append(p)
        return p

    yield make
    for p in made:
        p.shutdown()


def test_a_scrape_shows_every_item_submitted_before_it(processes: Callable[..., TelemetryProcess]) -> None:
    p = processes()
    for status in [200] * 40 + [503] * 2:
        p.submit(request(status))
    p.submit(InitEvent({"edgeharness.coldstart.kind": "process"}, 320.0, {"imports": 250.0, "server": 70.0}))
    p.submit(ModelLoaded(True))
    scrape = p.scrape()
    text = scrape.payload.decode()
    assert scrape.content_type.startswith("text/plain")
    assert p.pid is not None and p.pid != os.getpid() and process_running(p.pid)
    counts = {line.split('http_response_status_code="')[1][:3]: float(line.rsplit(" ", 1)[1]) for line in
              sample_lines(text, REQUESTS)}  # fmt: skip
    assert counts == {"200": 40, "503": 2}
    assert sample_value(text, "faas_init_duration_seconds_count") == 1
    assert sample_value(text, "http_server_active_requests") == 3
    assert sample_value(text, "edgeharness_queued_requests") == 1
    assert sample_value(text, "edgeharness_model_loaded") == 1
    (line,) = sample_lines(text, "edgeharness_model_loaded")
    assert f'service_instance_id="{p.instance_id}"' in line and 'cloud_region="lisbon"' in line


def test_items_before_launch_wait_and_are_recorded_after() -> None:
    p = TelemetryProcess(SETTINGS)
    try:
        p.start(active=lambda: 0, queued=lambda: 0, idle=lambda: True)
        p.submit(InitEvent({"edgeharness.coldstart.kind": "model"}, 30.0, {"session": 25.0}))
        time.sleep(0.2)
        assert p.pid is None  # nothing started before the handler is ready
        # A scrape hands over what is pending by itself.
        assert sample_value(p.scrape().payload.decode(), "faas_init_duration_seconds_count") == 1
    finally:
        p.shutdown()


def test_spans_and_metrics_reach_the_otlp_endpoint_and_shutdown_flushes_them(receiver: MakeReceiver) -> None:
    server = receiver()
    p = TelemetryProcess(dataclasses.replace(SETTINGS, otlp_endpoint=server.url.removesuffix("/v1/traces")))
    p.start(active=lambda: 0, queued=lambda: 0, idle=lambda: True)
    p.launch()
    p.submit(request(traceparent=TRACEPARENT))
    assert wait_for(lambda: p.pid is not None)
    pid = p.pid
    p.shutdown()  # within the span processor's schedule (1 s): only the shutdown's flush sends them
    assert pid is not None and wait_for(lambda: not process_running(pid))
    traces = [ExportTraceServiceRequest.FromString(body) for path, _, body in server.received if path == "/v1/traces"]
    spans = [s for t in traces for rs in t.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(s.name for s in spans) == ["POST /v1/classify", "decode", "inference"]
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    metrics = [ExportMetricsServiceRequest.FromString(b) for path, _, b in server.received if path == "/v1/metrics"]
    names = {m.name for r in metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "http.server.request.duration" in names


def test_a_killed_process_is_replaced_and_what_it_missed_is_counted(
    processes: Callable[..., TelemetryProcess],
) -> None:
    p = processes(restart_after_s=0.0)
    p.submit(request())
    assert sample_value(p.scrape().payload.decode(), REQUESTS) == 1
    first = p.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: not process_running(first))
    for _ in range(3):
        p.submit(request())
    assert wait_for(lambda: p.pid not in (None, first))  # the hand-over failed and started a new process
    text = p.scrape().payload.decode()
    (line,) = sample_lines(text, DROPPED)
    assert 'reason="process_down"' in line and 'signal="requests"' in line
    assert float(line.rsplit(" ", 1)[1]) == 3
    p.submit(request())
    assert sample_value(p.scrape().payload.decode(), REQUESTS) == 1  # the new process counts from zero
    assert p.starts == 2


def test_while_it_cannot_start_scrapes_are_unavailable_and_losses_are_kept(
    processes: Callable[..., TelemetryProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    p = processes(restart_after_s=0.0)
    p.submit(request())
    p.submit(request())
    with pytest.raises(TelemetryUnavailable):
        p.scrape()
    assert p.pid is None
    monkeypatch.undo()
    text = p.scrape().payload.decode()
    assert sample_value(text, DROPPED) == 2  # counted while it was down, reported once it was up
    assert sample_lines(text, REQUESTS) == []


def test_the_process_ends_when_its_handler_dies() -> None:
    script = (
        "import os\n"
        "from harness.handler.telemetry.link import TelemetryProcess\n"
        "from harness.handler.telemetry.records import TelemetrySettings\n"
        "p = TelemetryProcess(TelemetrySettings('s', '1', 'r', 'p'))\n"
        "p.start(lambda: 0, lambda: 0, lambda: True)\n"
        "p.scrape()\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout)
    assert wait_for(lambda: not process_running(pid)), f"telemetry process {pid} outlived its handler"


def test_the_process_ignores_signals_meant_for_its_handler(processes: Callable[..., TelemetryProcess]) -> None:
    """Ctrl-C in a terminal signals the whole process group: the child must stay to flush what it holds."""
    p = processes()
    p.submit(request())
    assert sample_value(p.scrape().payload.decode(), REQUESTS) == 1
    assert p.pid is not None
    os.kill(p.pid, signal.SIGINT)
    os.kill(p.pid, signal.SIGTERM)
    p.submit(request())
    assert sample_value(p.scrape().payload.decode(), REQUESTS) == 2
    assert p.starts == 1


def test_a_full_hand_over_queue_refuses_items_and_counts_them() -> None:
    p = TelemetryProcess(SETTINGS, max_pending=2, window_s=5.0)
    try:
        p.start(active=lambda: 1, queued=lambda: 0, idle=lambda: False)  # busy: batches wait for the window
        p.launch()
        for _ in range(5):
            p.submit(request())
        text = p.scrape().payload.decode()
        assert sample_value(text, REQUESTS) == 2
        (line,) = sample_lines(text, DROPPED)
        assert 'reason="record_queue_full"' in line and float(line.rsplit(" ", 1)[1]) == 3
    finally:
        p.shutdown()


def test_a_process_that_stops_answering_is_replaced(processes: Callable[..., TelemetryProcess]) -> None:
    p = processes(restart_after_s=0.0, reply_timeout_s=0.5)
    p.submit(request())
    assert sample_value(p.scrape().payload.decode(), REQUESTS) == 1
    stuck = p.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TelemetryUnavailable):
            p.scrape()
        assert time.monotonic() - started < 5  # the reply timeout, not a hang
        assert wait_for(lambda: not process_running(stuck))  # killed, not left behind
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGCONT)
    assert sample_lines(p.scrape().payload.decode(), REQUESTS) == []  # a new process answers
    assert p.pid != stuck and p.starts == 2


def test_scrapes_do_not_queue_behind_a_stopped_process(processes: Callable[..., TelemetryProcess]) -> None:
    """Scrapes that meet a stuck telemetry process (SIGSTOP) answer 503 within the reply timeout, together,
    not one after another; the stuck process is killed (none replaces it within `restart_after_s`)."""
    p = processes(restart_after_s=3600.0)
    p.submit(request())
    assert sample_value(p.scrape().payload.decode(), REQUESTS) == 1
    stuck = p.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)
    try:
        took: list[float] = []
        answered: list[bool] = []

        def scrape() -> None:
            began = time.monotonic()
            try:
                p.scrape()
                answered.append(True)
            except TelemetryUnavailable:
                answered.append(False)
            took.append(time.monotonic() - began)

        began = time.monotonic()
        threads = [threading.Thread(target=scrape) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - began
        assert answered == [False] * 4
        # Each waits the reply timeout (3 s by default) at most, whatever the others do.
        assert max(took) < p.reply_timeout_s + 1.5 and elapsed < p.reply_timeout_s + 2, took
        assert wait_for(lambda: not process_running(stuck))  # killed, not left behind
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGCONT)


def test_a_client_that_says_not_sampled_still_gets_spans(receiver: MakeReceiver) -> None:
    """The handler samples every request (span metrics are built from its spans), under the client's trace."""
    server = receiver()
    p = TelemetryProcess(dataclasses.replace(SETTINGS, otlp_endpoint=server.url.removesuffix("/v1/traces")))
    p.start(active=lambda: 0, queued=lambda: 0, idle=lambda: True)
    p.launch()
    p.submit(request(traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-00"))
    p.shutdown()
    traces = [ExportTraceServiceRequest.FromString(body) for path, _, body in server.received if path == "/v1/traces"]
    spans = [s for t in traces for rs in t.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(s.name for s in spans) == ["POST /v1/classify", "decode", "inference"]
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
