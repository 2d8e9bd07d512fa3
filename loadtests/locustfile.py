"""Edge load: one open-model arrival user per client region, driven by a named profile.

Configured by environment (so compose and `edgeharness run` use the same file):
  EDGE_PLAN     a plan JSON written by `edgeharness run` (it carries all of the below), or else
  EDGE_PROFILE  profile name or file (default smoke), EDGE_TARGETS `region=url,...`,
  EDGE_OUT      where samples go (default out), EDGE_DURATION seconds (optional),
  EDGE_INSTANCES_PER_REGION  how many load processes share each region's arrivals (= workers).
Run: locust -f loadtests/locustfile.py --headless  (or --master / --worker for distributed load).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

# The harness package lives beside loadtests/ when run from a checkout without installation.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gevent
from locust import LoadTestShape, User, events
from locust.env import Environment

from harness.load.generator import ArrivalLoop, PopHealth, Recorder, process_tag
from harness.load.plan import Plan, plan_from_env

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
    """Wall-clock time of the schedule's t=0: the plan's, else this process's test start + 1 s."""
    p = plan()
    if p.start_at is not None:
        return p.start_at
    return _state.setdefault("t0", time.time() + 1.0)


class RegionUser(User):
    """Base class: runs its region's arrival loop once, then idles until the run stops."""

    abstract = True
    region = ""

    def on_start(self) -> None:
        idx = _state.setdefault("instance", 0)
        _state["instance"] = idx + 1
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", None)
        instance = idx + 1000 * (worker or 0)
        self.loop = ArrivalLoop(
            plan(),
            self.region,
            _state["recorder"],
            _state["health"],
            corpus(),
            instance,
            fire=self.environment.events.request.fire,
        )

    def on_stop(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.close()

    def run_loop(self) -> None:
        """The one task: send the whole schedule, then wait for the run to end."""
        if not getattr(self, "done", False):
            self.loop.run(t0())
            self.done = True
        gevent.sleep(0.5)

    tasks = [run_loop]  # noqa: RUF012 - locust's own protocol


def _define_users() -> list[type[User]]:
    # Locust finds user classes among this module's globals, so they are made here, one per region.
    try:
        p = plan()
    except Exception as exc:  # a bad plan must not hide `locust --help`
        print(f"edgeharness: cannot build the load plan: {exc}", file=sys.stderr)
        return []
    classes: list[type[User]] = []
    for region in p.profile["regions"]:
        name = "Users_" + region.replace("-", "_")
        cls = type(
            name, (RegionUser,), {"region": region, "fixed_count": p.instances_per_region, "__module__": __name__}
        )
        globals()[name] = cls
        classes.append(cls)
    return classes


USER_CLASSES = _define_users()


class ProfileShape(LoadTestShape):
    """Spawns one arrival user per region (per load process), and ends the run when the profile does."""

    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        p = plan()
        if "shape_end" not in _state:
            lead = max(0.0, t0() - time.time())
            _state["shape_end"] = self.get_run_time() + lead + p.profile["duration_s"] + p.profile["drain_s"] + 1
        if self.get_run_time() > _state["shape_end"]:
            return None
        n = len(USER_CLASSES) * p.instances_per_region
        return n, float(n), USER_CLASSES


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    _state["recorder"] = Recorder()
    if USER_CLASSES and plan().client_otlp:
        from harness.load.client_telemetry import ClientTelemetry

        _state["recorder"].telemetry = ClientTelemetry.from_spec(plan().client_otlp, list(plan().routes))
    _state["health"] = PopHealth(plan().targets) if USER_CLASSES else None


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    from locust.runners import MasterRunner

    out = Path(plan().out_dir)
    if not (out / "plan.json").exists():
        # Built from EDGE_* variables (compose): keep it beside the samples for `edgeharness rejudge`.
        out.mkdir(parents=True, exist_ok=True)
        plan().save(out / "plan.json")
    if isinstance(environment.runner, MasterRunner):
        return
    corpus()  # build the bodies before t=0, not during the first arrivals
    worker = getattr(environment.runner, "worker_index", None)
    _state["tag"] = process_tag(worker)

    def progress() -> None:
        start = t0()
        while True:
            _state["recorder"].write_progress(plan().out_dir, _state["tag"], time.time() - start)
            gevent.sleep(1.0)

    _state["progress"] = gevent.spawn(progress)


def _flush(environment: Environment) -> None:
    if "tag" in _state:
        rec: Recorder = _state["recorder"]
        rec.write(plan().out_dir, _state["tag"])
        rec.write_progress(plan().out_dir, _state["tag"], time.time() - t0())


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    _flush(environment)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    _flush(environment)
    telemetry = _state["recorder"].telemetry if "recorder" in _state else None
    if telemetry is not None:
        telemetry.shutdown()  # exports what the last interval recorded
