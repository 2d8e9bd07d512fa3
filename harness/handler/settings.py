"""The handler's settings: one dataclass, filled from flags and EDGE_* environment variables alike."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting and its source."""


def _opt(env: str, help: str, **extra: Any) -> Any:
    return {"env": env, "help": help, **extra}


@dataclass(frozen=True)
class HandlerSettings:
    region: str = field(default="local", metadata=_opt("EDGE_REGION", "region this handler serves (cloud.region)"))
    pop: str = field(default="", metadata=_opt("EDGE_POP", "point of presence name (default: the region)"))
    host: str = field(default="127.0.0.1", metadata=_opt("EDGE_HOST", "address to bind"))
    port: int = field(default=8080, metadata=_opt("EDGE_PORT", "port to bind (0 picks a free one)"))
    model: str = field(
        default="models/mobilenetv2-int8.onnx",
        metadata=_opt("EDGE_MODEL", "ONNX image classifier: a path or an http(s) URL"),
    )
    model_sha256: str = field(
        default="", metadata=_opt("EDGE_MODEL_SHA256", "expected sha256 of the model file (verified on load)")
    )
    insecure_model_url: bool = field(
        default=False,
        metadata=_opt("EDGE_INSECURE_MODEL_URL", "allow an http(s) model without --model-sha256 (not verified)"),
    )
    model_max_bytes: int = field(
        default=256 * 1024 * 1024, metadata=_opt("EDGE_MODEL_MAX_BYTES", "largest model file downloaded or loaded")
    )
    model_download_timeout: float = field(
        default=60.0, metadata=_opt("EDGE_MODEL_DOWNLOAD_TIMEOUT", "seconds a whole model download may take")
    )
    model_redirects_anywhere: bool = field(
        default=False,
        metadata=_opt(
            "EDGE_MODEL_REDIRECTS_ANYWHERE", "follow a model URL's redirects to other hosts and from https to http"
        ),
    )
    model_cache: str = field(
        default=".cache/models", metadata=_opt("EDGE_MODEL_CACHE", "local cache for downloaded models")
    )
    threads: int = field(default=1, metadata=_opt("EDGE_THREADS", "ONNX Runtime intra-op threads per run"))
    concurrency: int = field(
        default=0, metadata=_opt("EDGE_CONCURRENCY", "requests processed at once (0: number of cores)")
    )
    queue: int = field(default=32, metadata=_opt("EDGE_QUEUE", "requests allowed to wait beyond the concurrency limit"))
    idle_timeout: float = field(
        default=0.0,
        metadata=_opt("EDGE_IDLE_TIMEOUT", "seconds idle before the model is released (0: never scale to zero)"),
    )
    load: str = field(
        default="eager",
        metadata=_opt(
            "EDGE_LOAD", "load the model at start (eager) or on the first request (lazy)", choices=("eager", "lazy")
        ),
    )
    otlp_endpoint: str = field(
        default="",
        metadata=_opt("EDGE_OTLP_ENDPOINT", "OTLP/HTTP collector base URL, e.g. http://127.0.0.1:4318 (empty: none)"),
    )
    telemetry: bool = field(
        default=True,
        metadata=_opt("EDGE_TELEMETRY", "record traces and metrics, in a process of its own (off only for benchmarks)"),
    )
    max_body_bytes: int = field(
        default=8 * 1024 * 1024, metadata=_opt("EDGE_MAX_BODY_BYTES", "largest request body accepted")
    )
    body_budget_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_opt(
            "EDGE_BODY_BUDGET_BYTES", "request body bytes held at once by all requests together (beyond: 503)"
        ),
    )
    body_timeout: float = field(
        default=30.0, metadata=_opt("EDGE_BODY_TIMEOUT", "seconds a request body may take to arrive (then 408)")
    )
    body_min_rate: int = field(
        default=8192,
        metadata=_opt("EDGE_BODY_MIN_RATE", "bytes per second a request body must arrive at, over each 2 s (then 408)"),
    )
    header_timeout: float = field(
        default=10.0, metadata=_opt("EDGE_HEADER_TIMEOUT", "seconds a request's headers may take to arrive (then 408)")
    )
    max_header_bytes: int = field(
        default=64 * 1024,
        metadata=_opt("EDGE_MAX_HEADER_BYTES", "bytes a request's line and headers may take together (beyond: 431)"),
    )
    max_connections: int = field(
        default=512, metadata=_opt("EDGE_MAX_CONNECTIONS", "open connections served (beyond: 503, then closed)")
    )
    max_image_pixels: int = field(
        default=8_000_000,
        metadata=_opt("EDGE_MAX_IMAGE_PIXELS", "largest image accepted, in pixels (a JPEG's after draft reduction)"),
    )
    decode_budget_bytes: int = field(
        default=256 * 1024 * 1024,
        metadata=_opt("EDGE_DECODE_BUDGET_BYTES", "bytes of decoded images held at once by all requests together"),
    )
    drain_timeout: float = field(
        default=10.0, metadata=_opt("EDGE_DRAIN_TIMEOUT", "seconds to finish in-flight requests on SIGTERM")
    )
    inject_delay_ms: float = field(
        default=0.0,
        metadata=_opt(
            "EDGE_INJECT_DELAY_MS",
            "fault injection: hold every classified image this many ms more before answering, counted in its "
            "duration and shown in Server-Timing as `injected` (SLO and alert drills; 0: off)",
        ),
    )
    service_name: str = field(
        default="edgeharness-handler", metadata=_opt("EDGE_SERVICE_NAME", "service.name of the telemetry")
    )
    start_strategy: str = field(
        default="plain",
        metadata=_opt(
            "EDGE_START_STRATEGY",
            "plain: this process serves; zygote: this process imports everything heavy, then forks serving "
            "processes (replacing one that crashes)",
            choices=("plain", "zygote"),
        ),
    )
    zygote_spawn: str = field(
        default="at-start",
        metadata=_opt(
            "EDGE_ZYGOTE_SPAWN",
            "zygote only: fork the serving process at once (at-start), or on SIGUSR1 (on-signal: scale from "
            "zero); SIGUSR2 stops it either way",
            choices=("at-start", "on-signal"),
        ),
    )

    def __post_init__(self) -> None:
        checks = [
            (self.region.strip() != "", "region", "must not be empty"),
            (0 <= self.port <= 65535, "port", "must be between 0 and 65535"),
            (self.threads >= 1, "threads", "must be at least 1"),
            (self.concurrency >= 0, "concurrency", "must be 0 (cores) or more"),
            (self.queue >= 0, "queue", "must be 0 or more"),
            (self.idle_timeout >= 0, "idle_timeout", "must be 0 (never) or more"),
            (self.load in ("eager", "lazy"), "load", "must be 'eager' or 'lazy'"),
            (self.max_body_bytes >= 1, "max_body_bytes", "must be at least 1"),
            (self.max_image_pixels >= 1, "max_image_pixels", "must be at least 1"),
            (self.body_budget_bytes >= 1, "body_budget_bytes", "must be at least 1"),
            (self.body_timeout > 0, "body_timeout", "must be more than 0"),
            (self.body_min_rate >= 0, "body_min_rate", "must be 0 (no minimum) or more"),
            (self.header_timeout > 0, "header_timeout", "must be more than 0"),
            (self.max_header_bytes >= 1, "max_header_bytes", "must be at least 1"),
            (self.max_connections >= 1, "max_connections", "must be at least 1"),
            (self.decode_budget_bytes >= 1, "decode_budget_bytes", "must be at least 1"),
            (self.model_max_bytes >= 1, "model_max_bytes", "must be at least 1"),
            (self.model_download_timeout > 0, "model_download_timeout", "must be more than 0"),
            (self.drain_timeout >= 0, "drain_timeout", "must be 0 or more"),
            (0 <= self.inject_delay_ms <= 60_000, "inject_delay_ms", "must be between 0 (off) and 60000"),
            (self.start_strategy in ("plain", "zygote"), "start_strategy", "must be 'plain' or 'zygote'"),
            (self.zygote_spawn in ("at-start", "on-signal"), "zygote_spawn", "must be 'at-start' or 'on-signal'"),
            (
                self.model_sha256 == "" or _is_sha256(self.model_sha256),
                "model_sha256",
                "must be 64 hex digits",
            ),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise SettingsError(f"setting {name} ({_env_name(name)}) {problem}: got {getattr(self, name)!r}")

    @property
    def pop_name(self) -> str:
        return self.pop or self.region

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    @property
    def cache_dir(self) -> Path:
        return Path(self.model_cache)


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _env_name(name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(HandlerSettings) if f.name == name)


def _convert(kind: type, raw: str, name: str, source: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{source} for {name}: cannot read {raw!r} as {kind.__name__} ({exc})") from exc


_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def _field_type(f: dataclasses.Field[Any]) -> type:
    return _TYPES[str(f.type)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; flags default to None so the environment and defaults can fill in."""
    for f in dataclasses.fields(HandlerSettings):
        kind = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {f.metadata['env']}; default {f.default!r}]"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                type=str,
                metavar=f.name.upper(),
                choices=f.metadata.get("choices"),
                help=help_text,
            )


def from_sources(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> HandlerSettings:
    """Flags win over environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(HandlerSettings):
        kind = _field_type(f)
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            flag = "--" + f.name.replace("_", "-")
            values[f.name] = (
                flag_value if isinstance(flag_value, bool) else _convert(kind, flag_value, f.name, f"flag {flag}")
            )
        elif f.metadata["env"] in environ:
            env = f.metadata["env"]
            values[f.name] = _convert(kind, environ[env], f.name, f"environment variable {env}")
    return HandlerSettings(**values)
