"""Recording: µs resolution end to end, Server-Timing parsing, trace context, CSV round trip."""

from __future__ import annotations

import math
import random
import re

import pytest

from harness.load.recorder import SAMPLE_FIELDS, Sample, read_samples, write_samples
from harness.verdict.figures import summary


def test_summary_keeps_sub_millisecond_resolution():
    # Locust would round all of these to 1 ms; the harness must tell 1.234 ms from 1.789 ms.
    s = summary([1234] * 60 + [1789] * 40)
    assert s.value("p50") == pytest.approx(1.234, abs=0.002)
    assert s.value("p90") == pytest.approx(1.789, abs=0.002)


def test_summary_percentiles_are_the_exact_nearest_rank_order_statistics():
    rng = random.Random(5)
    values = sorted(int(rng.lognormvariate(8.5, 0.5)) for _ in range(5000))
    s = summary(values)
    n = len(values)
    for p in (50, 90, 99, 99.9):
        rank = math.ceil(round(p / 100 * n, 6))  # nearest rank, 1-based
        assert s.value(f"p{p:g}") == round(values[rank - 1] / 1000, 3), p
        est = s.percentiles[f"p{p:g}"]
        assert est.lo is None or est.lo <= est.value
        assert est.hi is None or est.value <= est.hi


def test_server_timing_and_traceparent():
    from harness.load.generator import parse_server_timing, traceparent

    t = parse_server_timing("decode;dur=1.234, preprocess;dur=0.5, inference;dur=3.25, total;dur=5.1")
    assert t == {"decode": 1.234, "preprocess": 0.5, "inference": 3.25, "total": 5.1}
    assert parse_server_timing(None) == {}
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", traceparent(random.Random(1)))


def test_any_endpoint_path_can_be_targeted():
    from harness.load.generator import origin, request_path

    assert request_path("http://127.0.0.1:8080") == "/v1/classify?top_k=5"
    assert request_path("http://edge.example:9000/api/infer?model=a") == "/api/infer?model=a"
    assert origin("http://edge.example:9000/api/infer") == "http://edge.example:9000"


def test_samples_round_trip_by_field_name_and_old_files_without_process_still_read(tmp_path):
    (tmp_path / "raw").mkdir()
    a = Sample("paris", "paris", 0.5, 120, 4567, 200, 0, 3000, 2500, 5.0, "local", 0, 9567, "", "worker-0")
    write_samples(tmp_path / "raw" / "samples-worker-0.csv", [a])
    old_header = ",".join(f for f in SAMPLE_FIELDS if f != "process")
    (tmp_path / "raw" / "samples-old.csv").write_text(
        old_header + "\nnairobi,paris,0.25,1,2,200,1,3,4,5.0,local,0,7,\nnairobi,paris,cut-short\n"
    )
    problems: list[str] = []
    got = read_samples(tmp_path, problems)
    assert got[1] == a and got[0].process == "" and got[0].cold == 1
    assert problems == ["samples-old.csv: 1 unreadable row(s) skipped"]


def test_one_estimator_the_time_series_and_the_checks_use_the_summaries_order_statistics():
    from harness.verdict.figures import timeseries

    rng = random.Random(9)
    samples = [
        Sample("paris", "paris", i / 100, 10, rng.randint(1000, 90_000), 200, 0, 0, 0, 5.0, "local", 0, 0, "")
        for i in range(300)
    ]
    ts = timeseries(samples)["paris"]
    for b in range(3):
        values = sorted(s.latency_us for s in samples if int(s.t_s) == b)
        assert ts.p50_ms[b] == round(values[math.ceil(0.5 * len(values)) - 1] / 1000, 3)
        assert ts.p99_ms[b] == round(values[math.ceil(0.99 * len(values)) - 1] / 1000, 3)
