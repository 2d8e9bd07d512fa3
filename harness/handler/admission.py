"""Admission control: a concurrency limit with a bounded wait queue; beyond both, shed the request."""

from __future__ import annotations

import asyncio
import math
import time

from harness.handler import errors


class Admission:
    """At most `limit` requests run at once and at most `queue_limit` wait; the rest get 503."""

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self._slots = asyncio.Semaphore(limit)
        self.active = 0
        self.waiting = 0
        self.shed = 0
        self._recent_service_s = 0.01

    async def enter(self) -> float:
        """Wait for a slot; returns the seconds spent waiting, or raises 503 when the queue is full."""
        if self._slots.locked() and self.waiting >= self.queue_limit:
            self.shed += 1
            raise errors.overloaded(self.retry_after_s())
        start = time.perf_counter()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        return time.perf_counter() - start

    def leave(self, service_s: float) -> None:
        self.active -= 1
        # A smoothed service time tells clients roughly when the queue will have drained.
        self._recent_service_s = 0.9 * self._recent_service_s + 0.1 * service_s
        self._slots.release()

    def retry_after_s(self) -> int:
        backlog_s = (self.waiting + self.active) * self._recent_service_s / max(self.limit, 1)
        return max(1, math.ceil(backlog_s))
