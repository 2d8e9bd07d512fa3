"""Recording: µs resolution end to end, Server-Timing parsing, trace context, CSV round trip."""

from __future__ import annotations

import math
import random
import re

import pytest

from harness.load.recorder import read_samples, summary


def test_summary_keeps_sub_millisecond_resolution():
    # Locust would round all of these to 1 ms; the harness must tell 1.234 ms from 1.789 ms.
    s = summary([1234] * 60 + [1789] * 40)
    assert s["p50"] == pytest.approx(1.234, abs=0.002)
    assert s["p90"] == pytest.approx(1.789, abs=0.002)


def test_summary_percentiles_match_exact_within_hdr_precision():
    rng = random.Random(5)
    values = sorted(int(rng.lognormvariate(8.5, 0.5)) for _ in range(5000))
    s = summary(values)
    n = len(values)
    for p in (50, 90, 99, 99.9):
        rank = math.ceil(round(p / 100 * n, 6))  # nearest rank, 1-based
        lo, hi = values[rank - 2] / 1000, values[rank - 1] / 1000
        assert lo * (1 - 2e-3) <= s[f"p{p:g}"] <= hi * (1 + 2e-3), p


def test_server_timing_and_traceparent():
    from harness.load.generator import parse_server_timing, traceparent

    t = parse_server_timing("decode;dur=1.234, preprocess;dur=0.5, inference;dur=3.25, total;dur=5.1")
    assert t == {"decode": 1.234, "preprocess": 0.5, "inference": 3.25, "total": 5.1}
    assert parse_server_timing(None) == {}
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", traceparent(random.Random(1)))


def test_recorder_csv_round_trip(tmp_path):
    from harness.load.generator import Recorder

    rec = Recorder()
    rec.rows.append(("paris", "paris", 0.5, 120, 4567, 200, 0, 3000, 2500, 5.0, "local", 0, 9567, ""))
    rec.rows.append(("paris", "", 0.6, 0, 0, -1, -1, 0, 0, 0.0, "", 0, 0, "dropped: outstanding limit"))
    rec.write(tmp_path, "t1")
    samples = read_samples(tmp_path)
    assert [s.latency_us for s in samples] == [4567, 0]
    assert samples[0].ok and samples[1].dropped


def test_any_endpoint_path_can_be_targeted():
    from harness.load.generator import origin, request_path

    assert request_path("http://127.0.0.1:8080") == "/v1/classify?top_k=5"
    assert request_path("http://edge.example:9000/api/infer?model=a") == "/api/infer?model=a"
    assert origin("http://edge.example:9000/api/infer") == "http://edge.example:9000"
