"""Edge load: every client region's open-model arrivals, driven by a named profile, judged at the end.

Configured by environment (so compose, a plain `locust -f` and `edgeharness run` use the same file):
  EDGE_PLAN     a plan JSON written by `edgeharness run` (it carries all of the below), or else
  EDGE_PROFILE  profile name or file (default smoke), EDGE_TARGETS `region=url,...`,
  EDGE_OUT      where samples and results go (default out), EDGE_DURATION seconds (optional),
  EDGE_SLO      the SLO file a plain Locust run is judged against (default loadtests/slo/default.yaml).
  EDGE_PRICING, EDGE_BASELINE, EDGE_JUNIT, EDGE_SUMMARY_MD  as `edgeharness run`'s --pricing, --baseline,
                --junit and --summary-md, for a plain Locust run (the plan of `edgeharness run` carries none).
  EDGE_WORKER_REGION  on `locust --worker`: generate only this client region's arrivals (a worker per city).
Run: locust -f loadtests/locustfile.py --headless  (or --master / --worker for distributed load).

Each load process (the one Locust process, or each worker) runs its share of the plan's seeded schedules
(harness.load.generator.LoadProcess), and hands its samples every couple of seconds to the gathering
process (itself, or the master over Locust's messages), which writes OUT/raw and, at the end, judges:
OUT/results.json and OUT/report.html, whether the run ended on time, was stopped, or lost a worker.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# The harness package lives beside loadtests/ when run from a checkout without installation.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gevent
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.load.gather import RUNNING, Gatherer, ProcessRecord, begin_output
from harness.load.plan import Assignment, Plan, assign, plan_from_env

LEAD_S = 3.0  # without a plan's start time, t=0 is this long after the test starts (assignments travel)
DONE_WAIT_S = 10.0  # how long the end waits for every load process's last samples
HELLO_WAIT_S = 5.0  # how long the start waits for every connected worker to say which region it serves
WATCH_EVERY_S = 1.0  # how often the master checks that Locust still hears every worker (its heartbeat: 1 s)
MISSING_GRACE_S = 8.0  # a worker Locust has marked missing (3 missed heartbeats) this long more is lost

_state: dict[str, Any] = {}


def plan() -> Plan:
    """The run plan, read once per process."""
    if "plan" not in _state:
        _state["plan"] = plan_from_env()
    return _state["plan"]


def corpus() -> list[tuple[str, str, bytes]]:
    """Request bodies: realistic photos in several sizes and formats, built once per process."""
    if "corpus" not in _state:
        from harness.images import photo_corpus

        cfg = plan().profile.get("corpus") or plan().corpus or {}
        sizes = tuple(tuple(s) for s in cfg.get("sizes", [(320, 240), (640, 480)]))
        formats = tuple(cfg.get("formats", ("jpeg", "png", "webp")))
        _state["corpus"] = photo_corpus(sizes=sizes, formats=formats)
    return _state["corpus"]


def t0() -> float:
    """Wall-clock time of the schedule's t=0 on the gathering process: the plan's, else LEAD_S after the
    test's start has shared the plan out (fixed by the first call once that is done)."""
    p = plan()
    if p.start_at is not None:
        return p.start_at
    return _state.setdefault("t0", time.time() + LEAD_S)


def schedule_end() -> float:
    """Wall-clock time by which every arrival is due and drained (never, while t=0 is not yet fixed)."""
    if plan().start_at is None and "t0" not in _state:
        return float("inf")
    prof = plan().profile
    return t0() + prof["duration_s"] + prof["drain_s"]


class LoadProcessUser(User):
    """Locust needs a user class. The arrivals do not come from users (each load process runs its whole
    share of the schedule itself, whatever the answers), so the shape spawns none."""

    wait_time = constant(1)

    @task
    def idle(self) -> None:
        gevent.sleep(1)


class ProfileShape(LoadTestShape):
    """Runs until the profile's schedule is due and drained, then waits (bounded) for every load
    process's last samples, judges, and ends the test."""

    def tick(self) -> tuple[int, float] | None:
        if time.time() < schedule_end():
            return 0, 1.0
        conclude(self.runner.environment if self.runner else None, "")
        return None


# -- the gathering side (a local Locust, or the master) ----------------------------------------------------


def gatherer() -> Gatherer:
    if "gatherer" not in _state:
        live = _state.get("live")
        _state["gatherer"] = Gatherer(plan().out_dir, on_rows=live.add_csv if live is not None else None)
    return _state["gatherer"]


def _new_live_figures() -> None:
    """Live per-region µs percentiles and SLO status for the web UI's tab (Locust rounds to milliseconds)."""
    from harness.load.webtab import LiveLatency
    from harness.verdict.slo import load_slo

    spec = load_slo(os.environ.get("EDGE_SLO") or None)
    thresholds = {r: spec.for_region(r).latency.get("client_latency_ms", {}) for r in plan().profile["regions"]}
    _state["live"] = LiveLatency(thresholds, spec.validity.confidence)


def _on_samples(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    gatherer().chunk(d["process"], int(d["seq"]), float(d["t_s"]), d["rows"], int(d["n"]), d.get("counters"))


def _on_done(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    gatherer().done(d["process"], d["state"], d.get("reason", ""))


def _on_hello(environment: Environment, msg: Any, **_: Any) -> None:
    _state.setdefault("hellos", {})[msg.node_id] = msg.data


def _expect(a: Assignment, host: str, measured: bool) -> None:
    gatherer().expect(
        ProcessRecord(
            name=a.name,
            shares={r: [s.slot, s.of] for r, s in a.shares.items()},
            planned=plan().planned(a),
            pinned=a.pinned,
            rtt_measured=measured,
            host=host,
        )
    )


def _start_master(environment: Environment) -> None:
    runner = environment.runner
    deadline = time.monotonic() + HELLO_WAIT_S
    while len(_state.get("hellos", {})) < runner.worker_count and time.monotonic() < deadline:
        gevent.sleep(0.05)
    hellos = sorted(_state.get("hellos", {}).items(), key=lambda kv: kv[1].get("index", 0))
    names = []
    for _, h in hellos:
        region = h.get("region") or None
        names.append((f"worker-{region}-{h['index']}" if region else f"worker-{h['index']}", region))
    assignments, orphans = assign(plan().profile["regions"], names)
    g = gatherer()
    g.ledger.orphans = orphans
    plan_data = asdict(plan())
    for (_, h), a in zip(hellos, assignments, strict=True):
        if a.pinned is not None and a.pinned not in plan().profile["regions"]:
            print(
                f"edgeharness: {a.name} is pinned to {a.pinned!r}, not a region of the profile "
                f"({', '.join(plan().profile['regions'])}): it generates nothing",
                file=sys.stderr,
            )
        _expect(a, h.get("host", ""), measured=a.pinned is not None)  # counting a long plan takes a while
    g.ledger.t0 = t0()  # so t=0 is fixed only now
    g.save()
    for (node_id, _), a in zip(hellos, assignments, strict=True):
        # The plan travels with the assignment: a worker needs no shared file system, only the locustfile.
        runner.send_message(
            "edge_assign",
            {"plan": plan_data, "assignment": a.to_dict(), "t0": plan().start_at, "start_in_s": t0() - time.time()},
            client_id=node_id,
        )
    for region in orphans:
        print(f"edgeharness: no load process generates region {region!r}", file=sys.stderr)
    names_by_node = {node_id: a.name for (node_id, _), a in zip(hellos, assignments, strict=True)}
    if "watchdog" in _state:  # a new test in the web UI: the last one's watchdog is done
        _state["watchdog"].kill()
    _state["watchdog"] = gevent.spawn(_watch_workers, runner, names_by_node)


def _watch_workers(runner: MasterRunner, names_by_node: dict[str, str]) -> None:
    """Lose a worker while the run goes on once Locust has not heard its heartbeats for MISSING_GRACE_S
    (killed, hung, disconnected), not only at the end: the reason says since when, and the end does not
    wait for it. A worker that answers again within the grace (a busy moment) is not lost."""
    from locust.runners import STATE_MISSING

    g = gatherer()
    missing_since: dict[str, float] = {}
    while True:
        gevent.sleep(WATCH_EVERY_S)
        heard = {node.id for node in runner.clients.values() if node.state != STATE_MISSING}
        now = time.time()
        for node_id, name in names_by_node.items():
            rec = g.ledger.processes.get(name)
            if rec is None or rec.state != RUNNING:
                continue
            if node_id in heard:
                missing_since.pop(node_id, None)
                continue
            since = missing_since.setdefault(node_id, now)
            if now - since < MISSING_GRACE_S:
                continue
            reason = (
                f"{name} stopped answering Locust's heartbeats (missing since t={since - t0():.1f} s, "
                f"{now - since:.0f} s: killed, hung or disconnected; {kept(rec)})"
            )
            g.lose(name, reason)
            print(f"edgeharness: {reason}", file=sys.stderr, flush=True)


def kept(rec: ProcessRecord) -> str:
    """What of a lost load process's samples the run keeps."""
    return "no samples" if rec.last_flush_t_s is None else f"samples up to t={rec.last_flush_t_s:.1f} s kept"


def conclude(environment: Environment | None, interrupted: str, wait: bool = True) -> None:
    """End the run, once: every load process hands its last samples over (bounded wait), those that
    do not are lost, and unless `edgeharness run` judges it, the run is judged here. With wait, return
    only when that is done."""
    if "gatherer" not in _state or environment is None:
        return
    if "conclusion" not in _state:
        _state["conclusion"] = gevent.spawn(_conclude, environment, interrupted)
    if wait:
        _state["conclusion"].join(timeout=DONE_WAIT_S + 60)


def _conclude(environment: Environment, interrupted: str) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.send_message("edge_finish", {"reason": interrupted})
    elif "process" in _state:
        _state["process"].finish(interrupted)
    g = gatherer()
    deadline = time.monotonic() + DONE_WAIT_S
    while not g.all_done() and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if "watchdog" in _state:
        _state["watchdog"].kill()
    for name, rec in g.ledger.processes.items():
        if rec.state == RUNNING:
            g.lose(name, f"{name} stopped reporting (died or disconnected; {kept(rec)})")
    if plan().judge:
        from harness.load.runner import judge_gathered

        _state["exit_code"] = judge_gathered(Path(plan().out_dir), plan(), interrupted or None)


# -- the generating side (a local Locust, or a worker) --------------------------------------------------


def _start_process(environment: Environment, a: Assignment, t0_wall: float, measure_rtt: bool) -> None:
    from harness.load.generator import LoadProcess

    telemetry = None
    if plan().client_otlp:
        from harness.load.client_telemetry import ClientTelemetry

        telemetry = ClientTelemetry.from_spec(plan().client_otlp, list(plan().routes))
    proc = LoadProcess(
        plan(),
        a,
        environment.runner.send_message,
        corpus(),
        fire=environment.events.request.fire,
        telemetry=telemetry,
        measure_rtt=measure_rtt,
    )
    _state["process"] = proc
    proc.start(t0_wall)

    def finish_when_done() -> None:
        gevent.joinall(proc.greenlets)
        if isinstance(environment.runner, WorkerRunner):
            proc.finish()

    gevent.spawn(finish_when_done)


def _on_assign(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    _state["plan"] = Plan(**d["plan"])
    a = Assignment.from_dict(d["assignment"])
    start = d["t0"] if d.get("t0") is not None else time.time() + float(d["start_in_s"])
    corpus()
    _start_process(environment, a, start, measure_rtt=a.pinned is not None)


def _on_finish(environment: Environment, msg: Any, **_: Any) -> None:
    if "process" in _state:
        gevent.spawn(_state["process"].finish, msg.data.get("reason", ""))


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if runner is None:
        return
    if isinstance(runner, WorkerRunner):
        runner.register_message("edge_assign", _on_assign)
        runner.register_message("edge_finish", _on_finish)
        region = os.environ.get("EDGE_WORKER_REGION", "").strip() or None
        import socket

        runner.send_message(
            "edge_hello", {"region": region, "index": runner.worker_index, "host": socket.gethostname()}
        )
        return
    try:
        plan()
        if plan().judge:
            from harness.verdict.slo import load_slo

            load_slo(os.environ.get("EDGE_SLO") or None)  # a bad SLO file is refused now, not after the run
            from types import SimpleNamespace

            from harness.report.extras import check_arguments, extras_from_environment

            # So are a bad pricing file or baseline (EDGE_PRICING, EDGE_BASELINE).
            check_arguments(SimpleNamespace(**extras_from_environment(os.environ), out=plan().out_dir))
    except Exception as exc:  # a ConfigError names file and line; anything else is as bad here
        print(f"edgeharness: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    runner.register_message("edge_samples", _on_samples)
    runner.register_message("edge_done", _on_done)
    if environment.web_ui is not None:
        from harness.load.webtab import install

        _new_live_figures()
        install(environment, lambda: _state["live"].rows() if "live" in _state else [])
    if isinstance(runner, MasterRunner):
        runner.register_message("edge_hello", _on_hello)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    if "conclusion" in _state:
        # Another test in the same web UI session: a fresh schedule, ledger and verdict.
        for key in ("gatherer", "conclusion", "t0", "exit_code", "process", "live"):
            _state.pop(key, None)
        if environment.web_ui is not None:
            _new_live_figures()
    elif "gatherer" in _state:
        return
    out = Path(plan().out_dir)
    if plan().judge:
        begin_output(out)
    if not (out / "plan.json").exists():
        # Built from EDGE_* variables (compose): keep it beside the samples for `edgeharness rejudge`.
        plan().save(out / "plan.json")
    if isinstance(runner, MasterRunner):
        _start_master(environment)
        return
    (a,), _ = assign(plan().profile["regions"], [("local", None)])
    g = gatherer()
    corpus()  # build the bodies before t=0, not during the first arrivals
    _expect(a, "", measured=False)
    g.ledger.t0 = t0()  # fixed once the preparations are done
    g.save()
    _start_process(environment, a, t0(), measure_rtt=False)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        if "process" in _state:
            _state["process"].finish("the master stopped the test")
        return
    cut = "" if time.time() >= schedule_end() else "the test was stopped before the schedule's end"
    conclude(environment, cut, wait=False)  # may run in Locust's message loop: never block it


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        if "process" in _state:
            _state["process"].finish("the worker was stopped")
        return
    cut = "" if time.time() >= schedule_end() else "Locust was stopped before the schedule's end"
    conclude(environment, cut)
    code = _state.get("exit_code")
    if code is not None and environment.process_exit_code is None:
        environment.process_exit_code = code
