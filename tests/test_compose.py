"""compose.yaml: valid by the Compose spec, pinned, wired to files that exist and to what each service reads."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from container_fixtures import HOW_TO_GET_COMPOSE, compose_available, require

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "compose.yaml"
SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
COLLECTOR = REPO / "collector"
TEST_ENV = {"GF_ADMIN_PASSWORD": "not-a-default"}

# Variables compose.yaml reads: `docker compose config` gets only these (and no .env file), so the
# model does not depend on the machine's environment.
COMPOSE_VARIABLES = ("GF_ADMIN_PASSWORD", "EDGE_PROFILE", "LOCUST_WORKERS", "EDGE_MODEL_SHA256")


class ComposeConfigError(ValueError):
    """`docker compose config` refused the files (a required variable unset, an invalid file)."""


def compose_config(env: Mapping[str, str] = TEST_ENV, files: tuple[Path, ...] = (COMPOSE_FILE,)) -> dict[str, Any]:
    """The model Docker Compose itself makes of the files: its interpolation, merging and validation, with
    every profile (ui included). Paths stay as written (./collector/...)."""
    require(compose_available(), "the Docker Compose plugin", HOW_TO_GET_COMPOSE)
    machine = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as no_env_file:
        argv = ["docker", "compose", "--project-directory", str(REPO), "--env-file", no_env_file.name]
        for file in files:
            argv += ["-f", str(file)]
        argv += ["--profile", "*", "config", "--format", "json", "--no-path-resolution"]
        result = subprocess.run(argv, capture_output=True, text=True, env={**machine, **env}, timeout=60, check=False)
    if result.returncode != 0:
        raise ComposeConfigError(result.stderr.strip())
    return json.loads(result.stdout)


def raw_compose_file() -> dict[str, Any]:
    """compose.yaml as YAML alone (anchors merged, variables not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def bind_mounts(service: Mapping[str, Any]) -> list[str]:
    """The service's bind mounts as `source:target[:ro]`, from the short or the long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            if volume.startswith((".", "/")):
                mounts.append(volume)
        elif volume.get("type") == "bind":
            mounts.append(f"{volume['source']}:{volume['target']}" + (":ro" if volume.get("read_only") else ""))
    return mounts


def published_ports(service: Mapping[str, Any]) -> list[str]:
    """The service's published ports as `host_ip:published:target`, from the short or the long syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(f"{port.get('host_ip', '')}:{port.get('published', '')}:{port['target']}")
        else:
            ports.append(str(port))
    return ports


def versions() -> dict[str, str]:
    pins = {}
    for line in (COLLECTOR / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    return pins


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def services_named(services: dict[str, dict[str, Any]], prefix: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if name.startswith(prefix)}


# --- the spec -------------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec():
    """The JSON Schema check, for machines without the Compose plugin (docker compose config validates too)."""
    import jsonschema

    if not SCHEMA.is_file():
        pytest.fail(f"Compose spec schema not found at {SCHEMA}: check out shared/ beside the repository")
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(raw_compose_file()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_bad_file():
    import jsonschema

    if not SCHEMA.is_file():
        pytest.fail(f"Compose spec schema not found at {SCHEMA}")
    bad = {"services": {"x": {"image": "a:1", "depends_on": {"y": {"condition": "when_ready"}}}}}
    assert list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(bad))


def test_compose_itself_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: a:1\n    depends_on: {y: {condition: when_ready}}\n")
    with pytest.raises(ComposeConfigError):
        compose_config(files=(bad,))


def test_grafana_has_no_default_admin_password():
    with pytest.raises(ComposeConfigError, match="GF_ADMIN_PASSWORD"):
        compose_config({})
    grafana = compose_config()["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == TEST_ENV["GF_ADMIN_PASSWORD"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    example = (REPO / ".env.example").read_text()
    assert re.search(r"^GF_ADMIN_PASSWORD=$", example, re.MULTILINE), ".env.example must not ship a password"


# --- references -----------------------------------------------------------------------------------


def test_every_mounted_or_built_path_exists(services):
    checked = 0
    for name, service in services.items():
        for mount in bind_mounts(service):
            source = mount.split(":", 1)[0]
            assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
            checked += 1
        build = service.get("build")
        if build:
            context = REPO / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
            checked += 1
    assert checked >= 8


def test_the_dockerfile_copies_only_what_exists():
    dockerfile = (REPO / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.MULTILINE)
    assert copies
    for sources in copies:
        for source in sources.split():
            if "*" not in source:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    # The base is a build argument (scripts/images-offline.sh passes a local one); the default stays pinned.
    base = r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm\nFROM \$\{BASE_IMAGE\}$"
    assert re.search(base, dockerfile, re.MULTILINE)
    assert "edgeharness model build --out /app/models" in dockerfile


def test_depends_on_names_existing_services_and_waits_on_healthchecks(services):
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"


# --- pins -----------------------------------------------------------------------------------------


def test_images_are_pinned(services):
    for name, service in services.items():
        image = service.get("image", "")
        assert image, f"{name} has no image"
        if "build" in service:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{name}: image {image} is not pinned"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: tag {tag} is not a full version"


def test_collector_and_tempo_images_match_the_collector_pins(services):
    pins = versions()
    collectors = services_named(services, "collector-")
    assert len(collectors) >= 3
    for name, service in collectors.items():
        assert service["image"] == f"otel/opentelemetry-collector-contrib:{pins['OTELCOL_VERSION']}", name
    assert services["tempo"]["image"] == f"grafana/tempo:{pins['TEMPO_VERSION']}"


def test_grafana_matches_the_sdk_the_dashboard_is_built_with(services):
    sdk = importlib.metadata.version("grafana-foundation-sdk")  # "<timestamp>!11.6.0"
    major_minor = ".".join(sdk.split("!")[-1].split(".")[:2])
    assert services["grafana"]["image"].startswith(f"grafana/grafana:{major_minor}.")


def test_prometheus_runs_with_the_flags_and_config_of_the_native_stack(services):
    flags = [
        line.split("#", 1)[0].strip()
        for line in (COLLECTOR / "prometheus-flags").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    prometheus = services["prometheus"]
    assert flags and set(flags) <= set(prometheus["command"])
    assert prometheus["image"].startswith("prom/prometheus:v3.")
    assert "./collector/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in bind_mounts(prometheus)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


# --- wiring ---------------------------------------------------------------------------------------


def test_every_service_has_a_memory_limit(services):
    for name, service in services.items():
        assert service["deploy"]["resources"]["limits"]["memory"], name


def test_published_ports_are_bound_to_loopback(services):
    for name, service in services.items():
        for port in published_ports(service):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert published_ports(services["grafana"]) == ["127.0.0.1:3000:3000"]
    assert published_ports(services["locust-master"]) == ["127.0.0.1:8089:8089"]


def test_collectors_get_every_variable_their_config_requires(services):
    config = (COLLECTOR / "otelcol.yaml").read_text()
    required = set(re.findall(r"\$\{env:(\w+)\}", config))
    assert {"REGION", "PROMETHEUS_REMOTE_WRITE_ENDPOINT", "TEMPO_OTLP_ENDPOINT"} <= required
    for name, service in services_named(services, "collector-").items():
        env = service["environment"]
        assert required <= env.keys(), f"{name} lacks {required - env.keys()}"
        assert env["REGION"] == name.removeprefix("collector-")
        assert env["OTELCOL_HOST"] == "0.0.0.0"
        assert "./collector/otelcol.yaml:/etc/otelcol/otelcol.yaml:ro" in bind_mounts(service)
        assert service["command"] == ["--config=/etc/otelcol/otelcol.yaml"]


def test_handlers_use_settings_the_handler_reads_and_their_own_regions_collector(services):
    from harness.handler.settings import HandlerSettings, from_sources

    known = {f.metadata["env"] for f in dataclasses.fields(HandlerSettings)}
    handlers = services_named(services, "handler-")
    assert len(handlers) >= 3
    for name, service in handlers.items():
        region = name.removeprefix("handler-")
        env = service["environment"]
        assert env.keys() <= known, f"{name} sets variables the handler ignores: {env.keys() - known}"
        assert env["EDGE_REGION"] == region
        assert env["EDGE_HOST"] == "0.0.0.0"
        assert env["EDGE_OTLP_ENDPOINT"] == f"http://collector-{region}:4318"
        assert env["EDGE_MODEL"].startswith("http://models:8000/")
        assert service["command"] == ["edgeharness", "serve"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["models"]["condition"] == "service_healthy"
        settings = from_sources(None, {k: str(v) for k, v in env.items()})
        assert (settings.region, settings.port, settings.load) == (region, 8080, "eager")


def test_locust_targets_every_handler(services):
    master, worker = services["locust-master"], services["locust-worker"]
    assert "--master" in master["command"] and "loadtests/locustfile.py" in master["command"]
    assert worker["command"][-2:] == ["--master-host", "locust-master"]
    assert (REPO / "loadtests" / "locustfile.py").is_file()
    targets = dict(pair.split("=", 1) for pair in master["environment"]["EDGE_TARGETS"].split(","))
    handlers = services_named(services, "handler-")
    assert targets == {name.removeprefix("handler-"): f"http://{name}:8080" for name in handlers}
    assert worker["environment"] == master["environment"]


def test_grafana_is_provisioned_from_the_dashboards_folder(services):
    grafana = services["grafana"]
    for folder in ("datasources", "dashboards"):
        assert f"./dashboards/provisioning/{folder}:/etc/grafana/provisioning/{folder}:ro" in bind_mounts(grafana)


# --- optional services and the offline set -------------------------------------------------------

OFFLINE_FILE = REPO / "compose.offline.yaml"


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (!reset, !override), read as their plain values."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_multi_constructor(
    "!override",
    lambda loader, suffix, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)
    ),
)  # fmt: skip


def test_grafana_and_tempo_are_optional_and_nothing_else_waits_for_them(services):
    assert services["tempo"]["profiles"] == ["ui"]
    assert services["grafana"]["profiles"] == ["ui"]
    for name, service in services.items():
        if service.get("profiles"):
            continue
        for dependency in service.get("depends_on", {}):
            assert not services[dependency].get("profiles"), f"{name} depends on {dependency}, an optional service"


def test_the_offline_file_runs_every_default_service_from_local_images(services):
    offline = yaml.load(OFFLINE_FILE.read_text(), Loader=_ComposeLoader)["services"]
    assert offline.keys() == {name for name, service in services.items() if not service.get("profiles")}
    for name, service in offline.items():
        image, upstream = service["image"], services[name]["image"]
        assert image.split("/")[0].split(":")[0] == "edgeharness", f"{name}: {image} is not a local name"
        assert service["pull_policy"] == "never", name
        if "build" in services[name]:
            assert image == "edgeharness:offline" and "build" in service and service["build"] is None, name
        else:
            # The same version as the upstream image it stands in for.
            assert image.rpartition(":")[2] == upstream.rpartition(":")[2].removeprefix("v"), (name, upstream)
