"""`edgeharness up`, `down`, `status`: the native stack from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.stack.config import DEFAULT_BASE_PORT, DEFAULT_REGIONS

RUN_DIR_HELP = "folder for the stack's state, logs, traces and Prometheus data"


def register(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up",
        help="start the native stack: model server, a handler and a collector per region, Prometheus",
        description=(
            "Start the telemetry pipeline as local processes on loopback, from the same config files "
            "compose.yaml mounts (collector/otelcol.yaml, collector/prometheus.yml). Needs collector/dist/otelcol "
            "(`make collector`) and Prometheus 3 (`make prometheus` builds collector/dist/prometheus/)."
        ),
    )
    up.add_argument("--regions", default=",".join(DEFAULT_REGIONS), help="comma-separated regions")
    up.add_argument("--run-dir", type=Path, default=Path("runs/stack"), help=RUN_DIR_HELP)
    up.add_argument("--host", default="127.0.0.1", help="address every service binds")
    up.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help="Prometheus listens here, the model server on +1, region i on +10*(i+1) .. +14",
    )
    up.add_argument("--models-dir", type=Path, default=Path("models"), help="what the model server serves")
    up.add_argument("--idle-timeout", type=float, default=0.0, help="handlers' scale-to-zero timeout, seconds")
    up.add_argument(
        "--metrics-export",
        choices=("remote_write", "otlp"),
        default="remote_write",
        help="how collectors send metrics to Prometheus: remote write, or OTLP to Prometheus 3's OTLP receiver",
    )
    up.add_argument(
        "--slo",
        default=None,
        help="load SLI and burn-rate rules generated from this SLO file (default: collector/rules/slo.yml)",
    )
    up.add_argument(
        "--inject-delay",
        action="append",
        default=[],
        metavar="REGION=MS",
        help="hold every image REGION's handler classifies MS ms more (an alert drill: watch its burn-rate "
        "alerts fire); repeatable",
    )
    up.set_defaults(func=_up)

    down = subparsers.add_parser("down", help="stop the native stack started by `up`")
    down.add_argument("--run-dir", type=Path, default=Path("runs/stack"), help=RUN_DIR_HELP)
    down.set_defaults(func=_down)

    status = subparsers.add_parser("status", help="show what the native stack runs and whether it is healthy")
    status.add_argument("--run-dir", type=Path, default=Path("runs/stack"), help=RUN_DIR_HELP)
    status.set_defaults(func=_status)


def _up(args: argparse.Namespace) -> int:
    from harness.stack.components import MissingComponent
    from harness.stack.config import StackConfig
    from harness.stack.native import StackError, up

    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    if not regions:
        print("edgeharness up: --regions names no region", file=sys.stderr)
        return 2
    delays: dict[str, float] = {}
    for item in args.inject_delay:
        region, _, ms = item.partition("=")
        try:
            delays[region.strip()] = float(ms)
        except ValueError:
            print(f"edgeharness up: --inject-delay {item!r}: expected REGION=MS, e.g. paris=50", file=sys.stderr)
            return 2
    config = StackConfig(regions=regions, run_dir=args.run_dir, host=args.host, base_port=args.base_port,
                         models_dir=args.models_dir, idle_timeout_s=args.idle_timeout,
                         metrics_export=args.metrics_export, slo_file=args.slo,
                         inject_delay_ms=delays)  # fmt: skip
    try:
        stack = up(config)
    except (StackError, MissingComponent) as exc:
        print(f"edgeharness up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeharness up: interrupted; stopped what it had started", file=sys.stderr)
        return 130
    for svc in stack.services:
        print(f"{svc.name:<26} {svc.url:<28} log {svc.log}")
    print(f"stack up ({len(stack.services)} processes); stop it with `edgeharness down --run-dir {args.run_dir}`")
    return 0


def _down(args: argparse.Namespace) -> int:
    from harness.stack.native import StackError, down

    try:
        stopped = down(args.run_dir)
    except StackError as exc:
        print(f"edgeharness down: {exc}", file=sys.stderr)
        return 2
    print(f"stopped {len(stopped)} processes" + (f": {', '.join(stopped)}" if stopped else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    from harness.stack.native import StackError, status

    try:
        rows = status(args.run_dir)
    except StackError as exc:
        print(f"edgeharness status: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        state = "healthy" if row["healthy"] else ("running, unhealthy" if row["running"] else "not running")
        print(f"{row['name']:<26} {row['url']:<28} pid {row['pid']:<8} {state}")
    return 0 if all(row["healthy"] for row in rows) else 1
