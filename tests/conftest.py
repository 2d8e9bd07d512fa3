"""Shared fixtures: a known-latency test server and an OTLP receiver on loopback, and paths into the repository."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from schema_fixtures import OUTPUT_SCHEMAS, assert_follows_schema

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


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Factory of loopback OTLP/HTTP receivers (telemetry_fixtures.Receiver); all are closed at teardown."""
    from telemetry_fixtures import Receiver

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    started: list[Receiver] = []

    def start(statuses: Sequence[int] = (200,), hang: bool = False) -> Receiver:
        started.append(Receiver(statuses, hang))
        return started[-1]

    yield start
    for r in started:
        r.close()


@pytest.fixture(autouse=True)
def _results_follow_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every results.json, cost.json and compare.json a test writes under its tmp_path validates against
    `edgeharness schema results|cost|compare`."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None:
        return
    for path in sorted(Path(tmp).rglob("*.json")):
        if path.name in OUTPUT_SCHEMAS:
            assert_follows_schema(path)
