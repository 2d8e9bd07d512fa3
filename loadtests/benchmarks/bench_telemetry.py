"""Per-request costs of the handler's telemetry and preprocessing, in a hot loop; prints every figure.

- Recording: one request's spans and metrics as the telemetry process records them with the stock SDK
  (`RequestRecorder.record_request`: five spans through a `BatchSpanProcessor` to a discarding exporter,
  seven histogram records), and the same without spans (no span processor).
- Hand-over: what the serving process pays per request to pass its record to the telemetry process
  (pickling it within a batch of 40).
- Preprocessing: the reference model's uint8 pixels, and for a float32 model the normalisation by
  arithmetic against the per-channel lookup table.

Run: .venv/bin/python -m loadtests.benchmarks.bench_telemetry [--requests N]
Needs the reference models (`make setup`). No network: spans go to an exporter that discards them.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mobilenetv2-int8.onnx"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def per_call_us(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time of one call (µs)."""
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(means)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per timed repeat")
    args = parser.parse_args()
    if not MODEL.exists():
        print("models missing: run `make setup` first", file=sys.stderr)
        return 2

    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from harness.handler import pipeline
    from harness.handler.telemetry.recorder import RequestRecorder
    from harness.handler.telemetry.records import RequestRecord, TelemetrySettings
    from harness.handler.telemetry.sdk import Telemetry
    from harness.images import photo_corpus
    from harness.model.store import ModelStore, create_session, describe

    class Discard(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def request() -> RequestRecord:
        now = time.time_ns()
        marks, t = [], now + 100_000
        for name, ns in (("decode", 900_000), ("preprocess", 300_000), ("inference", 3_800_000),
                         ("postprocess", 150_000)):  # fmt: skip
            marks.append((name, t, t + ns))
            t += ns
        return RequestRecord(now, 0.0058, 200, None, 1e-5, None, "mobilenetv2-int8", "1", marks, TRACEPARENT, None)

    settings = TelemetrySettings("edgeharness-handler", "1", "local", "local")
    n = args.requests
    with_spans = Telemetry(settings)
    with_spans.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 20, schedule_delay_millis=1000))
    records = iter([request() for _ in range(n * 6)])
    recorder = RequestRecorder(with_spans)
    record_us = per_call_us(lambda: recorder.record_request(next(records)), n)
    with_spans.shutdown()
    metrics_only = Telemetry(settings)
    records = iter([request() for _ in range(n * 6)])
    bare = RequestRecorder(metrics_only)
    metrics_us = per_call_us(lambda: bare.record_request(next(records)), n)
    metrics_only.shutdown()
    batch = [request() for _ in range(40)]
    handover_us = per_call_us(lambda: pickle.dumps(("items", batch, (2, 0)), pickle.HIGHEST_PROTOCOL), 200) / 40

    print(f"# telemetry benchmark: {n} requests per repeat, python {sys.version.split()[0]}")
    print(f"recording one request with the stock SDK (5 spans, 7 histogram records): {record_us:.1f} us")
    print(f"recording one request's metrics only (no span processor): {metrics_us:.1f} us")
    print(f"handing one request's record to the telemetry process (pickled in a batch of 40): {handover_us:.2f} us")

    local = ModelStore(ROOT / ".cache" / "models").fetch(str(MODEL))
    info = describe(create_session(local, intra_op_threads=1), local)
    spec = pipeline.InputSpec.from_info(info)
    # A float32 NCHW model's input (ImageNet normalisation), for the two ways of normalising it.
    float_spec = dataclasses.replace(spec, layout="NCHW", dtype=np.dtype(np.float32))
    images = [
        pipeline.decode(body, ct, (spec.width, spec.height), 40_000_000)
        for _name, ct, body in photo_corpus(sizes=((640, 480),), formats=("jpeg",))
    ]
    lut = float_spec.lut
    cycle = iter(images * 10_000)

    def with_lut() -> np.ndarray:
        image = next(cycle)
        width, height = image.size
        left = (width - height) / 2
        box = (left, 0, left + height, height)
        pixels = np.asarray(image.resize((spec.width, spec.height), Image.Resampling.NEAREST, box=box))
        out = np.empty((1, spec.channels, spec.height, spec.width), dtype=np.float32)
        for c in range(spec.channels):
            np.take(lut[c], pixels[:, :, c], out=out[0, c])
        return out

    pixels_us = per_call_us(lambda: pipeline.preprocess(next(cycle), spec), 300)
    arithmetic_us = per_call_us(lambda: pipeline.preprocess(next(cycle), float_spec), 300)
    lut_us = per_call_us(with_lut, 300)
    print(
        f"preprocessing a 640x480 photo (decoded in draft mode): to the reference model's {spec.dtype} "
        f"{spec.layout} pixels {pixels_us:.0f} us; to a normalised float32 NCHW tensor: arithmetic "
        f"{arithmetic_us:.0f} us, per-channel lookup table {lut_us:.0f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
