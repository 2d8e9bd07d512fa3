"""Reports: report.html is self-contained with its plots and verdict; the terminal table names checks."""

from __future__ import annotations

import io

from harness.load.recorder import Sample, aggregate, timeseries
from harness.load.sweep import next_rate
from harness.verdict.slo import evaluate, load_slo


def _results():
    samples = [
        Sample(
            "paris", "paris", i * 0.05, 90, 4000 + i, 200, 1 if i == 0 else 0, 3000, 2500, 5.0, "local", 0, 9000 + i, ""
        )
        for i in range(400)
    ]
    samples += [
        Sample("nairobi", "paris", i * 0.05, 90, 6000 + i, 200, 0, 3000, 2500, 118.7, "derived", 0, 125000 + i, "")
        for i in range(400)
    ]
    fig = aggregate(samples, 5.0)
    verdict = evaluate(load_slo(), fig, duration_s=20, expects_cold_starts=False)
    results = {
        "verdict": verdict,
        "run": {"profile": {"name": "t", "shape": "steady"}, "latency_basis": "client latency"},
        "regions": fig["regions"],
        "pops": {"paris": {"url": "http://x", "events": [{"event": "down", "at_s": 10.0}], **fig["pops"]["paris"]}},
        "timeseries": timeseries(samples),
        "process_cold_start": [
            {"region": "paris", "repeat": 0, "alive_ms": 400, "ready_ms": 900, "first_response_ms": 950, "status": 200}
        ],
        "catalogue": {
            "regions": {
                "paris": {"city": "Paris", "lat": 48.8, "lon": 2.3},
                "nairobi": {"city": "Nairobi", "lat": -1.3, "lon": 36.8},
            }
        },
    }
    return results, samples


def test_html_report_is_self_contained_with_plots_and_verdict(tmp_path):
    from harness.report.html import write_report

    results, samples = _results()
    path = write_report(results, tmp_path / "report.html", samples)
    html = path.read_text()
    assert "VERDICT: INVALID" in html  # 20 s is under the default SLO's 30 s minimum
    assert html.count("data:image/png;base64,") == 4  # latency/time, CDF, throughput, map
    assert 'src="http' not in html and "<script" not in html
    assert "Process-level cold start" in html and "118.7" in html


def test_terminal_table_lists_regions_checks_and_verdict():
    from rich.console import Console

    from harness.report.terminal import print_verdict

    results, _ = _results()
    buf = io.StringIO()
    print_verdict(results, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "nairobi" in text and "client_latency_ms" in text
    assert "VERDICT: INVALID (exit 2)" in text


def test_sweep_search_doubles_then_bisects_to_ten_percent():
    def search(capacity: float) -> list[float]:
        steps: list[dict] = []
        while (rate := next_rate(steps, 5, 200)) is not None and len(steps) < 20:
            steps.append({"rate": rate, "status": "pass" if rate <= capacity else "fail"})
        return [s["rate"] for s in steps]

    rates = search(37)
    assert rates[:4] == [5, 10, 20, 40]
    best = max(r for r in rates if r <= 37)
    assert 37 * 0.9 <= best <= 37
    assert search(1) == [5]  # nothing passes: no capacity
    assert search(1000)[-1] == 200  # capped at max_rate


def test_measured_duration_catches_a_run_that_stopped_early():
    from harness.load.runner import measured_duration

    def at(*ts: float) -> list[Sample]:
        return [Sample("paris", "paris", t, 0, 1000, 200, 0, 0, 0, 5.0, "local", 0, 1000, "") for t in ts]

    assert measured_duration(at(0.1, 29.2), 30.0) == 30.0
    assert measured_duration(at(0.1, 12.5), 30.0) == 12.5
    assert measured_duration([], 30.0) == 0.0
