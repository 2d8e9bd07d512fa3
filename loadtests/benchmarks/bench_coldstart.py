"""Benchmark of cold starts by strategy against issue 16's targets; prints every figure it measures.

Run: flock /tmp/edgeharness-bench.lock .venv/bin/python loadtests/benchmarks/bench_coldstart.py [--quick] [--repeats N]
Needs the reference models (`make setup`). Everything runs on loopback; each part is bounded in count.

1. Model-level cold start (process warm, model released after 0.3 s idle, loaded again by the next request):
   the original int8 model and the prepared one (ORT format), two handlers side by side, requests alternating.
2. Process-level cold start (harness.load.coldstart.measure): plain, prepared-model, zygote,
   zygote+prepared-model, interleaved round by round, so a slow spell of a shared CPU hits every strategy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.load.coldstart import ColdStartSpec, describe_summary, measure, summarize  # noqa: E402
from harness.load.processes import Supervisor, free_port  # noqa: E402
from harness.model.prepare import ensure_prepared  # noqa: E402

MODEL = ROOT / "models" / "mobilenetv2-int8.onnx"


def probe() -> tuple[bytes, str]:
    from harness.images import encode, synthetic_photo

    return encode(synthetic_photo(640, 480, seed=3), "jpeg"), "image/jpeg"


def serve_argv(port: int, model: Path = MODEL, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness",
        "serve",
        "--region",
        "bench",
        "--port",
        str(port),
        "--model",
        str(model),
        *extra,
    ]


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"handler exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("handler not ready")


def model_level(rounds: int) -> None:
    """Two warm handlers (original, prepared) that release the model after 0.3 s idle; each round sleeps past
    that and sends one request to each, in alternating order, reading the load's phases from the answer."""
    body, ctype = probe()
    models = {"original": MODEL, "prepared": ensure_prepared(MODEL)}
    procs, ports = {}, {}
    for name, model in models.items():
        ports[name] = free_port()
        procs[name] = subprocess.Popen(
            serve_argv(ports[name], model, "--idle-timeout", "0.3"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    loads: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    client: dict[str, list[float]] = {name: [] for name in models}
    try:
        for name in models:
            wait_ready(ports[name], procs[name])
        for i in range(rounds):
            time.sleep(0.6)
            order = list(models) if i % 2 == 0 else list(reversed(models))
            for name in order:
                conn = http.client.HTTPConnection("127.0.0.1", ports[name], timeout=30)
                t0 = time.perf_counter()
                conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": ctype})
                answer = json.loads(conn.getresponse().read())
                client[name].append((time.perf_counter() - t0) * 1000)
                conn.close()
                if answer.get("cold_start") and answer.get("timings_ms", {}).get("cold_start"):
                    loads[name].append(
                        {**(answer.get("cold_start_phases_ms") or {}), "total": answer["timings_ms"]["cold_start"]}
                    )
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)
    for name in models:
        rows = loads[name]
        if not rows:
            print(f"model cold start {name}: no model loads seen")
            continue
        phases = {k: statistics.median(r[k] for r in rows if k in r) for k in rows[0]}
        total = sorted(r["total"] for r in rows)
        print(
            f"model cold start {name:<8} ({models[name].name}): n={len(rows)} load p50 {phases['total']:.1f} ms "
            f"(min {total[0]:.1f}, max {total[-1]:.1f}); phases p50: "
            + ", ".join(f"{k} {v:.1f}" for k, v in phases.items() if k != "total")
            + f"; cold request client p50 {statistics.median(client[name]):.1f} ms"
            + (" (target: load p50 <= 30 ms)" if name == "prepared" else "")
        )


def process_level(repeats: int, plot: Path | None = None) -> None:
    with Supervisor() as sup, tempfile.TemporaryDirectory() as logs:
        starts = measure(
            ColdStartSpec("bench", repeats),
            lambda port: serve_argv(port),
            str(MODEL),
            sup,
            Path(logs),
            say=lambda line: None,
        )
    for summary in summarize(starts):
        for line in describe_summary(summary):
            print(line)
    if plot is not None:
        from harness.report.coldstart_plot import coldstart_png

        plot.write_bytes(coldstart_png(starts))
        plot.with_suffix(".json").write_text(json.dumps(starts, indent=1))
        print(f"plot: {plot} (starts: {plot.with_suffix('.json')})")
    by = {s.strategy: s for s in summarize(starts)}
    print(
        f"targets: zygote spawn -> first answer p50 {by['zygote'].p50['spawn_to_first_answer_ms']:.1f} ms "
        f"(<= 100); plain start -> ready p50 {by['plain'].p50['spawn_to_ready_ms']:.1f} ms (<= 250)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, not figures to quote)")
    parser.add_argument("--repeats", type=int, help="process starts per strategy (default 30; --quick 8)")
    parser.add_argument("--only", choices=("model", "process"), help="run one part")
    parser.add_argument("--plot", type=Path, help="write the process starts side by side as PNG (and .json)")
    args = parser.parse_args()
    if not MODEL.exists():
        print(f"missing {MODEL}: run `make setup` first", file=sys.stderr)
        return 2
    print(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]}")
    if args.only != "process":
        model_level(8 if args.quick else 24)
    if args.only != "model":
        process_level(args.repeats or (8 if args.quick else 30), args.plot)
    print(f"load average at end: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
