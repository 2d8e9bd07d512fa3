"""`edgeharness run` and `edgeharness sweep`: the main job and the capacity search."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

RUN_EPILOG = """\
exit codes: 0 every SLO passed, 1 an SLO failed, 2 invalid run or bad usage.

Distributed load: `--workers N` runs a Locust master and N workers on this machine. To spread workers
over several machines, run the master here with the plan it writes (OUT/plan.json), e.g.
  EDGE_PLAN=OUT/plan.json locust -f loadtests/locustfile.py --headless --master --expect-workers 4
and on each other machine, with the same plan file and repository:
  EDGE_PLAN=plan.json locust -f loadtests/locustfile.py --worker --master-host MASTER_IP
(or set EDGE_PROFILE, EDGE_TARGETS, EDGE_OUT, EDGE_INSTANCES_PER_REGION=4 instead of EDGE_PLAN). Set the
plan's start_at to null (or leave EDGE_PLAN out) unless the machines' clocks agree to the millisecond.
Each worker writes OUT/raw/samples-*.csv; copy them into one OUT/raw on this machine and run
`edgeharness rejudge OUT` to judge them together.
"""


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `run` and `sweep` to the CLI."""
    run = subparsers.add_parser(
        "run",
        help="the main job: start PoPs, drive a load profile, judge the SLOs, write the report",
        description="Start one handler per region on loopback (or use --target), drive a geographic load "
        "profile with Locust, check the SLOs and write results.json and report.html.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run)
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="use Locust master/worker mode with N local workers (default: one process)",
    )
    run.set_defaults(func=_run)

    rejudge = subparsers.add_parser(
        "rejudge",
        help="judge the samples of a run directory again (e.g. gathered from remote workers)",
        description="Read OUT/plan.json and OUT/raw/samples-*.csv, check the SLOs, rewrite results.json and "
        "report.html. Exit codes as for `run`.",
    )
    rejudge.add_argument("out", type=Path, metavar="OUT", help="a run directory")
    rejudge.add_argument("--slo", default=None, metavar="FILE", help="SLO file (default loadtests/slo/default.yaml)")
    rejudge.add_argument("--quiet", action="store_true")
    rejudge.set_defaults(func=_rejudge)

    sweep = subparsers.add_parser(
        "sweep",
        help="find the highest arrival rate at which a region's SLOs still hold",
        description="Search over arrival rates (each step a valid steady run) for the highest rate at "
        "which every SLO of REGION holds; report that capacity and the p50/p99-vs-rate curve.",
    )
    _common(sweep, default_profile="steady")
    sweep.add_argument("--region", default=None, help="client region to sweep (default: the profile's first)")
    sweep.add_argument("--start-rate", type=float, default=5.0, help="first rate tried, req/s (default 5)")
    sweep.add_argument("--max-rate", type=float, default=200.0, help="highest rate tried, req/s (default 200)")
    sweep.add_argument("--steps", type=int, default=6, help="most runs to make (default 6)")
    sweep.set_defaults(func=_sweep)


def _common(p: argparse.ArgumentParser, default_profile: str = "smoke") -> None:
    p.add_argument(
        "--profile",
        default=default_profile,
        metavar="NAME|FILE",
        help=f"load profile: a name from loadtests/profiles or a YAML file (default {default_profile})",
    )
    p.add_argument("--slo", default=None, metavar="FILE", help="SLO file (default loadtests/slo/default.yaml)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="override the profile's duration (its events scale with it)",
    )
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output directory (default runs/<time>)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="REGION=URL",
        help="test this endpoint as REGION's PoP instead of starting handlers (repeatable); images are "
        "POSTed to the URL's path, or to /v1/classify?top_k=5 when it has none",
    )
    p.add_argument("--rate", type=float, default=None, help="override the base arrival rate, req/s per region")
    p.add_argument(
        "--backend",
        choices=("handler", "testserver"),
        default="handler",
        help="what local PoPs run: the reference handler, or the known-latency test server",
    )
    p.add_argument(
        "--testserver-delay",
        default="lognormal:3:0.3",
        metavar="SPEC",
        help="test server latency: constant:MS | uniform:LO:HI | lognormal:MEDIAN:SIGMA",
    )
    p.add_argument("--model", default=None, help="model for local handlers (default models/mobilenetv2-int8.onnx)")
    p.add_argument("--regions-file", default=None, help="region catalogue (default: the packaged one)")
    p.add_argument("--seed", type=int, default=1, help="seed of the arrival schedules")
    p.add_argument(
        "--stack",
        default="",
        metavar="native|DIR",
        help="run against the telemetry pipeline: `native` starts one for this run (handler and collector "
        "per region, Prometheus; see `edgeharness up`), DIR uses a stack `edgeharness up --run-dir DIR` "
        "started; server-side percentiles then come from Prometheus too",
    )
    p.add_argument(
        "--client-otlp",
        default="",
        metavar="URL|REGION=URL,...",
        help="export client-side metrics by OTLP/HTTP: one collector, or one per client region "
        "(with --stack: each client region's own collector)",
    )
    p.add_argument("--quiet", action="store_true", help="only the verdict table")


def _settings(args: argparse.Namespace) -> Any:
    import time

    from harness.load.plan import parse_targets
    from harness.load.runner import DEFAULT_MODEL, RunSettings

    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    return RunSettings(
        profile=args.profile,
        slo=args.slo,
        duration_s=args.duration,
        out=out,
        targets=parse_targets(args.target),
        workers=getattr(args, "workers", 0),
        backend=args.backend,
        testserver_delay=args.testserver_delay,
        model=args.model or str(DEFAULT_MODEL),
        regions_file=args.regions_file,
        rate=args.rate,
        seed=args.seed,
        stack=args.stack,
        client_otlp=args.client_otlp,
        quiet=args.quiet,
    )


def _guard(fn: Any, args: argparse.Namespace) -> int:
    from harness.load.yamlfile import ConfigError

    try:
        return int(fn(args))
    except ConfigError as exc:
        print(f"edgeharness {args.command}: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"edgeharness {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception:
        # A crash is not a verdict: never let it exit 1 ("an SLO failed").
        import traceback

        traceback.print_exc()
        print(f"edgeharness {args.command}: internal error, no verdict", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    def go(a: argparse.Namespace) -> int:
        from harness.load.runner import run

        return run(_settings(a))

    return _guard(go, args)


def _rejudge(args: argparse.Namespace) -> int:
    def go(a: argparse.Namespace) -> int:
        from harness.load.runner import rejudge

        return rejudge(a.out, a.slo, a.quiet)

    return _guard(go, args)


def _sweep(args: argparse.Namespace) -> int:
    def go(a: argparse.Namespace) -> int:
        from harness.load.sweep import sweep

        return sweep(_settings(a), region=a.region, start_rate=a.start_rate, max_rate=a.max_rate, steps=a.steps)

    return _guard(go, args)
