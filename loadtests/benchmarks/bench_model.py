"""Benchmark the reference models with ONNX Runtime on this machine: session creation, latency, cold start.

Usage (from the repository root): .venv/bin/python -m loadtests.benchmarks.bench_model [--models DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

from harness import images
from harness.model.builder import FP32_NAME, INT8_NAME, build_reference_models
from harness.model.quantize import preprocess
from harness.model.store import ModelStore, create_session, describe


def _ms(seconds: float) -> float:
    return seconds * 1e3


def _percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 90))


def bench_latency(path: pathlib.Path, threads: int, x: np.ndarray, runs: int) -> tuple[float, float, float]:
    """(session creation ms, run p50 ms, run p90 ms) for one model and intra-op thread count."""
    store = ModelStore(path.parent)
    model = store.fetch(str(path))
    creations = []
    for _ in range(3):  # median of three creations: one slow outlier on a shared machine says little
        started = time.perf_counter()
        session = create_session(model, intra_op_threads=threads)
        creations.append(_ms(time.perf_counter() - started))
    created = statistics.median(creations)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(5):
        session.run(None, feed)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feed)
        samples.append(_ms(time.perf_counter() - t))
    return (created, *_percentiles(samples))


def bench_cold_start(path: pathlib.Path, sha256: str, x: np.ndarray, repeats: int) -> dict[str, float]:
    """p50 of each cold-start phase: fetch (URL already in cache), session creation, first run."""
    with tempfile.TemporaryDirectory(prefix="edgeharness-bench-") as cache:
        cached = pathlib.Path(cache) / f"{sha256}.onnx"
        cached.write_bytes(path.read_bytes())
        # Never contacted: the hash is in the cache, so fetch must not download.
        url = f"http://127.0.0.1:9/{path.name}"
        phases: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model = ModelStore(pathlib.Path(cache)).fetch(url, sha256)
            t1 = time.perf_counter()
            session = create_session(model, intra_op_threads=1)
            info = describe(session, model)
            t2 = time.perf_counter()
            session.run(None, {info.input_name: x})
            t3 = time.perf_counter()
            phases["fetch"].append(_ms(t1 - t0))
            phases["session+describe"].append(_ms(t2 - t1))
            phases["first run"].append(_ms(t3 - t2))
            phases["total"].append(_ms(t3 - t0))
            del session
    return {name: statistics.median(values) for name, values in phases.items()}


def optimized_op_counts(path: pathlib.Path) -> collections.Counter[str]:
    """Op types in the graph ORT actually runs (after its optimisations): shows what stayed float."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(pathlib.Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the file is only counted, so ORT's "hardware specific" warning is noise
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    return collections.Counter(n.op_type for n in model.graph.node)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("models"))
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()

    import onnxruntime as ort

    manifests = {m.name: m for m in build_reference_models(args.models)}
    x = preprocess(images.sample_photos()[0])
    # The first session in a process also pays for ORT's one-time environment set-up; report it apart.
    started = time.perf_counter()
    first = ModelStore(args.models).fetch(str(args.models / manifests[INT8_NAME].file))
    create_session(first, intra_op_threads=1)
    first_ms = _ms(time.perf_counter() - started)
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"parameters: {manifests[FP32_NAME].parameters:,}")
    print(f"first session in process (ORT environment set-up included): {first_ms:.1f} ms")
    for name in (FP32_NAME, INT8_NAME):
        m = manifests[name]
        print(f"{name}: {m.size_bytes / 1e6:.2f} MB")
        for threads in (1, 2):
            created, p50, p90 = bench_latency(args.models / m.file, threads, x, args.runs)
            print(
                f"  {threads} thread{'s' if threads > 1 else ' '}: session creation {created:6.1f} ms, "
                f"run p50 {p50:5.2f} ms, p90 {p90:5.2f} ms"
            )

    int8 = manifests[INT8_NAME]
    phases = bench_cold_start(args.models / int8.file, int8.sha256, x, repeats=10)
    print(f"{INT8_NAME} cold start p50 (1 thread): " + ", ".join(f"{k} {v:.1f} ms" for k, v in phases.items()))
    counts = optimized_op_counts(args.models / int8.file)
    print(f"{INT8_NAME} ops after ORT optimisation: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
