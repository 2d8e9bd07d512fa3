"""The whole stack under the real engine, as a user without a registry runs it.

`docker compose -f compose.yaml -f compose.offline.yaml up -d --wait` from the images `make
images-offline` builds (Grafana and Tempo, profile ui, left out); every service healthy; the Locust
master and worker of compose.yaml run the smoke profile headless against the containerised handlers;
every region's series reach the containerised Prometheus through its collector, the dashboard's panel
queries return data there, and the traces meant for the absent Tempo are dropped and counted. `docker
compose down -v` leaves nothing behind, also after a failure.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from collector_fixtures import wait_for
from container_fixtures import REPO, docker, image_exists, require, require_compose

from harness.dashboards import dashboard_variables, panel_queries, read_dashboard
from harness.stack.prometheus import PrometheusClient

pytestmark = pytest.mark.timeout(900)

PROJECT = "edgeharness-stack-test"
FILES = ("compose.yaml", "compose.offline.yaml", "tests/compose.test.yaml")
HEADLESS = "tests/compose.headless.yaml"
REGIONS = ("nairobi", "paris", "san-francisco")
MODEL = "mobilenetv2-int8"
SERVICES = {
    "models", "prometheus", "locust-master", "locust-worker",
    *(f"handler-{r}" for r in REGIONS), *(f"collector-{r}" for r in REGIONS),
}  # fmt: skip
# The services whose images have a healthcheck to run (the collector's image, like upstream's, has no
# shell or client; its health_check extension is probed from the network instead).
HEALTHCHECKED = SERVICES - {"locust-worker", *(f"collector-{r}" for r in REGIONS)}
HOW_TO_GET_IMAGES = "build them with `make images-offline` (scripts/images-offline.sh; a running engine, Go, root)"


def offline_images() -> list[str]:
    """The images compose.offline.yaml names."""
    out = compose("config", "--images", files=("compose.yaml", "compose.offline.yaml")).stdout
    return sorted(set(out.split()))


def compose(*args: str, files: tuple[str, ...] = FILES, timeout: float = 300, check: bool = True):
    argv = ["docker", "compose", "--project-name", PROJECT, "--project-directory", str(REPO)]
    for file in files:
        argv += ["-f", str(REPO / file)]
    env = {**os.environ, "GF_ADMIN_PASSWORD": "not-a-default", "EDGE_PROFILE": "smoke", "LOCUST_WORKERS": "1"}
    result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker compose {' '.join(args)} exited with {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")  # fmt: skip
    return result


def ps() -> list[dict[str, Any]]:
    """`docker compose ps -a` as dicts (one JSON object a line, or one array, by Compose version)."""
    out = compose("ps", "--all", "--format", "json").stdout.strip()
    if out.startswith("["):
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def leftovers() -> dict[str, list[str]]:
    """Containers, volumes and networks the engine still holds for the test's project."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = {
        "containers": docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
        "volumes": docker("volume", "ls", "--quiet", "--filter", label).stdout.split(),
        "networks": docker("network", "ls", "--quiet", "--filter", label).stdout.split(),
    }
    return {kind: ids for kind, ids in found.items() if ids}


def down() -> None:
    compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180, check=False)


def diagnostics() -> str:
    status = compose("ps", "--all", timeout=60, check=False).stdout
    logs = compose("logs", "--no-color", "--tail", "30", timeout=60, check=False).stdout
    return f"{status}\n{logs[-12000:]}"


@dataclass
class LoadRun:
    exit_code: int
    master_log: str
    stats: list[dict[str, str]]
    samples: list[dict[str, str]] = field(repr=False)

    def answered_by_pop(self) -> Counter[str]:
        return Counter(s["pop"] for s in self.samples if 200 <= int(s["status"] or 0) < 300)


@pytest.fixture(scope="module")
def stack() -> Iterator[PrometheusClient]:
    require_compose()
    down()  # what a killed earlier run may have left
    for image in offline_images():
        require(image_exists(image), f"the offline image {image}", HOW_TO_GET_IMAGES)
    try:
        started = time.monotonic()
        result = compose("up", "--detach", "--wait", "--wait-timeout", "300", timeout=420, check=False)
        if result.returncode != 0:
            pytest.fail(f"up --wait failed ({result.returncode}):\n{result.stderr[-3000:]}\n{diagnostics()}",
                        pytrace=False)  # fmt: skip
        print(f"compose stack healthy in {time.monotonic() - started:.1f} s")
        host_port = compose("port", "prometheus", "9090").stdout.strip()
        yield PrometheusClient(f"http://{host_port}")
    finally:
        down()


@pytest.fixture(scope="module")
def load_run(stack: PrometheusClient, tmp_path_factory: pytest.TempPathFactory) -> LoadRun:
    """The smoke profile, headless, by the master and worker services: recreated with the headless override."""
    files = (*FILES, HEADLESS)
    compose("up", "--detach", "--no-deps", "--force-recreate", "locust-master", "locust-worker", files=files)
    master = compose("ps", "--all", "--quiet", "locust-master", files=files).stdout.split()[0]
    waited = docker("wait", master, timeout=300, check=False)
    exit_code = int(waited.stdout.strip() or -1)
    master_log = docker("logs", "--tail", "80", master, check=False)
    out = tmp_path_factory.mktemp("locust-out")
    archive = subprocess.run(["docker", "cp", f"{master}:/app/out", "-"], capture_output=True, timeout=120, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    stats_file = out / "out" / "locust_stats.csv"
    stats = list(csv.DictReader(stats_file.open())) if stats_file.exists() else []
    samples = [row for path in sorted((out / "out").rglob("samples-*.csv")) for row in csv.DictReader(path.open())]
    return LoadRun(exit_code, master_log.stdout + master_log.stderr, stats, samples)


def prometheus_has(prom: PrometheusClient, promql: str, label: str, want: set[str], timeout: float = 120) -> dict:
    """Wait until `promql` has a positive value for every `want`ed value of `label`."""

    def ready() -> dict[str, float] | None:
        found = {k: v for k, v in prom.scalar_by(promql, label).items() if v > 0}
        return found if want <= found.keys() else None

    return wait_for(ready, timeout, f"{promql} for {sorted(want)}", interval=3)


# --- tests, in the order they run -----------------------------------------------------------------


def test_every_service_is_up_and_healthy(stack):
    services = {c["Service"]: c for c in ps()}
    assert services.keys() == SERVICES, "Grafana and Tempo (profile ui) must stay out; nothing else missing"
    for name, container in services.items():
        assert container["State"] == "running", (name, container["State"], container.get("Status"))
        if name in HEALTHCHECKED:
            assert container["Health"] == "healthy", (name, container.get("Status"))


def test_collectors_answer_their_health_check_from_the_network(stack):
    for region in REGIONS:
        probe = f"import urllib.request; print(urllib.request.urlopen('http://collector-{region}:13133/').status)"
        result = compose("exec", "-T", f"handler-{region}", "python", "-c", probe)
        assert result.stdout.strip() == "200"


def test_locust_runs_the_smoke_profile_headless_without_failures(load_run: LoadRun):
    assert load_run.exit_code == 0, load_run.master_log
    aggregated = next(row for row in load_run.stats if row["Name"] == "Aggregated")
    assert int(aggregated["Request Count"]) > 0 and int(aggregated["Failure Count"]) == 0, aggregated
    answered = load_run.answered_by_pop()
    for region in REGIONS:
        assert any(pop.startswith(region) and n > 0 for pop, n in answered.items()), (region, answered)


def test_every_regions_series_reach_prometheus_through_its_collector(stack, load_run: LoadRun):
    want = set(REGIONS)
    server = "sum by (cloud_region) (http_server_request_duration_seconds_count)"
    prometheus_has(stack, server, "cloud_region", want)
    answered = load_run.answered_by_pop()

    def complete() -> dict[str, float] | None:
        counts = stack.scalar_by(server, "cloud_region")
        client = {r: sum(n for pop, n in answered.items() if pop.startswith(r)) for r in REGIONS}
        # Every request the client saw answered was counted by its region's handler and reached Prometheus.
        return counts if all(counts.get(r, 0) >= client[r] > 0 for r in REGIONS) else None

    counts = wait_for(complete, 120, "server request counts to cover the client's answered requests", interval=3)
    print(f"answered by the handlers, per PoP: {dict(answered)}; counted in Prometheus: {counts}")
    client = "sum by (edgeharness_client_region) (edgeharness_client_request_duration_seconds_count)"
    prometheus_has(stack, client, "edgeharness_client_region", want)
    spans = "sum by (cloud_region) (traces_span_metrics_calls_total)"
    prometheus_has(stack, spans, "cloud_region", want)


def test_every_dashboard_panel_query_returns_data(stack, load_run: LoadRun):
    dashboard = read_dashboard()
    builtins = {"__rate_interval": "1m", "__interval": "15s", "__range": "10m", "__range_s": "600",
                "__range_ms": "600000"}  # fmt: skip
    assert "region" in dashboard_variables(dashboard)

    def empties() -> list[str]:
        return [
            f"{title!r} for {region}: {promql}"
            for region in REGIONS
            for title, promql in panel_queries(dashboard, {**builtins, "region": region, "model": MODEL})
            if not stack.query(promql)
        ]

    deadline = time.monotonic() + 90
    missing = empties()
    while missing and time.monotonic() < deadline:
        time.sleep(5)
        missing = empties()
    assert not missing, "panels that would be empty:\n" + "\n".join(missing)


def test_without_tempo_the_trace_exporter_drops_and_counts(stack, load_run: LoadRun):
    # The collectors do not depend on Tempo (profile ui): its exporter fails, each span counted as dropped,
    # while the requests above had no failure and the span metrics still came through.
    failed = 'sum by (cloud_region) (otelcol_exporter_send_failed_spans_total{exporter="otlp_grpc/tempo"})'
    prometheus_has(stack, failed, "cloud_region", set(REGIONS), timeout=150)


def test_down_leaves_nothing_behind(stack):
    assert leftovers(), "the stack should be there before down"
    down()
    assert leftovers() == {}
