"""Benchmark the load generator itself: calibration against a known-latency server, CPU cost per
request, and the highest arrival rate one Locust process sustains on loopback.

    .venv/bin/python loadtests/benchmarks/bench_loadgen.py [--quick] [--out runs/bench-loadgen]

Calibration truth: the test server holds each request for a delay drawn from lognormal(median, sigma)
and returns the drawn value, so the truth of these very requests is known exactly; the client also pays
a loopback transport cost, measured by a bare HTTP client (not the harness) against the same
server at the same time (its time minus the drawn delay); the two convolved are the truth. Reported:
the harness's p50 and p99 against that truth (and against the analytic quantiles), in ms and relative.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.load.calibration import calibrate, locust_run, start_server_process  # noqa: E402


def cost_and_capacity(out: Path, quick: bool) -> dict:
    """CPU ms per request (slope between two rates, with and without the final spin before each send) and
    the highest rate one Locust process sustains without falling behind or dropping arrivals."""
    url, srv = start_server_process("constant:0")
    try:
        d = 8.0 if quick else 15.0
        cost = {}
        for spin in (1.0, 0.0):
            lo, cpu_lo = locust_run(url, 20, d, out / f"cost-lo-spin{spin:g}", spin_ms=spin)
            hi, cpu_hi = locust_run(url, 200, d, out / f"cost-hi-spin{spin:g}", spin_ms=spin)
            n_lo, n_hi = lo.counts.sent, hi.counts.sent
            cost[f"spin_{spin:g}ms"] = {
                "cpu_ms_per_request": round((cpu_hi - cpu_lo) / max(1, n_hi - n_lo) * 1000, 3),
                "send_delay_p50_ms_at_20rps": lo.send_delay_ms.value("p50"),
                "send_delay_p99_ms_at_20rps": lo.send_delay_ms.value("p99"),
                "cpu_s": [round(cpu_lo, 2), round(cpu_hi, 2)],
                "requests": [n_lo, n_hi],
            }
        steps = []
        sustained = None
        for rate in (100, 200, 400, 800, 1600, 3200, 6400) if not quick else (100, 300, 900):
            fig, cpu = locust_run(url, rate, d, out / f"rate-{rate}", max_outstanding=512)
            c = fig.counts
            ok = c.dropped == 0 and fig.late_fraction <= 0.01 and c.errors == 0
            steps.append(
                {
                    "rate": rate,
                    "scheduled": c.recorded,
                    "sent": c.sent,
                    "late_fraction": fig.late_fraction,
                    "dropped": c.dropped,
                    "errors": c.errors,
                    "p50_ms": fig.client_latency_ms.warm.value("p50"),
                    "send_delay_p99_ms": fig.send_delay_ms.value("p99"),
                    "cpu_s": round(cpu, 2),
                    "sustained": ok,
                }
            )
            if ok:
                sustained = rate
            else:
                break
    finally:
        srv.terminate()
        srv.wait()
    return {
        "cost": cost,
        "max_sustained_rps": sustained,
        "steps": steps,
        "note": "late = sent > 5 ms after its intended time; sustained = no drops, no errors, <= 1 % late. "
        "The server is a Python ThreadingHTTPServer on the same 2 cores and may limit first.",
    }


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
