"""Child processes of a run (handlers, test servers, Locust): started on loopback, always cleaned up.

Each child gets its own process group, so stopping it also stops whatever it spawned; a Supervisor
stops every child it started on exit, on an exception, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (the child binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
    """The environment for children: ours (or, with `inherit=False`, only `extra`), with the repository
    importable even when not installed."""
    env = dict(os.environ) if inherit else {}
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


@dataclass
class Child:
    """A started child process and its log."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path | None
    started: float = field(default_factory=time.monotonic)
    _log: IO[bytes] | None = None

    def alive(self) -> bool:
        """Still running."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM the child's group, then SIGKILL after timeout_s; returns its exit status."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the child's group at once: a PoP outage, not a graceful stop."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's log, for error messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Supervisor:
    """Starts children and guarantees they stop; use as a context manager."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> Supervisor:
        # SIGTERM and SIGHUP become KeyboardInterrupt so the same cleanup path runs as for Ctrl-C; SIGINT is
        # set too, since a shell starts background jobs with it ignored.
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)  # type: ignore[arg-type]

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ) -> Child:
        """Start `argv` in its own process group, output to log_path (or discarded); with `inherit_env=False`
        its environment is `env` alone (and PYTHONPATH), nothing of ours."""
        log = log_path.open("ab") if log_path else None
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=child_env(env, inherit=inherit_env),
            cwd=str(cwd or REPO_ROOT),
            start_new_session=True,
        )
        child = Child(name, list(argv), proc, log_path, _log=log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        """Stop every child, newest first."""
        for child in reversed(self.children):
            child.stop()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """GET url answers 200."""
    import httpx

    try:
        return http_client().get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


@functools.cache
def http_client() -> httpx.Client:
    """The process's client for probes and one-off requests. One, because building a client loads the CA
    bundle (~50 ms here), too slow for each readiness poll; without keep-alive, so that a probe holds no
    connection open to a server that is about to stop or be measured cold."""
    import httpx

    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def wait_ready(url: str, child: Child | None, timeout_s: float, path: str = "/readyz") -> float:
    """Poll url+path until 200; seconds it took. RuntimeError (with the log tail) if the child dies or
    the time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited with status {child.proc.returncode} before it was ready:\n{child.log_tail()}"
            )
        if http_ok(url + path, timeout_s=1.0):
            return time.monotonic() - start
        time.sleep(0.05)
    tail = child.log_tail() if child else ""
    raise RuntimeError(f"{url}{path} not ready after {timeout_s:g} s\n{tail}")


def python() -> str:
    """The interpreter running us: children use the same environment."""
    return sys.executable


@contextlib.contextmanager
def supervised() -> Iterator[Supervisor]:
    """`with supervised() as sup:` — a Supervisor that stops its children whatever happens."""
    sup = Supervisor()
    with sup:
        yield sup
