"""The native stack's own processes (issue 14, item 10): a clean environment for every child, `down` that
signals only the processes `up` started, an interrupted `up` that leaves nothing running, and no Tempo
exporter queueing spans natively."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from collector_fixtures import require_otelcol, require_prometheus, wait_for
from handler_fixtures import ROOT, models_dir  # noqa: F401

from harness.load.processes import Supervisor
from harness.stack import components
from harness.stack.config import StackConfig
from harness.stack.native import STATE_FILE, NativeStack, StackError, StackLayout, down, process_identity

STRAY = {
    "POP": "stray-pop",
    "REGION": "stray-region",
    "OTEL_RESOURCE_ATTRIBUTES": "cloud.region=stray",
    "OTEL_SERVICE_NAME": "stray",
    "EDGE_CONCURRENCY": "7",
    "EDGE_MODEL": "/nonexistent.onnx",
}


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def identity_once_exec_done(pid: int) -> tuple[int, list[str]]:
    """The process's identity once /proc shows its own command line: Popen returns as execve closes the
    child's close-on-exec pipe, which can be before the new command line is in place (read back empty)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        identity = process_identity(pid)
        if identity is not None and identity[1][:1] == ["sleep"]:
            return identity
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never showed `sleep` as its command line: {process_identity(pid)}")


def write_state(run_dir: Path, pid: int, ticks: int, cmdline: list[str]) -> None:
    service = {"name": "handler-x", "kind": "handler", "region": "x", "url": "", "health_url": "http://127.0.0.1:1/",
               "log": "", "pid": pid, "ports": {}, "started_ticks": ticks, "cmdline": cmdline}  # fmt: skip
    (run_dir / STATE_FILE).write_text(json.dumps({"services": [service]}))


def test_down_signals_only_the_process_up_started(tmp_path: Path) -> None:
    stranger = sleeper()  # holds a pid stack.json names, but is not what `up` started
    try:
        ticks, cmdline = identity_once_exec_done(stranger.pid)
        write_state(tmp_path, stranger.pid, ticks + 1, cmdline)  # started at another moment: a reused pid
        assert down(tmp_path, timeout_s=2) == []
        write_state(tmp_path, stranger.pid, ticks, ["python", "-m", "harness", "serve"])  # another command
        assert down(tmp_path, timeout_s=2) == []
        time.sleep(0.2)
        assert stranger.poll() is None, "down signalled a process it did not start"
        write_state(tmp_path, stranger.pid, ticks, cmdline)  # the very process: stopped
        assert down(tmp_path, timeout_s=5) == ["handler-x"]
        assert stranger.wait(timeout=5) == -signal.SIGTERM
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()


def free_base_port() -> int:
    for _ in range(20):
        base = random.randrange(20000, 26000, 100)
        try:
            StackLayout.for_config(
                StackConfig(regions=("nairobi",), run_dir=Path("."), base_port=base)
            ).check_ports_free()
        except StackError:
            continue
        return base
    raise AssertionError("no free port range")


def start_up(run_dir: Path, models: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "harness", "up", "--regions", "nairobi", "--run-dir", str(run_dir),
            "--base-port", str(free_base_port()), "--models-dir", str(models)]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=ROOT, env={**os.environ, **STRAY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def recorded(run_dir: Path) -> list[dict[str, object]]:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())["services"]
    except (OSError, ValueError, KeyError):
        return []


def still_running(svc: dict[str, object]) -> bool:
    """The recorded process still runs: its pid is alive with the same start time and command line."""
    identity = process_identity(int(svc["pid"]))  # type: ignore[arg-type]
    if identity is None:
        return False
    state = Path(f"/proc/{svc['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z" and identity == (svc["started_ticks"], svc["cmdline"])


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_children_get_a_clean_environment_and_no_tempo_exporter(tmp_path: Path, models_dir: Path) -> None:  # noqa: F811
    require_otelcol()
    require_prometheus()
    run_dir = tmp_path / "stack"
    up = start_up(run_dir, models_dir)
    try:
        output, _ = up.communicate(timeout=120)
        assert up.returncode == 0, output.decode(errors="replace")
        services = recorded(run_dir)
        assert {s["name"] for s in services} == {"prometheus", "model-server", "collector-nairobi", "handler-nairobi"}
        for svc in services:
            env = environ_of(int(svc["pid"]))  # type: ignore[arg-type]
            leaked = {key for key in STRAY if env.get(key) == STRAY[key]}
            assert not leaked, (svc["name"], leaked)
            assert not any(key.startswith("OTEL_") for key in env), svc["name"]
        handler = next(s for s in services if s["name"] == "handler-nairobi")
        ready = httpx.get(f"{handler['url']}/readyz").json()
        assert ready["region"] == "nairobi" and ready["pop"] == "nairobi"
        # The collector labels by its own REGION, not the caller's; and its traces pipeline has no Tempo
        # exporter, so no queue of spans for nobody builds up beside the metrics pipelines.
        collector = next(s for s in services if s["name"] == "collector-nairobi")
        assert environ_of(int(collector["pid"]))["REGION"] == "nairobi"  # type: ignore[arg-type]
        metrics_url = f"http://127.0.0.1:{collector['ports']['metrics']}/metrics"  # type: ignore[index]

        def exporter_metrics() -> str | None:
            text = httpx.get(metrics_url).text
            return text if "otelcol_exporter_queue_capacity" in text else None

        text = wait_for(exporter_metrics, 30, "the collector's exporter metrics")
        assert 'exporter="prometheus_remote_write"' in text
        assert "otlp_grpc/tempo" not in text
        # `down` recognises every process as the one `up` started, and stops it.
        assert sorted(down(run_dir)) == sorted(s["name"] for s in services)
        for svc in services:
            assert wait_for(lambda s=svc: not still_running(s), 20, f"{svc['name']} to stop")
    finally:
        if up.poll() is None:
            up.kill()
        if (run_dir / STATE_FILE).exists():
            down(run_dir)


def test_the_traces_pipeline_without_tempo_matches_the_config_file() -> None:
    import yaml

    config = yaml.safe_load(components.OTELCOL_CONFIG.read_text())
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert [e for e in exporters if e != "otlp_grpc/tempo"] == list(components.TRACE_EXPORTERS_WITHOUT_TEMPO)


@contextlib.contextmanager
def up_interrupted_once(
    tmp_path: Path, models: Path, recorded_at_least: int
) -> Iterator[tuple[subprocess.Popen[bytes], list[dict[str, object]]]]:
    """`edgeharness up` sent SIGTERM once `recorded_at_least` of its processes are recorded, mid-way through
    its start: yields it and the processes it had recorded; whatever is left running is killed after."""
    require_otelcol()
    require_prometheus()
    run_dir = tmp_path / "stack"
    up = start_up(run_dir, models)
    seen: list[dict[str, object]] = []
    try:
        wait_for(lambda: up.poll() is None and len(recorded(run_dir)) >= recorded_at_least, 60,
                 f"{recorded_at_least} processes recorded", 0.05)  # fmt: skip
        seen.extend(recorded(run_dir))
        up.send_signal(signal.SIGTERM)
        yield up, seen
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for svc in seen:
            if still_running(svc):
                os.killpg(int(svc["pid"]), signal.SIGKILL)  # type: ignore[arg-type]


def test_an_interrupted_up_leaves_nothing_running(tmp_path: Path, models_dir: Path) -> None:  # noqa: F811
    with up_interrupted_once(tmp_path, models_dir, 2) as (up, seen):
        output, _ = up.communicate(timeout=60)
        assert up.returncode != 0
        assert b"interrupted" in output, output
        for svc in seen:
            assert wait_for(lambda s=svc: not still_running(s), 10, f"{svc['name']} to stop")
        assert not (tmp_path / "stack" / STATE_FILE).exists()


@pytest.fixture(autouse=True)
def _no_stray_in_this_process() -> None:
    for key in STRAY:
        assert key not in os.environ or os.environ[key] != STRAY[key]


def test_a_second_interrupt_does_not_cut_the_clean_up_of_an_interrupted_up_short(
    tmp_path: Path,
    models_dir: Path,  # noqa: F811
) -> None:
    with up_interrupted_once(tmp_path, models_dir, 3) as (up, seen):
        # An impatient user: Ctrl-C again and again while `up` stops what it started.
        for _ in range(40):
            if up.poll() is not None:
                break
            up.send_signal(signal.SIGINT)
            time.sleep(0.025)
        output, _ = up.communicate(timeout=60)
        assert up.returncode != 0
        for svc in seen:
            assert wait_for(lambda s=svc: not still_running(s), 10, f"{svc['name']} to stop ({output[-2000:]!r})")


def test_down_of_a_legacy_stack_json_checks_the_command_line_only(tmp_path: Path, caplog) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stranger = sleeper()  # a "handler" by its record, but its command line is not one
    try:
        # Written by an older `up`: no started_ticks, no cmdline.
        services = [
            {"name": name, "kind": kind, "region": None, "url": "", "health_url": "http://127.0.0.1:1/",
             "log": "", "pid": pid, "ports": {}}
            for name, kind, pid in (("model-server", "model-server", server.pid),
                                    ("handler-x", "handler", stranger.pid))
        ]  # fmt: skip
        (tmp_path / STATE_FILE).write_text(json.dumps({"services": services}))
        time.sleep(0.3)  # the server's command line is in place
        with caplog.at_level("WARNING"):
            assert down(tmp_path, timeout_s=5) == ["model-server"]
        assert server.wait(timeout=5) is not None
        assert stranger.poll() is None, "down signalled a process whose command line is not the service's"
        assert "only the pid's command line was checked" in caplog.text
    finally:
        for proc in (server, stranger):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_state_file_is_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    stack = NativeStack(StackConfig(regions=("nairobi",), run_dir=tmp_path, base_port=free_base_port()), Supervisor())
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    stack.write_state()
    path = tmp_path / STATE_FILE
    reader = path.open()  # a `status` or `down` reading while `up` writes the next state
    first = reader.read()
    stack.write_state()
    reader.seek(0)
    assert reader.read() == first  # the reader's file is whole, not truncated under it
    reader.close()
    assert json.loads(path.read_text())["services"] == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
