"""Run the real telemetry pipeline (Prometheus, per-region collectors) as local processes in tests.

The helpers are plain functions over subprocesses, in the shape the native stack needs too: find the
binary, build the environment that collector/otelcol.yaml reads, start on free loopback ports, wait
for readiness with a deadline, stop for certain. Test modules wrap the last section in pytest fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.load.processes import Supervisor, free_port
from harness.stack.components import (
    BUILDER_MANIFEST,
    HOW_TO_GET_OTELCOL,
    HOW_TO_GET_PROMETHEUS,
    OTELCOL_CONFIG,
    PROMETHEUS_CONFIG,
    TEMPO_CONFIG,
    CollectorPorts,
    base_env,
    collector_argv,
    collector_env,
    collector_image,
    collector_version,
    find_otelcol,
    find_prometheus,
    find_promtool,
    prometheus_argv,
    prometheus_flags,
    prometheus_image,
    prometheus_version,
    read_versions,
    tempo_image,
)
from harness.stack.config import StackConfig
from harness.stack.native import NativeStack, StackError
from harness.stack.prometheus import PrometheusClient

__all__ = [
    "BUILDER_MANIFEST", "OTELCOL_CONFIG", "PROMETHEUS_CONFIG", "TEMPO_CONFIG", "CollectorPorts", "collector_env",
    "collector_image", "collector_version", "prometheus_flags", "prometheus_image", "prometheus_version",
    "read_versions", "tempo_image",
]  # fmt: skip

LOOPBACK = "127.0.0.1"

T = TypeVar("T")


# --- small process plumbing ---------------------------------------------------------------------


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `condition` until it returns something truthy, or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # a poll that raises is a poll that has not succeeded yet
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class ManagedProcess:
    """A child process with its output in a log file; stop() always leaves it dead."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)


def start_process(name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, env=dict(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def wait_ready(process: ManagedProcess, probe: Callable[[], bool], timeout: float) -> None:
    """Wait until `probe` passes; fail fast, with the log, if the process dies first."""

    def ready() -> bool:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}")
        return probe()

    try:
        wait_for(ready, timeout, f"{process.name} to be ready")
    except (TimeoutError, RuntimeError) as error:
        process.stop()
        raise RuntimeError(f"{error}\n--- {process.log_path} ---\n{process.log_tail()}") from None


# --- finding the binaries -------------------------------------------------------------------------


def require_tool(path: Path | None, what: str, how: str) -> Path:
    """The tool, or a skip saying how to get it; in CI (CI=true) a missing tool fails the test."""
    if path is not None:
        return path
    message = f"{what} not found: {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: the pipeline tests must run in CI)", pytrace=False)
    pytest.skip(message)


# --- Prometheus -----------------------------------------------------------------------------------


@dataclass
class PrometheusServer:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def remote_write_endpoint(self) -> str:
        return f"{self.url}/api/v1/write"

    @property
    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)

    def api(self, path: str, **params: str) -> Any:
        return self.client.api(path, **params)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query: a list of {'metric': labels, 'value': [ts, 'v']}."""
        return self.client.query(promql)

    def exemplars(self, promql: str, window_s: float = 600.0) -> list[dict[str, Any]]:
        return self.client.exemplars(promql, window_s)

    def stop(self) -> None:
        self.process.stop()


def start_prometheus(binary: Path, workdir: Path, timeout: float = 60.0, attempts: int = 3) -> PrometheusServer:
    """Prometheus on a free loopback port with its data under `workdir`; ready when /-/ready is 200."""
    error: Exception | None = None
    for attempt in range(attempts):  # another process may take the free port before we bind it
        port = free_port()
        data_dir = workdir / f"prometheus-data-{attempt}"
        process = start_process(
            "prometheus",
            prometheus_argv(binary, data_dir, LOOPBACK, port),
            base_env(),
            workdir / f"prometheus-{attempt}.log",
        )
        server = PrometheusServer(process=process, port=port)
        try:
            wait_ready(process, lambda s=server: http_get(f"{s.url}/-/ready")[0] == 200, timeout)
            return server
        except RuntimeError as failure:
            error = failure
    raise RuntimeError(f"Prometheus did not start in {attempts} attempts: {error}")


# --- regional collectors --------------------------------------------------------------------------


def free_collector_ports() -> CollectorPorts:
    return CollectorPorts(otlp_grpc=free_port(), otlp_http=free_port(), metrics=free_port(), health=free_port())


@dataclass
class RegionalCollector:
    region: str
    pop: str
    ports: CollectorPorts
    traces_file: Path
    env: dict[str, str]
    process: ManagedProcess = field(repr=False)

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.otlp_grpc}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.otlp_http}"

    def spans(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes, span) for every span the file exporter has written so far."""
        found = []
        if not self.traces_file.exists():
            return found
        for line in self.traces_file.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = otlp_attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    found.extend((resource, span) for span in scope_spans.get("spans", []))
        return found

    def stop(self) -> None:
        self.process.stop()


def otlp_attributes(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP JSON attributes ([{key, value: {stringValue: ...}}]) as a plain dict."""
    plain = {}
    for attribute in attributes:
        value = attribute.get("value", {})
        plain[attribute["key"]] = next(iter(value.values()), None) if value else None
    return plain


def validate_collector_config(binary: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", f"--config={OTELCOL_CONFIG}"],
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_collector(
    binary: Path,
    *,
    region: str,
    remote_write_endpoint: str,
    workdir: Path,
    pop: str | None = None,
    tempo_endpoint: str | None = None,
    metrics_interval: str = "1s",
    metrics_export: str = "remote_write",
    otlp_endpoint: str | None = None,
    timeout: float = 60.0,
    attempts: int = 3,
) -> RegionalCollector:
    """One regional collector on free loopback ports, ready when its health check answers 200.

    Without Tempo (natively), pass no tempo_endpoint: traces then go to a closed loopback port, and the
    exporter's bounded queue drops them, as it would with Tempo down.
    """
    error: Exception | None = None
    for attempt in range(attempts):
        ports = free_collector_ports()
        traces_file = workdir / f"traces-{region}.jsonl"
        env = collector_env(
            region=region,
            pop=pop,
            ports=ports,
            remote_write_endpoint=remote_write_endpoint,
            tempo_endpoint=tempo_endpoint or f"{LOOPBACK}:{free_port()}",
            traces_file=traces_file,
            metrics_interval=metrics_interval,
            metrics_export=metrics_export,
            otlp_endpoint=otlp_endpoint,
        )
        process = start_process(
            f"otelcol[{region}]",
            collector_argv(binary),
            {**base_env(), **env},
            workdir / f"otelcol-{region}-{attempt}.log",
        )
        health = f"http://{LOOPBACK}:{ports.health}/"
        try:
            wait_ready(process, lambda url=health: http_get(url)[0] == 200, timeout)
        except RuntimeError as failure:
            error = failure
            continue
        return RegionalCollector(
            region=region, pop=pop or region, ports=ports, traces_file=traces_file, env=env, process=process
        )
    raise RuntimeError(f"collector for {region} did not start in {attempts} attempts: {error}")


# --- what the tests' fixtures call -----------------------------------------------------------------


def require_otelcol() -> Path:
    return require_tool(find_otelcol(), "collector/dist/otelcol", HOW_TO_GET_OTELCOL)


def require_prometheus() -> Path:
    return require_tool(find_prometheus(), "Prometheus 3", HOW_TO_GET_PROMETHEUS)


def require_promtool() -> Path:
    return require_tool(find_promtool(), "promtool (Prometheus 3)", HOW_TO_GET_PROMETHEUS)


@contextlib.contextmanager
def running_prometheus(binary: Path, workdir: Path) -> Iterator[PrometheusServer]:
    server = start_prometheus(binary, workdir)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_collectors(
    binary: Path, regions: Mapping[str, str | None], remote_write_endpoint: str, workdir: Path
) -> Iterator[dict[str, RegionalCollector]]:
    """One collector per region ({region: PoP or None}); all stopped on exit, even after a failed start."""
    collectors: dict[str, RegionalCollector] = {}
    try:
        for region, pop in regions.items():
            collectors[region] = start_collector(
                binary, region=region, pop=pop, remote_write_endpoint=remote_write_endpoint, workdir=workdir
            )
        yield collectors
    finally:
        for collector in collectors.values():
            collector.stop()


def start_native_stack(sup: Supervisor, ports: tuple[int, int] = (20000, 26000), **config: Any) -> NativeStack:
    """A native stack on a random base port in `ports` (below the kernel's ephemeral range, so no client
    connection's local port can hold one); another range is tried when a port of the plan is held."""
    last: Exception | None = None
    for _attempt in range(5):
        native = NativeStack(StackConfig(base_port=random.randrange(*ports, 100), **config), sup)
        try:
            native.start()
            return native
        except StackError as exc:
            sup.stop_all()
            last = exc
    raise AssertionError(f"the native stack did not start: {last}")
