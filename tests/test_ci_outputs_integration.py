"""Compare, cost and CI outputs end to end: `edgeharness run` against the known-latency test server, then
`edgeharness compare`. Runs of 20 s at 20 req/s (about 420 samples each, some 30 s of wall time).

The 0.4 ms shift the issue asks to detect: A and B hold each request a constant 2 ms, C 2.4 ms, and the
three run at the same time. This shared machine's speed drifts within minutes, and an earlier version of
this test, with its runs one after the other, flaked on a loaded CI machine. Run side by side, A, B and C
share the drift, and what is left between them is the server's delay and sampling error (at ~420 samples the
99 % bootstrap interval of the p50 change is about +-0.06 ms). The tolerance is 0.15 ms: the shift must
clear it by its interval, and two runs of the same server must stay inside it. Only p50 is compared: the
delay is constant, so the shift is in every percentile, and the tail moves with scheduling noise, not the
server. Comparing with a run made at another time is what `compare` is for too, with a tolerance above the
machine's drift: D runs after A with a 1 ms shift, with `run --baseline A`, `--pricing`, `--junit` and
`--summary-md`; B is rejudged against A with the same pricing file (rejudge takes what run takes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from schema_fixtures import assert_follows_schema

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration

PROFILE = """name: compare
shape: steady
regions: [paris]
duration_s: 20
rate: 20
drain_s: 2
corpus:
  sizes: [[64, 48]]
  formats: [jpeg]
"""
SLO = """defaults:
  client_latency_ms: {p50: 10}
  cost_per_million: 1.2
regression:
  percentiles: [p50]
  tolerance_ms: 0.15
  tolerance_pct: 0
validity:
  min_duration_s: 10
  max_late_fraction: 0.5
"""
# Round numbers: 1 per million requests, 0.1 per million CPU-ms: a request of 3 ms or more costs 1.3 or
# more per million, over the SLO's 1.2.
PRICING = """plans:
  round:
    source: test
    date: "2026-11-30"
    example: true
    per_million_requests: 1
    per_million_cpu_ms: 0.1
"""


def edgeharness(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    for name, text in (("profile.yaml", PROFILE), ("slo.yaml", SLO), ("pricing.yaml", PRICING)):
        (d / name).write_text(text)
    common = ["--profile", str(d / "profile.yaml"), "--slo", str(d / "slo.yaml"), "--backend", "testserver"]
    out = {name: d / name for name in "ABCD"}

    def run_args(name: str, delay: str, *extra: str) -> list[str]:
        # A seed of its own: side by side, runs with one schedule would send in lock-step and contend for
        # the cores at the same instants, the shifted one less than the others.
        seed = str("ABCD".index(name) + 1)
        return ["run", *common, "--testserver-delay", delay, "--seed", seed, "--out", str(out[name]), "--quiet", *extra]

    side_by_side = {
        name: subprocess.Popen(
            [sys.executable, "-m", "harness", *run_args(name, delay)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, delay in (("A", "constant:2"), ("B", "constant:2"), ("C", "constant:2.4"))
    }
    for proc in side_by_side.values():
        text, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, text  # an invalid run would void the test
    pricing = ["--pricing", str(d / "pricing.yaml")]
    r = edgeharness(*run_args("D", "constant:3", "--baseline", str(out["A"]), *pricing, "--junit", str(d / "D.xml"),
                              "--summary-md", str(d / "D.md")))  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # D fails its cost bound
    r = edgeharness("rejudge", str(out["B"]), "--slo", str(d / "slo.yaml"), "--baseline", str(out["A"]), *pricing,
                    "--junit", str(d / "B.xml"), "--quiet")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # B fails its cost bound too, once priced
    return {**out, "dir": d}


def compare(runs: dict[str, Path], base: str, current: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    into = runs["dir"] / f"{base}{current}.json"
    r = edgeharness("compare", str(runs[base]), str(runs[current]), "--slo", str(runs["dir"] / "slo.yaml"), "--json",
                    str(into))  # fmt: skip
    assert_follows_schema(into, "compare.json")
    return r, json.loads(into.read_text())


def test_a_0_4_ms_shift_is_a_regression_and_exits_1(runs):
    r, cmp = compare(runs, "A", "C")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "COMPARISON: REGRESSED" in r.stdout
    (scope,) = cmp["scopes"]
    (p50,) = scope["changes"]
    assert scope["region"] == "paris" and p50["verdict"] == "regressed"
    assert 0.15 < p50["lo_ms"] <= p50["change_ms"] <= p50["hi_ms"] < 0.8


def test_two_runs_of_the_same_server_show_no_significant_change_and_exit_0(runs):
    r, cmp = compare(runs, "A", "B")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "COMPARISON: NO SIGNIFICANT CHANGE" in r.stdout
    assert cmp["verdict"] == "no significant change"


def test_a_1_ms_shift_against_an_earlier_run_is_a_regression(runs):
    r, cmp = compare(runs, "A", "D")
    assert r.returncode == 1 and cmp["verdict"] == "regressed", r.stdout + r.stderr
    (scope,) = cmp["scopes"]
    assert scope["changes"][0]["lo_ms"] > 0.15


def test_run_and_rejudge_with_baseline_add_the_comparison_to_the_report_and_compare_json(runs):
    same = json.loads((runs["B"] / "compare.json").read_text())
    shifted = json.loads((runs["D"] / "compare.json").read_text())
    assert same["verdict"] == "no significant change" and shifted["verdict"] == "regressed"
    assert same["baseline"] == shifted["baseline"] == str(runs["A"])
    for name in ("B", "D"):
        assert_follows_schema(runs[name] / "compare.json")
        assert_follows_schema(runs[name] / "cost.json")
        html = (runs[name] / "report.html").read_text()
        assert "Against baseline" in html and "Cost (USD)" in html
        assert html.index("Against baseline") < html.index("Run settings")
    assert "regressed" in (runs["D"] / "report.html").read_text()
    # rejudge wrote B's JUnit XML with the cost check it judged
    cases = ET.parse(runs["dir"] / "B.xml").getroot().find("testsuite").findall("testcase")
    cost_case = next(c for c in cases if c.get("name") == "paris cost_per_million [round] <= 1.2")
    assert cost_case.find("failure") is not None  # 2 ms of server time: 1.2 and more per million


def test_cost_is_reported_beside_latency_and_its_bound_fails_the_run(runs):
    cost = json.loads((runs["D"] / "cost.json").read_text())
    paris = cost["regions"]["paris"]
    # Server-Timing total of a 3 ms hold: at least 3 ms, more when a sleep overruns (by over 1 ms on a
    # loaded CI machine); well under twice the hold (counted once).
    assert 3.0 <= paris["server_ms_mean"] < 6.0
    per_million = paris["plans"]["round"]["per_million"]
    assert per_million == pytest.approx(1 + 0.1 * paris["server_ms_mean"], abs=1e-3)
    assert paris["plans"]["round"]["per_day"] == pytest.approx(per_million * paris["rate_rps"] * 86400 / 1e6, rel=1e-3)
    assert 15 <= paris["rate_rps"] <= 25 and paris["client_p50_ms"] > 3.0
    results = json.loads((runs["D"] / "results.json").read_text())
    check = next(c for c in results["verdict"]["checks"] if c["metric"] == "cost_per_million")
    assert check["status"] == "fail" and check["strategy"] == "round" and check["measured"] == per_million
    assert results["verdict"]["status"] == "fail"
    html = (runs["D"] / "report.html").read_text()
    assert "Cost (USD)" in html and "(example prices)" in html


def test_junit_and_markdown_written_by_the_run(runs):
    root = ET.parse(runs["dir"] / "D.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "run validity",
        "run decided",
        "paris client_latency_ms p50 <= 10",
        "paris cost_per_million [round] <= 1.2",
    ]
    assert [c.find("failure") is not None for c in cases] == [False, False, False, True]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "4",
        "1",
        "0",
        "0",
    )
    text = (runs["dir"] / "D.md").read_text()
    assert text.startswith("## edgeharness: FAIL (exit 1)")
    assert "**Against baseline**" in text and "regressed" in text and "| round |" in text


def test_a_bad_pricing_file_or_baseline_is_refused_before_the_run(tmp_path):
    bad = tmp_path / "pricing.yaml"
    bad.write_text("plans:\n  p:\n    source: s\n    date: d\n    per_million_requests: -1\n")
    r = edgeharness("run", "--backend", "testserver", "--pricing", str(bad), "--out", str(tmp_path / "o"), timeout=60)
    assert r.returncode == 2 and f"{bad}:5" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # refused before anything started
    r = edgeharness(
        "run", "--backend", "testserver", "--baseline", str(tmp_path), "--out", str(tmp_path / "o"), timeout=60
    )
    assert r.returncode == 2 and "no results.json" in r.stderr


def test_the_baseline_cannot_be_the_runs_own_output_folder(runs):
    a = runs["A"]
    before = (a / "results.json").read_text()
    r = edgeharness("run", "--backend", "testserver", "--baseline", str(a), "--out", str(a), timeout=60)
    assert r.returncode == 2 and "the folder being judged" in r.stderr
    assert (a / "results.json").read_text() == before  # nothing of the baseline was touched


def test_rejudge_prices_and_compares_as_the_run_did_unless_told_otherwise(runs):
    # D was run with --pricing and --baseline A: rejudged without them, its cost bound still fails it.
    r = edgeharness("rejudge", str(runs["D"]), "--slo", str(runs["dir"] / "slo.yaml"), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    results = json.loads((runs["D"] / "results.json").read_text())
    assert any(c["metric"] == "cost_per_million" and c["status"] == "fail" for c in results["verdict"]["checks"])
    assert any(n.startswith("rejudged with the run's own --pricing ") and "--baseline" in n
               for n in results["verdict"]["notes"])  # fmt: skip
    assert json.loads((runs["D"] / "compare.json").read_text())["verdict"] == "regressed"
