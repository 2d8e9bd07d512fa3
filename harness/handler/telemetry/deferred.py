"""Hands requests' telemetry to a background thread, so that recording it never delays an answer."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from harness.handler.telemetry.threads import background_priority

E = TypeVar("E")

logger = logging.getLogger(__name__)


class DeferredRecorder(Generic[E]):
    """Records requests' telemetry on its own thread, in batches, after their responses have gone (in the
    serving process: to record it there, or to hand it to the telemetry process).

    Recording on the event loop right after each response took the GIL between the workers' stages and
    left cores idle. Handing each request over costs the loop a deque append; the thread wakes when work
    arrives, waits `window_s` to gather a batch (the recording code then stays warm in the caches) and
    records it; when nothing is in flight (`idle`), it records after `idle_delay_s` instead, so that at
    light load the recording falls between requests, not inside the next one. `drain` records what is
    pending at once: a scrape or an export calls it first, so they never miss a request that has been
    answered. Pending items are bounded; beyond `max_pending` they are dropped and counted.

    `record_batch`, instead of `record`, takes each drain's items as lists of at most `max_batch`
    (e.g. to send them to another process in one message). With `started=False` the thread waits for
    `begin` (items are taken, bounded, meanwhile; `drain` and `close` work as ever).
    """

    def __init__(
        self,
        record: Callable[[E], None] | None = None,
        *,
        record_batch: Callable[[list[E]], None] | None = None,
        max_batch: int = 1024,
        window_s: float = 0.1,
        max_pending: int = 4096,
        on_drop: Callable[[int], None] | None = None,
        idle: Callable[[], bool] | None = None,
        idle_delay_s: float = 0.002,
        pause_s: float = 0.00005,
        started: bool = True,
    ) -> None:
        if (record is None) == (record_batch is None):
            raise ValueError("DeferredRecorder takes one of record and record_batch")
        self._record = record
        self._record_batch = record_batch
        self._max_batch = max_batch
        self._pause_s = pause_s
        self._window_s = window_s
        self._idle = idle
        self._idle_delay_s = idle_delay_s
        self._max_pending = max_pending
        self._on_drop = on_drop
        self._pending: collections.deque[E] = collections.deque()
        self._lock = threading.Lock()  # held while recording: a drain returns only when all is recorded
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="telemetry-recorder", daemon=True)
        if started:
            self.begin()

    def begin(self) -> None:
        """Starts the recording thread (idempotent)."""
        with self._lock:
            if self._thread.ident is None and not self._closed:
                self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, item: E) -> None:
        if len(self._pending) >= self._max_pending:
            if self._on_drop is not None:
                self._on_drop(1)
            return
        self._pending.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def drain(self, pause_s: float = 0.0) -> None:
        """Records everything pending. With `pause_s`, sleeps that long after each item while the backlog
        is short: the sleep hands the GIL to the threads serving requests, which would otherwise wait
        behind a whole batch, a switch interval at a time."""
        pause_below = self._max_pending // 4
        with self._lock:
            if self._record_batch is not None:
                self._drain_batches(self._record_batch)
                return
            assert self._record is not None
            while self._pending:
                item = self._pending.popleft()
                try:
                    self._record(item)
                except Exception:  # one bad record must not stop the others
                    logger.exception("recording a request's telemetry failed")
                if pause_s and self._pending and len(self._pending) < pause_below:
                    time.sleep(pause_s)

    def _drain_batches(self, record_batch: Callable[[list[E]], None]) -> None:
        pending = self._pending
        while pending:
            batch = [pending.popleft() for _ in range(min(len(pending), self._max_batch))]
            try:
                record_batch(batch)
            except Exception:  # one bad batch must not stop the others
                logger.exception("recording a batch of requests' telemetry failed")

    def _run(self) -> None:
        background_priority()
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                break
            # Busy: gather a batch. Idle (nothing in flight): record right after the response has gone,
            # before the next request can arrive, rather than at a random moment inside it.
            idle = self._idle is not None and self._idle()
            self._stop.wait(self._idle_delay_s if idle else self._window_s)  # close() cuts the wait short
            self.drain(self._pause_s)

    def close(self) -> None:
        """Records what is pending and stops the thread."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        with self._lock:
            begun = self._thread.ident is not None
        if begun:
            self._thread.join(timeout=5)
        self.drain()
