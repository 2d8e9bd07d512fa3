"""Per-request costs of the handler's telemetry and preprocessing, in a hot loop; prints every figure.

- Span encoding: the SDK's generic OTLP encoder against `harness.handler.telemetry.otlp_traces.SpanEncoder`, on the
  spans a request really produces (server span with its attributes, four stage spans).
- Recording: one request's spans and metrics as the telemetry process records them
  (`RequestRecorder.record_request`).
- Hand-over: what the serving process pays per request to pass its record to the telemetry process
  (pickling it within a batch of 40).
- Preprocessing: the reference model's uint8 pixels, and for a float32 model the normalisation by
  arithmetic against the per-channel lookup table.

Run: .venv/bin/python -m loadtests.benchmarks.bench_telemetry [--requests N]
Needs the reference models (`make setup`). No network: spans go to an in-memory exporter.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from harness.handler import app as handler_app
    from harness.handler import pipeline
    from harness.handler.settings import HandlerSettings
    from harness.handler.telemetry.otlp_traces import SpanEncoder
    from harness.handler.telemetry.records import RequestRecord
    from harness.images import photo_corpus

    with tempfile.TemporaryDirectory() as cache:
        # Telemetry on, recorded in this process (the telemetry process runs the same recorder), no OTLP
        # endpoint: nothing leaves the process; spans go to memory.
        settings = HandlerSettings(model=str(MODEL), model_cache=cache, telemetry_process=False)
        app = handler_app.create_app(settings)
        handler = app.state.handler
        handler.runtime.load_at_startup()
        memory = InMemorySpanExporter()
        handler.telemetry.add_span_processor(SimpleSpanProcessor(memory))
        recorder = handler.telemetry.recorder
        model = handler.runtime.loaded
        assert model is not None

        def request() -> RequestRecord:
            now = time.time_ns()
            marks, t = [], now + 100_000
            for name, ns in (("decode", 900_000), ("preprocess", 300_000), ("inference", 3_800_000),
                             ("postprocess", 150_000)):  # fmt: skip
                marks.append((name, t, t + ns))
                t += ns
            info = model.info
            return RequestRecord(now, 0.0058, 200, None, 1e-5, None, info.name, info.version, marks, TRACEPARENT, None)

        n = args.requests
        records = iter([request() for _ in range(n * 6)])
        record_us = per_call_us(lambda: recorder.record_request(next(records)), n)
        batch = [request() for _ in range(40)]
        handover_us = per_call_us(lambda: pickle.dumps(("items", batch, (2, 0)), pickle.HIGHEST_PROTOCOL), 200) / 40
        spans = memory.get_finished_spans()[-5 * 200 :]  # 200 requests' spans
        sdk_us = per_call_us(lambda: encode_spans(spans).SerializePartialToString(), 20) / 200
        encoder = SpanEncoder()
        ours_us = per_call_us(lambda: encoder.encode(spans), 20) / 200
        same = encoder.encode(spans) == encode_spans(spans).SerializePartialToString()
        handler.telemetry.shutdown()

    print(f"# telemetry benchmark: {n} requests per repeat, python {sys.version.split()[0]}")
    print(f"recording one request (5 spans, 7 histogram records, 1 exemplar at most): {record_us:.1f} us")
    print(f"handing one request's record to the telemetry process (pickled in a batch of 40): {handover_us:.2f} us")
    print(
        f"OTLP encoding of one request's 5 spans: SDK encoder {sdk_us:.1f} us, SpanEncoder {ours_us:.1f} us "
        f"(same bytes: {same})"
    )

    spec = pipeline.InputSpec.from_info(model.info)
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
