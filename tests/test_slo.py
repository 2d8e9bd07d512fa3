"""SLO files and the verdict: thresholds, validity (MLPerf-style), exit codes, errors with lines."""

from __future__ import annotations

import dataclasses

import pytest

from harness.load.recorder import Sample, aggregate
from harness.load.yamlfile import ConfigError, loads
from harness.verdict.slo import EXIT_FAIL, EXIT_INVALID, EXIT_PASS, evaluate, load_slo, parse_slo

SLO = """
defaults:
  client_latency_ms: {p50: 10, p95: 40}
  server_inference_ms: {p50: 10}
  cold_start_ms: {p95: 2000}
  error_rate: 0.01
regions:
  nairobi:
    client_latency_ms: {p50: 12}
validity:
  min_duration_s: 10
  min_samples: {p50: 50, p95: 200}
  min_cold_samples: 3
"""


def _samples(region: str, n: int, latency_us: int, *, cold: int = 0, status: int = 200, inference_us: int = 4000):
    return [
        Sample(
            region,
            region,
            i * 0.01,
            100,
            latency_us + (i % 7),
            status,
            cold,
            latency_us - 500,
            inference_us,
            5.0,
            "local",
            0,
            latency_us + 5000,
            "",
        )
        for i in range(n)
    ]


def _judge(samples, duration_s=20.0, expects_cold=False):
    spec = parse_slo(loads(SLO, "slo.yaml"))
    return evaluate(spec, aggregate(samples, 5.0), duration_s=duration_s, expects_cold_starts=expects_cold)


def test_all_pass_exits_zero():
    v = _judge(_samples("paris", 300, 6000) + _samples("nairobi", 300, 11000))
    assert v["status"] == "pass" and v["exit_code"] == EXIT_PASS
    # The region override applies: nairobi's 11 ms p50 is within its own 12 ms.
    nb = next(
        c
        for c in v["checks"]
        if c["region"] == "nairobi" and c["percentile"] == "p50" and c["metric"] == "client_latency_ms"
    )
    assert nb["threshold"] == 12 and nb["status"] == "pass"


def test_slow_region_fails_and_names_the_slo():
    v = _judge(_samples("paris", 300, 15000))
    assert v["status"] == "fail" and v["exit_code"] == EXIT_FAIL
    assert "paris client_latency_ms p50 <= 10" in v["failed"]


def test_a_generator_that_fell_behind_makes_the_run_invalid_unless_the_slo_allows_it():
    samples = _samples("paris", 300, 6000)
    # 18 of 300 sends (6 %) left over 5 ms after their intended time: more than the default 5 % allowed.
    samples[::17] = [dataclasses.replace(x, send_delay_us=6000) for x in samples[::17]]
    v = _judge(samples)
    assert v["status"] == "invalid" and v["exit_code"] == EXIT_INVALID
    assert any("paris: 6.0% of sends were late (max 5.0%)" in r for r in v["invalid_reasons"])
    lenient = parse_slo(loads(SLO + "  max_late_fraction: 0.1\n", "slo.yaml"))
    v = evaluate(lenient, aggregate(samples, 5.0), duration_s=20.0, expects_cold_starts=False)
    assert v["status"] == "pass"


def test_too_few_samples_for_a_claimed_percentile_is_invalid_never_pass():
    v = _judge(_samples("paris", 120, 5000))  # enough for p50 (50), not for p95 (200)
    assert v["status"] == "invalid" and v["exit_code"] == EXIT_INVALID
    assert any("p95 needs 200 samples, has 120" in r for r in v["invalid_reasons"])


def test_short_run_is_invalid_even_if_fast():
    v = _judge(_samples("paris", 300, 5000), duration_s=5)
    assert v["exit_code"] == EXIT_INVALID
    assert any("under the minimum" in r for r in v["invalid_reasons"])


def test_invalid_wins_over_fail():
    v = _judge(_samples("paris", 300, 50000), duration_s=5)
    assert v["exit_code"] == EXIT_INVALID and v["failed"]


def test_errors_and_drops_count_against_error_rate():
    ok = _samples("paris", 290, 5000)
    bad = _samples("paris", 10, 5000, status=503)
    v = _judge(ok + bad)
    err = next(c for c in v["checks"] if c["metric"] == "error_rate")
    assert err["measured"] == pytest.approx(10 / 300, abs=1e-5) and err["status"] == "fail"


def test_cold_starts_judged_apart_from_warm():
    warm = _samples("paris", 300, 5000)
    cold = _samples("paris", 5, 2_500_000, cold=1)
    v = _judge(warm + cold, expects_cold=True)
    checks = {(c["metric"], c["percentile"]): c for c in v["checks"]}
    assert checks[("client_latency_ms", "p50")]["status"] == "pass"  # cold ones do not count as warm
    assert checks[("cold_start_ms", "p95")]["status"] == "fail"
    # When the profile aims at cold starts, too few of them make the run invalid.
    v2 = _judge(warm + cold[:1], expects_cold=True)
    assert v2["exit_code"] == EXIT_INVALID
    # Otherwise a lone first-request cold start is reported, not judged.
    v3 = _judge(warm + cold[:1], expects_cold=False)
    assert v3["exit_code"] == EXIT_PASS
    assert {c["status"] for c in v3["checks"] if c["metric"] == "cold_start_ms"} == {"not_observed"}


def test_default_slo_file_loads_with_p50_under_10ms():
    spec = load_slo()
    assert spec.defaults.latency["client_latency_ms"]["p50"] == 10
    assert spec.validity.min_duration_s > 0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("defaults:\n  client_latency_ms: {p42: 10}\n", 2, "unknown percentile 'p42'"),
        ("defaults:\n  client_latency_ms:\n    p50: -3\n", 3, "positive number"),
        ("defaults:\n  latency: {p50: 1}\n", 2, "unknown SLO metric 'latency'"),
        ("defaults: {}\nvalidity:\n  min_samples: {p99: 0}\n", 3, "min_samples"),
        ("defaults: {}\nvalidity:\n  minimum_duration: 3\n", 3, "unknown validity rule"),
        ("defaults:\n  error_rate: 3\n", 2, "fraction"),
    ],
)
def test_bad_slo_file_names_file_line_and_problem(tmp_path, text, line, message):
    f = tmp_path / "slo.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_slo(f)
    assert err.value.line == line, str(err.value)
    assert str(err.value).startswith(f"{f}:{line}:")
    assert message in str(err.value)
