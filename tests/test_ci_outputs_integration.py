"""Compare, cost and CI outputs end to end: `edgeharness run` against the known-latency test server, then
`edgeharness compare`. Three runs of 20 s at 20 req/s (about 420 samples each, some 30 s of wall time
per run): A and B with a constant 2 ms delay, C with 3 ms (a 1 ms shift).

Why 20 s: at ~420 samples the 99 % bootstrap interval of the p50 change is about +-0.06 ms, well inside
the 0.6 ms between the tolerance and the 1 ms shift. What is left is run-to-run drift of the client's
own overhead on a shared 2-core machine (0.04-0.13 ms between identical runs when this was written, more
on a loaded CI machine), which longer runs do not remove; so the tolerance is 0.4 ms, three times the
drift seen and still well under the shift, and only p50 is compared: the delay is constant, so the
shift is in every percentile, and p90 moved by up to 0.5 ms between two identical runs here
(scheduling noise, not the server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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
  tolerance_ms: 0.4
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
    out = {}
    for name, delay, extra in (
        ("A", "constant:2", []),
        ("B", "constant:2", ["--baseline", str(d / "A")]),
        ("C", "constant:3", ["--baseline", str(d / "A"), "--pricing", str(d / "pricing.yaml"),
                               "--junit", str(d / "C.xml"), "--summary-md", str(d / "C.md")]),
    ):  # fmt: skip
        r = edgeharness("run", *common, "--testserver-delay", delay, "--out", str(d / name), "--quiet", *extra)
        # A and B pass; C fails its cost bound (exit 1). None may be invalid: that would void the test.
        assert r.returncode == (1 if name == "C" else 0), r.stdout + r.stderr
        out[name] = d / name
    out["dir"] = d
    return out


def test_a_1_ms_shift_is_a_regression_and_exits_1(runs):
    r = edgeharness("compare", str(runs["A"]), str(runs["C"]), "--slo", str(runs["dir"] / "slo.yaml"), "--json",
                    str(runs["dir"] / "AC.json"))  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "COMPARISON: REGRESSED" in r.stdout
    cmp = json.loads((runs["dir"] / "AC.json").read_text())
    (scope,) = cmp["scopes"]
    (p50,) = scope["changes"]
    assert scope["region"] == "paris" and p50["verdict"] == "regressed"
    assert 0.4 < p50["lo_ms"] <= p50["change_ms"] <= p50["hi_ms"] < 1.6


def test_two_runs_of_the_same_server_show_no_significant_change_and_exit_0(runs):
    r = edgeharness("compare", str(runs["A"]), str(runs["B"]), "--slo", str(runs["dir"] / "slo.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "COMPARISON: NO SIGNIFICANT CHANGE" in r.stdout


def test_run_with_baseline_adds_the_comparison_to_the_report_and_compare_json(runs):
    same = json.loads((runs["B"] / "compare.json").read_text())
    shifted = json.loads((runs["C"] / "compare.json").read_text())
    assert same["verdict"] == "no significant change" and shifted["verdict"] == "regressed"
    assert same["baseline"] == str(runs["A"])
    html = (runs["C"] / "report.html").read_text()
    assert "Against baseline" in html and "regressed" in html
    assert html.index("Against baseline") < html.index("Run settings")


def test_cost_is_reported_beside_latency_and_its_bound_fails_the_run(runs):
    cost = json.loads((runs["C"] / "cost.json").read_text())
    paris = cost["regions"]["paris"]
    # Server-Timing total of a 3 ms hold: at least 3 ms, more when a sleep overruns (by over 1 ms on a
    # loaded CI machine); well under twice the hold (counted once).
    assert 3.0 <= paris["server_ms_mean"] < 6.0
    per_million = paris["plans"]["round"]["per_million"]
    assert per_million == pytest.approx(1 + 0.1 * paris["server_ms_mean"], abs=1e-3)
    assert paris["plans"]["round"]["per_day"] == pytest.approx(per_million * paris["rate_rps"] * 86400 / 1e6, rel=1e-3)
    assert 15 <= paris["rate_rps"] <= 25 and paris["client_p50_ms"] > 3.0
    results = json.loads((runs["C"] / "results.json").read_text())
    check = next(c for c in results["verdict"]["checks"] if c["metric"] == "cost_per_million")
    assert check["status"] == "fail" and check["strategy"] == "round" and check["measured"] == per_million
    assert results["verdict"]["status"] == "fail"
    html = (runs["C"] / "report.html").read_text()
    assert "Cost (USD)" in html and "(example prices)" in html


def test_junit_and_markdown_written_by_the_run(runs):
    root = ET.parse(runs["dir"] / "C.xml").getroot()
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
    text = (runs["dir"] / "C.md").read_text()
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
    assert r.returncode == 2 and "own --out folder" in r.stderr
    assert (a / "results.json").read_text() == before  # nothing of the baseline was touched
