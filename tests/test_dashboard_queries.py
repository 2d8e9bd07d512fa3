"""After a short native run, every query of every dashboard panel returns data from the real Prometheus."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_fixtures import require_otelcol, require_prometheus, start_native_stack
from handler_fixtures import ROOT, models_dir  # noqa: F401

from harness.dashboards import dashboard_variables, panel_queries, read_dashboard
from harness.load.processes import Supervisor
from harness.stack.native import NativeStack, StackConfig, alive
from harness.stack.prometheus import PrometheusClient

REGIONS = ("nairobi", "paris", "san-francisco")
MODEL = "mobilenetv2-int8"


@pytest.fixture(scope="module")
def stack_after_run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:  # noqa: F811
    require_otelcol()
    require_prometheus()
    run_dir = tmp_path_factory.mktemp("dash-stack")
    sup = Supervisor()
    stack = start_native_stack(sup, regions=REGIONS, run_dir=run_dir, models_dir=models_dir, metrics_interval="1s")
    try:
        out = tmp_path_factory.mktemp("dash-run")
        # Short: the verdict may call it invalid (too few samples); the telemetry is what counts here.
        result = subprocess.run(
            [sys.executable, "-m", "harness", "run", "--stack", str(run_dir), "--duration", "15", "--out", str(out),
             "--quiet"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode in (0, 1, 2), result.stderr[-3000:]
        assert (out / "results.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
        stack.last_run = out  # type: ignore[attr-defined]
        yield stack
    finally:
        sup.stop_all()


def test_every_panel_query_returns_data_for_every_region(stack_after_run: NativeStack) -> None:
    prom = PrometheusClient(stack_after_run.plan.prometheus_url)
    dashboard = read_dashboard()
    names = dashboard_variables(dashboard)
    assert "region" in names
    # Range-based queries look back over the whole short run.
    builtins = {
        "__rate_interval": "1m",
        "__interval": "15s",
        "__range": "10m",
        "__range_s": "600",
        "__range_ms": "600000",
    }

    def empties() -> list[str]:
        missing = []
        for region in REGIONS:
            variables = {**builtins, "region": region, "model": MODEL}
            for title, promql in panel_queries(dashboard, variables):
                if not prom.query(promql):
                    missing.append(f"{title!r} for {region}: {promql}")
        return missing

    # Collectors flush span metrics and handlers export every few seconds: allow the last batch to land.
    deadline = time.monotonic() + 60
    missing = empties()
    while missing and time.monotonic() < deadline:
        time.sleep(3)
        missing = empties()
    assert not missing, "panels that would be empty:\n" + "\n".join(missing)


def test_client_latency_sits_beside_server_latency(stack_after_run: NativeStack) -> None:
    prom = PrometheusClient(stack_after_run.plan.prometheus_url)
    client = prom.scalar_by("sum by (edgeharness_client_region) (edgeharness_client_request_duration_seconds_count)",
                            "edgeharness_client_region")  # fmt: skip
    assert set(client) >= set(REGIONS)
    pops = prom.scalar_by("sum by (edgeharness_target_pop) (edgeharness_client_request_duration_seconds_count)",
                          "edgeharness_target_pop")  # fmt: skip
    assert set(pops) >= set(REGIONS)
    arrivals = prom.scalar_by("sum by (outcome) (edgeharness_client_arrivals_total)", "outcome")
    assert arrivals.get("sent", 0) > 0


def test_run_with_the_stack_judges_server_latency_from_prometheus(stack_after_run: NativeStack) -> None:
    results = json.loads((stack_after_run.last_run / "results.json").read_text())  # type: ignore[attr-defined]
    server = results["server_side"]
    assert server["error"] is None and server["url"] == stack_after_run.plan.prometheus_url
    for region in REGIONS:
        figures = server["regions"][region]
        client_ok = results["regions"][region]["counts"]["ok"]
        # Every request the client saw answered was counted by the handler and reached Prometheus.
        assert figures["requests"] >= client_ok > 0, (region, figures, client_ok)
        assert 0 < figures["latency_ms"]["p50"] < figures["latency_ms"]["p99"]
    checks = [c for c in results["verdict"]["checks"] if c["metric"] == "server_latency_ms"]
    assert {c["region"] for c in checks} == set(REGIONS)


def test_handler_killed_mid_run_is_reported_for_its_region_only(
    models_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_otelcol()
    require_prometheus()
    sup = Supervisor()
    # Below the kernel's ephemeral range (32768 and up here): a client connection's local port can't take it.
    config = StackConfig(regions=REGIONS, run_dir=tmp_path / "stack", base_port=random.randrange(26000, 32000, 100),
                         models_dir=models_dir, metrics_interval="1s")  # fmt: skip
    stack = NativeStack(config, sup)
    try:
        stack.start()
        out = tmp_path / "run"
        run = subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "--stack", str(config.run_dir), "--duration", "20",
             "--out", str(out), "--quiet"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        # Locust starts and the schedule's t=0 comes a few seconds in; kill paris's PoP mid-schedule.
        deadline = time.monotonic() + 60
        # The gathering Locust's ledger holds samples (flushed every 2 s) once the schedule is under way.
        while not _ledger_has_samples(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(10)
        stack.kill("handler-paris")
        output, _ = run.communicate(timeout=240)
        results = json.loads((out / "results.json").read_text())
    finally:
        sup.stop_all()
    regions = results["regions"]
    # Requests that reached the dead PoP failed and are counted; paris clients then moved to the next PoP.
    assert regions["paris"]["counts"]["errors"] >= 1, output[-2000:]
    assert results["pops"]["paris"]["counts"]["errors"] >= 1
    for other in ("nairobi", "san-francisco"):
        assert regions[other]["counts"]["errors"] == 0, (other, regions[other]["counts"])
    # Every process of the stack is gone after the supervisor stopped it (what `down` does for `up`).
    for service in stack.services:
        assert not alive(service.pid), service.name


def _ledger_has_samples(out: Path) -> bool:
    try:
        ledger = json.loads((out / "raw" / "processes.json").read_text())
        return sum(p["samples"] for p in ledger["processes"].values()) > 0
    except (OSError, ValueError, KeyError):
        return False
