"""`edgeharness slo rules`: Prometheus recording and burn-rate alerting rules from an SLO file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# The rule file the native stack and compose's Prometheus load (collector/prometheus.yml: rule_files).
DEFAULT_RULES = Path(__file__).resolve().parents[1] / "collector" / "rules" / "slo.yml"


def register(subparsers: Any) -> None:
    """Adds the `slo` command group."""
    parser = subparsers.add_parser("slo", help="SLO files beyond the load test")
    commands = parser.add_subparsers(dest="slo_command", metavar="COMMAND", required=True)
    rules = commands.add_parser(
        "rules",
        help="generate Prometheus SLI recording rules and multi-window burn-rate alerts from an SLO file",
        description=(
            "Per region: the fraction of bad requests (5xx; responses over a server_latency_ms threshold) over "
            "5m to 3d and the SLO window, the burn rate of the error budget (1 - objective), the budget left, "
            "and the SRE workbook's alerts (1h/5m at 14.4x and 6h/30m at 6x page; 1d/2h at 3x and 3d/6h at "
            "1x open a ticket)."
        ),
    )
    rules.add_argument("--slo", default=None, help="SLO file or shipped name (default loadtests/slo/default.yaml)")
    rules.add_argument(
        "--out", default=str(DEFAULT_RULES), help=f"rule file to write, '-' for stdout (default {DEFAULT_RULES})"
    )
    rules.add_argument("--check", action="store_true", help="exit 1 if --out differs from what the SLO file gives")
    rules.set_defaults(func=_rules)


def _rules(args: argparse.Namespace) -> int:
    from harness.slo_rules import RulesError, render
    from harness.verdict.slo import ConfigError, load_slo

    try:
        text = render(load_slo(args.slo))
    except (ConfigError, RulesError, OSError) as exc:
        print(f"edgeharness slo rules: {exc}", file=sys.stderr)
        return 2
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current == text:
            print(f"{out} is up to date")
            return 0
        print(f"{out} is out of date: run `edgeharness slo rules --out {out}`", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0
