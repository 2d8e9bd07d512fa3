"""`edgeharness dashboards build [--check]`: regenerate the committed Grafana dashboard JSON from its code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Adds the `dashboards` command group."""
    parser = subparsers.add_parser("dashboards", help="Grafana dashboards as code")
    commands = parser.add_subparsers(dest="dashboards_command", metavar="COMMAND", required=True)
    build = commands.add_parser(
        "build",
        help="write dashboards/edge-overview.json from dashboards/edge_overview.py",
        description="Regenerate the dashboard JSON that Grafana provisions; --check only compares.",
    )
    build.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    build.add_argument("--code", type=Path, default=None, help="dashboard code (default dashboards/edge_overview.py)")
    build.add_argument("--out", type=Path, default=None, help="JSON to write (default dashboards/edge-overview.json)")
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from harness import dashboards

    code = args.code or dashboards.DASHBOARD_CODE
    out = args.out or dashboards.DASHBOARD_JSON
    if args.check:
        if dashboards.is_up_to_date(out, code):
            print(f"{out} is up to date")
            return 0
        print(f"{out} is out of date: run `edgeharness dashboards build`", file=sys.stderr)
        return 1
    dashboards.write_dashboard(out, code)
    print(f"wrote {out}")
    return 0
