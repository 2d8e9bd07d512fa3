"""Admission control: a concurrency limit with a bounded wait queue; beyond both, shed the request.

The wait queue is the worker pool's own. An admitted request is handed to the pool at once, so a worker
that finishes one request starts the next queued one straight away, without waiting for the event loop
to answer the first and dispatch the second, a wait that left cores idle at saturation. The pool has
`limit` workers, so at most `limit` requests run at once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from harness.handler import errors


class Admission:
    """At most `limit` requests run at once and at most `queue_limit` wait; the rest get 503.

    `enter` and `leave` are called on the event loop, `started` and `finished` by the workers.
    """

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.admitted = 0  # entered and not yet left: running, waiting for a worker, or loading the model
        self.shed = 0
        self._running = 0
        self._lock = threading.Lock()
        self._recent_service_s = 0.01

    @property
    def active(self) -> int:
        """Requests a worker is running now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Admitted requests not running yet."""
        return max(self.admitted - self._running, 0)

    def check(self) -> None:
        """Raises 503 when `enter` would: a full house need not take a request's body in first."""
        if self.admitted >= self.limit + self.queue_limit:
            self.shed += 1
            raise errors.overloaded(self.retry_after_s())

    def enter(self) -> None:
        """Admits a request, or raises 503 when `limit` run and `queue_limit` already wait."""
        if self.admitted >= self.limit + self.queue_limit:
            self.shed += 1
            raise errors.overloaded(self.retry_after_s())
        self.admitted += 1

    def started(self) -> None:
        with self._lock:
            self._running += 1

    def finished(self, service_s: float) -> None:
        """A worker ran a request for `service_s`."""
        with self._lock:
            self._running -= 1
            # A smoothed service time tells clients roughly when the queue will have drained.
            self._recent_service_s = 0.9 * self._recent_service_s + 0.1 * service_s

    def leave(self) -> None:
        """The request is done, whether a worker ran it or not."""
        self.admitted -= 1

    def retry_after_s(self) -> int:
        backlog_s = self.admitted * self._recent_service_s / max(self.limit, 1)
        return max(1, math.ceil(backlog_s))


class ByteBudget:
    """Bytes held at once by all requests together (bodies being read, images being decoded); thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserves `n` bytes; False (and nothing reserved) when they do not fit."""
        with self._lock:
            if self.used + n > self.capacity:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


@dataclass
class ConnectionCount:
    """Open connections of one server, counted by its protocol (protocol.py), read by the app."""

    limit: int
    open: int = 0

    @property
    def over(self) -> bool:
        return self.open > self.limit
