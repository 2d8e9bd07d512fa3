"""What a native stack is made of: its regions, ports and paths (light: the CLI imports it for --help)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REGIONS = ("nairobi", "paris", "san-francisco")
DEFAULT_BASE_PORT = 19100
MODEL_FILE = "mobilenetv2-int8.onnx"


@dataclass(frozen=True)
class StackConfig:
    """The stack `up` starts: which regions, where it listens, where its files go."""

    regions: tuple[str, ...] = DEFAULT_REGIONS
    run_dir: Path = Path("runs/stack")
    host: str = "127.0.0.1"
    base_port: int = DEFAULT_BASE_PORT
    models_dir: Path = Path("models")
    model_file: str = MODEL_FILE
    idle_timeout_s: float = 0.0
    metrics_interval: str = "2s"
    handler_args: tuple[str, ...] = ()
    ready_timeout_s: float = 60.0
    # How the collectors send metrics to Prometheus: "remote_write" or "otlp" (Prometheus 3's OTLP receiver).
    metrics_export: str = "remote_write"
    # SLO file whose `edgeharness slo rules` Prometheus loads; None: the committed collector/rules/.
    slo_file: str | None = None
    # Region -> ms every classified image is held back (the handler's --inject-delay-ms): alert drills.
    inject_delay_ms: dict[str, float] = field(default_factory=dict)
