"""The inference worker pool: results, errors, concurrency, the Executor interface and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.handler.workers import WorkerPool


@pytest.fixture
def pool() -> Iterator[Callable[..., WorkerPool]]:
    """Factory of worker pools, each shut down at teardown."""
    made: list[WorkerPool] = []

    def make(size: int, name: str = "inference") -> WorkerPool:
        made.append(WorkerPool(size, name))
        return made[-1]

    yield make
    for p in made:
        p.shutdown()


def test_run_returns_the_result_from_a_worker_thread(pool: Callable[..., WorkerPool]) -> None:
    workers = pool(2, "test")

    async def main() -> tuple[int, str]:
        return await workers.run(lambda a, b: (a + b, threading.current_thread().name), 2, 3)

    total, name = asyncio.run(main())
    assert total == 5
    assert name.startswith("test_")


def test_run_raises_the_jobs_exception_and_the_worker_lives_on(pool: Callable[..., WorkerPool]) -> None:
    workers = pool(1)

    def fail() -> None:
        raise ValueError("bad image")

    async def main() -> int:
        with pytest.raises(ValueError, match="bad image"):
            await workers.run(fail)
        return await workers.run(lambda: 7)

    assert asyncio.run(main()) == 7


def test_at_most_size_jobs_run_at_once(pool: Callable[..., WorkerPool]) -> None:
    workers = pool(2)
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n

    async def main() -> list[int]:
        return list(await asyncio.gather(*(workers.run(job, n) for n in range(6))))

    assert asyncio.run(main()) == list(range(6))
    assert peak == 2


def test_executor_interface_serves_run_in_executor_and_submit(pool: Callable[..., WorkerPool]) -> None:
    workers = pool(1)

    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(workers, pow, 2, 10)

    assert asyncio.run(main()) == 1024
    assert workers.submit(lambda x, *, y: x * y, 6, y=7).result(timeout=5) == 42
    failed = workers.submit(int, "not a number")
    with pytest.raises(ValueError):
        failed.result(timeout=5)


def test_a_cancelled_wait_is_not_answered_and_the_worker_serves_on(pool: Callable[..., WorkerPool]) -> None:
    workers = pool(1)
    release = threading.Event()
    loop_errors: list[dict[str, Any]] = []

    async def main() -> int:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
        slow = asyncio.ensure_future(workers.run(release.wait, 5))
        await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        release.set()  # the job itself runs to its end; its result has no one to go to
        return await workers.run(lambda: 1)

    assert asyncio.run(main()) == 1
    # Setting a result on the cancelled future would have raised in a loop callback.
    assert loop_errors == []


def test_shutdown_finishes_queued_jobs_in_order_then_refuses_new_ones() -> None:
    workers = WorkerPool(1)
    done: list[int] = []
    futures = [workers.submit(lambda n=n: (time.sleep(0.01), done.append(n))) for n in range(3)]
    workers.shutdown(wait=True)
    assert done == [0, 1, 2]
    assert all(f.done() for f in futures)
    assert not any(t.is_alive() for t in workers._threads)
    with pytest.raises(RuntimeError, match="shut down"):
        workers.submit(print)


def test_a_job_finishing_after_its_loop_closed_does_not_kill_the_worker(pool: Callable[..., WorkerPool]) -> None:
    workers = pool(1)
    release = threading.Event()
    loop = asyncio.new_event_loop()
    task = loop.create_task(workers.run(release.wait, 5))
    loop.run_until_complete(asyncio.sleep(0.01))
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()
    release.set()
    assert workers.submit(lambda: "alive").result(timeout=5) == "alive"
