"""Helpers for the telemetry tests: an OTLP/HTTP endpoint on loopback, Prometheus text lookups, polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """An OTLP/HTTP endpoint on loopback: answers POSTs with scripted statuses (the last one repeats) and
    keeps what it received. With `hang`, it answers only once released (at teardown)."""

    def __init__(self, statuses: Sequence[int], hang: bool = False) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.headers: list[dict[str, str]] = []
        self._statuses = list(statuses)
        self._hang = hang
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def _answer(self, path: str, content_type: str, body: bytes) -> int:
        with self._lock:
            self.received.append((path, content_type, body))
            return self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                status = receiver._answer(self.path, self.headers.get("Content-Type", ""), body)
                if receiver._hang:
                    receiver.release.wait(10)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


MakeReceiver = Callable[..., Receiver]

DEADLINE_S = 5.0


def wait_for(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> bool:
    """Polls `condition` until it holds or the deadline passes; returns its last value."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            return condition()
        time.sleep(0.01)
    return True


def sample_lines(text: str, name: str) -> list[str]:
    """The exposition's sample lines of series `name` (any labels)."""
    return [line for line in text.splitlines() if line.startswith((f"{name}{{", f"{name} "))]


def sample_value(text: str, name: str) -> float:
    (line,) = sample_lines(text, name)
    return float(line.rsplit(" ", 1)[1])


class InProcessTelemetry:
    """A TelemetrySink that records each item at once in this process, with the same SDK wiring and
    recorder as the telemetry process: tests can then see the spans in memory (`add_span_processor`)."""

    def __init__(self, settings: Any) -> None:
        from harness.handler.telemetry.recorder import RequestRecorder
        from harness.handler.telemetry.sdk import Telemetry

        self.telemetry = Telemetry(settings)
        self.instance_id = self.telemetry.instance_id
        self.recorder = RequestRecorder(self.telemetry)
        self._load: tuple[Callable[[], int], Callable[[], int]] = (lambda: 0, lambda: 0)

    def add_span_processor(self, processor: Any) -> None:
        self.telemetry.add_span_processor(processor)

    def start(self, active: Callable[[], int], queued: Callable[[], int], idle: Callable[[], bool]) -> None:
        self._load = (active, queued)

    def launch(self) -> None:
        pass

    def submit(self, item: Any) -> None:
        self.recorder.record(item)

    def scrape(self) -> Any:
        self.telemetry.set_load(self._load[0](), self._load[1]())
        return self.telemetry.scrape()

    def force_flush(self) -> None:
        self.telemetry.force_flush()

    def shutdown(self) -> None:
        self.telemetry.shutdown()
