"""Benchmark the load generator itself: calibration against a known-latency server, CPU cost per
request and send lateness beside a plain Locust FastHttpUser, and the highest arrival rate one load
process sustains on loopback.

    flock /tmp/edgeharness-bench.lock .venv/bin/python loadtests/benchmarks/bench_loadgen.py \\
        [--quick] [--only calibration|cost|floor] [--baseline REV] [--out runs/bench-loadgen]

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

LO_RATE, HI_RATE = 50, 500  # CPU per request is the slope between these two rates (fixed costs cancel)
TARGET_CPU_MS, TARGET_LATE_P99_MS = 0.25, 0.5  # the generator's targets at HI_RATE (issue 13, section 6)


def baseline_tree(rev: str, into: Path) -> Path:
    """The locustfile of commit `rev` (its own harness beside it), for the before side of an A/B."""
    import subprocess

    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "harness", "loadtests"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "loadtests" / "locustfile.py"


def plain_locust_run(url: str, rate: float, duration_s: float, out: Path) -> tuple[int, float]:
    """A plain FastHttpUser at `rate` (closed model, Locust's own pacing): (requests, CPU seconds)."""
    import csv
    import resource
    import subprocess

    from harness.load.processes import child_env

    out.mkdir(parents=True, exist_ok=True)
    users = max(1, int(rate // 10))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "benchmarks" / "plain_fasthttp.py")]
    argv += ["--headless", "--only-summary", "--loglevel", "ERROR", "-H", url, "-u", str(users), "-r", str(users)]
    argv += ["-t", f"{duration_s:g}s", "--csv", str(out / "plain"), "--exit-code-on-error", "0"]
    subprocess.run(
        argv,
        env=child_env({"BENCH_RATE": str(rate), "BENCH_USERS": str(users)}),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=duration_s + 60,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with (out / "plain_stats.csv").open() as fh:
        total = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    return int(total["Request Count"]), (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bare_client_floor(url: str, n: int = 3000) -> dict:
    """The floor under any geventhttpclient-based generator: one keep-alive client posting the same image
    back to back in this process, no scheduling, no recording, no Locust (CPU ms per request, user and
    system)."""
    import resource

    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    from harness.images import photo_corpus

    body = photo_corpus(sizes=((64, 48),), formats=("jpeg",))[0][2]
    client = HTTPClient.from_url(URL(url), concurrency=1)
    headers = {"Content-Type": "image/jpeg"}

    def post() -> None:
        resp = client.post("/v1/classify?top_k=5", body=body, headers=headers)
        resp.read()

    for _ in range(200):  # connection and caches warm
        post()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        post()
    after = resource.getrusage(resource.RUSAGE_SELF)
    client.close()
    return {
        "user_ms_per_request": round((after.ru_utime - before.ru_utime) / n * 1000, 4),
        "system_ms_per_request": round((after.ru_stime - before.ru_stime) / n * 1000, 4),
        "requests": n,
    }


def pin_apart(server_pid: int) -> bool:
    """The server on the last CPU, this process (and so every load process it starts) on the others;
    False (nothing pinned) on a single CPU or where affinity cannot be set."""
    import os

    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return False
        os.sched_setaffinity(server_pid, {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))
    except (AttributeError, OSError):
        return False
    return True


def cost_and_capacity(out: Path, quick: bool, baseline: str | None) -> dict:
    """CPU ms per request and send lateness of the generator at HI_RATE beside a plain FastHttpUser (and
    the `baseline` commit's generator, interleaved in the same rounds), then the highest rate one load
    process sustains with <= 1 % of sends late, none dropped and no errors."""
    url, srv = start_server_process("constant:0")
    pinned = pin_apart(srv.pid)
    floor = bare_client_floor(url)
    print(json.dumps({"bare-client-floor": floor}), flush=True)
    sides: dict[str, Path | None] = {"generator": None}
    if baseline:
        sides = {"baseline": baseline_tree(baseline, out / "baseline-tree"), **sides}
    d = 8.0 if quick else 15.0
    rounds = 1 if quick else 2
    runs: dict[str, list[dict]] = {name: [] for name in ["plain-fasthttpuser", *sides]}
    try:
        for rnd in range(rounds):
            order = list(runs) if rnd % 2 == 0 else list(reversed(runs))  # A B C, then C B A
            for name in order:
                tag = f"r{rnd}-{name}"
                if name == "plain-fasthttpuser":
                    n_lo, cpu_lo = plain_locust_run(url, LO_RATE, d, out / f"{tag}-lo")
                    n_hi, cpu_hi = plain_locust_run(url, HI_RATE, d, out / f"{tag}-hi")
                    late_p99 = late = None
                else:
                    lo, cpu_lo = locust_run(url, LO_RATE, d, out / f"{tag}-lo", locustfile=sides[name])
                    hi, cpu_hi = locust_run(url, HI_RATE, d, out / f"{tag}-hi", locustfile=sides[name])
                    n_lo, n_hi = lo.counts.sent, hi.counts.sent
                    late_p99, late = hi.send_delay_ms.value("p99"), hi.late_fraction
                runs[name].append(
                    {
                        "cpu_ms_per_request": round((cpu_hi - cpu_lo) / max(1, n_hi - n_lo) * 1000, 4),
                        "cpu_ms_per_request_at_500": round(cpu_hi / max(1, n_hi) * 1000, 4),
                        "send_delay_p99_ms_at_500": late_p99,
                        "late_fraction_at_500": late,
                        "requests": [n_lo, n_hi],
                    }
                )
                print(json.dumps({name: runs[name][-1]}), flush=True)
        steps = []
        sustained: dict[str, int | None] = {name: None for name in sides}
        going = list(sides)  # the generators still sustaining; each side's steps interleaved with the others'
        for step, rate in enumerate((250, 500, 1000, 2000, 4000) if not quick else (500, 1000, 2000)):
            for name in list(going) if step % 2 == 0 else list(reversed(going)):  # no side always first
                fig, cpu = locust_run(url, rate, d, out / f"rate-{rate}-{name}", max_outstanding=512,
                                      locustfile=sides[name])  # fmt: skip
                c = fig.counts
                ok = c.dropped == 0 and fig.late_fraction <= 0.01 and c.errors == 0
                steps.append(
                    {
                        "generator": name,
                        "rate": rate,
                        "sent": c.sent,
                        "late_fraction": fig.late_fraction,
                        "dropped": c.dropped,
                        "errors": c.errors,
                        "send_delay_p99_ms": fig.send_delay_ms.value("p99"),
                        "p50_ms": fig.client_latency_ms.warm.value("p50"),
                        "cpu_s": round(cpu, 2),
                        "sustained": ok,
                    }
                )
                print(json.dumps(steps[-1]), flush=True)
                if ok:
                    sustained[name] = rate
                else:
                    going.remove(name)
            if not going:
                break
    finally:
        srv.terminate()
        srv.wait()

    def median(name: str, key: str) -> float | None:
        import statistics

        values = [r[key] for r in runs[name] if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    cpu, late = median("generator", "cpu_ms_per_request"), median("generator", "send_delay_p99_ms_at_500")
    return {
        "cpu_ms_per_request": {name: median(name, "cpu_ms_per_request") for name in runs},
        "send_delay_p99_ms_at_500": {name: median(name, "send_delay_p99_ms_at_500") for name in runs},
        "targets": f"generator <= {TARGET_CPU_MS} ms CPU per request at {HI_RATE} req/s, send lateness p99 <= "
        f"{TARGET_LATE_P99_MS} ms (medians of the rounds)",
        "targets_met": {
            "cpu": cpu is not None and cpu <= TARGET_CPU_MS,
            "lateness": late is not None and late <= TARGET_LATE_P99_MS,
        },
        "max_sustained_rps": sustained,
        "bare_client_floor": floor,
        "pinned": pinned,
        "runs": runs,
        "steps": steps,
        "note": f"CPU per request = CPU slope between {LO_RATE} and {HI_RATE} req/s ({d:g} s runs, {rounds} "
        "interleaved rounds, median); late = sent > 5 ms after its intended time; sustained = no drops, no "
        "errors, <= 1 % late. The server is a Python ThreadingHTTPServer on this machine and may limit first; "
        "pinned: the server on the last CPU and the load processes on the others (as a remote server would "
        "be), so the server's work does not preempt the generator being measured.",
    }


def main() -> int:
    """Run the benchmarks and print one JSON document."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/bench-loadgen"))
    p.add_argument("--only", choices=("calibration", "cost", "floor"), default=None)
    p.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also measure the generator of git commit REV, interleaved with ours (before/after in one run)",
    )
    a = p.parse_args()
    report: dict = {}
    if a.only in (None, "calibration"):
        report["calibration"] = calibrate(a.out, a.quick)
        print(json.dumps(report["calibration"], indent=2), flush=True)
    if a.only == "floor":  # the bare client alone, server pinned apart as in `cost` (seconds)
        url, srv = start_server_process("constant:0")
        try:
            report["bare_client_floor"] = {"pinned": pin_apart(srv.pid), **bare_client_floor(url)}
        finally:
            srv.terminate()
            srv.wait()
        print(json.dumps(report["bare_client_floor"], indent=2), flush=True)
    if a.only in (None, "cost"):
        report["generator"] = cost_and_capacity(a.out, a.quick, a.baseline)
        print(json.dumps(report["generator"], indent=2), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_loadgen.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
