"""`edgeharness slo rules`: SLIs, burn rates and the SRE workbook's alerts, checked by the real promtool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_fixtures import require_tool
from handler_fixtures import models_dir  # noqa: F401

from harness.slo_commands import DEFAULT_RULES
from harness.slo_rules import ALERT, TIERS, RulesError, duration_s, render, rule_groups, slis
from harness.stack.components import HOW_TO_GET_PROMETHEUS, find_promtool
from harness.verdict.slo import ConfigError, load_slo

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = (0.0025, 0.005, 0.01, 0.02, 1.0, 2.5)


def slo_file(tmp_path: Path, text: str, name: str = "slo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def promtool() -> Path:
    return require_tool(find_promtool(), "promtool", HOW_TO_GET_PROMETHEUS)


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


# --- what the generator derives ------------------------------------------------------------------


def test_objectives_derive_from_each_check_unless_the_file_states_one(tmp_path: Path) -> None:
    spec = load_slo(slo_file(tmp_path, "defaults: {server_latency_ms: {p50: 10, p99: 20}, error_rate: 0.02}\n"))
    got = {s.slo: s.objective for s in slis(spec, BUCKETS)}
    assert got == pytest.approx({"server_latency_ms_p50": 0.5, "server_latency_ms_p99": 0.99, "error_rate": 0.98})
    stated = load_slo(slo_file(tmp_path, "objective: 0.995\nwindow: 4w\ndefaults: {error_rate: 0.02}\n", "b.yaml"))
    assert [s.objective for s in slis(stated, BUCKETS)] == [0.995]
    assert stated.window == "4w" and "slo:burn_rate:rate4w" in render(stated, BUCKETS)


def test_client_side_metrics_have_no_production_sli(tmp_path: Path) -> None:
    spec = load_slo(slo_file(tmp_path, "defaults: {client_latency_ms: {p50: 10}}\n"))
    with pytest.raises(RulesError, match="no objective Prometheus can measure"):
        rule_groups(spec, BUCKETS)


def test_a_latency_threshold_counts_requests_under_the_bucket_at_or_below_it(tmp_path: Path) -> None:
    spec = load_slo(slo_file(tmp_path, "defaults: {server_latency_ms: {p99: 15}}\n"))
    (sli,) = slis(spec, BUCKETS)
    assert sli.bucket == 0.01  # 15 ms lies between the 10 and 20 ms bounds: only under 10 ms is surely good
    assert 'le="0.01"' in sli.error_ratio("5m")
    whole = load_slo(slo_file(tmp_path, "defaults: {server_latency_ms: {p99: 1000}}\n", "w.yaml"))
    # A whole-second bound is written "1" by the exporters and "1.0" by a Prometheus 3 scrape.
    assert 'le=~"1(\\\\.0)?"' in slis(whole, BUCKETS)[0].error_ratio("5m")
    tiny = load_slo(slo_file(tmp_path, "defaults: {server_latency_ms: {p99: 1}}\n", "t.yaml"))
    with pytest.raises(RulesError, match="under the handler's smallest latency bucket"):
        slis(tiny, BUCKETS)


def test_regions_with_their_own_thresholds_get_their_own_rules(tmp_path: Path) -> None:
    text = "defaults: {error_rate: 0.01}\nregions:\n  nairobi: {error_rate: 0.05}\n  paris: {error_rate: 0.01}\n"
    got = {s.selector: s.objective for s in slis(load_slo(slo_file(tmp_path, text)), BUCKETS)}
    # paris repeats the default, so the default rule covers it.
    assert got == pytest.approx({'cloud_region!~"nairobi"': 0.99, 'cloud_region="nairobi"': 0.95})


def test_the_slo_file_rejects_a_bad_objective_or_window(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="objective"):
        load_slo(slo_file(tmp_path, "objective: 1.5\ndefaults: {error_rate: 0.01}\n"))
    with pytest.raises(ConfigError, match="window"):
        load_slo(slo_file(tmp_path, "window: a month\ndefaults: {error_rate: 0.01}\n", "w.yaml"))


def test_tiers_are_the_sre_workbooks() -> None:
    assert [(t.long, t.short, t.factor, t.severity) for t in TIERS] == [
        ("1h", "5m", 14.4, "page"),
        ("6h", "30m", 6.0, "page"),
        ("1d", "2h", 3.0, "ticket"),
        ("3d", "6h", 1.0, "ticket"),
    ]
    assert duration_s("1h30m") == 5400 and duration_s("30d") == 30 * 86400


def test_impossible_burn_rates_are_named_in_the_header(tmp_path: Path) -> None:
    # p50 leaves half the requests as budget: burning it 3x would need 150 % bad requests.
    text = render(load_slo(slo_file(tmp_path, "defaults: {server_latency_ms: {p50: 10}}\n")), BUCKETS)
    assert "cannot happen" in text and "server_latency_ms_p50 (3x)" in text and "(1x)" not in text


def test_the_committed_rules_are_what_the_default_slo_file_gives() -> None:
    assert DEFAULT_RULES.read_text() == render(load_slo(None)), (
        "collector/rules/slo.yml is stale: run `edgeharness slo rules`"
    )


def test_the_command_writes_checks_and_reports_bad_input(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "harness", "slo", "rules", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    out = tmp_path / "rules" / "slo.yml"
    assert cli("--out", str(out)).returncode == 0
    assert cli("--out", str(out), "--check").returncode == 0
    out.write_text(out.read_text() + "# edited\n")
    stale = cli("--out", str(out), "--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr
    bad = slo_file(tmp_path, "objective: 2\n")
    failed = cli("--slo", str(bad), "--out", "-")
    assert failed.returncode == 2 and "objective" in failed.stderr and "Traceback" not in failed.stderr


# --- the real promtool -------------------------------------------------------------------------------


def test_promtool_accepts_the_generated_and_committed_rules(tmp_path: Path) -> None:
    strict = tmp_path / "strict.yml"
    strict.write_text(render(load_slo("strict")))
    regional = tmp_path / "regional.yml"
    text = "defaults: {error_rate: 0.01, server_latency_ms: {p99: 10}}\nregions:\n  nairobi: {error_rate: 0.05}\n"
    regional.write_text(render(load_slo(slo_file(tmp_path, text))))
    # --lint-fatal: no two rules may record the same series (duplicate-rules lint), regions included.
    result = run_promtool("check", "rules", "--lint-fatal", DEFAULT_RULES, strict, regional)
    assert result.returncode == 0, result.stdout + result.stderr


REQUESTS = "http_server_request_duration_seconds"
BURN_SLO = """
objective: 0.99
window: 30d
defaults:
  server_latency_ms: {p99: 10}
  error_rate: 0.01
"""


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": values}


def fired(slo: str, region: str, *tiers: int) -> list[dict[str, Any]]:
    out = []
    for i in tiers:
        tier = TIERS[i]
        labels = {"slo": slo, "cloud_region": region, "severity": tier.severity, "long_window": tier.long,
                  "short_window": tier.short, "burn_rate": f"{tier.factor:g}"}  # fmt: skip
        out.append({"exp_labels": labels})
    return out


def promtool_test(tmp_path: Path, inputs: list[dict[str, str]], checks: list[tuple[str, list[dict[str, Any]]]]) -> str:
    rules = tmp_path / "slo.yml"
    groups = yaml.safe_load(render(load_slo(slo_file(tmp_path, BURN_SLO))))
    # promtool compares annotations too, and the summary quotes the burn rate ($value) of the moment:
    # these tests check which alerts fire when; `promtool check rules` checks the annotation templates.
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules.write_text(yaml.safe_dump(groups, sort_keys=False))
    doc = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [{"eval_time": t, "alertname": ALERT, "exp_alerts": alerts} for t, alerts in checks],
            }
        ],
    }
    test = tmp_path / "test.yml"
    test.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_promtool("test", "rules", "--run=.*", test.name, cwd=tmp_path)
    return result.stdout + result.stderr if result.returncode else ""


def test_errors_burning_the_budget_fire_each_tier_at_its_time(tmp_path: Path) -> None:
    # 60 requests a minute in paris, all fine for an hour, then half of them fail (50x the 1 % budget).
    # At 60+x minutes a window reaching back to the start holds a bad fraction of x / (2 (60 + x)); the
    # 1h window x / 120. So 3d/6h > 1x from x > 1.2, 1d/2h > 3x from x > 3.8, 6h/30m > 6x from x > 8.2,
    # and 1h/5m > 14.4x from x > 17.3 minutes.
    ok = series(f"{REQUESTS}_count", 'cloud_region="paris", http_response_status_code="200"', "0+60x60 3630+30x120")
    bucket = series(
        f"{REQUESTS}_bucket", 'cloud_region="paris", http_response_status_code="200", le="0.01"', "0+60x60 3630+30x120"
    )
    failed = series(f"{REQUESTS}_count", 'cloud_region="paris", http_response_status_code="500"', "0x60 30+30x120")
    failure = promtool_test(
        tmp_path,
        [ok, bucket, failed],
        [
            ("59m", []),
            ("63m", fired("error_rate", "paris", 3)),
            ("70m", fired("error_rate", "paris", 1, 2, 3)),
            ("85m", fired("error_rate", "paris", 0, 1, 2, 3)),
        ],
    )
    assert not failure, failure


def test_slow_responses_burn_the_latency_budget(tmp_path: Path) -> None:
    # From minute 60 every response takes over 10 ms: the le="0.01" bucket stops growing.
    ok = series(f"{REQUESTS}_count", 'cloud_region="nairobi", http_response_status_code="200"', "0+60x180")
    bucket = series(
        f"{REQUESTS}_bucket", 'cloud_region="nairobi", http_response_status_code="200", le="0.01"', "0+60x60 3600x120"
    )
    failure = promtool_test(
        tmp_path,
        [ok, bucket],
        [("59m", []), ("90m", fired("server_latency_ms_p99", "nairobi", 0, 1, 2, 3))],
    )
    assert not failure, failure


def test_a_healthy_service_fires_nothing(tmp_path: Path) -> None:
    # 0.1 % errors and 0.5 % slow responses: a tenth and a half of the budget, for three hours.
    labels = 'cloud_region="paris", http_response_status_code='
    failure = promtool_test(
        tmp_path,
        [
            series(f"{REQUESTS}_count", labels + '"200"', "0+999x180"),
            series(f"{REQUESTS}_bucket", labels + '"200", le="0.01"', "0+994x180"),
            series(f"{REQUESTS}_count", labels + '"500"', "0+1x180"),
        ],
        [(f"{m}m", []) for m in (5, 30, 61, 120, 179)],
    )
    assert not failure, failure


def test_the_alert_test_can_fail(tmp_path: Path) -> None:
    # The same burning series, expecting silence: promtool must report the alert (the checks above bite).
    failed = series(f"{REQUESTS}_count", 'cloud_region="paris", http_response_status_code="500"', "0x60 30+30x120")
    ok = series(f"{REQUESTS}_count", 'cloud_region="paris", http_response_status_code="200"', "0+60x60 3630+30x120")
    failure = promtool_test(tmp_path, [ok, failed], [("85m", [])])
    assert ALERT in failure


# --- the native stack loads generated rules, and a slowed handler fires them -------------------------

# A realistic objective: 99 % of requests within 50 ms. A healthy handler keeps it with room to spare;
# paris's handler, started with an injected delay of 60 ms, misses it on every request: its budget
# burns 100x over and the page alert fires, while nairobi, same stack, same traffic, stays silent.
SLO_50_MS = """
objective: 0.99
defaults:
  server_latency_ms: {p99: 50}
  error_rate: 0.01
"""
INJECTED_MS = 60.0


@pytest.mark.integration
def test_a_slowed_handler_fires_the_page_alert_in_the_native_stack(models_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    import time

    import httpx
    from collector_fixtures import require_otelcol, require_prometheus, start_native_stack
    from handler_fixtures import jpeg

    from harness.load.processes import Supervisor
    from harness.stack.prometheus import PrometheusClient

    require_otelcol()
    require_prometheus()
    slo = slo_file(tmp_path, SLO_50_MS)
    sup = Supervisor()
    body = jpeg(seed=5)
    timings: dict[str, list[str]] = {"paris": [], "nairobi": []}
    try:
        stack = start_native_stack(sup, (26000, 32000), regions=("paris", "nairobi"), run_dir=tmp_path / "stack",
                                   models_dir=models_dir, metrics_interval="1s", slo_file=str(slo),
                                   inject_delay_ms={"paris": INJECTED_MS})  # fmt: skip
        prom = PrometheusClient(stack.plan.prometheus_url)
        groups = prom.api("/api/v1/rules")["groups"]
        assert {g["name"] for g in groups} == {"edgeharness-slo-records", "edgeharness-slo-alerts"}

        def firing() -> list[dict[str, Any]]:
            # Keep traffic flowing to both regions until the rules (evaluated every 15 s) see two samples.
            for _ in range(4):
                for region in timings:
                    url = f"{stack.plan.handler_url(region)}/v1/classify"
                    r = httpx.post(url, content=body, headers={"content-type": "image/jpeg"}, timeout=30)
                    assert r.status_code == 200, r.text
                    timings[region].append(r.headers["server-timing"])
            alerts = prom.api("/api/v1/alerts")["alerts"]
            return [a for a in alerts if a["state"] == "firing"]

        deadline = time.monotonic() + 150
        alerts = firing()
        while not any(a["labels"]["long_window"] == "1h" for a in alerts) and time.monotonic() < deadline:
            time.sleep(2)
            alerts = firing()
        # The control is not vacuous: nairobi's burn rate is recorded, and far under the page's 14.4x.
        nairobi_burn = prom.scalar_by(
            'slo:burn_rate:rate5m{slo="server_latency_ms_p99", cloud_region="nairobi"}', "cloud_region"
        )
    finally:
        sup.stop_all()
    page = [a["labels"] for a in alerts if a["labels"]["long_window"] == "1h"]
    assert page, f"no 1h/5m alert fired; firing: {alerts}"
    assert {(a["slo"], a["cloud_region"], a["severity"]) for a in page} == {("server_latency_ms_p99", "paris", "page")}
    # Every request answered 200: the error-rate SLO burns nothing; nairobi fires nothing at all.
    assert not [a for a in alerts if a["labels"]["slo"] == "error_rate"], alerts
    assert not [a for a in alerts if a["labels"]["cloud_region"] == "nairobi"], alerts
    assert nairobi_burn.keys() == {"nairobi"} and nairobi_burn["nairobi"] < 14.4, nairobi_burn
    # The delay is the handler's own and says so: every paris answer shows it, no nairobi answer does.
    assert all(f"injected;dur={INJECTED_MS:.3f}" in t for t in timings["paris"]), timings["paris"][:3]
    assert not any("injected" in t for t in timings["nairobi"])


def test_the_injected_delay_is_checked_where_the_stack_starts(tmp_path: Path) -> None:
    from harness.load.processes import Supervisor
    from harness.stack.config import StackConfig
    from harness.stack.native import NativeStack, StackError

    refused = r"paris: setting inject_delay_ms .* between 0 \(off\) and 60000"
    for delays, message in (({"lima": 5.0}, "lima: not a region"), ({"paris": -1.0}, refused)):
        config = StackConfig(regions=("paris",), run_dir=tmp_path, inject_delay_ms=delays)
        with pytest.raises(StackError, match=message):
            NativeStack(config, Supervisor()).start()


def test_region_names_are_escaped_in_promql(tmp_path: Path) -> None:
    import json
    import re

    odd = 'x.y|z"q'  # a regex wildcard, an alternation and a quote
    text = f"defaults: {{error_rate: 0.01}}\nregions:\n  {json.dumps(odd)}: {{error_rate: 0.05}}\n"
    spec = load_slo(slo_file(tmp_path, text))
    got = {s.selector: s for s in slis(spec, BUCKETS)}
    own = got['cloud_region="x.y|z\\"q"']
    assert own.region == odd
    default = next(s for s in got.values() if s.region is None)
    # The default rule's negative match leaves out exactly that region: RE2 reads `\.` and `\|` as themselves.
    pattern = json.loads(default.selector.removeprefix("cloud_region!~"))
    assert re.fullmatch(pattern, odd) and not re.fullmatch(pattern, 'xay|z"q') and not re.fullmatch(pattern, "x")
    rules = tmp_path / "odd.yml"
    rules.write_text(render(spec))
    result = run_promtool("check", "rules", "--lint-fatal", rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(rules.read_text())  # and the labels name the region as it is
    assert odd in {
        r.get("labels", {}).get("cloud_region") for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]
    }


def test_up_refuses_an_injected_delay_it_cannot_read(tmp_path: Path) -> None:
    for value, message in (("paris", "expected REGION=MS"), ("lima=5", "lima: not a region")):
        r = subprocess.run(
            [sys.executable, "-m", "harness", "up", "--regions", "paris", "--run-dir", str(tmp_path),
             "--inject-delay", value],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
