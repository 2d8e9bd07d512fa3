"""`edgeharness run` and `edgeharness sweep`: the main job and the capacity search."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

RUN_EPILOG = """\
exit codes: 0 every SLO passed, 1 an SLO failed, 2 invalid or inconclusive run (or bad usage),
3 interrupted (Ctrl-C, SIGTERM, a crashed Locust: results.json and report.html still written).

Distributed load: `--workers N` runs a Locust master and N workers on this machine. Workers on other
machines (one per city, say) join a master started by hand; they need only this repository, no shared
files: the master sends each its share of the plan, and they send their samples back as they go.
  EDGE_PROFILE=steady EDGE_TARGETS=paris=http://... EDGE_OUT=runs/geo \\
    locust -f loadtests/locustfile.py --headless --master --expect-workers 3
  edgeharness worker --region nairobi --master MASTER_HOST      # on a machine in Nairobi, and so on
A worker pinned to a region generates only that region's arrivals, and its network RTT is measured,
not emulated. The master writes OUT/raw, results.json and report.html, and exits with the verdict's code.
`edgeharness rejudge OUT` judges a run directory again, offline.
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
    from harness.report.extras import add_arguments

    add_arguments(run)
    run.set_defaults(func=_run)

    worker = subparsers.add_parser(
        "worker",
        help="a Locust worker for a master started elsewhere, optionally generating one region's arrivals",
        description="Run `locust --worker` with loadtests/locustfile.py against MASTER. With --region, the "
        "worker generates only that client region's arrivals and measures its own network RTT to the PoPs.",
    )
    worker.add_argument("--master", required=True, metavar="HOST[:PORT]", help="the master (port default 5557)")
    worker.add_argument("--region", default=None, help="the client region this worker generates (default: any)")
    worker.set_defaults(func=_worker)

    rejudge = subparsers.add_parser(
        "rejudge",
        help="judge the samples of a run directory again (e.g. gathered from remote workers)",
        description="Read OUT/plan.json and OUT/raw/samples-*.csv, check the SLOs, rewrite results.json and "
        "report.html. Exit codes as for `run`.",
    )
    rejudge.add_argument("out", type=Path, metavar="OUT", help="a run directory")
    rejudge.add_argument("--slo", default=None, metavar="FILE", help="SLO file (default loadtests/slo/default.yaml)")
    rejudge.add_argument("--quiet", action="store_true")
    add_arguments(rejudge)
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
    from harness.report.extras import extras_from_arguments

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
        **extras_from_arguments(args),
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
        from harness.report.extras import check_arguments

        check_arguments(a)  # a bad --pricing or --baseline fails now, not after the run
        return run(_settings(a))

    return _guard(go, args)


def parse_master(value: str) -> tuple[str, int]:
    """`host` or `host:port` (default port 5557, Locust's); ValueError says what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 5557
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad --master {value!r}: use HOST or HOST:PORT")
    return host, int(port)


def _worker(args: argparse.Namespace) -> int:
    import os

    from harness.load.processes import child_env, python
    from harness.load.runner import LOCUSTFILE

    try:
        host, port = parse_master(args.master)
    except ValueError as exc:
        print(f"edgeharness worker: {exc}", file=sys.stderr)
        return 2
    argv = [python(), "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", host]
    argv += ["--master-port", str(port), "--loglevel", "WARNING"]
    env = child_env({"EDGE_WORKER_REGION": args.region or ""})
    sys.stdout.flush()
    # Become the worker, so that signals (Ctrl-C, SIGTERM) reach Locust itself, which hands over its last
    # samples before it quits.
    os.execve(argv[0], argv, env)
    return 0  # not reached


def _rejudge(args: argparse.Namespace) -> int:
    def go(a: argparse.Namespace) -> int:
        from harness.load.runner import rejudge
        from harness.report.extras import check_arguments, extras_from_arguments

        check_arguments(a)
        return rejudge(a.out, a.slo, a.quiet, **extras_from_arguments(a))

    return _guard(go, args)


def _sweep(args: argparse.Namespace) -> int:
    def go(a: argparse.Namespace) -> int:
        from harness.load.sweep import sweep

        return sweep(_settings(a), region=a.region, start_rate=a.start_rate, max_rate=a.max_rate, steps=a.steps)

    return _guard(go, args)
