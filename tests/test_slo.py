"""SLO files and the verdict: thresholds judged with confidence intervals, accounting, exit codes,
errors with lines. Every results document built here is validated against the published schema."""

from __future__ import annotations

import dataclasses
import json
import time

import jsonschema
import pytest

from harness.load.profiles import Profile
from harness.load.recorder import DROPPED, UNFINISHED, Sample
from harness.load.yamlfile import ConfigError, loads
from harness.verdict.facts import LoadProcessFacts, RunFacts
from harness.verdict.model import Results, results_schema
from harness.verdict.results import build_results
from harness.verdict.slo import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_PASS, load_slo, parse_slo

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
  min_cold_samples: 3
"""


def _samples(region, n, latency_us, *, cold=0, status=200, inference_us=4000, span_s=20.0, process="local"):
    return [
        Sample(
            region, region, i * span_s / n, 100, latency_us + (i % 7), status, cold, latency_us - 500,
            inference_us, 5.0, "local", 0, latency_us + 5000, "", process,
        )
        for i in range(n)
    ]  # fmt: skip


def _facts(samples, *, slo=SLO, regions=None, planned=None, procs=None, duration_s=20.0, expects_cold=False, **kw):
    regions = regions or sorted({s.region for s in samples}) or ["paris"]
    if procs is None:
        counts = planned or {r: sum(s.region == r for s in samples) for r in regions}
        procs = [LoadProcessFacts("local", regions, counts, "finished", duration_s)]
    profile = Profile(
        name="t", shape="steady", regions=regions, duration_s=duration_s, rate=15.0, expects_cold_starts=expects_cold
    )
    now = time.time()
    return RunFacts(
        settings={}, profile=profile, slo=parse_slo(loads(slo, "slo.yaml")), started_at=now, t0=now,
        finished_at=now + duration_s, planned_duration_s=duration_s, load_processes=procs, **kw,
    )  # fmt: skip


def _judge(samples, **kw) -> Results:
    res = build_results(_facts(samples, **kw), samples)
    doc = json.loads(json.dumps(res.to_json()))
    jsonschema.validate(doc, results_schema())
    assert Results.from_json(doc) == res  # the document reads back into the same typed results
    return res


def _check(res, region, metric, pct):
    return next(c for c in res.verdict.checks if (c.region, c.metric, c.percentile) == (region, metric, pct))


def test_all_pass_exits_zero():
    res = _judge(_samples("paris", 300, 6000) + _samples("nairobi", 300, 11000))
    v = res.verdict
    assert v.status == "pass" and v.exit_code == EXIT_PASS
    # The region override applies: nairobi's 11 ms p50 is within its own 12 ms.
    nb = next(c for c in v.checks if (c.region, c.metric, c.percentile) == ("nairobi", "client_latency_ms", "p50"))
    assert nb.threshold == 12 and nb.status == "pass"
    assert nb.lo is not None and nb.hi is not None and nb.lo <= nb.measured <= nb.hi <= 12
    # One estimator: the check judges the figure results.json and the report show.
    warm = res.regions["nairobi"].client_latency_ms.warm.percentiles["p50"]
    assert (warm.value, warm.lo, warm.hi) == (round(nb.measured, 3), round(nb.lo, 3), round(nb.hi, 3))


def test_slow_region_fails_and_names_the_slo():
    v = _judge(_samples("paris", 300, 15000)).verdict
    assert v.status == "fail" and v.exit_code == EXIT_FAIL
    assert "paris client_latency_ms p50 <= 10" in v.failed


def test_a_percentile_too_close_to_call_is_inconclusive_and_says_what_would_decide_it():
    # 100 samples, 3 of them over the p95 threshold: the point estimate passes, but at 99 % confidence
    # the interval reaches over 40 ms; neither pass nor fail.
    fast = _samples("paris", 97, 5000)
    slow = _samples("paris", 3, 45000)
    res = _judge(fast + slow)
    ch = _check(res, "paris", "client_latency_ms", "p95")
    assert ch.measured <= 40 and ch.status == "inconclusive"
    assert ch.needed_samples is not None and ch.needed_samples > 100
    v = res.verdict
    assert v.status == "inconclusive" and v.exit_code == EXIT_INVALID
    assert any(
        f"p95 needs about {ch.needed_samples - 100} more samples at this rate" in r for r in v.inconclusive_reasons
    )
    # The same fraction over a run of the suggested size decides it.
    n = ch.needed_samples
    more = _samples("paris", n - round(n * 0.03), 5000) + _samples("paris", round(n * 0.03), 45000)
    assert _check(_judge(more), "paris", "client_latency_ms", "p95").status == "pass"


def test_a_fail_outranks_an_inconclusive_check():
    samples = _samples("paris", 97, 15000) + _samples("paris", 3, 45000)  # p50 clearly over 10 ms
    v = _judge(samples).verdict
    assert v.status == "fail" and v.inconclusive_reasons


def test_a_generator_that_fell_behind_makes_the_run_invalid_unless_the_slo_allows_it():
    samples = _samples("paris", 300, 6000)
    # 18 of 300 sends (6 %) left over 5 ms after their intended time: more than the default 5 % allowed.
    samples[::17] = [dataclasses.replace(x, send_delay_us=6000) for x in samples[::17]]
    v = _judge(samples).verdict
    assert v.status == "invalid" and v.exit_code == EXIT_INVALID
    assert any("paris: 6.0% of sends were late (max 5.0%)" in r for r in v.invalid_reasons)
    assert _judge(samples, slo=SLO + "  max_late_fraction: 0.1\n").verdict.status == "pass"


def test_lost_arrivals_make_the_run_invalid_naming_region_and_process():
    samples = _samples("paris", 300, 5000)
    res = _judge(samples, planned={"paris": 310})
    assert res.regions["paris"].counts.lost == 10 and res.regions["paris"].counts.planned == 310
    assert res.verdict.exit_code == EXIT_INVALID
    assert any("paris: 10 of 310 planned arrivals were lost" in r and "local" in r for r in res.verdict.invalid_reasons)


def test_a_lost_load_process_is_named_and_its_samples_are_kept():
    kept = _samples("paris", 150, 5000, span_s=10.0, process="worker-1")
    other = _samples("nairobi", 300, 5000, process="worker-0")
    procs = [
        LoadProcessFacts("worker-0", ["nairobi"], {"nairobi": 300}, "finished", 20.0),
        LoadProcessFacts("worker-1", ["paris"], {"paris": 300}, "lost", 10.0),
    ]
    res = _judge(kept + other, procs=procs)
    v = res.verdict
    assert v.exit_code == EXIT_INVALID
    assert any("load process worker-1 was lost" in r and "150 of its 300" in r for r in v.invalid_reasons)
    assert res.regions["paris"].counts.ok == 150  # what it sent before it died is kept and reported
    lost = next(p for p in res.load_processes if p.name == "worker-1")
    assert lost.lost == {"paris": 150} and lost.state == "lost"


def test_a_region_of_the_profile_with_no_samples_is_invalid_never_skipped():
    res = _judge(_samples("paris", 300, 5000), regions=["paris", "sydney"], planned={"paris": 300, "sydney": 0})
    assert res.verdict.exit_code == EXIT_INVALID
    assert any("sydney: a region of the profile has no samples" in r for r in res.verdict.invalid_reasons)


def test_a_run_cut_short_is_invalid_even_if_fast():
    # The schedule was 60 s; arrivals stop at 20 s.
    res = _judge(_samples("paris", 300, 5000, span_s=20.0), duration_s=60.0)
    assert res.verdict.exit_code == EXIT_INVALID
    assert any("ran 19.9 s of the planned 60 s" in r for r in res.verdict.invalid_reasons)
    assert res.run.duration_s < 21


def test_an_interrupted_run_has_its_own_verdict_and_exit_code():
    res = _judge(_samples("paris", 100, 5000, span_s=5.0), duration_s=20.0, interrupted="SIGINT")
    assert res.verdict.status == "interrupted" and res.verdict.exit_code == EXIT_INTERRUPTED == 3
    assert res.regions["paris"].counts.ok == 100 and res.run.interrupted == "SIGINT"


def test_errors_drops_and_unanswered_count_against_error_rate():
    ok = _samples("paris", 290, 5000)
    bad = _samples("paris", 5, 5000, status=503) + _samples("paris", 5, 0, status=UNFINISHED)
    res = _judge(ok + bad)
    c = res.regions["paris"].counts
    assert (c.errors, c.unfinished) == (5, 5)
    err = _check(res, "paris", "error_rate", None)
    assert err.measured == pytest.approx(10 / 300, abs=1e-5) and err.status == "fail"


def test_unanswered_arrivals_invalidate_a_run_whose_slo_sets_no_error_rate():
    # Percentiles are over answered requests: without an error_rate, 10 of 300 unanswered (3.3 %) must
    # not pass on the fast survivors.
    no_err = SLO.replace("  error_rate: 0.01\n", "")
    ok = _samples("paris", 290, 5000)
    bad = _samples("paris", 4, 5000, status=503) + _samples("paris", 3, 0, status=UNFINISHED)
    dropped = [dataclasses.replace(x, status=DROPPED) for x in _samples("paris", 3, 0)]
    v = _judge(ok + bad + dropped, slo=no_err).verdict
    assert v.status == "invalid" and v.exit_code == EXIT_INVALID
    assert any(
        "paris: 3.3% of arrivals got no good answer (4 errors, 3 dropped, 3 unfinished of 300; max 1.0%" in r
        for r in v.invalid_reasons
    )
    # The SLO may allow more; 1 of 300 is within the default.
    assert _judge(ok + bad + dropped, slo=no_err + "  max_unanswered_fraction: 0.05\n").verdict.status == "pass"
    assert _judge(ok + bad[:1], slo=no_err).verdict.status == "pass"


def test_cold_starts_judged_apart_from_warm():
    warm = _samples("paris", 300, 5000)
    cold = _samples("paris", 30, 2_500_000, cold=1)
    res = _judge(warm + cold, expects_cold=True)
    assert _check(res, "paris", "client_latency_ms", "p50").status == "pass"  # cold ones do not count as warm
    assert _check(res, "paris", "cold_start_ms", "p95").status == "fail"
    # A profile that does not aim at cold starts meets few: a lone one is reported, not judged.
    res = _judge(warm + cold[:1], expects_cold=False)
    assert res.verdict.exit_code == EXIT_PASS
    assert _check(res, "paris", "cold_start_ms", "p95").status == "not_observed"


def test_many_slow_cold_requests_are_judged_even_when_the_profile_does_not_aim_at_them():
    # 50 of 300 requests cold at 150 ms: left out of client_latency_ms, so the cold check must speak.
    # 50 samples cannot decide a p95 at 99 %: inconclusive, never a silent pass.
    warm = _samples("paris", 250, 5000)
    cold = _samples("paris", 50, 150_000, cold=1)
    res = _judge(warm + cold, slo=SLO.replace("cold_start_ms: {p95: 2000}", "cold_start_ms: {p95: 200}"))
    ch = _check(res, "paris", "cold_start_ms", "p95")
    assert ch.status == "inconclusive" and ch.samples == 50
    assert res.verdict.status == "inconclusive" and res.verdict.exit_code == EXIT_INVALID
    # Under min_cold_samples (3 here) a profile not aiming at cold starts leaves them unclaimed.
    res = _judge(warm + cold[:2], slo=SLO.replace("cold_start_ms: {p95: 2000}", "cold_start_ms: {p95: 200}"))
    assert _check(res, "paris", "cold_start_ms", "p95").status == "not_observed"
    assert res.verdict.exit_code == EXIT_PASS


def test_process_cold_starts_are_judged_per_strategy():
    slo = SLO.replace("  error_rate: 0.01\n", "  error_rate: 0.01\n  process_cold_start_ms: {p50: 1000}\n")
    starts = [
        {"region": "paris", "strategy": s, "repeat": i, "spawn_to_first_answer_ms": ms, "status": 200}
        for s, ms in (("plain", 3000.0), ("zygote", 150.0))
        for i in range(12)
    ]
    res = _judge(_samples("paris", 300, 5000), slo=slo, process_cold_start=starts)
    by = {c.strategy: c for c in res.verdict.checks if c.metric == "process_cold_start_ms"}
    assert by["plain"].status == "fail" and by["zygote"].status == "pass"
    assert "paris process_cold_start_ms p50 [plain] <= 1000" in res.verdict.failed
    # A start that never answered well is not a fast start: it makes the run invalid, naming it.
    broken = [*starts, {"region": "paris", "strategy": "zygote", "repeat": 12, "status": 503}]
    v = _judge(_samples("paris", 300, 5000), slo=slo, process_cold_start=broken).verdict
    assert v.exit_code == EXIT_INVALID
    assert "paris: process cold start #13 (zygote) got no good first answer (status 503)" in v.invalid_reasons


def test_default_and_lenient_slo_files_load():
    spec = load_slo()
    assert spec.defaults.latency["client_latency_ms"]["p50"] == 10
    assert spec.defaults.latency["cold_start_ms"]["p95"] == 200  # model-level cold start, as edge platforms promise
    assert spec.validity.confidence == 0.99 and spec.window == "30d" and spec.objective is None  # per check
    lenient = load_slo("lenient")
    assert lenient.defaults.latency["client_latency_ms"]["p50"] > 10
    assert load_slo("strict").defaults.latency["client_latency_ms"]["p99"] == 50


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("defaults:\n  client_latency_ms: {p42: 10}\n", 2, "p42"),
        ("defaults:\n  client_latency_ms:\n    p50: -3\n", 3, "less than or equal to the minimum of 0"),
        ("defaults:\n  latency: {p50: 1}\n", 2, "unknown key `latency`"),
        ("defaults: {}\nvalidity:\n  min_samples: {p99: 1000}\n", 3, "validity.min_samples is gone"),
        ("defaults: {}\nvalidity:\n  minimum_duration: 3\n", 3, "unknown key `minimum_duration`"),
        ("defaults: {}\nvalidity:\n  confidence: 1.5\n", 3, "confidence"),
        ("defaults:\n  error_rate: 3\n", 2, "error_rate"),
        ("window: 3 days\ndefaults: {}\n", 1, "window"),
        ("defaults: {}\nregions:\n  paris: {}\n", 3, "region 'paris' lists no thresholds"),
        ("defaults: {}\nvalidity:\n  max_unanswered_fraction: 2\n", 3, "max_unanswered_fraction"),
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


def test_server_latency_from_prometheus_is_judged_on_its_point_estimate_only_when_measured():
    slo = SLO.replace("  error_rate: 0.01\n", "  error_rate: 0.01\n  server_latency_ms: {p50: 10}\n")
    samples = _samples("paris", 300, 5000) + _samples("nairobi", 300, 5000)
    server = {
        "source": "prometheus",
        "url": "http://127.0.0.1:9090",
        "error": None,
        "regions": {
            "paris": {"requests": 300, "errors": 0, "latency_ms": {"p50": 4.2}, "inference_ms": {"p50": 3.0}},
            "nairobi": {"requests": 300, "errors": 0, "latency_ms": {"p50": 14.0}, "inference_ms": {"p50": 3.0}},
        },
    }
    res = _judge(samples, slo=slo, server_side=server)
    paris, nairobi = (_check(res, r, "server_latency_ms", "p50") for r in ("paris", "nairobi"))
    assert paris.status == "pass" and (paris.lo, paris.hi) == (None, None) and paris.samples == 300
    # nairobi's own p50 override is for client latency: its server latency keeps the default 10 ms.
    assert nairobi.status == "fail" and nairobi.measured == 14.0 and nairobi.threshold == 10
    assert res.regions["paris"].server_latency_ms.value("p50") == 4.2
    # Without the telemetry stack there is nothing to judge, and no reason to invalidate the run; the claim
    # still shows, unmeasured, and the verdict's notes say so.
    res = _judge(samples, slo=slo)
    ch = _check(res, "paris", "server_latency_ms", "p50")
    assert ch.status == "not_observed" and ch.measured is None and "--stack" in ch.reason
    assert res.verdict.valid and res.verdict.status == "pass"
    assert any("server_latency_ms p50 <= 10: not measured" in n for n in res.verdict.notes)
    # A point estimate over too few requests claims nothing: a p50 needs 7 at 99 %.
    server["regions"]["paris"]["requests"] = 5
    res = _judge(samples, slo=slo, server_side=server)
    few = _check(res, "paris", "server_latency_ms", "p50")
    assert few.status == "inconclusive" and few.needed_samples == 7 and "counted 5 requests" in few.reason


def test_a_process_cold_start_claim_without_starts_in_the_region_is_shown_unmeasured():
    slo = SLO.replace("  error_rate: 0.01\n", "  error_rate: 0.01\n  process_cold_start_ms: {p50: 1000}\n")
    res = _judge(_samples("paris", 300, 5000), slo=slo)
    ch = _check(res, "paris", "process_cold_start_ms", "p50")
    assert ch.status == "not_observed" and "no process cold start was measured" in ch.reason
    assert any("process_cold_start_ms p50 <= 1000: not measured" in n for n in res.verdict.notes)
