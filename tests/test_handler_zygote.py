"""`edgeharness serve --start-strategy zygote` as real processes: forks on demand, sessions only in the
children, a crashed child replaced, a bad setting a clear exit, scale to zero and back."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from handler_fixtures import int8_model, jpeg, models_dir, process_running, serve_process  # noqa: F401

ZYGOTE = ["--start-strategy", "zygote"]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def serving_lines(output: str) -> list[tuple[int, int]]:
    """(pid, session pid) of every serving process that reached listening, in order."""
    return [(int(a), int(b)) for a, b in re.findall(r" pid=(\d+) session-pid=(\d+) listening on", output)]


def forked(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"forked serving process pid=(\d+)", output)]


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on loopback `port` (Linux /proc/net/tcp; state 0A is LISTEN)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return {r.split()[9] for r in rows if r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A"}


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                out.add(target[8:-1])
    return out


def test_session_lives_in_the_forked_child_and_a_crashed_child_is_replaced(serve_process, int8_model: Path) -> None:  # noqa: F811
    proc = serve_process([*ZYGOTE, "--model", str(int8_model)])
    proc.wait_ready(60)
    zygote = proc.proc.pid
    first = forked(proc.output())
    assert len(first) == 1 and first[0] != zygote
    # The ONNX Runtime session was created in the serving process (after the fork), never in the zygote.
    assert wait_for(lambda: serving_lines(proc.output()), 10, "the listening line") == [(first[0], first[0])]
    # So was the listening socket: the child holds it, the zygote holds none.
    listener = listening_inodes(proc.port)
    assert listener and listener <= socket_inodes(first[0]) and not listener & socket_inodes(zygote)
    answer = httpx.post(f"{proc.url}/v1/classify", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json()["cold_start"] is True
    # A fork's own start-up phases: the fork instead of the imports, then the model's load.
    phases = httpx.get(f"{proc.url}/readyz").json()["process_init_ms"]
    assert {"fork", "fetch", "session", "warmup", "server", "total"} <= set(phases) and "imports" not in phases

    os.kill(first[0], signal.SIGKILL)
    pids = wait_for(lambda: len(serving_lines(proc.output())) == 2 and serving_lines(proc.output()), 60, "a new child")
    second = pids[1][0]
    assert second not in (first[0], zygote) and pids[1] == (second, second)
    assert "crashed (killed by SIGKILL); replacing it" in proc.output()
    assert process_running(zygote) and not process_running(first[0])
    proc.wait_ready(30)
    again = httpx.post(f"{proc.url}/v1/classify", content=jpeg(seed=2), headers={"content-type": "image/jpeg"})
    assert again.status_code == 200

    # SIGTERM to the zygote stops its child (drained) and ends cleanly.
    assert proc.stop() == 0
    assert not process_running(second)


def test_on_signal_scales_from_zero_and_back(serve_process, int8_model: Path) -> None:  # noqa: F811
    proc = serve_process([*ZYGOTE, "--zygote-spawn", "on-signal", "--model", str(int8_model)])
    wait_for(lambda: "warm in" in proc.output(), 60, "the zygote to warm up")
    zygote = proc.proc.pid
    time.sleep(0.3)
    assert not listening(proc.port) and forked(proc.output()) == []  # nothing serves until asked
    for round_ in (1, 2):
        os.kill(zygote, signal.SIGUSR1)
        proc.wait_ready(60)
        child = forked(proc.output())[-1]
        assert len(forked(proc.output())) == round_ and serving_lines(proc.output())[-1] == (child, child)
        os.kill(zygote, signal.SIGUSR2)
        wait_for(lambda: not listening(proc.port), 30, "the child to stop")
        wait_for(lambda: f"pid={child} stopped (status 0)" in proc.output(), 30, "the child to exit")  # noqa: B023
        assert process_running(zygote) and not process_running(child)
    time.sleep(0.3)
    assert len(forked(proc.output())) == 2  # a stopped child is not replaced
    assert proc.stop() == 0


def test_a_bad_model_ends_the_zygote_with_status_2(serve_process, tmp_path: Path) -> None:  # noqa: F811
    proc = serve_process([*ZYGOTE, "--model", str(tmp_path / "missing.onnx")])
    assert proc.proc.wait(60) == 2
    out = proc.output()
    assert "file not found" in out and forked(out) == []  # found before any fork


def test_a_crash_loop_ends_the_zygote(serve_process, int8_model: Path) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve_process([*ZYGOTE, "--model", str(int8_model), "--port", str(port)])
        assert proc.proc.wait(120) != 0
    out = proc.output()
    assert "address already in use" in out and "the 5th in a row" in out and "giving up" in out
    assert len(forked(out)) == 5  # replaced, with pauses, then no more


def test_children_take_the_zygotes_fetch_while_the_file_is_unchanged(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    from harness.handler.zygote import PrefetchedStore
    from harness.model.store import ModelStore

    model = tmp_path / "m.onnx"
    model.write_bytes(int8_model.read_bytes())
    store = PrefetchedStore(ModelStore(tmp_path / "cache"), str(model), None)
    first = store.fetch(str(model), None)
    assert store.fetch(str(model), None) is first  # no second read and hash
    # Replaced on disk as deployments do (a new file renamed over the old: a new inode, whatever the clock's
    # granularity says of the mtime): fetched (and hashed) anew.
    replacement = tmp_path / "m.onnx.new"
    replacement.write_bytes(int8_model.read_bytes()[:-1] + b"\0")
    os.replace(replacement, model)
    again = store.fetch(str(model), None)
    assert again is not first and again.sha256 != first.sha256
    assert store.cache_dir == tmp_path / "cache"  # the rest is the real store's
