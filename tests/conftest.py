"""Shared fixtures: a known-latency test server on loopback, and paths into the repository."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture
def known_server() -> Iterator[Callable[..., str]]:
    """Factory: start harness.load.testserver in a thread, return its base URL; all stop at teardown."""
    from harness.load.processes import free_port
    from harness.load.testserver import Delay, serve

    servers = []

    def start(
        delay: str = "constant:1", region: str = "test", idle_timeout_s: float = 0.0, cold_ms: float = 0.0
    ) -> str:
        port = free_port()
        server = serve("127.0.0.1", port, Delay.parse(delay), region, idle_timeout_s, cold_ms)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{port}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()
