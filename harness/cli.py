"""The `edgeharness` command line: the one composition root, each subcommand a small module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes `register(subparsers)`; it adds its subcommands and sets `func`. Heavy imports
# (onnxruntime, locust, ...) happen inside the functions, so `--help` and start-up stay fast.
COMMAND_MODULES = (
    "harness.model.commands",
    "harness.handler.commands",
    "harness.load.commands",
    "harness.stack.commands",
    "harness.dashboards_commands",
    "harness.slo_commands",
    "harness.verdict.commands",
    "harness.compare.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeharness",
        description=(
            "Load-test and observe latency-critical inference endpoints at the edge: drive geographic "
            "load, collect telemetry per region, and check SLOs such as p50 < 10 ms."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def _version() -> str:
    from harness import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
