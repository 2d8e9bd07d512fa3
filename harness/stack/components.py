"""The telemetry pipeline's pieces as the native stack and tests run them: pins, binaries, argv, env."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO_ROOT / "collector"
VERSIONS_FILE = COLLECTOR_DIR / "versions.env"
BUILDER_MANIFEST = COLLECTOR_DIR / "builder-config.yaml"
OTELCOL_CONFIG = COLLECTOR_DIR / "otelcol.yaml"
TEMPO_CONFIG = COLLECTOR_DIR / "tempo.yaml"
OTELCOL_BINARY = COLLECTOR_DIR / "dist" / "otelcol"
PROMETHEUS_CONFIG = COLLECTOR_DIR / "prometheus.yml"
PROMETHEUS_FLAGS_FILE = COLLECTOR_DIR / "prometheus-flags"
PROMETHEUS_DIST = COLLECTOR_DIR / "dist" / "prometheus"
RULES_DIR = COLLECTOR_DIR / "rules"

HOW_TO_GET_OTELCOL = "build it with `make collector` (needs Go; see collector/build.sh)"
HOW_TO_GET_PROMETHEUS = (
    "build Prometheus 3 and promtool with `make prometheus` (needs Go; collector/build-prometheus.sh writes "
    "collector/dist/prometheus/), or put a Prometheus 3 on PATH"
)
# What the metrics pipeline may use between the collectors and Prometheus (collector/otelcol.yaml).
METRICS_EXPORTERS = {"remote_write": "prometheus_remote_write", "otlp": "otlp_http/prometheus"}


class MissingComponent(RuntimeError):
    """A binary the stack needs is not installed; the message says how to get it."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The KEY=VALUE pins of collector/versions.env (the file build.sh and compose both read)."""
    versions: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: not KEY=VALUE: {raw!r}")
        versions[key.strip()] = value.strip()
    return versions


def collector_version() -> str:
    """The pinned collector version, e.g. '0.159.0' (builder manifest and compose image alike)."""
    return read_versions()["OTELCOL_VERSION"]


def prometheus_version() -> str:
    """The pinned Prometheus version, e.g. '3.14.0' (native build and compose image alike)."""
    return read_versions()["PROMETHEUS_VERSION"]


def prometheus_image() -> str:
    return f"prom/prometheus:v{prometheus_version()}"


def collector_image() -> str:
    """The image compose.yaml must run for every regional collector."""
    return f"otel/opentelemetry-collector-contrib:{collector_version()}"


def tempo_image() -> str:
    """The Tempo image collector/tempo.yaml is written for."""
    return f"grafana/tempo:{read_versions()['TEMPO_VERSION']}"


def prometheus_flags() -> list[str]:
    """Flags every Prometheus of the harness runs with (remote-write receiver, exemplar storage)."""
    lines = (line.split("#", 1)[0].strip() for line in PROMETHEUS_FLAGS_FILE.read_text().splitlines())
    return [line for line in lines if line]


def find_otelcol() -> Path | None:
    return OTELCOL_BINARY if os.access(OTELCOL_BINARY, os.X_OK) else None


def find_prometheus() -> Path | None:
    """collector/dist/prometheus/prometheus (`make prometheus`), else a Prometheus 3 on PATH."""
    return _find_prometheus_tool("prometheus")


def find_promtool() -> Path | None:
    """promtool beside the Prometheus that find_prometheus() gives."""
    return _find_prometheus_tool("promtool")


def _find_prometheus_tool(name: str) -> Path | None:
    built = PROMETHEUS_DIST / name
    if os.access(built, os.X_OK):
        return built
    found = shutil.which(name)
    # Prometheus 2 (Debian's 2.42, say) lacks the OTLP receiver and the config this harness uses.
    if found and major_version(Path(found)) == 3:
        return Path(found)
    return None


@functools.cache
def major_version(binary: Path) -> int | None:
    """The major version a Prometheus or promtool binary reports (`--version`), None if it says none."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    match = re.search(r"version (\d+)\.\d+", out.stdout + out.stderr)
    return int(match.group(1)) if match else None


def require_otelcol() -> Path:
    found = find_otelcol()
    if found is None:
        raise MissingComponent(f"the OpenTelemetry Collector ({OTELCOL_BINARY}) is missing: {HOW_TO_GET_OTELCOL}")
    return found


def require_prometheus() -> Path:
    found = find_prometheus()
    if found is None:
        raise MissingComponent(f"Prometheus 3 is missing: {HOW_TO_GET_PROMETHEUS}")
    return found


def require_promtool() -> Path:
    found = find_promtool()
    if found is None:
        raise MissingComponent(f"promtool (Prometheus 3) is missing: {HOW_TO_GET_PROMETHEUS}")
    return found


def prometheus_argv(binary: Path, data_dir: Path, host: str, port: int, config: Path = PROMETHEUS_CONFIG) -> list[str]:
    return [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={host}:{port}",
        *prometheus_flags(),
    ]


@dataclass(frozen=True)
class CollectorPorts:
    otlp_grpc: int
    otlp_http: int
    metrics: int
    health: int


def collector_argv(binary: Path, *, tempo: bool = True) -> list[str]:
    """The collector's command line; `tempo=False` drops the Tempo exporter from the traces pipeline (the
    native stack has no Tempo: its queue would only hold spans for nobody, beside the metrics pipelines)."""
    argv = [str(binary), f"--config={OTELCOL_CONFIG}"]
    if not tempo:
        argv.append(f"--set=service::pipelines::traces::exporters=[{','.join(TRACE_EXPORTERS_WITHOUT_TEMPO)}]")
    return argv


# The traces pipeline's exporters in collector/otelcol.yaml, less otlp_grpc/tempo (a test checks the file).
TRACE_EXPORTERS_WITHOUT_TEMPO = ("file/traces", "span_metrics")


def collector_env(
    *,
    region: str,
    ports: CollectorPorts,
    remote_write_endpoint: str,
    tempo_endpoint: str,
    traces_file: Path,
    pop: str | None = None,
    host: str = "127.0.0.1",
    metrics_interval: str = "15s",
    memory_limit_mib: int = 400,
    log_level: str = "info",
    metrics_export: str = "remote_write",
    otlp_endpoint: str | None = None,
) -> dict[str, str]:
    """The environment collector/otelcol.yaml reads: everything that differs between regions."""
    env = {
        "REGION": region,
        "PROMETHEUS_REMOTE_WRITE_ENDPOINT": remote_write_endpoint,
        "TEMPO_OTLP_ENDPOINT": tempo_endpoint,
        "OTELCOL_HOST": host,
        "OTELCOL_OTLP_GRPC_PORT": str(ports.otlp_grpc),
        "OTELCOL_OTLP_HTTP_PORT": str(ports.otlp_http),
        "OTELCOL_METRICS_PORT": str(ports.metrics),
        "OTELCOL_HEALTH_PORT": str(ports.health),
        "OTELCOL_METRICS_INTERVAL": metrics_interval,
        "OTELCOL_MEMORY_LIMIT_MIB": str(memory_limit_mib),
        "OTELCOL_MEMORY_SPIKE_LIMIT_MIB": str(max(memory_limit_mib // 4, 1)),
        "OTELCOL_TRACES_FILE": str(traces_file),
        "OTELCOL_LOG_LEVEL": log_level,
        "PROMETHEUS_METRICS_EXPORTER": METRICS_EXPORTERS[metrics_export],
    }
    if otlp_endpoint is not None:
        env["PROMETHEUS_OTLP_ENDPOINT"] = otlp_endpoint
    if pop is not None:
        env["POP"] = pop
    return env


def base_env() -> dict[str, str]:
    """A clean environment for the binaries, so a developer's own REGION or OTEL_* variables do not leak in."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR", "LANG") if key in os.environ}
