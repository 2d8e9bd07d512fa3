"""CI outputs and cost: JUnit XML (one test case per check), the Markdown summary, pricing files and the
cost of a run's traffic, with `cost_per_million` bounds from the SLO file. Synthetic samples here;
tests/test_ci_outputs_integration.py runs the known-latency test server."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from harness.cost.estimate import add_checks, cost_checks, estimate
from harness.cost.pricing import load_pricing, pricing_dir
from harness.load.profiles import Profile
from harness.load.recorder import Sample
from harness.load.yamlfile import ConfigError, loads
from harness.report.junit import junit_xml
from harness.report.markdown import md, summary_markdown
from harness.report.sections import cost_section
from harness.verdict.facts import LoadProcessFacts, RunFacts
from harness.verdict.model import EXIT_CODES, Check
from harness.verdict.results import build_results
from harness.verdict.slo import parse_slo

ROUND = """
currency: USD
plans:
  per-cpu:
    source: test, round numbers
    date: "2026-11-30"
    example: true
    monthly_fee: 10
    per_million_requests: 1
    per_million_cpu_ms: 0.1
    free_per_month: {requests: 1000000, cpu_ms: 1000000}
  per-gbs:
    source: test, round numbers
    date: "2026-11-30"
    per_million_requests: 2
    per_gb_second: 0.00001
    memory_gb: 0.5
    billing_granularity_ms: 10
"""


def _samples(region, n, latency_us, server_us, span_s=20.0, status=200):
    return [
        Sample(region, region, i * span_s / n, 100, latency_us, status, 0, server_us, server_us - 100, 5.0, "local",
               0, latency_us + 5000, "", "local")
        for i in range(n)
    ]  # fmt: skip


def _results(samples, slo):
    regions = sorted({s.region for s in samples})
    counts = {r: sum(s.region == r for s in samples) for r in regions}
    now = time.time()
    facts = RunFacts(
        settings={}, profile=Profile(name="t<&>", shape="steady", regions=regions, duration_s=20.0, rate=10.0),
        slo=parse_slo(loads(slo, "slo.yaml")), started_at=now, t0=now, finished_at=now + 20,
        planned_duration_s=20.0, load_processes=[LoadProcessFacts("local", regions, counts, "finished", 20.0)],
    )  # fmt: skip
    return build_results(facts, samples), facts.slo


def _pricing(tmp_path, text=ROUND):
    f = tmp_path / "pricing.yaml"
    f.write_text(text)
    return load_pricing(f)


def test_cost_per_million_and_per_day_follow_the_round_prices(tmp_path):
    # 200 answered requests in 20 s (10 req/s), 4 ms of server time each.
    samples = _samples("paris", 200, 6000, 4000)
    results, _ = _results(samples, "validity:\n  min_duration_s: 5\n")
    cost = estimate(results, samples, _pricing(tmp_path))
    rc = cost.regions["paris"]
    assert (rc.requests, rc.rate_rps, rc.server_ms_mean) == (200, 10.0, 4.0)
    # per-cpu: 1 per million requests + 0.1 per million CPU-ms x 4 ms = 1.4 per million; 864 000 req/day.
    assert rc.plans["per-cpu"].per_million == pytest.approx(1.4)
    assert rc.plans["per-cpu"].per_day == pytest.approx(1.4 * 0.864)
    # per-gbs: 4 ms billed as 10 ms: 2 + 1e-5 x 0.5 GB x 0.01 s x 1e6 = 2.05 per million.
    assert rc.plans["per-gbs"].per_million == pytest.approx(2.05)
    # The account: a month of 25.92 M requests and 103.68 M CPU-ms, less the free tier, plus the fee.
    month = 10 + (25.92 - 1) * 1 + (103.68 - 1) * 0.1
    acct = cost.account["per-cpu"]
    assert acct.per_month == pytest.approx(month) and acct.per_day == pytest.approx(month / 30)
    assert acct.per_million == pytest.approx(month / 25.92)


def test_requests_never_answered_are_not_billed_and_without_server_timing_time_is_not_priced(tmp_path):
    answered = _samples("paris", 100, 6000, 0)
    dropped = _samples("paris", 20, 0, 0, status=-1)
    results, _ = _results(answered + dropped, "validity:\n  min_duration_s: 5\n")
    cost = estimate(results, answered + dropped, _pricing(tmp_path))
    rc = cost.regions["paris"]
    assert rc.requests == 100 and rc.server_ms_mean is None
    assert rc.plans["per-cpu"].per_million is None and cost.account["per-cpu"].per_day is None
    assert any("no Server-Timing" in n for n in cost.notes)


def test_a_cost_bound_in_the_slo_file_fails_the_run_and_names_the_plan(tmp_path):
    samples = _samples("paris", 200, 6000, 4000) + _samples("lima", 200, 6000, 1000)
    slo_text = (
        "defaults:\n  cost_per_million: 1.5\nregions:\n  lima:\n    cost_per_million: 1.2\n"
        "validity:\n  min_duration_s: 5\n"
    )
    results, slo = _results(samples, slo_text)
    assert results.verdict.status == "pass"
    cost = estimate(results, samples, _pricing(tmp_path))
    add_checks(results, cost_checks(cost, slo))
    by_name = {c.name: c for c in results.verdict.checks if c.metric == "cost_per_million"}
    # paris: per-cpu 1.4 <= 1.5 passes, per-gbs 2.05 fails; lima (0.1 ms... 1 ms): per-cpu 1.1 <= 1.2.
    assert by_name["paris cost_per_million [per-cpu] <= 1.5"].status == "pass"
    assert by_name["paris cost_per_million [per-gbs] <= 1.5"].status == "fail"
    assert by_name["lima cost_per_million [per-cpu] <= 1.2"].status == "pass"
    v = results.verdict
    assert v.status == "fail" and v.exit_code == 1 and "paris cost_per_million [per-gbs] <= 1.5" in v.failed


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        ((1, 1, 1, 1), "interrupted"),
        ((0, 1, 1, 1), "invalid"),
        ((0, 0, 1, 1), "fail"),
        ((0, 0, 0, 1), "inconclusive"),
        ((0, 0, 0, 0), "pass"),
    ],
)
def test_one_precedence_decides_the_verdict_and_the_added_cost_checks(flags, status):
    from harness.verdict.model import decide

    interrupted, invalid, failed, inconclusive = map(bool, flags)
    assert decide(interrupted=interrupted, invalid=invalid, failed=failed, inconclusive=inconclusive) == status
    # add_checks re-decides with it: a failing cost check never lifts an interrupted or invalid run.
    results, _ = _results(_samples("paris", 200, 6000, 4000), "defaults: {}\nvalidity:\n  min_duration_s: 5\n")
    results.verdict.status = "interrupted" if interrupted else "invalid" if invalid else "pass"
    outcome = "fail" if failed else "pass"
    bad = Check("paris cost", "paris", "cost_per_million", None, 1.0, 2.0, None, None, 200, outcome)
    add_checks(results, [bad])
    expect = decide(interrupted=interrupted, invalid=invalid, failed=failed, inconclusive=False)
    assert (results.verdict.status, results.verdict.exit_code) == (expect, EXIT_CODES[expect])


def test_pricing_files_are_checked_with_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"pricing.yaml:2: plans.p: .source. is a required property"):
        _pricing(tmp_path, "plans:\n  p:\n    date: '2026-01-01'\n    per_million_requests: 1\n")
    with pytest.raises(ConfigError, match=r"pricing.yaml:4: unknown key `per_request`"):
        _pricing(tmp_path, "plans:\n  p:\n    source: s\n    per_request: 1\n    date: d\n")
    with pytest.raises(ConfigError, match="not both"):
        _pricing(tmp_path, "plans:\n  p: {source: s, date: d, per_million_cpu_ms: 1, per_gb_second: 1}\n")


def test_the_shipped_pricing_file_gives_every_plan_a_source_and_a_date():
    pricing = load_pricing(pricing_dir() / "edge-platforms.yaml")
    assert pricing.plans
    for plan in pricing.plans.values():
        assert plan.source.strip() and plan.date.strip()
        # A plan without a citable source must say it is an example.
        assert plan.example or "http" in plan.source


def _junit(results):
    root = ET.fromstring(junit_xml(results))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    return root, suite, cases


def test_junit_has_one_test_case_per_check_plus_validity_with_failures_skips_and_errors():
    # paris: p50 passes, p95 fails; lima: p95 of 100 samples with 3 over the threshold is inconclusive.
    samples = _samples("paris", 200, 15000, 1000)
    samples += _samples("lima", 97, 5000, 1000) + _samples("lima", 3, 45000, 1000)
    slo = "defaults:\n  client_latency_ms: {p50: 20, p95: 40}\nregions:\n  paris:\n    client_latency_ms: {p95: 10}\n"
    results, _ = _results(samples, slo + "validity:\n  min_duration_s: 5\n")
    root, suite, cases = _junit(results)
    checks = results.verdict.checks
    assert len(cases) == len(checks) + 2 == int(suite.get("tests")) == int(root.get("tests")) == 6
    names = [c.get("name") for c in cases]
    assert names[:2] == ["run validity", "run decided"] and names[2:] == [c.name for c in checks]
    assert {c.get("classname") for c in cases[2:]} == {"edgeharness.paris", "edgeharness.lima"}
    failed = [c for c in cases if c.find("failure") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert [c.get("name") for c in failed] == ["paris client_latency_ms p95 <= 10"]
    assert [c.get("name") for c in skipped] == ["lima client_latency_ms p95 <= 40"]
    assert "more samples" in skipped[0].find("skipped").get("message")
    assert (suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("1", "1", "0")
    assert cases[0].find("error") is None and cases[1].find("error") is None  # a FAIL is decided
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["verdict"] == "fail" and props["exit_code"] == "1"


def test_an_invalid_run_is_an_error_test_case_listing_every_reason():
    samples = _samples("paris", 200, 5000, 1000)
    results, _ = _results(samples, "defaults:\n  client_latency_ms: {p50: 20}\nvalidity:\n  min_duration_s: 60\n")
    assert results.verdict.status == "invalid"
    _, suite, cases = _junit(results)
    err = cases[0].find("error")
    assert cases[0].get("name") == "run validity" and err is not None and "under the minimum" in err.text
    assert suite.get("errors") == "1"


def test_an_inconclusive_run_is_an_error_test_case_not_only_skips():
    samples = _samples("lima", 97, 5000, 1000) + _samples("lima", 3, 45000, 1000)
    results, _ = _results(samples, "defaults:\n  client_latency_ms: {p95: 40}\nvalidity:\n  min_duration_s: 5\n")
    assert results.verdict.status == "inconclusive" and results.verdict.exit_code == 2
    _, suite, cases = _junit(results)
    err = cases[1].find("error")
    assert cases[1].get("name") == "run decided" and err is not None and err.get("type") == "inconclusive"
    assert "more samples" in err.get("message") and suite.get("errors") == "1"


def test_markdown_summary_escapes_names_and_lists_checks(tmp_path):
    assert md("a|b_[x]<y>") == "a\\|b\\_\\[x\\]\\<y\\>"
    samples = _samples("paris", 200, 5000, 4000)
    results, _ = _results(samples, "defaults:\n  client_latency_ms: {p50: 20}\nvalidity:\n  min_duration_s: 5\n")
    cost = estimate(results, samples, _pricing(tmp_path))
    text = summary_markdown(results, cost)
    assert text.startswith("## edgeharness: PASS (exit 0)")
    assert "| paris | paris client\\_latency\\_ms p50 \\<= 20 | 5.000 |" in text
    assert "| paris | 10 | 5.000 | 4.000 | per-cpu | 1.4000 | 1.2096 |" in text
    assert "Profile `t\\<&\\>`" in text


def test_the_cost_section_escapes_what_came_from_files(tmp_path):
    samples = _samples("paris", 200, 5000, 4000)
    results, _ = _results(samples, "validity:\n  min_duration_s: 5\n")
    pricing = _pricing(tmp_path, ROUND.replace("per-gbs:", "'<b>x</b>':"))
    html = cost_section(estimate(results, samples, pricing))
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "(example prices)" in html and "1.4000" in html


def test_a_baseline_that_cannot_be_read_or_a_bound_without_pricing_becomes_a_note_not_a_crash(tmp_path):
    from harness.report.extras import prepare

    samples = _samples("paris", 200, 5000, 4000)
    results, slo = _results(samples, "defaults:\n  cost_per_million: 1\nvalidity:\n  min_duration_s: 5\n")
    more = prepare(results, samples, slo, tmp_path / "out", baseline=str(tmp_path / "gone"))
    notes = results.verdict.notes
    assert any(n.startswith(f"not compared with baseline {tmp_path / 'gone'}: ") for n in notes)
    assert "cost_per_million not judged: no --pricing file given" in notes
    assert more.comparison is None and len(more.sections) == 1 and "no results.json" in more.sections[0]
    assert results.verdict.status == "pass"  # neither changes the verdict


def test_outputs_not_computed_this_time_are_not_left_from_an_earlier_judgement(tmp_path):
    from rich.console import Console

    from harness.report.extras import RunExtras, prepare, publish

    samples = _samples("paris", 200, 5000, 4000)
    results, slo = _results(samples, "validity:\n  min_duration_s: 5\n")
    out = tmp_path / "out"
    out.mkdir()
    _pricing(tmp_path)  # writes tmp_path/pricing.yaml
    priced = prepare(results, samples, slo, out, pricing=str(tmp_path / "pricing.yaml"))
    publish(results, priced, out, Console(quiet=True))
    assert (out / "cost.json").is_file()
    (out / "compare.json").write_text("{}")  # as if an earlier judgement had compared it
    publish(results, RunExtras(), out, Console(quiet=True))  # judged again, without --pricing or --baseline
    assert not (out / "cost.json").exists() and not (out / "compare.json").exists()
