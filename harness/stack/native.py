"""`edgeharness up/down/status`: the whole pipeline as local processes, from the files compose mounts.

A model server (the handlers fetch their model over HTTP from it, as from a CDN), one handler and one
collector per region, and Prometheus, all on loopback. `up` records each process in RUN_DIR/stack.json as
soon as it starts (its pid, start time and command line), so `down` and `status` work from another
process, and `down` signals only processes that are still the ones `up` started. Every child gets an
explicit environment, nothing of the caller's beyond PATH, HOME, TMPDIR and LANG.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.load.processes import Child, Supervisor, http_ok, wait_ready
from harness.stack import components as c
from harness.stack.config import StackConfig

STATE_FILE = "stack.json"
# What a service's command line holds, for a stack.json written before start times were recorded.
LEGACY_COMMANDS = {
    "prometheus": ("prometheus",),
    "collector": ("otelcol",),
    "model-server": ("-m", "http.server"),
    "handler": ("-m", "harness", "serve"),
}

logger = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The stack cannot start or be found; the message says what and how to fix it."""


@dataclass
class Service:
    """One process of the stack: how to reach it and whether it is healthy."""

    name: str
    kind: str  # "prometheus", "model-server", "collector", "handler"
    region: str | None
    url: str
    health_url: str
    log: str
    pid: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    # Who the pid was when `up` started it: its start time (clock ticks after boot) and command line.
    started_ticks: int = 0
    cmdline: list[str] = field(default_factory=list)


@dataclass
class StackLayout:
    """The ports and services of a stack before anything starts."""

    config: StackConfig
    prometheus_port: int
    model_port: int
    collectors: dict[str, c.CollectorPorts]
    handlers: dict[str, int]

    @classmethod
    def for_config(cls, config: StackConfig) -> StackLayout:
        base = config.base_port
        collectors, handlers = {}, {}
        for i, region in enumerate(config.regions):
            first = base + 10 * (i + 1)
            handlers[region] = first
            collectors[region] = c.CollectorPorts(
                otlp_grpc=first + 1, otlp_http=first + 2, metrics=first + 3, health=first + 4
            )
        return cls(config, prometheus_port=base, model_port=base + 1, collectors=collectors, handlers=handlers)

    def all_ports(self) -> list[tuple[int, str]]:
        ports = [(self.prometheus_port, "Prometheus"), (self.model_port, "model server")]
        for region in self.config.regions:
            ports.append((self.handlers[region], f"handler {region}"))
            for name, port in asdict(self.collectors[region]).items():
                ports.append((port, f"collector {region} {name}"))
        return ports

    def check_ports_free(self) -> None:
        """A clear error naming the port and its role, before anything starts."""
        for port, role in self.all_ports():
            if not 0 < port < 65536:
                raise StackError(f"port {port} for {role} is out of range; choose another --base-port")
            with socket.socket() as sock:
                # As the servers themselves bind (Go's listeners and uvicorn set SO_REUSEADDR): a port
                # left only with closed connections waiting out TIME_WAIT is free to them, so not "in use".
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.config.host, port))
                except OSError as exc:
                    raise StackError(
                        f"port {port} ({role}) on {self.config.host} is in use: {exc.strerror}; "
                        f"stop what holds it or choose another --base-port"
                    ) from None

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.config.host}:{self.prometheus_port}"

    def handler_url(self, region: str) -> str:
        return f"http://{self.config.host}:{self.handlers[region]}"


def _model_sha256(models_dir: Path, model_file: str) -> str | None:
    manifest = models_dir / model_file.replace(".onnx", ".manifest.json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(manifest.read_text())["sha256"])
    return None


class NativeStack:
    """Starts the services of a plan in order, waiting for each to be healthy."""

    def __init__(self, config: StackConfig, supervisor: Supervisor) -> None:
        self.config = config
        self.plan = StackLayout.for_config(config)
        self.sup = supervisor
        self.services: list[Service] = []
        self._launch: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._children: dict[str, Child] = {}
        self.run_dir = config.run_dir.resolve()
        self.logs = self.run_dir / "logs"

    def traces_file(self, region: str) -> Path:
        return self.run_dir / "traces" / f"{region}.jsonl"

    def prometheus_config(self) -> Path:
        """collector/prometheus.yml, or, with an SLO file, a copy beside the rules generated from it
        (rule_files are relative to the config file)."""
        if self.config.slo_file is None:
            return c.PROMETHEUS_CONFIG
        from harness.slo_rules import RulesError, render
        from harness.verdict.slo import ConfigError, load_slo

        try:
            rules = render(load_slo(self.config.slo_file))
        except (ConfigError, RulesError, OSError) as exc:
            raise StackError(f"SLO rules from {self.config.slo_file}: {exc}") from None
        folder = self.run_dir / "prometheus"
        (folder / "rules").mkdir(parents=True, exist_ok=True)
        (folder / "rules" / "slo.yml").write_text(rules, encoding="utf-8")
        config = folder / "prometheus.yml"
        config.write_text(c.PROMETHEUS_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
        return config

    def start(self) -> list[Service]:
        if self.config.metrics_export not in c.METRICS_EXPORTERS:
            raise StackError(f"metrics export {self.config.metrics_export!r}: one of {', '.join(c.METRICS_EXPORTERS)}")
        unknown = sorted(set(self.config.inject_delay_ms) - set(self.config.regions))
        if unknown:
            raise StackError(f"injected delay for {', '.join(unknown)}: not a region of this stack")
        from harness.handler.settings import HandlerSettings, SettingsError

        for region, ms in self.config.inject_delay_ms.items():
            try:  # the handler's own check, so that a handler is never started to fail on it
                HandlerSettings(inject_delay_ms=ms)
            except SettingsError as exc:
                raise StackError(f"{region}: {exc}") from None
        otelcol = c.require_otelcol()
        prometheus = c.require_prometheus()
        model = self.config.models_dir / self.config.model_file
        if not model.exists():
            raise StackError(
                f"model {model} not found: build it with `edgeharness model build --out "
                f"{self.config.models_dir}` (or `make setup`)"
            )
        self.plan.check_ports_free()
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "traces").mkdir(exist_ok=True)
        host = self.config.host

        prom = self.plan.prometheus_url
        self._start(
            Service("prometheus", "prometheus", None, prom, f"{prom}/-/ready", str(self.logs / "prometheus.log"),
                    ports={"http": self.plan.prometheus_port}),
            c.prometheus_argv(prometheus, self.run_dir / "prometheus-data", host, self.plan.prometheus_port,
                              self.prometheus_config()),
            c.base_env(),
        )  # fmt: skip
        models_url = f"http://{host}:{self.plan.model_port}"
        self._start(
            Service("model-server", "model-server", None, models_url, f"{models_url}/{self.config.model_file}",
                    str(self.logs / "model-server.log"), ports={"http": self.plan.model_port}),
            [sys.executable, "-m", "http.server", str(self.plan.model_port), "--bind", host,
             "--directory", str(self.config.models_dir.resolve())],
            c.base_env(),
        )  # fmt: skip
        # No Tempo natively: traces go to the file exporter (and span metrics), and the collector runs
        # without its Tempo exporter (collector_argv), whose queue would otherwise fill with spans for
        # nobody. The config still names an endpoint for it: a closed port.
        dead_tempo = f"{host}:{self.plan.config.base_port + 9}"
        for region in self.config.regions:
            ports = self.plan.collectors[region]
            env = c.collector_env(
                region=region, ports=ports, remote_write_endpoint=f"{prom}/api/v1/write",
                tempo_endpoint=dead_tempo, traces_file=self.traces_file(region), host=host,
                metrics_interval=self.config.metrics_interval, metrics_export=self.config.metrics_export,
                otlp_endpoint=f"{prom}/api/v1/otlp",
            )  # fmt: skip
            self._start(
                Service(f"collector-{region}", "collector", region, f"http://{host}:{ports.otlp_http}",
                        f"http://{host}:{ports.health}/", str(self.logs / f"collector-{region}.log"),
                        ports=asdict(ports)),
                c.collector_argv(otelcol, tempo=False), {**c.base_env(), **env},
            )  # fmt: skip
        sha = _model_sha256(self.config.models_dir, self.config.model_file)
        for region in self.config.regions:
            port = self.plan.handlers[region]
            env = {
                **c.base_env(),
                "EDGE_REGION": region,
                "EDGE_HOST": host,
                "EDGE_PORT": str(port),
                "EDGE_MODEL": f"{models_url}/{self.config.model_file}",
                "EDGE_MODEL_SHA256": sha or "",
                # Each PoP keeps its own cache, as separate edge nodes would.
                "EDGE_MODEL_CACHE": str(self.run_dir / "cache" / region),
                "EDGE_OTLP_ENDPOINT": f"http://{host}:{self.plan.collectors[region].otlp_http}",
                "EDGE_IDLE_TIMEOUT": str(self.config.idle_timeout_s),
            }
            if region in self.config.inject_delay_ms:
                env["EDGE_INJECT_DELAY_MS"] = repr(float(self.config.inject_delay_ms[region]))
            url = self.plan.handler_url(region)
            self._start(
                Service(f"handler-{region}", "handler", region, url, f"{url}/readyz",
                        str(self.logs / f"handler-{region}.log"), ports={"http": port}),
                [sys.executable, "-m", "harness", "serve", *self.config.handler_args], env,
            )  # fmt: skip
        self.write_state()
        return self.services

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise StackError(f"no service {name!r} in this stack ({', '.join(s.name for s in self.services)})")

    def kill(self, name: str) -> None:
        """SIGKILL one service: a crash, for fault tests."""
        self._children[name].kill()

    def restart(self, name: str) -> None:
        """Start a stopped or killed service again, with the same ports, and wait until it is healthy."""
        svc = self.service(name)
        child = self._children[name]
        if child.alive():
            child.stop()
        argv, env = self._launch[name]
        self._spawn(svc, argv, env)
        self.write_state()

    def _start(self, service: Service, argv: list[str], env: dict[str, str]) -> None:
        self.services.append(service)
        self._launch[service.name] = (argv, env)
        self._spawn(service, argv, env)

    def _spawn(self, service: Service, argv: list[str], env: dict[str, str]) -> None:
        child = self.sup.start(service.name, argv, log_path=Path(service.log), env=env, inherit_env=False)
        self._children[service.name] = child
        service.pid = child.proc.pid
        # The command line is the argv given, not /proc's: right after the fork the child may not have
        # exec'd yet, and would show ours. The start time is the process's own, the same before and after.
        service.started_ticks = (process_identity(child.proc.pid) or (0, []))[0]
        service.cmdline = list(argv)
        # Recorded before waiting for it: an `up` killed now leaves a state `down` can clean up after.
        self.write_state()
        try:
            wait_ready(service.health_url, child, self.config.ready_timeout_s, path="")
        except RuntimeError as exc:
            raise StackError(f"{service.name} did not become healthy (log: {service.log}): {exc}") from None

    def write_state(self) -> None:
        # Written whole, then renamed: `down`, `status` or an interrupted `up` never reads half a file.
        path = self.run_dir / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state_of(self), indent=2))
        os.replace(tmp, path)


def state_of(stack: NativeStack) -> dict[str, Any]:
    """What `up` records in stack.json: enough for `down`, `status` and `run --stack DIR`."""
    config = stack.config
    return {
        "started_at": time.time(),
        "config": {**asdict(config), "run_dir": str(config.run_dir), "models_dir": str(config.models_dir)},
        "prometheus": stack.plan.prometheus_url,
        "services": [asdict(s) for s in stack.services],
    }


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StackError(f"no stack recorded in {run_dir} ({path} missing): start one with `edgeharness up`") from None
    except ValueError as exc:
        raise StackError(f"{path} is not valid JSON ({exc}); remove it and stop the processes by hand") from None


def process_identity(pid: int) -> tuple[int, list[str]] | None:
    """(start time in clock ticks after boot, command line) of a running process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [arg.decode(errors="replace") for arg in f.read().split(b"\0")[:-1]]
    except (OSError, ValueError, IndexError):
        return None
    return started, cmdline


def is_ours(svc: dict[str, Any]) -> bool:
    """The recorded process runs and is still the one `up` started: same start time, same command line.
    (A pid is reused once its process has gone; signalling a stranger's would be a bad `down`.)"""
    if not alive(svc["pid"]):
        return False
    identity = process_identity(svc["pid"])
    if identity is None:
        return False
    if not svc.get("started_ticks") or not svc.get("cmdline"):
        return _legacy_match(svc, identity[1])
    return identity == (svc.get("started_ticks"), svc.get("cmdline"))


def _legacy_match(svc: dict[str, Any], cmdline: list[str]) -> bool:
    """A service recorded by an older `up`, without start time or command line: its pid's command line is
    checked against what such a service runs (weaker: a reused pid running the same program passes)."""
    wanted = LEGACY_COMMANDS.get(svc.get("kind", ""))
    if wanted is None:
        return False
    program = [Path(cmdline[0]).name, *cmdline[1:]] if cmdline else []
    if len(wanted) == 1:
        matched = bool(program) and wanted[0] in program[0]
    else:
        matched = any(program[i : i + len(wanted)] == list(wanted) for i in range(len(program)))
    logger.warning(
        "%s (pid %s): %s records no start time or command line (an older edgeharness wrote it); only the "
        "pid's command line was checked: %s",
        svc.get("name"),
        svc.get("pid"),
        STATE_FILE,
        "it runs the expected program" if matched else "it runs something else, left alone",
    )
    return matched


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (exited, not yet reaped: gone, as far as we care)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def status(run_dir: Path) -> list[dict[str, Any]]:
    """Each recorded service: running (its process exists) and healthy (its health URL answers)."""
    state = load_state(run_dir)
    rows = []
    for svc in state["services"]:
        running = is_ours(svc)
        rows.append({**svc, "running": running, "healthy": running and http_ok(svc["health_url"])})
    return rows


def down(run_dir: Path, timeout_s: float = 15.0) -> list[str]:
    """Stop every recorded service that is still the process `up` started (its whole process group), newest
    first; returns what it stopped. A pid now held by another process is left alone."""
    state = load_state(run_dir)
    stopped = []
    services = [svc for svc in reversed(state["services"]) if is_ours(svc)]
    for svc in services:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(svc["pid"], signal.SIGTERM)
        stopped.append(svc["name"])
    deadline = time.monotonic() + timeout_s
    for svc in services:
        while is_ours(svc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_ours(svc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(svc["pid"], signal.SIGKILL)
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def start_for_run(sup: Supervisor, regions: tuple[str, ...], run_dir: Path, idle_timeout_s: float) -> NativeStack:
    """A stack for one run, under the run's supervisor (stopped with the run), on a free port range."""
    last: Exception | None = None
    for _attempt in range(8):
        base = random.randrange(20000, 50000, 100)
        config = StackConfig(regions=regions, run_dir=run_dir, base_port=base, idle_timeout_s=idle_timeout_s)
        try:
            StackLayout.for_config(config).check_ports_free()
        except StackError as exc:
            last = exc
            continue
        stack = NativeStack(config, sup)
        stack.start()
        return stack
    raise StackError(f"no free port range for the native stack: {last}")


def up(config: StackConfig) -> NativeStack:
    """Start the stack and leave it running (for `edgeharness up`); stops what it started on failure."""
    run_dir = config.run_dir
    if (run_dir / STATE_FILE).exists() and any(row["running"] for row in status(run_dir)):
        raise StackError(f"a stack is already running from {run_dir}: `edgeharness down --run-dir {run_dir}` first")
    sup = Supervisor()
    stack = NativeStack(config, sup)
    # Ctrl-C, SIGTERM and SIGHUP (a closed terminal) interrupt the start, so that what it started is
    # stopped: an interrupted `up` leaves nothing running.
    previous = {sig: signal.getsignal(sig) for sig in INTERRUPTS}
    for sig in INTERRUPTS:
        signal.signal(sig, _interrupt)
    try:
        stack.start()
    except BaseException:
        # A second Ctrl-C or signal must not cut the clean-up short and leave processes running (an
        # interrupt has ignored them already, from its handler: no window between the two).
        for sig in INTERRUPTS:
            signal.signal(sig, _ignore)
        sup.stop_all()
        (run_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stack


INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, _frame: object) -> None:
    for sig in INTERRUPTS:
        signal.signal(sig, _ignore)
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore(_signum: int, _frame: object) -> None:
    """Ignores an interrupt (a Python handler, not SIG_IGN: one already pending is dropped quietly)."""
