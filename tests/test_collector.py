"""The telemetry pipeline for real: the built collector and Prometheus 3, two regions on loopback.

Unit tests check that the version pin, the builder manifest and the collector config agree; the
integration tests send OTLP from the Python SDK and read the result back from Prometheus's HTTP API
and the collector's trace file.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from collector_fixtures import (
    BUILDER_MANIFEST,
    LOOPBACK,
    OTELCOL_CONFIG,
    PROMETHEUS_CONFIG,
    TEMPO_CONFIG,
    CollectorPorts,
    PrometheusServer,
    RegionalCollector,
    collector_env,
    collector_image,
    collector_version,
    prometheus_flags,
    prometheus_image,
    prometheus_version,
    read_versions,
    require_otelcol,
    require_prometheus,
    require_promtool,
    running_collectors,
    running_prometheus,
    start_collector,
    tempo_image,
    validate_collector_config,
    wait_for,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

# Which manifest module provides which component of otelcol.yaml: the manifest holds exactly these.
MODULE_COMPONENTS = {
    "otlpreceiver": ("receivers", "otlp"),
    "prometheusreceiver": ("receivers", "prometheus"),
    "memorylimiterprocessor": ("processors", "memory_limiter"),
    "batchprocessor": ("processors", "batch"),
    "resourceprocessor": ("processors", "resource"),
    "spanmetricsconnector": ("connectors", "span_metrics"),
    "otlpexporter": ("exporters", "otlp_grpc"),
    "otlphttpexporter": ("exporters", "otlp_http"),
    "prometheusremotewriteexporter": ("exporters", "prometheus_remote_write"),
    "fileexporter": ("exporters", "file"),
    "healthcheckextension": ("extensions", "health_check"),
}
PIPELINE_WAIT_S = 60.0


# --- the pin, the manifest and the config agree (no binaries needed) ------------------------------


def manifest_modules() -> list[tuple[str, str, str]]:
    """(kind, module, version) for every gomod entry of the builder manifest."""
    manifest = yaml.safe_load(BUILDER_MANIFEST.read_text())
    entries = []
    for kind in ("receivers", "processors", "exporters", "connectors", "extensions", "providers"):
        for entry in manifest.get(kind) or []:
            module, version = entry["gomod"].split()
            entries.append((kind, module, version))
    return entries


def test_version_pin_drives_builder_manifest():
    versions = read_versions()
    manifest = yaml.safe_load(BUILDER_MANIFEST.read_text())
    assert manifest["dist"]["version"] == versions["OTELCOL_VERSION"]
    for kind, module, version in manifest_modules():
        expected = versions["OTELCOL_PROVIDERS_VERSION" if kind == "providers" else "OTELCOL_VERSION"]
        assert version == f"v{expected}", f"{module} is at {version}, the pin says v{expected}"
    assert collector_image() == f"otel/opentelemetry-collector-contrib:{collector_version()}"


def test_manifest_holds_exactly_the_components_the_config_uses():
    config = yaml.safe_load(OTELCOL_CONFIG.read_text())
    kinds = {kind for kind, _ in MODULE_COMPONENTS.values()}
    used = {(kind, name.split("/")[0]) for kind in kinds for name in config.get(kind, {})}
    built = {
        MODULE_COMPONENTS[module.rsplit("/", 1)[1]] for kind, module, _ in manifest_modules() if kind != "providers"
    }
    assert used == built


def with_env_defaults(names: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Pipeline entries with ${env:NAME:-default} resolved as the collector does (from env, else the default)."""
    env = env or {}
    return [re.sub(r"\$\{env:([A-Z_]+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), name) for name in names]


def test_every_pipeline_component_is_defined():
    config = yaml.safe_load(OTELCOL_CONFIG.read_text())
    defined = {kind: set(config.get(kind, {})) for kind in ("receivers", "processors", "exporters", "connectors")}
    for name, pipeline in config["service"]["pipelines"].items():
        for receiver in pipeline["receivers"]:
            assert receiver in defined["receivers"] | defined["connectors"], (name, receiver)
        for processor in pipeline["processors"]:
            assert processor in defined["processors"], (name, processor)
        for exporter in with_env_defaults(pipeline["exporters"]):
            assert exporter in defined["exporters"] | defined["connectors"], (name, exporter)
        assert pipeline["processors"][0] == "memory_limiter", "memory_limiter must come first"


def test_span_metrics_use_an_exponential_histogram():
    # Exponential (native in Prometheus) buckets follow the data: with up to 160 of them, latencies spread
    # over two decades still get buckets under 5 % wide, with no bounds to tune.
    histogram = yaml.safe_load(OTELCOL_CONFIG.read_text())["connectors"]["span_metrics"]["histogram"]
    assert histogram["unit"] == "ms"
    assert "explicit" not in histogram and histogram["exponential"]["max_size"] >= 160


def test_metrics_exporter_is_remote_write_unless_otlp_is_chosen():
    pipeline = yaml.safe_load(OTELCOL_CONFIG.read_text())["service"]["pipelines"]["metrics"]["exporters"]
    assert with_env_defaults(pipeline) == ["prometheus_remote_write"]
    env = collector_env(region="r", ports=CollectorPorts(1, 2, 3, 4), remote_write_endpoint="http://p/api/v1/write",
                        tempo_endpoint="t:4317", traces_file=Path("/tmp/t"), metrics_export="otlp",
                        otlp_endpoint="http://p/api/v1/otlp")  # fmt: skip
    assert with_env_defaults(pipeline, env) == ["otlp_http/prometheus"]
    assert env["PROMETHEUS_OTLP_ENDPOINT"] == "http://p/api/v1/otlp"


def test_prometheus_flags_enable_remote_write_otlp_and_exemplars():
    flags = prometheus_flags()
    assert "--web.enable-remote-write-receiver" in flags
    assert "--web.enable-otlp-receiver" in flags
    assert "--enable-feature=exemplar-storage" in flags


def test_prometheus_version_is_pinned_once_for_native_and_compose():
    compose = yaml.safe_load((OTELCOL_CONFIG.parents[1] / "compose.yaml").read_text())
    assert (
        compose["services"]["prometheus"]["image"] == prometheus_image() == f"prom/prometheus:v{prometheus_version()}"
    )
    script = (OTELCOL_CONFIG.parent / "build-prometheus.sh").read_text()
    assert "PROMETHEUS_VERSION" in script and "dist/prometheus" in script


def test_prometheus_loads_the_slo_rules_and_labels_otlp_like_remote_write():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    assert list((PROMETHEUS_CONFIG.parent / "rules").glob("*.yml")), "no rule file where rule_files points"
    assert config["otlp"]["promote_all_resource_attributes"] is True


def test_prometheus_config_needs_no_per_environment_targets():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert not config.get("scrape_configs"), "collectors remote-write their own telemetry; see collector/README.md"
    assert config["storage"]["exemplars"]["max_exemplars"] > 0


def test_tempo_config_is_monolithic_and_listens_beyond_localhost():
    config = yaml.safe_load(TEMPO_CONFIG.read_text())
    assert not {"ingester", "compactor", "ingester_client", "metrics_generator_client"} & config.keys()
    protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert config["storage"]["trace"]["backend"] == "local"
    assert tempo_image() == f"grafana/tempo:{read_versions()['TEMPO_VERSION']}"


# --- the built collector validates the config ------------------------------------------------------


def sample_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = collector_env(
        region="eu-central-1",
        ports=CollectorPorts(otlp_grpc=4317, otlp_http=4318, metrics=8888, health=13133),
        remote_write_endpoint="http://127.0.0.1:9090/api/v1/write",
        tempo_endpoint="127.0.0.1:4417",
        traces_file=tmp_path / "traces.jsonl",
    )
    env.update(overrides)
    return env


@pytest.mark.integration
def test_otelcol_validates_the_config(otelcol_binary: Path, tmp_path: Path):
    result = validate_collector_config(otelcol_binary, sample_env(tmp_path))
    assert result.returncode == 0, result.stderr
    version = subprocess.run([str(otelcol_binary), "--version"], capture_output=True, text=True, check=True)
    assert collector_version() in version.stdout


@pytest.mark.integration
def test_otelcol_rejects_a_config_without_region(otelcol_binary: Path, tmp_path: Path):
    env = sample_env(tmp_path)
    del env["REGION"]
    result = validate_collector_config(otelcol_binary, env)
    assert result.returncode != 0


@pytest.mark.integration
def test_prometheus_config_is_valid(prometheus_binary: Path):
    promtool = require_promtool()
    result = subprocess.run(
        [str(promtool), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- two regions, end to end ------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    name: str
    pop: str | None  # None: the collector's default (the region)
    protocol: str  # how the SDK talks to this region's collector
    service: str  # service.name of what we send there, to tell the regions' series apart


REGIONS = (
    Region(name="eu-central-1", pop="fra1", protocol="grpc", service="pipeline-test-eu"),
    Region(name="us-east-1", pop=None, protocol="http", service="pipeline-test-us"),
)
CLIENT_SERVICE = "pipeline-test-client"


@dataclass
class SentTelemetry:
    collectors: dict[str, RegionalCollector]
    trace_ids: dict[str, set[str]]  # region -> hex trace ids sent there


def send_spans(collector: RegionalCollector, region: Region) -> set[str]:
    """A cold-start request, warm requests, and one 3.1 ms probe span; no cloud.region on the resource."""
    exporter = (
        GrpcSpanExporter(endpoint=collector.otlp_grpc_endpoint, insecure=True)
        if region.protocol == "grpc"
        else HttpSpanExporter(endpoint=f"{collector.otlp_http_endpoint}/v1/traces")
    )
    provider = TracerProvider(resource=Resource.create({"service.name": region.service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("edgeharness.tests.collector")
    trace_ids = set()
    start = time.time_ns()
    for index, (cold, duration_ms) in enumerate([(True, 45.0), (False, 4.0), (False, 6.5), (False, 0.6)]):
        begin = start + index * 100_000_000
        span = tracer.start_span(
            "GET /classify",
            kind=SpanKind.SERVER,
            start_time=begin,
            attributes={"faas.coldstart": cold, "http.response.status_code": 200},
        )
        span.end(end_time=begin + int(duration_ms * 1e6))
        trace_ids.add(format(span.get_span_context().trace_id, "032x"))
    probe = tracer.start_span("resolution-probe", start_time=start)
    probe.end(end_time=start + 3_100_000)  # 3.1 ms: above the 3 ms bucket, inside 3.25 ms
    trace_ids.add(format(probe.get_span_context().trace_id, "032x"))
    assert provider.force_flush(10_000)
    provider.shutdown()
    return trace_ids


def send_metrics(collector: RegionalCollector, region: Region, resource: dict[str, str]) -> None:
    exporter = (
        GrpcMetricExporter(endpoint=collector.otlp_grpc_endpoint, insecure=True)
        if region.protocol == "grpc"
        else HttpMetricExporter(endpoint=f"{collector.otlp_http_endpoint}/v1/metrics")
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(resource=Resource.create(resource), metric_readers=[reader])
    counter = provider.get_meter("edgeharness.tests.collector").create_counter("edgeharness.test.requests")
    counter.add(3, {"route": "/classify"})
    assert provider.force_flush(10_000)
    provider.shutdown()


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    return require_otelcol()


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    return require_prometheus()


@pytest.fixture(scope="module")
def prometheus_server(prometheus_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with running_prometheus(prometheus_binary, tmp_path_factory.mktemp("prometheus")) as server:
        yield server


@pytest.fixture(scope="module")
def sent(
    otelcol_binary: Path, prometheus_server: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentTelemetry]:
    with running_collectors(
        otelcol_binary,
        {region.name: region.pop for region in REGIONS},
        prometheus_server.remote_write_endpoint,
        tmp_path_factory.mktemp("collectors"),
    ) as collectors:
        trace_ids = {}
        for region in REGIONS:
            send_metrics(collectors[region.name], region, {"service.name": region.service})
            trace_ids[region.name] = send_spans(collectors[region.name], region)
        # A sender that names its own region keeps it (the resource step inserts, never overwrites).
        client_resource = {"service.name": CLIENT_SERVICE, "cloud.region": "client-region"}
        send_metrics(collectors[REGIONS[0].name], REGIONS[0], client_resource)
        yield SentTelemetry(collectors=collectors, trace_ids=trace_ids)


def wait_for_total(prometheus: PrometheusServer, promql: str, expected: float) -> list[dict]:
    """The series of `promql` once their values add up to `expected`.

    Polls for the value, not just the series: a new cumulative series may first show a zero sample.
    """

    def series_at_expected() -> list[dict] | None:
        series = prometheus.query(promql)
        return series if series and sum(float(s["value"][1]) for s in series) == expected else None

    try:
        return wait_for(series_at_expected, PIPELINE_WAIT_S, f"{promql} to add up to {expected}")
    except TimeoutError as error:
        raise AssertionError(f"{error}; Prometheus has {prometheus.query(promql)}") from None


@pytest.mark.integration
@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
def test_metrics_arrive_labelled_with_the_collectors_region(
    sent: SentTelemetry, prometheus_server: PrometheusServer, region: Region
):
    series = wait_for_total(prometheus_server, f'edgeharness_test_requests_total{{job="{region.service}"}}', 3.0)
    assert {s["metric"].get("cloud_region") for s in series} == {region.name}
    assert {s["metric"].get("edgeharness_pop") for s in series} == {region.pop or region.name}


@pytest.mark.integration
def test_a_senders_own_region_is_kept(sent: SentTelemetry, prometheus_server: PrometheusServer):
    series = wait_for_total(prometheus_server, f'edgeharness_test_requests_total{{job="{CLIENT_SERVICE}"}}', 3.0)
    assert {s["metric"].get("cloud_region") for s in series} == {"client-region"}


@pytest.mark.integration
@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
def test_span_metrics_reach_prometheus_as_native_histograms(
    sent: SentTelemetry, prometheus_server: PrometheusServer, region: Region
):
    selector = f'cloud_region="{region.name}", service_name="{region.service}"'
    calls = wait_for_total(
        prometheus_server, f'traces_span_metrics_calls_total{{{selector}, span_name="GET /classify"}}', 4.0
    )
    assert {s["metric"].get("faas_coldstart") for s in calls} == {"true", "false"}
    histogram = f'traces_span_metrics_duration_milliseconds{{{selector}, span_name="GET /classify"}}'
    wait_for_total(prometheus_server, f"sum(histogram_count({histogram}))", 4.0)
    # 0.6, 4, 6.5 and 45 ms: the smallest and the largest come back within 5 %, without any bucket
    # tuned for them (the explicit buckets this replaced were 10 ms wide around 45 ms).
    for q, expected_ms in ((0.01, 0.6), (0.99, 45.0)):
        (sample,) = prometheus_server.query(f"histogram_quantile({q}, sum({histogram}))")
        assert float(sample["value"][1]) == pytest.approx(expected_ms, rel=0.05), (q, sample)
    probe = f'traces_span_metrics_duration_milliseconds{{{selector}, span_name="resolution-probe"}}'
    (sample,) = wait_for_total(prometheus_server, f"histogram_count({probe})", 1.0)
    (sample,) = prometheus_server.query(f"histogram_quantile(0.5, {probe})")
    assert float(sample["value"][1]) == pytest.approx(3.1, rel=0.01)


@pytest.mark.integration
def test_span_metrics_carry_exemplars_linking_to_traces(sent: SentTelemetry, prometheus_server: PrometheusServer):
    region = REGIONS[0]
    # Prometheus 3.14 keeps none of the exemplars remote write sends with the native (exponential)
    # latency histogram (seen: the exporter sends them, /api/v1/query_exemplars returns none); the
    # connector's calls counter carries the same trace ids, and those are kept.
    query = f'traces_span_metrics_calls_total{{cloud_region="{region.name}"}}'

    def exemplar_trace_ids() -> set[str]:
        return {
            exemplar["labels"].get("trace_id", "")
            for series in prometheus_server.exemplars(query)
            for exemplar in series["exemplars"]
        } & sent.trace_ids[region.name]

    assert wait_for(exemplar_trace_ids, PIPELINE_WAIT_S, "exemplars with the trace ids we sent")


@pytest.mark.integration
@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
def test_collector_self_metrics_are_scraped_per_region(
    sent: SentTelemetry, prometheus_server: PrometheusServer, region: Region
):
    query = f'{{__name__=~"otelcol_receiver_accepted_spans(_total)?", receiver="otlp", cloud_region="{region.name}"}}'

    def accepted() -> float:
        return sum(float(s["value"][1]) for s in prometheus_server.query(query))

    assert wait_for(lambda: accepted() >= 5, PIPELINE_WAIT_S, f"otelcol_receiver_accepted_spans for {region.name}")
    exported = prometheus_server.query(
        f'{{__name__=~"otelcol_exporter_sent_metric_points(_total)?", cloud_region="{region.name}"}}'
    )
    assert exported, "exporter self-metrics missing"


@pytest.mark.integration
@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
def test_cold_start_spans_reach_the_trace_pipeline(sent: SentTelemetry, region: Region):
    collector = sent.collectors[region.name]

    def cold_starts() -> list:
        return [
            (resource, span)
            for resource, span in collector.spans()
            if any(a["key"] == "faas.coldstart" and a["value"].get("boolValue") for a in span.get("attributes", []))
        ]

    found = wait_for(cold_starts, PIPELINE_WAIT_S, f"a faas.coldstart span in {collector.traces_file}")
    resource, span = found[0]
    assert resource["cloud.region"] == region.name
    assert resource["edgeharness.pop"] == (region.pop or region.name)
    assert resource["service.name"] == region.service
    assert span["name"] == "GET /classify"


@pytest.mark.integration
@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
def test_exporter_queues_are_bounded(sent: SentTelemetry, prometheus_server: PrometheusServer, region: Region):
    config = yaml.safe_load(OTELCOL_CONFIG.read_text())["exporters"]
    expected = {
        "otlp_grpc/tempo": float(config["otlp_grpc/tempo"]["sending_queue"]["queue_size"]),
        "prometheus_remote_write": float(config["prometheus_remote_write"]["remote_write_queue"]["queue_size"]),
    }

    def capacities() -> dict[str, float] | None:
        series = prometheus_server.query(f'otelcol_exporter_queue_capacity{{cloud_region="{region.name}"}}')
        found = {s["metric"]["exporter"]: float(s["value"][1]) for s in series}
        return found if expected.keys() <= found.keys() else None

    found = wait_for(capacities, PIPELINE_WAIT_S, "otelcol_exporter_queue_capacity for both exporters")
    assert {name: found[name] for name in expected} == expected


@pytest.mark.integration
def test_metrics_reach_prometheus_over_otlp_with_the_names_and_labels_of_remote_write(
    otelcol_binary: Path, prometheus_server: PrometheusServer, tmp_path: Path
):
    # The other way in: the collector's otlp_http exporter into Prometheus 3's OTLP receiver.
    region = Region(name="ap-south-1", pop="bom1", protocol="http", service="pipeline-test-otlp")
    collector = start_collector(
        otelcol_binary,
        region=region.name,
        pop=region.pop,
        remote_write_endpoint=f"http://{LOOPBACK}:9/api/v1/write",  # closed: nothing may go this way
        otlp_endpoint=f"{prometheus_server.url}/api/v1/otlp",
        metrics_export="otlp",
        workdir=tmp_path,
    )
    try:
        send_metrics(collector, region, {"service.name": region.service})
        send_spans(collector, region)
        series = wait_for_total(prometheus_server, f'edgeharness_test_requests_total{{job="{region.service}"}}', 3.0)
        assert series[0]["metric"]["cloud_region"] == region.name
        assert series[0]["metric"]["edgeharness_pop"] == region.pop
        histogram = (
            f'traces_span_metrics_duration_milliseconds{{cloud_region="{region.name}", span_name="GET /classify"}}'
        )
        wait_for_total(prometheus_server, f"sum(histogram_count({histogram}))", 4.0)
    finally:
        collector.stop()
