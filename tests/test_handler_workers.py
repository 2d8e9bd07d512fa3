"""The inference worker pool: results, errors, order, the Executor interface and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from harness.handler.workers import WorkerPool


def test_run_returns_the_result_from_a_worker_thread() -> None:
    pool = WorkerPool(2, "test")
    try:

        async def main() -> tuple[int, str]:
            return await pool.run(lambda a, b: (a + b, threading.current_thread().name), 2, 3)

        total, name = asyncio.run(main())
        assert total == 5
        assert name.startswith("test_")
    finally:
        pool.shutdown()


def test_run_raises_the_jobs_exception_and_the_worker_lives_on() -> None:
    pool = WorkerPool(1)
    try:

        def fail() -> None:
            raise ValueError("bad image")

        async def main() -> int:
            with pytest.raises(ValueError, match="bad image"):
                await pool.run(fail)
            return await pool.run(lambda: 7)

        assert asyncio.run(main()) == 7
    finally:
        pool.shutdown()


def test_at_most_size_jobs_run_at_once_and_the_rest_wait_in_order() -> None:
    pool = WorkerPool(2)
    running = 0
    peak = 0
    started: list[int] = []
    lock = threading.Lock()

    def job(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            started.append(n)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n

    async def main() -> list[int]:
        return list(await asyncio.gather(*(pool.run(job, n) for n in range(6))))

    try:
        assert asyncio.run(main()) == list(range(6))
    finally:
        pool.shutdown()
    assert peak == 2
    assert started == sorted(started)


def test_executor_interface_serves_run_in_executor_and_submit() -> None:
    pool = WorkerPool(1)
    try:

        async def main() -> int:
            return await asyncio.get_running_loop().run_in_executor(pool, pow, 2, 10)

        assert asyncio.run(main()) == 1024
        assert pool.submit(lambda x, *, y: x * y, 6, y=7).result(timeout=5) == 42
        failed = pool.submit(int, "not a number")
        with pytest.raises(ValueError):
            failed.result(timeout=5)
    finally:
        pool.shutdown()


def test_a_cancelled_wait_leaves_the_worker_serving() -> None:
    pool = WorkerPool(1)
    release = threading.Event()
    try:

        async def main() -> int:
            slow = asyncio.ensure_future(pool.run(release.wait, 5))
            await asyncio.sleep(0.01)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            release.set()  # the job itself runs to its end; its result has no one to go to
            return await pool.run(lambda: 1)

        assert asyncio.run(main()) == 1
    finally:
        pool.shutdown()


def test_shutdown_finishes_queued_jobs_then_refuses_new_ones() -> None:
    pool = WorkerPool(1)
    done: list[int] = []
    futures = [pool.submit(lambda n=n: (time.sleep(0.01), done.append(n))) for n in range(3)]
    pool.shutdown(wait=True)
    assert done == [0, 1, 2]
    assert all(f.done() for f in futures)
    assert not any(t.is_alive() for t in pool._threads)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(print)


def test_a_job_finishing_after_its_loop_closed_does_not_kill_the_worker() -> None:
    pool = WorkerPool(1)
    release = threading.Event()
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(pool.run(release.wait, 5))
        loop.run_until_complete(asyncio.sleep(0.01))
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
        release.set()
        assert pool.submit(lambda: "alive").result(timeout=5) == "alive"
    finally:
        pool.shutdown()
