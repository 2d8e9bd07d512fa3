"""Calibration: against a server whose latency distribution is known exactly, the harness reports p50
within 0.2 ms and p99 within 5 % of the truth (truth = the distribution's quantile plus the loopback
transport median, measured first against the same server at zero delay)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.load.plan import build_plan
from harness.load.processes import child_env, free_port, wait_ready
from harness.load.profiles import Profile
from harness.load.recorder import aggregate, read_samples
from harness.load.testserver import Delay

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _server(delay: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.load.testserver", "--port", str(port), "--delay", delay],
                            env=child_env(), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, None, 10)
    return url, proc


def _measure(url: str, rate: float, duration_s: float, out: Path) -> dict:
    prof = Profile(name="calibration", shape="steady", regions=["paris"], duration_s=duration_s, rate=rate,
                   drain_s=2.0, corpus={"sizes": [[64, 48]], "formats": ["jpeg"]})
    plan = build_plan(prof, {"paris": url}, out, start_at=time.time() + 5.0)
    plan.save(out / "plan.json")
    subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
                    "--only-summary", "--loglevel", "ERROR", "--exit-code-on-error", "0"],
                   env=child_env({"EDGE_PLAN": str(out / "plan.json")}), cwd=REPO, check=True,
                   capture_output=True, timeout=duration_s + 60)
    return aggregate(read_samples(out), 5.0)["regions"]["paris"]


def test_reported_percentiles_match_a_known_distribution(tmp_path):
    url0, zero = _server("constant:0")
    try:
        transport = _measure(url0, 40, 10, tmp_path / "zero")["client_latency_ms"]["warm"]["p50"]
    finally:
        zero.terminate()
        zero.wait()
    url, srv = _server("lognormal:5:0.3")
    try:
        fig = _measure(url, 40, 30, tmp_path / "lognormal")
    finally:
        srv.terminate()
        srv.wait()
    warm = fig["client_latency_ms"]["warm"]
    assert warm["count"] >= 1000  # enough for p99
    truth = Delay("lognormal", 5.0, 0.3)
    p50_truth = truth.quantile(0.5) + transport
    p99_truth = truth.quantile(0.99) + transport
    assert abs(warm["p50"] - p50_truth) <= 0.2, (warm, transport)
    assert abs(warm["p99"] - p99_truth) <= 0.05 * p99_truth, (warm, transport)
