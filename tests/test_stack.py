"""The native stack with the real collector and Prometheus: data flow, per-region labels, faults, clean-up."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from collector_fixtures import require_otelcol, require_prometheus, start_native_stack, wait_for
from handler_fixtures import ROOT, jpeg, models_dir  # noqa: F401

from harness.load.processes import Supervisor
from harness.stack import components
from harness.stack.native import NativeStack, StackConfig, StackError, StackLayout, alive, down, load_state, status
from harness.stack.prometheus import PrometheusClient

REGIONS = ("nairobi", "paris", "san-francisco")
T = TypeVar("T")


def require_components() -> None:
    """Skip with how to get them; in CI (CI=true) a missing component fails the test instead."""
    require_otelcol()
    require_prometheus()


# -- without the binaries ---------------------------------------------------------------------------


def test_plan_gives_each_region_its_own_ports() -> None:
    plan = StackLayout.for_config(StackConfig(regions=REGIONS, base_port=30000))
    ports = [port for port, _role in plan.all_ports()]
    assert len(ports) == len(set(ports)) == 2 + 5 * len(REGIONS)
    assert plan.prometheus_port == 30000 and plan.handlers["nairobi"] == 30010


def test_port_clash_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:  # a server's listening socket, SO_REUSEADDR as servers set it
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plan = StackLayout.for_config(StackConfig(regions=("nairobi",), base_port=port))
        with pytest.raises(StackError, match=rf"port {port} \(Prometheus\).*in use.*--base-port"):
            plan.check_ports_free()


def test_port_left_in_time_wait_is_free() -> None:
    # A server that closed its side first leaves its port in TIME_WAIT for a minute; the servers bind it
    # anyway (SO_REUSEADDR), so `up` right after `down` must not call it in use.
    import socket

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    StackLayout.for_config(StackConfig(regions=("nairobi",), base_port=port)).check_ports_free()


def test_missing_binary_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(components, "find_otelcol", lambda: None)
    with pytest.raises(components.MissingComponent, match="make collector"):
        components.require_otelcol()
    monkeypatch.setattr(components, "find_prometheus", lambda: None)
    with pytest.raises(components.MissingComponent, match="make prometheus"):
        components.require_prometheus()


def test_prometheus_2_on_path_is_not_taken_for_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian's 2.42 lacks the OTLP receiver and the config the stack uses: only a 3.x on PATH will do.
    for version in ("2.42.0", "3.14.0"):
        fake = tmp_path / version / "prometheus"
        fake.parent.mkdir()
        fake.write_text(f"#!/bin/sh\necho 'prometheus, version {version} (branch: HEAD)'\n")
        fake.chmod(0o755)
    monkeypatch.setattr(components, "PROMETHEUS_DIST", tmp_path / "not-built")
    monkeypatch.setenv("PATH", str(tmp_path / "2.42.0"))
    assert components.find_prometheus() is None
    monkeypatch.setenv("PATH", str(tmp_path / "3.14.0"))
    assert components.find_prometheus() == tmp_path / "3.14.0" / "prometheus"


def test_unknown_metrics_export_is_a_clear_error(tmp_path: Path) -> None:
    stack = NativeStack(
        StackConfig(regions=("paris",), run_dir=tmp_path, metrics_export="carrier-pigeon"), Supervisor()
    )
    with pytest.raises(StackError, match=r"carrier-pigeon.*remote_write, otlp"):
        stack.start()


def test_down_and_status_without_a_stack_say_so(tmp_path: Path) -> None:
    for command in ("down", "status"):
        result = subprocess.run(
            [sys.executable, "-m", "harness", command, "--run-dir", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        assert "edgeharness up" in result.stderr


# -- with the real collector and Prometheus ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:  # noqa: F811
    require_components()
    run_dir = tmp_path_factory.mktemp("stack")
    sup = Supervisor()
    native = start_native_stack(
        sup, regions=REGIONS, run_dir=run_dir, models_dir=models_dir, idle_timeout_s=1.0, metrics_interval="1s"
    )
    try:
        yield native
    finally:
        sup.stop_all()


@pytest.fixture(scope="module")
def prom(stack: NativeStack) -> PrometheusClient:
    return PrometheusClient(stack.plan.prometheus_url)


def classify(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify", content=body, headers={"content-type": "image/jpeg", **headers}, timeout=30)


def drive(stack: NativeStack, regions: tuple[str, ...], count: int, rate: float = 25.0) -> dict[str, list[float]]:
    """A bounded, paced loop of requests to each region's handler; client latency per region (ms)."""
    body = jpeg(640, 480, seed=11)
    latencies: dict[str, list[float]] = {r: [] for r in regions}
    for _ in range(count):
        for region in regions:
            t0 = time.perf_counter()
            response = classify(stack.plan.handler_url(region), body)
            assert response.status_code == 200, (region, response.text)
            latencies[region].append((time.perf_counter() - t0) * 1000)
        time.sleep(1 / rate)
    return latencies


def handler_quantile(metrics_text: str, q: float) -> tuple[float, float]:
    """(quantile, count) of http.server.request.duration for 200s from a handler's own /metrics,
    interpolated within buckets the way PromQL's histogram_quantile does."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if (
            line.startswith("http_server_request_duration_seconds_bucket{")
            and 'http_response_status_code="200"' in line
        ):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
    bounds = sorted(buckets)
    total = buckets[float("inf")]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            return lower + (bound - lower) * (rank - below) / (buckets[bound] - below), total
        lower, below = bound, buckets[bound]
    return bounds[-2], total


def test_up_status_and_state_file(stack: NativeStack) -> None:
    rows = status(stack.run_dir)
    assert {row["name"] for row in rows} == {
        "prometheus", "model-server", *(f"{kind}-{r}" for kind in ("collector", "handler") for r in REGIONS)
    }  # fmt: skip
    assert all(row["running"] and row["healthy"] for row in rows), rows
    assert all(Path(row["log"]).exists() for row in rows)
    # The handlers fetched their model over HTTP from the model server, into their own caches.
    for region in REGIONS:
        assert list((stack.run_dir / "cache" / region).glob("*.onnx")), region
    assert "GET /mobilenetv2-int8.onnx" in Path(stack.service("model-server").log).read_text()


def test_metrics_traces_and_exemplars_reach_prometheus_per_region(stack: NativeStack, prom: PrometheusClient) -> None:
    drive(stack, REGIONS, count=30)
    # Past the 1 s idle timeout the model is released: the next request is a model cold start.
    time.sleep(2.0)
    for region in REGIONS:
        assert classify(stack.plan.handler_url(region), jpeg()).json()["cold_start"] is True

    def regions_of(promql: str) -> set[str] | None:
        found = {s["metric"].get("cloud_region") for s in prom.query(promql)}
        return found if found >= set(REGIONS) else None

    wait_for(lambda: regions_of("count by (cloud_region) (http_server_request_duration_seconds_bucket)"), 30,
               "request-duration histograms for every region")  # fmt: skip
    wait_for(lambda: regions_of('sum by (cloud_region) (faas_coldstarts_total{edgeharness_coldstart_kind="model"})'),
               30, "model cold-start counters for every region")  # fmt: skip
    # Span latency is a native histogram: one series, no _bucket.
    wait_for(lambda: regions_of("count by (cloud_region) (histogram_count(traces_span_metrics_duration_milliseconds))"),
             30, "span-metrics native histograms for every region")  # fmt: skip
    wait_for(lambda: regions_of("sum by (cloud_region) (otelcol_receiver_accepted_spans_total)"), 30,
               "the collectors' own telemetry for every region")  # fmt: skip

    # Exemplars link latency samples to trace ids, on the handler's histogram and on span metrics (the calls
    # counter: Prometheus keeps no remote-written exemplars of the native latency histogram).
    for metric in ("http_server_request_duration_seconds_bucket", "traces_span_metrics_calls_total"):
        exemplars = wait_for(lambda m=metric: prom.exemplars(m), 30, f"exemplars on {metric}")
        trace_ids = {e["labels"].get("trace_id") for series in exemplars for e in series["exemplars"]}
        assert all(t and len(t) == 32 for t in trace_ids), trace_ids

    # Cold-start requests reach the collector's trace pipeline with faas.coldstart=true.
    for region in REGIONS:

        def cold_spans(r: str = region) -> list[Any]:
            path = stack.traces_file(r)
            if not path.exists():
                return []
            spans = []
            for line in path.read_text().splitlines():
                for rs in json.loads(line).get("resourceSpans", []):
                    res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                    for ss in rs["scopeSpans"]:
                        for span in ss["spans"]:
                            attrs = {a["key"]: a["value"] for a in span.get("attributes", [])}
                            if attrs.get("faas.coldstart") == {"boolValue": True}:
                                spans.append((res, span))
            return spans

        found = wait_for(cold_spans, 30, f"cold-start spans from {region}")
        assert all(res["cloud.region"] == {"stringValue": region} for res, _span in found)


def test_server_p50_from_prometheus_agrees_with_the_handler(stack: NativeStack, prom: PrometheusClient) -> None:
    drive(stack, REGIONS, count=20)
    for region in REGIONS:
        url = stack.plan.handler_url(region)
        own_p50, own_count = handler_quantile(httpx.get(f"{url}/metrics").text, 0.5)
        selector = f'cloud_region="{region}",http_response_status_code="200"'

        def prom_count(sel: str = selector, want: float = own_count, r: str = region) -> bool:
            got = prom.scalar_by(f"sum by (cloud_region) (http_server_request_duration_seconds_count{{{sel}}})",
                                 "cloud_region")  # fmt: skip
            return got.get(r, 0) >= want

        wait_for(prom_count, 30, f"Prometheus to hold all {own_count:.0f} requests of {region}")
        buckets = f"http_server_request_duration_seconds_bucket{{{selector}}}"
        p50 = prom.scalar_by(f"histogram_quantile(0.5, sum by (le, cloud_region) ({buckets}))", "cloud_region")[region]
        assert abs(p50 - own_p50) <= 0.00025, (region, p50, own_p50)  # one bucket: the histogram's resolution


def _count(prom: PrometheusClient, region: str) -> float:
    return prom.scalar_by(
        f'sum by (cloud_region) (http_server_request_duration_seconds_count{{cloud_region="{region}"}})', "cloud_region"
    ).get(region, 0.0)


def test_collector_killed_handler_keeps_serving_and_data_resumes(stack: NativeStack, prom: PrometheusClient) -> None:
    before = drive(stack, ("nairobi",), count=40)["nairobi"]
    wait_for(lambda: _count(prom, "paris") > 0, 30, "paris data")
    paris_before = _count(prom, "paris")
    stack.kill("collector-nairobi")
    during = drive(stack, ("nairobi", "paris"), count=40)
    # No errors (drive asserts 200s) and the same latency within noise: telemetry never hurts requests.
    assert statistics.median(during["nairobi"]) <= statistics.median(before) * 1.5 + 2.0
    # The other regions' telemetry keeps flowing.
    wait_for(lambda: _count(prom, "paris") > paris_before, 30, "paris data while nairobi's collector is down")
    # The handler counts what it could not export.
    text = httpx.get(f"{stack.plan.handler_url('nairobi')}/metrics").text
    assert any(line.startswith("edgeharness_telemetry_dropped_total{") for line in text.splitlines())
    nairobi_before = _count(prom, "nairobi")
    stack.restart("collector-nairobi")
    drive(stack, ("nairobi",), count=10)
    wait_for(lambda: _count(prom, "nairobi") > nairobi_before, 30, "nairobi data after its collector returned")


def test_prometheus_down_for_a_while_collectors_survive_and_catch_up(
    stack: NativeStack, prom: PrometheusClient
) -> None:
    stack.kill("prometheus")
    drive(stack, REGIONS, count=30)
    time.sleep(3)  # collectors retry remote write meanwhile
    rows = {row["name"]: row for row in status(stack.run_dir)}
    for region in REGIONS:
        assert rows[f"collector-{region}"]["healthy"], f"collector-{region} did not survive Prometheus being down"
        assert rows[f"handler-{region}"]["healthy"]
    before = {r: _count(prom, r) for r in REGIONS} if prom.ready() else None
    assert before is None
    stack.restart("prometheus")
    drive(stack, REGIONS, count=5)
    for region in REGIONS:
        wait_for(lambda r=region: _count(prom, r) >= 65, 60, f"{region} data after Prometheus returned")


def test_down_stops_every_process(stack: NativeStack) -> None:
    pids = [svc["pid"] for svc in load_state(stack.run_dir)["services"]]
    stopped = down(stack.run_dir)
    assert len(stopped) == len(pids)
    for pid in pids:
        assert wait_for(lambda p=pid: not alive(p), 20, f"pid {pid} to exit")


def test_native_stack_runs_the_config_files_compose_mounts(tmp_path: Path) -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]

    def mounted(service: dict[str, Any], target_suffix: str) -> Path:
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if target.endswith(target_suffix):
                return (ROOT / source).resolve()
        raise AssertionError(f"nothing mounted at *{target_suffix}")

    collectors = [s for name, s in services.items() if name.startswith("collector-")]
    assert collectors
    native_collector = components.collector_argv(Path("otelcol"))
    native_prometheus = components.prometheus_argv(Path("prometheus"), tmp_path, "127.0.0.1", 9090)
    for service in collectors:
        assert f"--config={mounted(service, 'otelcol.yaml')}" in native_collector
    assert f"--config.file={mounted(services['prometheus'], 'prometheus.yml')}" in native_prometheus
    # prometheus.yml's rule_files (rules/*.yml) resolve beside it in both.
    assert mounted(services["prometheus"], "/etc/prometheus/rules") == components.RULES_DIR
    # The same variables drive the collector config in both: compose sets a subset of what native sets.
    native_env = components.collector_env(
        region="r", pop="p", ports=components.CollectorPorts(1, 2, 3, 4), remote_write_endpoint="x",
        tempo_endpoint="y", traces_file=tmp_path / "t",
    )  # fmt: skip
    for service in collectors:
        assert set(service["environment"]) <= set(native_env), set(service["environment"]) - set(native_env)
    # And Prometheus runs with the same feature flags.
    assert set(components.prometheus_flags()) <= set(services["prometheus"]["command"])


@pytest.mark.integration
def test_the_stack_over_otlp_gives_the_series_of_remote_write(models_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    # `up --metrics-export otlp`: the collectors send metrics to Prometheus 3's OTLP receiver. The handler's
    # series keep their names, their cloud_region label and their le bounds (the SLO rules count le="0.01").
    require_components()
    sup = Supervisor()
    try:
        stack = start_native_stack(sup, (26000, 32000), regions=("nairobi",), run_dir=tmp_path / "stack",
                                   models_dir=models_dir, metrics_interval="1s", metrics_export="otlp")  # fmt: skip
        assert stack.service("collector-nairobi").kind == "collector"
        prom = PrometheusClient(stack.plan.prometheus_url)
        body = jpeg(seed=3)
        for _ in range(5):
            assert classify(stack.plan.handler_url("nairobi"), body).status_code == 200
        bucket = 'http_server_request_duration_seconds_bucket{cloud_region="nairobi", le="0.01"}'
        series = wait_for(lambda: prom.query(bucket), 60, "the handler's histogram over OTLP")
        assert series[0]["metric"]["edgeharness_pop"] == "nairobi"
        # Prometheus's own request counters: OTLP requests answered, none on the remote-write endpoint.
        own = httpx.get(f"{stack.plan.prometheus_url}/metrics", timeout=10).text

        def requests(handler: str) -> float:
            pattern = rf'prometheus_http_requests_total{{code="2\d\d",handler="{re.escape(handler)}"}} (\S+)'
            return sum(float(v) for v in re.findall(pattern, own))

        assert requests("/api/v1/otlp/v1/metrics") > 0 and requests("/api/v1/write") == 0
    finally:
        sup.stop_all()
