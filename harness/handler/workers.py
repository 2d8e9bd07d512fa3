"""The inference workers: a fixed set of threads taking jobs from one queue.

`run` awaits a job from the event loop with one hand-over each way: the job goes onto the queue, and the
worker that finishes it resolves the awaiting asyncio future with one `call_soon_threadsafe`. asyncio's
`run_in_executor` does the same through a `concurrent.futures.Future` (with its own condition variable)
chained to an asyncio future by callbacks on both sides. That machinery runs on every request's critical
path, with the caches cold after the idle gap between requests, where each Python step costs several times
its warm price. The queue is also the handler's wait queue (admission.py): a worker that finishes one
request takes the next one straight away, without waiting for the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


def _settle(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class WorkerPool(concurrent.futures.Executor):
    """`size` threads running jobs one at a time each, in the order they were queued."""

    def __init__(self, size: int, name: str = "inference") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Callable[..., None]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a worker; the result (or exception) comes back to the awaiting coroutine."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def done(error: BaseException | None, result: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one is waiting
                loop.call_soon_threadsafe(_settle, future, error, result)

        self._put(fn, args, done)
        return await future

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """The `Executor` interface, for `loop.run_in_executor` and code off the event loop."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def done(error: BaseException | None, result: Any) -> None:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        def call() -> T:
            return fn(*args, **kwargs)

        future.set_running_or_notify_cancel()  # a queued job is not withdrawn, as with `run`
        self._put(call, (), done)
        return future

    def _put(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Callable[..., None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            self._jobs.put((fn, args, done))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Workers finish the jobs already queued, then stop; `wait` joins them. `cancel_futures` is taken
        for `Executor`'s signature only: queued jobs always run (the handler drains before it shuts down)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._jobs.put(None)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, done = job
            error: BaseException | None = None
            result: Any = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, who decides what it means
                error = exc
            try:
                done(error, result)
            except Exception:  # a worker that stopped here would leave the pool one short for good
                logger.exception("handing a job's result back failed")
            del job, fn, args, done, error, result
