"""`edgeharness serve` as a real process: start-up phases, streaming body limit, SIGTERM drain, bad settings."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from handler_fixtures import ROOT, free_port, int8_model, jpeg, models_dir, process_running, serve_process  # noqa: F401


def test_serve_reports_process_init_phases_and_classifies(serve_process, int8_model: Path) -> None:  # noqa: F811
    proc = serve_process(["--region", "sanfrancisco", "--model", str(int8_model)])
    proc.wait_ready()
    ready = httpx.get(f"{proc.url}/readyz").json()
    init = ready["process_init_ms"]
    assert set(init) == {"imports", "fetch", "session", "warmup", "server", "total"}
    assert all(v >= 0 for v in init.values())
    # An eager load runs beside the imports, so those two may overlap; the server phase follows both.
    assert init["total"] >= init["imports"] + init["server"]
    assert init["total"] >= init["fetch"] + init["session"] + init["warmup"] + init["server"]
    response = httpx.post(f"{proc.url}/v1/classify", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    assert response.json()["region"] == "sanfrancisco"
    # The first request of a process is its cold start, and carries the process's init phases.
    assert response.json()["cold_start"] is True
    assert "imports" in response.json()["cold_start_phases_ms"]
    metrics = httpx.get(f"{proc.url}/metrics").text
    assert 'edgeharness_coldstart_kind="process"' in metrics
    assert "listening on" in proc.output()


def test_settings_come_from_environment(serve_process, int8_model: Path) -> None:  # noqa: F811
    proc = serve_process([], env={"EDGE_REGION": "nairobi", "EDGE_MODEL": str(int8_model), "EDGE_POP": "nbo-1"})
    proc.wait_ready()
    assert httpx.get(f"{proc.url}/healthz").json() == {"status": "alive", "region": "nairobi", "pop": "nbo-1"}


def test_body_over_limit_is_refused_while_streaming(serve_process, int8_model: Path) -> None:  # noqa: F811
    proc = serve_process(["--model", str(int8_model), "--max-body-bytes", "65536"])
    proc.wait_ready()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"\xff" * 16384
        # Send 128 KiB, twice the limit, but never the final chunk: a server that read the whole body
        # before answering would wait forever; one that counts while streaming answers 413 now.
        for _ in range(8):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        sock.settimeout(10)
        answer = b""
        while b"body_too_large" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in answer
    assert httpx.get(f"{proc.url}/healthz").status_code == 200


def child_pids(pid: int) -> list[str]:
    """The processes `pid` started, whichever of its threads started them."""
    return [child for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def test_sigterm_drains_in_flight_requests_then_exits(serve_process, int8_model: Path) -> None:  # noqa: F811
    proc = serve_process(["--model", str(int8_model)])
    proc.wait_ready()
    body = jpeg()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        head = (
            f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:1000])  # the request is in flight: headers and part of the body
        time.sleep(0.3)
        children = child_pids(proc.proc.pid)
        assert len(children) == 1, children  # the telemetry process
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.proc.poll() is None, "exited with a request in flight"
        sock.sendall(body[1000:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert proc.proc.wait(timeout=15) == 0
    # The handler waited for its telemetry process to export and end: no orphan is left behind.
    assert (
        not Path(f"/proc/{children[0]}").exists()
        or "Z" in Path(f"/proc/{children[0]}/stat").read_text().split(")")[-1][:3]
    )


def test_bad_setting_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "serve", "--threads", "zero"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--threads" in result.stderr and "'zero'" in result.stderr


def test_missing_model_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "serve", "--model", str(missing), "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "nope.onnx" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_clash_is_a_clear_error(int8_model: Path) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "harness", "serve", "--model", str(int8_model), "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert str(port) in result.stderr
