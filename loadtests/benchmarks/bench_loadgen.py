"""Benchmark the load generator itself: calibration against a known-latency server, CPU cost per
request, and the highest arrival rate one Locust process sustains on loopback.

    .venv/bin/python loadtests/benchmarks/bench_loadgen.py [--quick] [--out runs/bench-loadgen]

Calibration truth: the test server holds each request for a delay drawn from lognormal(median, sigma),
whose quantiles are known exactly; the client also pays a loopback transport cost, measured first
against the same server with zero delay (its median is added to the truth). Reported: the harness's
p50 and p99 against truth, as absolute (ms) and relative errors.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.load.plan import build_plan  # noqa: E402
from harness.load.processes import child_env, free_port  # noqa: E402
from harness.load.profiles import Profile  # noqa: E402
from harness.load.recorder import aggregate, read_samples  # noqa: E402
from harness.load.testserver import Delay, serve  # noqa: E402


def start_server(delay: str) -> tuple[str, object]:
    """A known-latency server in a thread of this process (idle otherwise); returns URL and server."""
    port = free_port()
    server = serve("127.0.0.1", port, Delay.parse(delay), "paris")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return f"http://127.0.0.1:{port}", server


def start_server_process(delay: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The server in its own process, so that its CPU is not counted as the generator's."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.load.testserver", "--port", str(port), "--delay",
                             delay, "--region", "paris"], env=child_env(), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    from harness.load.processes import wait_ready

    wait_ready(url, None, 10)
    return url, proc


def locust_run(url: str, rate: float, duration_s: float, out: Path, arrival: str = "poisson",
               max_outstanding: int = 256) -> tuple[dict, float]:
    """One Locust process, one region at `rate`; returns (paris figures, CPU seconds of the process)."""
    out.mkdir(parents=True, exist_ok=True)
    prof = Profile(name="bench", shape="steady", regions=["paris"], duration_s=duration_s, rate=rate,
                   arrival=arrival, max_outstanding=max_outstanding, drain_s=2.0,
                   corpus={"sizes": [[64, 48]], "formats": ["jpeg"]})
    plan = build_plan(prof, {"paris": url}, out, start_at=time.time() + 5.0)
    plan.save(out / "plan.json")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
                    "--only-summary", "--loglevel", "ERROR", "--exit-code-on-error", "0"],
                   env=child_env({"EDGE_PLAN": str(out / "plan.json")}), cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration_s + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures = aggregate(read_samples(out), 5.0)["regions"]["paris"]
    return figures, cpu


def calibrate(out: Path, quick: bool) -> dict:
    """Reported p50/p99 against the exact truth of a lognormal server."""
    median, sigma = 5.0, 0.3
    rate, duration = (40.0, 30.0) if quick else (50.0, 60.0)
    url0, srv0 = start_server_process("constant:0")
    base, _ = locust_run(url0, rate, 15.0, out / "transport")
    srv0.terminate()
    srv0.wait()
    transport = base["client_latency_ms"]["warm"]
    url, srv = start_server_process(f"lognormal:{median}:{sigma}")
    fig, _ = locust_run(url, rate, duration, out / "calibration")
    srv.terminate()
    srv.wait()
    warm = fig["client_latency_ms"]["warm"]
    truth = Delay("lognormal", median, sigma)
    result = {"server": f"lognormal median {median} ms sigma {sigma}", "samples": warm["count"],
              "transport_p50_ms": transport["p50"], "transport_p99_ms": transport["p99"]}
    held = fig["server_total_ms"]  # the hold as the server measured it (sleeps overrun under contention)
    for pct, q in (("p50", 0.5), ("p99", 0.99)):
        t = truth.quantile(q) + transport["p50"]
        h = held[pct] + transport["p50"]
        result[pct] = {"truth_ms": round(t, 3), "reported_ms": warm[pct], "error_ms": round(warm[pct] - t, 3),
                       "error_rel": round((warm[pct] - t) / t, 4),
                       "server_measured_hold_ms": held[pct], "error_vs_measured_hold_ms": round(warm[pct] - h, 3),
                       "error_vs_measured_hold_rel": round((warm[pct] - h) / h, 4)}
    return result


def cost_and_capacity(out: Path, quick: bool) -> dict:
    """CPU ms per request (slope between two rates) and the highest rate sustained without falling behind."""
    url, srv = start_server_process("constant:0")
    try:
        d = 8.0 if quick else 15.0
        lo, cpu_lo = locust_run(url, 20, d, out / "cost-lo")
        hi, cpu_hi = locust_run(url, 200, d, out / "cost-hi")
        n_lo, n_hi = lo["counts"]["sent"], hi["counts"]["sent"]
        per_req_ms = (cpu_hi - cpu_lo) / max(1, n_hi - n_lo) * 1000
        steps = []
        sustained = None
        for rate in (100, 200, 400, 800, 1600) if not quick else (100, 300, 900):
            fig, cpu = locust_run(url, rate, d, out / f"rate-{rate}", max_outstanding=512)
            c = fig["counts"]
            ok = c["dropped"] == 0 and fig["late_fraction"] <= 0.01 and c["errors"] == 0
            steps.append({"rate": rate, "scheduled": c["scheduled"], "sent": c["sent"], "late_fraction":
                          fig["late_fraction"], "dropped": c["dropped"], "errors": c["errors"],
                          "p50_ms": fig["client_latency_ms"]["warm"].get("p50"),
                          "send_delay_p99_ms": fig["send_delay_ms"].get("p99"),
                          "cpu_s": round(cpu, 2), "sustained": ok})
            if ok:
                sustained = rate
            else:
                break
    finally:
        srv.terminate()
        srv.wait()
    return {"cpu_ms_per_request": round(per_req_ms, 3), "cpu_s_at_20rps": round(cpu_lo, 2),
            "cpu_s_at_200rps": round(cpu_hi, 2), "requests": [n_lo, n_hi], "max_sustained_rps": sustained,
            "steps": steps, "note": "server is a Python ThreadingHTTPServer on the same 2 cores; it may be "
                                    "the limit before the generator is"}


def main() -> int:
    """Run the benchmarks and print one JSON document."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/bench-loadgen"))
    p.add_argument("--only", choices=("calibration", "cost"), default=None)
    a = p.parse_args()
    report: dict = {}
    if a.only in (None, "calibration"):
        report["calibration"] = calibrate(a.out, a.quick)
        print(json.dumps(report["calibration"], indent=2), flush=True)
    if a.only in (None, "cost"):
        report["generator"] = cost_and_capacity(a.out, a.quick)
        print(json.dumps(report["generator"], indent=2), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_loadgen.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
