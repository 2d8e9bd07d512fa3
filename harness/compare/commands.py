"""`edgeharness compare BASELINE CURRENT`: did the current run regress against the baseline?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
exit codes (for CI): 0 no percentile regressed (no significant change, or improved),
1 a percentile regressed beyond its tolerance with confidence, 2 bad usage or runs that cannot be compared
(a missing results.json or raw/, no client region in common, an invalid or interrupted run without
--allow-invalid, a bad SLO file).

A percentile regressed when the whole bootstrap confidence interval of its change (current - baseline)
lies above the allowed change, max(--tolerance-ms, --tolerance-pct of the baseline's value); improved
when it lies below minus that; otherwise no significant change. Defaults come from the SLO file's
`regression:` section, else 0.2 ms and 5 %, p50 p90 p95 p99, client_latency_ms, at validity.confidence.
"""


def register(subparsers: Any) -> None:
    """Add `compare` to the CLI."""
    p = subparsers.add_parser(
        "compare",
        help="compare a run against a baseline run: per region and PoP, each percentile's change, regressed or not",
        description="Compare two run directories' raw samples per client region and PoP: each percentile's "
        "change with a seeded bootstrap confidence interval, judged against tolerances.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("baseline", type=Path, metavar="BASELINE", help="the baseline run directory")
    p.add_argument("current", type=Path, metavar="CURRENT", help="the run directory to judge")
    p.add_argument("--slo", default=None, metavar="FILE", help="SLO file whose `regression:` section sets defaults")
    p.add_argument("--metric", default=None, help="client_latency_ms (default), server_total_ms or e2e_latency_ms")
    p.add_argument("--percentiles", default=None, metavar="P,P", help="e.g. p50,p90 (default p50,p90,p95,p99)")
    p.add_argument("--tolerance-ms", type=float, default=None, metavar="MS", help="absolute tolerance (default 0.2)")
    p.add_argument("--tolerance-pct", type=float, default=None, metavar="PCT", help="relative tolerance (default 5)")
    p.add_argument("--confidence", type=float, default=None, help="of the intervals (default validity.confidence)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default 1)")
    p.add_argument("--allow-invalid", action="store_true", default=None, help="compare invalid or cut runs too")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from harness.compare.diff import EXIT_INCOMPARABLE, IncomparableRuns, compare_runs, load_run, options_from_slo
    from harness.compare.table import print_comparison
    from harness.load.yamlfile import ConfigError
    from harness.verdict.slo import load_slo

    try:
        if args.confidence is not None and not 0.5 < args.confidence < 1:
            raise ValueError("--confidence must be in (0.5, 1)")
        opts = options_from_slo(
            load_slo(args.slo),
            metric=args.metric,
            percentiles=tuple(p.strip() for p in args.percentiles.split(",")) if args.percentiles else None,
            tolerance_ms=args.tolerance_ms,
            tolerance_pct=args.tolerance_pct,
            confidence=args.confidence,
            resamples=args.resamples,
            seed=args.seed,
            allow_invalid=args.allow_invalid,
        )
        cmp = compare_runs(load_run(args.baseline), load_run(args.current), opts)
    except (ConfigError, IncomparableRuns, ValueError) as exc:
        print(f"edgeharness compare: {exc}", file=sys.stderr)
        return EXIT_INCOMPARABLE
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    print_comparison(cmp, console)
    if args.json:
        args.json.write_text(json.dumps(cmp.to_json(), indent=2), encoding="utf-8")
    return cmp.exit_code
