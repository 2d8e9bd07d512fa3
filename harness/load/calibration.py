"""Calibration of the harness against a known-latency server, and the load generator's own costs.

Truth: the test server holds each request for a delay drawn from lognormal(median, sigma) and returns the
drawn value, so the truth of these very requests is known exactly; the client also pays a loopback
transport cost, measured by a bare HTTP client (not the harness) against the same server at the same time
(its time minus the drawn delay). The true client latency distribution is the two convolved; the
harness's p50/p99 are compared to it.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.load.plan import build_plan
from harness.load.processes import REPO_ROOT, child_env, free_port, wait_ready
from harness.load.profiles import Profile
from harness.load.recorder import read_samples
from harness.load.testserver import Delay
from harness.verdict.figures import region_result

REPO = REPO_ROOT


def start_server_process(delay: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The server in its own process, so that its CPU is not counted as the generator's."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.load.testserver", "--port", str(port), "--delay", delay, "--region", "paris"],
        env=child_env(),
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, None, 10)
    return url, proc


def locust_run(
    url: str,
    rate: float,
    duration_s: float,
    out: Path,
    arrival: str = "poisson",
    max_outstanding: int = 256,
    during: Callable[[float], object] | None = None,
    locustfile: Path | None = None,
) -> tuple[Any, float]:
    """One Locust process, one region at `rate`; returns (paris figures, CPU seconds of the process).
    `locustfile`: another tree's (a benchmark's baseline), default ours."""
    out.mkdir(parents=True, exist_ok=True)
    prof = Profile(
        name="bench",
        shape="steady",
        regions=["paris"],
        duration_s=duration_s,
        rate=rate,
        arrival=arrival,
        max_outstanding=max_outstanding,
        drain_s=2.0,
        corpus={"sizes": [[64, 48]], "formats": ["jpeg"]},
    )
    plan = build_plan(prof, {"paris": url}, out, start_at=time.time() + 5.0)
    plan.judge = False  # measure the load process only: the caller reads its samples
    plan.save(out / "plan.json")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile or REPO / "loadtests" / "locustfile.py"),
            "--headless",
            "--only-summary",
            "--loglevel",
            "ERROR",
            "--exit-code-on-error",
            "0",
        ],
        env=child_env({"EDGE_PLAN": str(out / "plan.json")}),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if during is not None:
            during(plan.start_at or time.time())
        if proc.wait(duration_s + 60) != 0:
            raise RuntimeError(f"locust exited with status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures = region_result([s for s in read_samples(out) if s.region == "paris"], 5.0, 0.99)
    return figures, cpu


def raw_transport_ms(url: str, n: int = 300, pace_s: float = 0.05, not_before: float = 0.0) -> list[float]:
    """Loopback transport costs (sorted, ms) measured without the harness: a bare HTTP client, paced, whose
    every request's time minus the delay the server drew for it (Server-Timing `inference`)."""
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    from harness.images import photo_corpus
    from harness.load.generator import parse_server_timing

    body = photo_corpus(sizes=((64, 48),), formats=("jpeg",))[0][2]
    client = HTTPClient.from_url(URL(url), concurrency=2)
    time.sleep(max(0.0, not_before - time.time()))
    values = []
    for _ in range(n):
        time.sleep(pace_s)
        start = time.perf_counter()
        resp = client.post("/v1/classify?top_k=5", body=body, headers={"Content-Type": "image/jpeg"})
        resp.read()
        elapsed = (time.perf_counter() - start) * 1000
        values.append(elapsed - parse_server_timing(resp.get("server-timing")).get("inference", 0.0))
    client.close()
    return sorted(values)


def truth_percentiles(drawn_ms: list[float], transport_ms: list[float]) -> dict[str, float]:
    """p50/p99 of drawn delay + transport, the two independent: every pairing, exactly."""
    import numpy as np

    total = (np.asarray(drawn_ms)[:, None] + np.asarray(transport_ms)[None, :]).ravel()
    return {"p50": float(np.percentile(total, 50)), "p99": float(np.percentile(total, 99))}


def calibrate(out: Path, quick: bool = True) -> dict:
    """Reported p50/p99 against the truth: the delays the server drew for these very requests (exactly
    known: it returns each in Server-Timing `inference`) convolved with the bare loopback transport."""
    median, sigma = 5.0, 0.3
    rate, duration = (40.0, 30.0) if quick else (50.0, 60.0)
    url, srv = start_server_process(f"lognormal:{median}:{sigma}")
    transport: list[float] = []

    def measure_transport(t0: float) -> None:
        # Same server, same time window as the harness's requests, at a quarter of their rate.
        transport.extend(raw_transport_ms(url, n=int(duration * rate / 4), pace_s=4 / rate, not_before=t0))

    try:
        fig, _ = locust_run(url, rate, duration, out / "calibration", during=measure_transport)
    finally:
        srv.terminate()
        srv.wait()
    warm = fig.client_latency_ms.warm
    drawn = [s.inference_us / 1000 for s in read_samples(out / "calibration") if s.ok and s.cold != 1]
    truth = truth_percentiles(drawn, transport)
    analytic = Delay("lognormal", median, sigma)
    t50 = transport[len(transport) // 2]
    result = {
        "server": f"lognormal median {median} ms sigma {sigma}",
        "samples": warm.count,
        "transport_p50_ms": round(t50, 3),
        "transport_p99_ms": round(transport[int(0.99 * len(transport))], 3),
    }
    for pct, q in (("p50", 0.5), ("p99", 0.99)):
        t = truth[pct]
        reported = warm.value(pct) or 0.0
        a = analytic.quantile(q) + t50
        result[pct] = {
            "truth_ms": round(t, 3),
            "reported_ms": reported,
            "error_ms": round(reported - t, 3),
            "error_rel": round((reported - t) / t, 4),
            "analytic_truth_ms": round(a, 3),
            "error_vs_analytic_ms": round(reported - a, 3),
        }
    return result
