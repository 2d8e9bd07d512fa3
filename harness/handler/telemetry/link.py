"""The serving process's side of its telemetry: hands records to a telemetry process of its own.

A request's path only gathers facts (`records.RequestRecord`) and submits them after its response has gone.
`TelemetryProcess` queues them (bounded), and a thread of its own sends them in batches over a socket pair to
the child (`python -m harness.handler.telemetry.child`), which records them with the OpenTelemetry SDK,
exports them by OTLP and answers /metrics. The SDK is never imported here: a handler pays for its telemetry
one pickled message per batch, and the SDK's Python never takes a request's GIL.

If the child dies or stops answering, the handler serves on: what it could not hand over is counted, a new
child is started (at most every `restart_after_s`), and the counts reach its `edgeharness.telemetry.dropped`.
No call waits on the child for longer than `reply_timeout_s` (a scrape answers 503 instead), except while it
starts (`start_timeout_s`: an interpreter and the SDK's imports).
"""

from __future__ import annotations

import collections
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
        """The /metrics text, with every item submitted so far recorded; raises TelemetryUnavailable."""

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
# (multiprocessing.connection frames the same way, but cannot bound a send: a stopped child would block it.)

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


@dataclasses.dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    replies: BinaryIO
    ready_by: float  # monotonic deadline for its "ready"
    ready: bool = False


class TelemetryProcess:
    """Records the handler's telemetry in a child process (see the module's docstring)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        instance_id: str | None = None,
        reply_timeout_s: float = 3.0,
        start_timeout_s: float = 30.0,
        restart_after_s: float = 5.0,
        window_s: float = 0.1,
        idle_delay_s: float = 0.002,
        max_pending: int = 4096,
        max_batch: int = 1024,
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id or str(uuid.uuid4())
        self.starts = 0  # child processes started, the first included
        self.reply_timeout_s = reply_timeout_s
        self.start_timeout_s = start_timeout_s
        self.restart_after_s = restart_after_s
        self._window_s = window_s
        self._idle_delay_s = idle_delay_s
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._lock = threading.Lock()  # the socket: one message, or one request and its reply, at a time
        self._child: _Child | None = None
        self._next_start = 0.0
        self._lost: dict[tuple[str, str], int] = {}
        self._active: Callable[[], int] = lambda: 0
        self._queued: Callable[[], int] = lambda: 0
        self._idle: Callable[[], bool] = lambda: True
        self._pending: collections.deque[TelemetryItem] = collections.deque()
        # Items refused because the queue was full: counted by the event loop (which must never wait for
        # the lock a stuck hand-over may hold), reported by whoever next holds the lock.
        self._refused = 0
        self._refused_reported = 0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry-handover", daemon=True)

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.proc.pid if child is not None else None

    def start(self, active: Callable[[], int], queued: Callable[[], int], idle: Callable[[], bool]) -> None:
        self._active, self._queued, self._idle = active, queued, idle

    def launch(self) -> None:
        """Starts handing items over (and so the child). The handler calls this once it is ready, so that
        the child's start-up does not compete with its own; a scrape, a flush or shutdown before then hands
        over what is pending by itself."""
        with self._lock:
            if self._thread.ident is None and not self._closed.is_set():
                self._thread.start()

    def submit(self, item: TelemetryItem) -> None:
        if len(self._pending) >= self._max_pending:
            self._refused += 1
            return
        self._pending.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def scrape(self) -> Scrape:
        content_type, payload = self._request("scrape", self.reply_timeout_s)
        return Scrape(payload, content_type)

    def force_flush(self) -> None:
        self._request("flush", self._export_allowance())

    def shutdown(self) -> None:
        """Hands over what is pending, lets the child export it and waits for it to end."""
        self._closed.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=self.reply_timeout_s + self.start_timeout_s)
        with self._lock:
            self._hand_over_locked()
            if self._child is not None:
                with contextlib.suppress(TelemetryUnavailable):
                    self._request_locked("close", time.monotonic() + self._export_allowance())
            self._disconnect(None)

    # -- internals (the lock is held where a name says so) ---------------------------------------------

    def _export_allowance(self) -> float:
        # Spans, then metrics, each export bounded by its timeout, and a retry each.
        return self.reply_timeout_s + 4 * self.settings.export_timeout_s

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            self._wake.clear()
            # Busy: gather a batch. Idle (nothing in flight): hand over right after the response has gone,
            # before the next request can arrive, rather than at a random moment inside it.
            self._closed.wait(self._idle_delay_s if self._idle() else self._window_s)
            with self._lock:
                self._hand_over_locked()

    def _load(self) -> tuple[int, int]:
        return self._active(), self._queued()

    def _hand_over_locked(self) -> None:
        refused = self._refused - self._refused_reported
        if refused:
            self._refused_reported += refused
            self._lose_locked(refused, "requests", "record_queue_full")
        pending = self._pending
        while pending:
            batch = [pending.popleft() for _ in range(min(len(pending), self._max_batch))]
            if not self._send_locked(("items", batch, self._load())):
                self._lose_locked(sum(isinstance(item, RequestRecord) for item in batch), "requests", "process_down")
                self._lose_locked(sum(isinstance(item, InitEvent) for item in batch), "init", "process_down")

    def _lose_locked(self, n: int, signal: str, reason: str) -> None:
        if n and not self._send_locked(("dropped", n, signal, reason)):
            self._lost[(signal, reason)] = self._lost.get((signal, reason), 0) + n

    def _send_locked(self, message: Any) -> bool:
        child = self._connect_locked()
        if child is None:
            return False
        try:
            child.sock.settimeout(self._timeout(child, time.monotonic() + self.reply_timeout_s))
            send_message(child.sock, message)
        except OSError as exc:
            self._disconnect(exc)
            return False
        return True

    def _timeout(self, child: _Child, deadline: float) -> float:
        """Seconds left until `deadline`, or until the child's start-up allowance while it is starting."""
        if not child.ready:
            deadline = max(deadline, child.ready_by)
        return max(deadline - time.monotonic(), 0.001)

    def _request(self, kind: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        # Bounded: a scrape behind a hand-over stuck on a stopped child answers 503, it does not queue.
        if not self._lock.acquire(timeout=timeout_s):
            raise TelemetryUnavailable("the telemetry process is busy or stuck (it is restarted if it stays so)")
        try:
            self._hand_over_locked()  # a scrape sees every request answered before it
            return self._request_locked(kind, deadline)
        finally:
            self._lock.release()

    def _request_locked(self, kind: str, deadline: float) -> Any:
        if not self._send_locked((kind, self._load())):
            raise TelemetryUnavailable("the telemetry process is not running (it is restarted shortly)")
        child = self._child
        assert child is not None
        try:
            while True:
                child.sock.settimeout(self._timeout(child, deadline))
                reply = read_message(child.replies)
                if reply is None:
                    raise EOFError("it closed the socket without a reply")
                if reply == ("ready",):
                    child.ready = True
                    continue
                return reply
        except (OSError, EOFError) as exc:
            self._disconnect(exc)
            raise TelemetryUnavailable("the telemetry process did not answer (it is restarted shortly)") from None

    def _connect_locked(self) -> _Child | None:
        if self._child is not None:
            return self._child
        if self._closed.is_set() and self.starts:
            return None  # shutting down: no new child to hand the rest to
        now = time.monotonic()
        if now < self._next_start:
            return None
        self._next_start = now + self.restart_after_s
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.handler.telemetry.child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            logger.exception("cannot start the telemetry process")
            ours.close()
            return None
        finally:
            theirs.close()
        self._child = child = _Child(proc, ours, ours.makefile("rb"), ready_by=now + self.start_timeout_s)
        self.starts += 1
        lost, self._lost = self._lost, {}
        try:
            ours.settimeout(self.start_timeout_s)
            send_message(ours, ("config", dataclasses.asdict(self.settings), self.instance_id))
            for (signal, reason), n in lost.items():
                send_message(ours, ("dropped", n, signal, reason))
        except OSError as exc:
            self._lost = lost
            self._disconnect(exc)
            return None
        return child

    def _disconnect(self, why: BaseException | None) -> None:
        if why is not None:
            logger.error("the telemetry process was lost (%s); telemetry is counted as dropped until it restarts", why)
        child, self._child = self._child, None
        if child is None:
            return
        child.sock.close()  # the child reads end of stream, exports what it holds and exits
        child.replies.close()
        try:
            # A child that failed is not waited for: it may be stopped, or stuck in an export.
            child.proc.wait(timeout=self._export_allowance() if why is None else 0.2)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


def make_telemetry(settings: TelemetrySettings) -> TelemetrySink:
    """The sink a handler records into: a child process, or nothing when telemetry is off."""
    if not settings.enabled:
        return DisabledTelemetry()
    return TelemetryProcess(settings)
