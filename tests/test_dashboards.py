"""The Grafana dashboard: generated JSON is current, survives the SDK's model, and its queries make sense."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_fixtures import require_tool

from harness import dashboards
from harness.handler import telemetry
from harness.stack.components import HOW_TO_GET_PROMETHEUS, find_promtool

REPO = Path(__file__).resolve().parents[1]
PROVISIONING = REPO / "dashboards" / "provisioning"

# Every metric the dashboard may query, as Prometheus names it after the collectors' remote write.
KNOWN_METRICS = {
    # handler (harness/handler/telemetry.py)
    "http_server_request_duration_seconds",
    "edgeharness_stage_duration_seconds",
    "edgeharness_inference_duration_seconds",
    "edgeharness_queue_duration_seconds",
    "faas_coldstarts_total",
    "faas_init_duration_seconds",
    "edgeharness_init_phase_duration_seconds",
    "http_server_active_requests",
    "edgeharness_queued_requests",
    "edgeharness_requests_shed_total",
    "edgeharness_model_loaded_ratio",  # a gauge of unit "1"
    "edgeharness_telemetry_dropped_total",
    # span metrics (collector/otelcol.yaml: span_metrics connector, unit ms)
    "traces_span_metrics_duration_milliseconds",
    "traces_span_metrics_calls_total",
    # collector self-telemetry (counters gain _total on remote write)
    "otelcol_receiver_accepted_spans_total",
    "otelcol_receiver_refused_spans_total",
    "otelcol_receiver_accepted_metric_points_total",
    "otelcol_receiver_refused_metric_points_total",
    "otelcol_exporter_sent_spans_total",
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_exporter_sent_metric_points_total",
    "otelcol_exporter_send_failed_metric_points_total",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    # load generator
    "edgeharness_client_request_duration_seconds",
    "edgeharness_client_arrivals_total",
}
# Series recorded by the SLO rules Prometheus loads (collector/rules/slo.yml, `edgeharness slo rules`).
RECORDED = {
    rule["record"]
    for group in yaml.safe_load((REPO / "collector" / "rules" / "slo.yml").read_text())["groups"]
    for rule in group["rules"]
    if "record" in rule
}
KNOWN_METRICS |= RECORDED
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "max_over_time",
    "min_over_time", "avg_over_time", "last_over_time", "label_replace", "vector", "or", "and", "unless",
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "clamp_min", "abs",
}  # fmt: skip

QUERY_VARIABLES = {"region": "nairobi", "model": "mobilenetv2-int8"}


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return dashboards.build_dashboard()


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return dashboards.read_dashboard()


def provisioned_datasources() -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = []
    for path in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        sources += yaml.safe_load(path.read_text())["datasources"]
    return sources


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return dashboards.panel_queries(dashboard, QUERY_VARIABLES)


def metric_names(expr: str) -> set[str]:
    """Metric names in an expanded PromQL expression; fails on an identifier that is neither word nor metric."""
    names = set()
    for regex in re.findall(r'__name__=~"([^"]*)"', expr):
        matched = {m for m in KNOWN_METRICS if re.fullmatch(regex, m)}
        assert matched, f"__name__ regex {regex!r} matches no known metric"
        names |= matched
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        if word in PROMQL_WORDS:
            continue
        base = next((word[: -len(s)] for s in HISTOGRAM_SUFFIXES if word.endswith(s)), word)
        assert word in KNOWN_METRICS or base in KNOWN_METRICS, f"unknown metric {word!r} in {expr}"
        names.add(word)
    return names


# --- generated JSON -------------------------------------------------------------------------------


def test_committed_json_is_what_the_code_generates(generated, committed):
    assert committed == generated, "dashboards/edge-overview.json is stale: run `edgeharness dashboards build`"
    assert dashboards.is_up_to_date(), "the committed JSON differs in formatting: run `edgeharness dashboards build`"


def test_build_check_command_detects_a_stale_file(tmp_path, capsys):
    from harness import dashboards_commands

    parser = argparse.ArgumentParser()
    dashboards_commands.register(parser.add_subparsers())
    out = tmp_path / "edge-overview.json"
    out.write_text("{}\n")

    check = parser.parse_args(["dashboards", "build", "--check", "--out", str(out)])
    assert check.func(check) == 1
    build = parser.parse_args(["dashboards", "build", "--out", str(out)])
    assert build.func(build) == 0
    assert check.func(check) == 0
    assert json.loads(out.read_text())["uid"] == "edgeharness-overview"
    assert "out of date" in capsys.readouterr().err


def test_json_round_trips_through_the_sdk_model(committed):
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    decoded = Dashboard.from_json(committed)
    assert json.loads(json.dumps(decoded, cls=JSONEncoder)) == committed


# --- datasources and provisioning -----------------------------------------------------------------


def test_panels_use_only_provisioned_datasources(committed):
    provisioned = {d["uid"]: d["type"] for d in provisioned_datasources()}
    assert provisioned == {dashboards.PROMETHEUS_UID: "prometheus", dashboards.TEMPO_UID: "tempo"}
    used = []
    for panel in dashboards.iter_panels(committed):
        used.append(panel["datasource"])
        used += [t["datasource"] for t in panel["targets"]]
    used += [v["datasource"] for v in committed["templating"]["list"]]
    for ref in used:
        assert provisioned.get(ref["uid"]) == ref["type"], f"datasource {ref} is not provisioned"
    assert {ref["uid"] for ref in used} == set(provisioned)


def test_prometheus_exemplars_link_to_tempo(committed):
    prometheus = next(d for d in provisioned_datasources() if d["type"] == "prometheus")
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": dashboards.TEMPO_UID}.items() <= destinations[0].items()
    with_exemplars = [
        p["title"] for p in dashboards.iter_panels(committed) if any(t.get("exemplar") for t in p["targets"])
    ]
    assert "Server latency by region (warm)" in with_exemplars
    # Span latency is a native histogram: Prometheus keeps none of its remote-written exemplars, so asking
    # for them would only cost a query (tests/test_collector.py finds the trace ids on the calls counter).
    assert "Server span latency by region (span metrics)" not in with_exemplars


def test_dashboard_provider_loads_the_folder_compose_mounts():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "edgeharness.yaml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    target = f"{provider['options']['path']}/{dashboards.DASHBOARD_JSON.name}"
    assert f"./dashboards/{dashboards.DASHBOARD_JSON.name}:{target}:ro" in mounts


# --- panels ---------------------------------------------------------------------------------------


def test_every_panel_has_a_title_a_unit_a_question_and_a_target(committed):
    panels = list(dashboards.iter_panels(committed))
    assert len(panels) >= 20
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel.get('id')} has no title"
        assert panel.get("description", "").strip(), f"{title}: no description (the question it answers)"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel.get("targets"), f"{title}: no target"


def test_panel_ids_are_unique_and_the_grid_does_not_overlap(committed):
    ids = [p["id"] for p in committed["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in committed["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_slo_stats_are_coloured_by_the_default_slos(committed):
    panels = {p["title"]: p for p in dashboards.iter_panels(committed)}
    slo = yaml.safe_load((REPO / "loadtests" / "slo" / "default.yaml").read_text())["defaults"]
    expected = {
        "Warm p50 latency (SLO < 10 ms)": ("s", slo["client_latency_ms"]["p50"] / 1000),
        "Cold-start p95 (SLO < 200 ms)": ("s", slo["cold_start_ms"]["p95"] / 1000),
        "Error rate (SLO < 1 %)": ("percentunit", slo["error_rate"]),
    }
    for title, (unit, limit) in expected.items():
        panel = panels[title]
        assert panel["type"] == "stat"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == unit
        red = [s["value"] for s in defaults["thresholds"]["steps"] if s["color"] == "red"]
        assert red == [pytest.approx(limit)], title
        assert panel["options"]["colorMode"] == "background"


def test_the_geomap_places_every_catalogued_region(committed):
    geomap = next(p for p in dashboards.iter_panels(committed) if p["type"] == "geomap")
    regions = yaml.safe_load((REPO / "harness" / "data" / "regions.yaml").read_text())["regions"]
    expr = geomap["targets"][0]["expr"]
    for name, region in regions.items():
        assert f'"cloud_region", "{name}"' in expr
        assert f'"lat", "{float(region["lat"])}"' in expr and f'"lon", "{float(region["lon"])}"' in expr
    layer = geomap["options"]["layers"][0]
    assert layer["location"] == {"mode": "coords", "latitude": "lat", "longitude": "lon"}
    converted = geomap["transformations"][0]["options"]["conversions"]
    assert {c["targetField"] for c in converted} == {"lat", "lon"}


def test_variables_region_and_model_filter_the_queries(committed):
    assert dashboards.dashboard_variables(committed) == ["region", "model"]
    exprs = [t["expr"] for p in dashboards.iter_panels(committed) for t in p["targets"] if "expr" in t]
    assert all("$region" in e for e in exprs), [e for e in exprs if "$region" not in e]
    assert any("$model" in e for e in exprs)


# --- PromQL ---------------------------------------------------------------------------------------


def test_every_expression_is_balanced_and_names_known_metrics(committed):
    queries = expressions(committed)
    assert len(queries) >= 30
    seen: set[str] = set()
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, f"{title}: unexpanded variable in {expr}"
        depth = {"(": 0, "[": 0, "{": 0}
        closing = {")": "(", "]": "[", "}": "{"}
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        assert unquoted.count('"') % 2 == 0, f"{title}: unbalanced quotes"
        for char in unquoted:
            if char in depth:
                depth[char] += 1
            elif char in closing:
                depth[closing[char]] -= 1
                assert depth[closing[char]] >= 0, f"{title}: unbalanced {char} in {expr}"
        assert set(depth.values()) == {0}, f"{title}: unbalanced brackets in {expr}"
        seen |= metric_names(expr)
    handler_metrics = {
        m for m in KNOWN_METRICS if not m.startswith(("otelcol_", "traces_", "edgeharness_client", "slo:"))
    }
    assert {m.removesuffix("_bucket").removesuffix("_count") for m in seen} >= handler_metrics


def test_the_budget_panels_read_the_recording_rules(committed):
    seen = set().union(*(metric_names(expr) for _title, expr in expressions(committed)))
    assert {"slo:error_budget_remaining:ratio", "slo:burn_rate:rate1h", "slo:burn_rate:rate5m"} <= seen & RECORDED


def test_the_span_latency_panel_reads_a_native_histogram(committed):
    spans = [expr for title, expr in expressions(committed) if "span metrics" in title]
    assert len(spans) == 3
    for expr in spans:
        # A native histogram has no le label and no _bucket series: sum by region, never by le.
        assert "traces_span_metrics_duration_milliseconds{" in expr and "le," not in expr, expr


def test_the_metric_check_rejects_an_unknown_name():
    with pytest.raises(AssertionError, match="unknown metric"):
        metric_names('sum by (cloud_region) (rate(http_requests_total{cloud_region=~"x"}[1m]))')
    assert metric_names('rate(faas_coldstarts_total{a="b"}[1m]) or vector(0)') == {"faas_coldstarts_total"}


def test_known_metrics_follow_the_handlers_instrument_names():
    instruments = [
        telemetry.REQUEST_DURATION,
        telemetry.STAGE_DURATION,
        telemetry.INFERENCE_DURATION,
        telemetry.QUEUE_DURATION,
        telemetry.COLDSTARTS,
        telemetry.INIT_DURATION,
        telemetry.INIT_PHASE_DURATION,
        telemetry.ACTIVE_REQUESTS,
        telemetry.QUEUED_REQUESTS,
        telemetry.SHED_REQUESTS,
        telemetry.MODEL_LOADED,
        telemetry.TELEMETRY_DROPPED,
    ]
    for name in instruments:
        prefix = name.replace(".", "_")
        assert any(m.startswith(prefix) for m in KNOWN_METRICS), f"instrument {name} has no known Prometheus name"


def test_promtool_parses_every_expression(committed, tmp_path):
    promtool = require_tool(find_promtool(), "promtool", HOW_TO_GET_PROMETHEUS)
    rules = [
        {"record": f"edgeharness:panel_{i}", "expr": expr} for i, (_title, expr) in enumerate(expressions(committed))
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- panel_queries and variable expansion ----------------------------------------------------------


def test_expand_variables_handles_every_syntax():
    text = "a=$region b=${region} c=${region:regex} d=[[region]] e=$__rate_interval f=$__range"
    assert dashboards.expand_variables(text, {"region": "paris", "__range": "5m"}) == (
        "a=paris b=paris c=paris d=paris e=1m f=5m"
    )
    with pytest.raises(KeyError, match="model"):
        dashboards.expand_variables('x{m="$model"}', {})


def test_panel_queries_lists_prometheus_targets_with_titles(committed):
    queries = dashboards.panel_queries(committed, {"region": "paris|nairobi", "model": ".*"})
    titles = {title for title, _ in queries}
    assert "Server latency by region (warm)" in titles
    assert "Slowest recent requests (Tempo)" not in titles  # TraceQL, not PromQL
    assert all('cloud_region=~"paris|nairobi"' in q or "edgeharness_client_region" in q for _, q in queries)
    assert sum(title == "Server latency by region (warm)" for title, _ in queries) == 3
