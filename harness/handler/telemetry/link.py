"""The handler's side of its telemetry: what a request leaves behind to record, and where it goes.

A request's path only gathers facts (`RequestRecord`: times, status, stage marks, trace parent) and
hands them over after its response has gone. Recording them (spans, histograms, OTLP export, the
/metrics text) is the job of a `TelemetrySink`:

- `TelemetryProcess` (the default for `edgeharness serve`): a process of its own, fed over a socket pair
  in batches. Its Python (the OpenTelemetry SDK's recording and exporting) then never takes the serving
  process's GIL from a request; the handler's share is one pickled message per batch. /metrics is
  answered by that process through the same socket. If it dies, the handler serves on, counts what it
  could not hand over, and starts a new one (at most every `restart_after_s`); the counts reach the new
  one's `edgeharness.telemetry.dropped`.
- `harness.handler.telemetry.recorder.InProcessTelemetry`: the same recording on a thread of the handler's own
  process (tests that inspect spans in memory use it).
- `DisabledTelemetry`: records nothing (benchmarks' "telemetry off").

This module imports nothing heavy: a handler that records in another process never loads the SDK.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from harness.handler.telemetry.deferred import DeferredRecorder
from harness.handler.telemetry.records import (
    PROMETHEUS_CONTENT_TYPE,
    InitEvent,
    RequestRecord,
    Scrape,
    TelemetryItem,
    TelemetrySettings,
    TelemetryUnavailable,
)

logger = logging.getLogger(__name__)


class TelemetrySink(Protocol):
    instance_id: str

    def start(self, active: Callable[[], int], queued: Callable[[], int], idle: Callable[[], bool]) -> None:
        """Begins taking items; `active` and `queued` are read for the load gauges, `idle` says that no
        request is in flight (items are then handed over at once rather than in batches)."""

    def launch(self) -> None:
        """The handler is ready: background work may begin (idempotent)."""

    def submit(self, item: TelemetryItem) -> None:
        """Takes an item; never blocks, never raises."""

    def scrape(self) -> Scrape:
        """The /metrics text, with every item submitted so far recorded."""

    def force_flush(self) -> None:
        """Records what is pending and exports what is buffered."""

    def shutdown(self) -> None:
        """Records and exports what is pending, then stops."""


class DisabledTelemetry:
    """Records nothing; /metrics is empty."""

    def __init__(self) -> None:
        self.instance_id = str(uuid.uuid4())

    def start(self, active: Callable[[], int], queued: Callable[[], int], idle: Callable[[], bool]) -> None:
        pass

    def launch(self) -> None:
        pass

    def submit(self, item: TelemetryItem) -> None:
        pass

    def scrape(self) -> Scrape:
        return Scrape(b"", PROMETHEUS_CONTENT_TYPE)

    def force_flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


# -- the wire: length-prefixed pickles over a socket pair between a handler and its own child ---------

_HEADER = struct.Struct("!I")


def send_message(sock: socket.socket, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def read_message(stream: BinaryIO) -> Any | None:
    """The next message, or None at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)


class TelemetryProcess:
    """Records the handler's telemetry in a child process (see the module's docstring)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        instance_id: str | None = None,
        reply_timeout_s: float = 10.0,
        restart_after_s: float = 5.0,
        window_s: float = 0.1,
        max_pending: int = 4096,
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id or str(uuid.uuid4())
        self.starts = 0  # child processes started, the first included
        self._reply_timeout_s = reply_timeout_s
        self._restart_after_s = restart_after_s
        self._lock = threading.Lock()  # one message, or one request and its reply, at a time
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._replies: BinaryIO | None = None
        self._next_start = 0.0
        self._lost: dict[tuple[str, str], int] = {}
        self._active: Callable[[], int] = lambda: 0
        self._queued: Callable[[], int] = lambda: 0
        self._idle: Callable[[], bool] = lambda: True
        # Items refused because the hand-over queue was full: counted by the submitting thread (the event
        # loop, which must never wait for the lock a stuck hand-over may hold), reported by the sender.
        self._refused = 0
        self._refused_reported = 0
        # Its thread starts with `launch`: until then items wait in its bounded queue.
        self._deferred: DeferredRecorder[TelemetryItem] = DeferredRecorder(
            record_batch=self._send_items,
            idle=lambda: self._idle(),
            window_s=window_s,
            max_pending=max_pending,
            on_drop=self._refuse,
            started=False,
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, active: Callable[[], int], queued: Callable[[], int], idle: Callable[[], bool]) -> None:
        self._active, self._queued, self._idle = active, queued, idle

    def launch(self) -> None:
        """Starts handing items over (and so the child process). The handler calls this once it is ready,
        so that the child's start-up (an interpreter and the SDK's imports) does not compete with its own.
        A scrape, a flush or shutdown before then hands over what is pending by itself."""
        self._deferred.begin()

    def submit(self, item: TelemetryItem) -> None:
        self._deferred.submit(item)

    def scrape(self) -> Scrape:
        self._deferred.drain()
        with self._lock:
            content_type, payload = self._request(("scrape", self._load()))
        return Scrape(payload, content_type)

    def force_flush(self) -> None:
        self._deferred.drain()
        with self._lock:
            self._request(("flush", self._load()))

    def shutdown(self) -> None:
        """Hands over what is pending, lets the child export it and waits for it to end."""
        self._deferred.close()
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(TelemetryUnavailable):
                    self._request(("close", self._load()))
            self._disconnect(None)

    # -- internals (the lock is held where a name says so) ---------------------------------------------

    def _load(self) -> tuple[int, int]:
        return self._active(), self._queued()

    def _refuse(self, n: int) -> None:
        self._refused += n

    def _send_items(self, items: list[TelemetryItem]) -> None:
        with self._lock:
            self._report_refused_locked()
            if not self._send_locked(("items", items, self._load())):
                self._lose_locked(sum(isinstance(item, RequestRecord) for item in items), "requests", "process_down")
                self._lose_locked(sum(isinstance(item, InitEvent) for item in items), "init", "process_down")

    def _report_refused_locked(self) -> None:
        refused = self._refused - self._refused_reported
        if refused:
            self._refused_reported += refused
            self._lose_locked(refused, "requests", "record_queue_full")

    def _lose_locked(self, n: int, signal: str, reason: str) -> None:
        if n and not self._send_locked(("dropped", n, signal, reason)):
            self._lost[(signal, reason)] = self._lost.get((signal, reason), 0) + n

    def _send_locked(self, message: Any) -> bool:
        if not self._connect():
            return False
        assert self._sock is not None
        try:
            send_message(self._sock, message)
        except OSError as exc:
            self._disconnect(exc)
            return False
        return True

    def _request(self, message: Any) -> Any:
        self._report_refused_locked()
        if not self._send_locked(message):
            raise TelemetryUnavailable("the telemetry process is not running (it is restarted shortly)")
        assert self._replies is not None
        try:
            reply = read_message(self._replies)
            if reply is None:
                raise EOFError("it closed the socket without a reply")
        except (OSError, EOFError) as exc:
            self._disconnect(exc)
            raise TelemetryUnavailable("the telemetry process did not answer (it is restarted shortly)") from None
        return reply

    def _connect(self) -> bool:
        if self._sock is not None:
            return True
        now = time.monotonic()
        if now < self._next_start:
            return False
        self._next_start = now + self._restart_after_s
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "harness.handler.telemetry.child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            logger.exception("cannot start the telemetry process")
            ours.close()
            return False
        finally:
            theirs.close()
        ours.settimeout(self._reply_timeout_s)
        self._sock, self._replies = ours, ours.makefile("rb")
        self.starts += 1
        lost, self._lost = self._lost, {}
        try:
            send_message(ours, ("config", dataclasses.asdict(self.settings), self.instance_id))
            for (signal, reason), n in lost.items():
                send_message(ours, ("dropped", n, signal, reason))
        except OSError as exc:
            self._lost = lost
            self._disconnect(exc)
            return False
        return True

    def _disconnect(self, why: BaseException | None) -> None:
        if why is not None:
            logger.error("the telemetry process was lost (%s); telemetry is counted as dropped until it restarts", why)
        proc, sock, replies = self._proc, self._sock, self._replies
        self._proc, self._sock, self._replies = None, None, None
        if sock is not None:
            sock.close()  # the child reads end of stream, exports what it holds and exits
        if replies is not None:
            replies.close()
        if proc is not None:
            try:
                proc.wait(timeout=self._reply_timeout_s if why is None else 0.5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_telemetry(settings: TelemetrySettings, in_process: bool) -> TelemetrySink:
    """The sink a handler records into: none, a thread of its own process, or a child process."""
    if not settings.enabled:
        return DisabledTelemetry()
    if in_process:
        from harness.handler.telemetry.recorder import InProcessTelemetry

        return InProcessTelemetry(settings)
    return TelemetryProcess(settings)
