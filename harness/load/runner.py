"""`edgeharness run`: start a PoP per region, drive a profile at them with Locust, judge and report.

Data flow: runner -> plan.json -> Locust (loadtests/locustfile.py, a subprocess, optionally master and
workers) -> raw/samples-*.csv -> recorder (HDR) -> verdict (SLO file) -> results.json, report.html.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.load.gather import FINISHED, INTERRUPTED, LOST, RUNNING, RUNNING_MARKER, Ledger, begin_output
from harness.load.plan import Plan, assign, build_plan
from harness.load.processes import REPO_ROOT, Child, Supervisor, free_port, http_ok, python
from harness.load.profiles import Profile, load_profile, scaled
from harness.load.regions import Catalogue, load_catalogue
from harness.load.yamlfile import ConfigError
from harness.verdict.facts import UNKNOWN

if TYPE_CHECKING:
    from harness.verdict.facts import LoadProcessFacts

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
DEFAULT_MODEL = Path("models") / "mobilenetv2-int8.onnx"
# How long a stopping Locust may take to hand over its last samples (its own wait for workers is 10 s).
LOCUST_STOP_WAIT_S = 25.0


@dataclass
class RunSettings:
    """Everything `edgeharness run` was asked to do (recorded in results.json)."""

    profile: str = "smoke"
    slo: str | None = None
    duration_s: float | None = None
    out: Path = Path("runs/latest")
    targets: dict[str, str] = field(default_factory=dict)  # external PoPs; empty: start our own
    workers: int = 0  # 0: one Locust process; N: a master and N workers
    backend: str = "handler"  # what local PoPs run: the reference handler, or the known-latency testserver
    testserver_delay: str = "lognormal:3:0.3"
    model: str = str(DEFAULT_MODEL)
    regions_file: str | None = None
    rate: float | None = None  # override the profile's base rate (req/s per region)
    seed: int = 1
    start_lead_s: float = 6.0  # Locust start-up and corpus building happen before t=0
    handler_args: list[str] = field(default_factory=list)
    stack: str = ""  # "": PoPs only; "native": start the telemetry pipeline too; a folder: use a running one
    client_otlp: str = ""  # where load processes export client-side metrics (see Plan.client_otlp)
    quiet: bool = False
    pricing: str | None = None  # pricing file: cost per region (harness.cost)
    baseline: str | None = None  # a run directory to compare with (harness.compare)
    junit: str | None = None  # JUnit XML of the SLO checks
    summary_md: str | None = None  # a short Markdown summary

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly settings."""
        d = dict(vars(self))
        d["out"] = str(self.out)
        return d


@dataclass
class Pop:
    """A PoP of this run: its region, URL and (when we started it) its process."""

    region: str
    url: str
    child: Child | None = None
    port: int = 0
    ready_s: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


class Run:
    """One run: settings in, exit code out; everything on disk under settings.out."""

    def __init__(self, settings: RunSettings, console: Any = None, profile: Profile | None = None) -> None:
        from rich.console import Console

        self.s = settings
        # Off a terminal (CI, pipes) rich would wrap tables at 80 columns; give them room.
        self.console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 150)
        self.out = Path(settings.out)
        self.catalogue: Catalogue = load_catalogue(settings.regions_file)
        tz = {name: r.tz for name, r in self.catalogue.regions.items()}
        profile = profile or load_profile(settings.profile, tz)
        if settings.duration_s:
            profile = scaled(profile, settings.duration_s)
        if settings.rate is not None:
            profile.rate = settings.rate
            profile.rates = {}
        self.profile: Profile = profile
        from harness.verdict.slo import load_slo

        self.slo = load_slo(settings.slo)
        for pop in settings.targets:
            if pop not in self.catalogue.regions:
                raise ConfigError(
                    "--target",
                    None,
                    f"unknown region {pop!r} in --target (catalogue "
                    f"{self.catalogue.file}: {', '.join(sorted(self.catalogue.regions))})",
                )
        self.pops: dict[str, Pop] = {}
        self.t0: float | None = None
        self.stack_state: dict[str, Any] | None = None  # the telemetry stack's stack.json, with --stack
        self.stack_fresh = False  # started for this run (its counters hold only this run)
        self.plan: Plan | None = None
        self.locust: list[Child] = []
        self.interrupted: str | None = None  # why the run was cut short, if it was
        self.without_ledger: str | None = None  # load process state when raw/processes.json is missing
        self.notes: list[str] = []  # for the verdict, beside what the samples say

    # -- PoPs -------------------------------------------------------------------------------------------

    def pop_argv(self, region: str, port: int, *, load: str = "eager") -> list[str]:
        """The command line of a local PoP for `region` on `port`."""
        if self.s.backend == "testserver":
            idle = self.profile.pop_idle_timeout_s or 0
            return [
                python(),
                "-m",
                "harness.load.testserver",
                "--region",
                region,
                "--port",
                str(port),
                "--delay",
                self.s.testserver_delay,
                "--idle-timeout",
                str(idle),
                "--cold-ms",
                "30",
            ]
        argv = [
            python(),
            "-m",
            "harness",
            "serve",
            "--region",
            region,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            self.s.model,
            "--load",
            load,
        ]
        if self.profile.pop_idle_timeout_s:
            argv += ["--idle-timeout", str(self.profile.pop_idle_timeout_s)]
        return argv + list(self.s.handler_args)

    def ensure_model(self, sup: Supervisor) -> None:
        """Build the reference model if the handler backend needs it and it is missing."""
        if self.s.backend != "handler" or self.s.targets or "://" in self.s.model:
            return
        if Path(self.s.model).exists():
            return
        if Path(self.s.model) != DEFAULT_MODEL:
            raise ConfigError(self.s.model, None, "model file not found")
        self.say(f"building the reference model into {DEFAULT_MODEL.parent}/ (once)")
        child = sup.start(
            "model-build",
            [python(), "-m", "harness", "model", "build", "--out", str(DEFAULT_MODEL.parent)],
            log_path=self.out / "model-build.log",
            cwd=Path.cwd(),
        )
        code = child.proc.wait(900)
        if code != 0 or not Path(self.s.model).exists():
            raise RuntimeError(f"model build failed (status {code}):\n{child.log_tail()}")

    def start_pops(self, sup: Supervisor) -> None:
        """Start one local PoP per client region, or adopt the given targets."""
        if self.s.targets:
            self.pops = {r: Pop(r, url) for r, url in self.s.targets.items()}
            return
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for region in self.profile.regions:
            port = free_port()
            child = sup.start(
                f"pop-{region}", self.pop_argv(region, port), log_path=logs / f"pop-{region}.log", cwd=Path.cwd()
            )
            self.pops[region] = Pop(region, f"http://127.0.0.1:{port}", child, port)
        timeout = 180.0 if self.s.backend == "handler" else 20.0
        for pop in wait_all_ready(list(self.pops.values()), timeout):
            self.say(f"PoP {pop.region:<14} {pop.url}  ready in {pop.ready_s:.2f} s")

    # -- Locust -----------------------------------------------------------------------------------------

    def start_locust(self, sup: Supervisor, plan_path: Path) -> list[Child]:
        """Locust headless: one process, or a master plus `workers` workers on loopback."""
        env = {"EDGE_PLAN": str(plan_path)}
        common = [
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--csv",
            str(self.out / "locust"),
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
        ]
        logs = self.out / "logs"
        if self.s.workers <= 0:
            return [
                sup.start(
                    "locust",
                    [python(), *common, "--headless", "--only-summary"],
                    log_path=logs / "locust.log",
                    env=env,
                    cwd=Path.cwd(),
                )
            ]
        port = free_port()
        master = sup.start(
            "locust-master",
            [
                python(),
                *common,
                "--headless",
                "--only-summary",
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                str(self.s.workers),
            ],
            log_path=logs / "locust-master.log",
            env=env,
            cwd=Path.cwd(),
        )
        children = [master]
        for i in range(self.s.workers):
            children.append(
                sup.start(
                    f"locust-worker-{i}",
                    [
                        python(),
                        "-m",
                        "locust",
                        "-f",
                        str(LOCUSTFILE),
                        "--worker",
                        "--master-host",
                        "127.0.0.1",
                        "--master-port",
                        str(port),
                        "--loglevel",
                        "WARNING",
                    ],
                    log_path=logs / f"locust-worker-{i}.log",
                    env=env,
                    cwd=Path.cwd(),
                )
            )
        return children

    def progress(self) -> dict[str, Any]:
        """Live counters summed over every load process (from the ledger the gathering Locust keeps)."""
        total: dict[str, dict[str, int]] = {}
        ledger = Ledger.read(self.out)
        for rec in ledger.processes.values() if ledger else ():
            for region, c in rec.counters.items():
                acc = total.setdefault(region, {})
                for k, v in c.items():
                    acc[k] = acc.get(k, 0) + int(v)
        return total

    def apply_events(self, now_s: float) -> None:
        """PoP outages due by `now_s` (seconds from t=0): kill the PoP's process."""
        for ev in self.profile.pop_down:
            pop = self.pops.get(ev["pop"])
            if pop is None or ev.get("done") or now_s < ev["at_s"]:
                continue
            ev["done"] = True
            if pop.child is None:
                self.say(f"[yellow]cannot take down external PoP {pop.region}: skipped[/]")
                pop.events.append({"event": "down-skipped", "at_s": round(now_s, 3)})
                continue
            pop.child.kill()
            pop.events.append({"event": "down", "at_s": round(now_s, 3)})
            self.say(f"[red]PoP {pop.region} taken down at t={now_s:.1f} s[/] (failover)")

    def drive(self, sup: Supervisor) -> None:
        """Run Locust to the end, showing progress and applying PoP events on the shared clock."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        plan: Plan = build_plan(
            self.profile,
            {r: p.url for r, p in self.pops.items()},
            self.out,
            catalogue=self.catalogue,
            start_at=time.time() + self.s.start_lead_s,
            instances_per_region=max(0, self.s.workers),
            seed=self.s.seed,
        )
        plan.client_otlp = self.s.client_otlp
        plan.judge = False  # this process judges, with what only it knows (PoPs, cold starts, server side)
        plan_path = self.out / "plan.json"
        plan.save(plan_path)
        self.plan = plan
        self.t0 = plan.start_at
        children = self.start_locust(sup, plan_path)
        self.locust = children
        lead = self.s.start_lead_s
        total_s = self.profile.duration_s + self.profile.drain_s
        deadline = time.time() + lead + total_s + 60
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        last_print = 0.0
        reported: set[str] = set()
        with Progress(
            *columns, console=self.console, transient=False, disable=self.s.quiet or not self.console.is_terminal
        ) as bar:
            task = bar.add_task(f"{self.profile.name}", total=total_s, info="starting")
            while children[0].alive():
                now_s = time.time() - (self.t0 or time.time())
                self.apply_events(now_s)
                live = self.progress()
                sent = sum(c.get("sent", 0) for c in live.values())
                ok = sum(c.get("ok", 0) for c in live.values())
                err = sum(c.get("errors", 0) for c in live.values())
                drop = sum(c.get("dropped", 0) for c in live.values())
                info = f"sent {sent}  ok {ok}  errors {err}  dropped {drop}"
                bar.update(task, completed=max(0.0, min(now_s, total_s)), info=info)
                if not self.console.is_terminal and not self.s.quiet and time.time() - last_print > 10:
                    last_print = time.time()
                    self.say(f"t={now_s:6.1f} s  {info}")
                for c in children[1:]:
                    # The master notices a lost worker too and the verdict names it; this is for the log.
                    if not c.alive() and c.name not in reported and now_s < self.profile.duration_s:
                        reported.add(c.name)
                        self.say(f"[red]{c.name} exited early (status {c.proc.returncode})[/]")
                if time.time() > deadline:
                    self.interrupted = "Locust did not finish in time"
                    self.say(f"[red]{self.interrupted}[/]:\n{children[0].log_tail()}")
                    break
                time.sleep(0.25)
        self.stop_locust(LOCUST_STOP_WAIT_S)
        code = children[0].proc.returncode
        if code not in (0, None) and self.interrupted is None:
            self.interrupted = f"locust exited with {code}"
            self.say(f"[red]{children[0].name} exited with status {code}[/]:\n{children[0].log_tail()}")

    def stop_locust(self, wait_s: float) -> None:
        """Stop the load processes gracefully: SIGTERM, so each hands its last samples over, then SIGKILL
        only what has not exited within wait_s."""
        import contextlib
        import os
        import subprocess

        live = [c for c in self.locust if c.alive()]
        for c in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.proc.pid, signal.SIGTERM)
        end = time.monotonic() + wait_s
        for c in live:
            try:
                c.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"[red]{c.name} did not stop within {wait_s:g} s: killed[/]")
        for c in self.locust:
            c.stop(timeout_s=1.0)

    # -- Cold start, process level ------------------------------------------------------------------

    def process_cold_starts(self, sup: Supervisor) -> list[dict[str, Any]]:
        """Start the region's PoP on demand `repeats` times per start strategy (harness.load.coldstart):
        spawn -> listening -> ready -> first answer. The known-latency test server has one strategy."""
        if not self.profile.process_cold_start or self.s.targets:
            return []
        from dataclasses import replace

        from harness.load.coldstart import ColdStartSpec, measure

        spec = ColdStartSpec.from_profile(self.profile.process_cold_start)
        if self.s.backend != "handler":
            spec = replace(spec, strategies=("plain",))
        local_model = None if self.s.backend != "handler" or "://" in self.s.model else self.s.model
        return measure(
            spec,
            lambda port: self.pop_argv(spec.region, port),
            local_model,
            sup,
            self.out / "logs",
            say=self.say,
        )

    # -- The whole run -------------------------------------------------------------------------------

    def execute(self) -> int:
        """Do the run; the exit code is the verdict's (0 pass, 1 fail, 2 invalid or inconclusive,
        3 interrupted). Once the run is under way, results.json and report.html are written whatever
        happens; an error before any verdict (a PoP that does not start) leaves neither, nor RUNNING."""
        self.begin_output()
        started = time.time()
        self.say(
            f"[bold]edgeharness run[/]: profile {self.profile.name} ({self.profile.shape}), "
            f"{len(self.profile.regions)} regions, {self.profile.duration_s:g} s -> {self.out}"
        )
        process_cold: list[dict[str, Any]] = []
        server = None
        with Supervisor() as sup:
            try:
                self.ensure_model(sup)
                if self.s.stack:
                    self.attach_stack(sup)
                self.start_pops(sup)
                self.drive(sup)
                if self.interrupted is None:
                    process_cold = self.process_cold_starts(sup)
                    server = self.server_side()
            except KeyboardInterrupt as exc:
                self.interrupted = signal_name(exc)
                self.say(f"[yellow]interrupted ({self.interrupted}): stopping, then judging what was gathered[/]")
                try:
                    self.stop_locust(LOCUST_STOP_WAIT_S)
                except KeyboardInterrupt:
                    for c in self.locust:
                        c.kill()
            except Exception:
                # No verdict (a PoP that would not start, a bad target): the folder must not say "running".
                (self.out / RUNNING_MARKER).unlink(missing_ok=True)
                raise
        return self.finish(started, process_cold, server)

    def begin_output(self) -> None:
        """A fresh output folder: no old verdict that could look current, a RUNNING marker, empty raw/."""
        begin_output(self.out)
        (self.out / "logs").mkdir(exist_ok=True)

    def attach_stack(self, sup: Supervisor) -> None:
        """Point the run at the telemetry pipeline: its handlers become the targets, its collectors
        receive the client-side metrics, and its Prometheus gives the server-side figures."""
        from harness.stack.native import start_for_run, state_of

        if self.s.stack == "native":
            regions = tuple(dict.fromkeys([*self.profile.regions, *self.s.targets]))
            stack = start_for_run(sup, regions, self.out / "stack", self.profile.pop_idle_timeout_s or 0.0)
            self.stack_state = state_of(stack)
            self.stack_fresh = True
            self.say(f"native stack up: Prometheus {self.stack_state['prometheus']}, logs in {self.out / 'stack'}")
        else:
            from harness.stack.native import load_state

            self.stack_state = load_state(Path(self.s.stack))
        handlers = {s["region"]: s["url"] for s in self.stack_state["services"] if s["kind"] == "handler"}
        collectors = {s["region"]: s["url"] for s in self.stack_state["services"] if s["kind"] == "collector"}
        self.s.targets = self.s.targets or {r: handlers[r] for r in self.profile.regions if r in handlers}
        if not self.s.client_otlp:
            self.s.client_otlp = ",".join(f"{r}={u}" for r, u in collectors.items())

    def server_side(self) -> dict[str, Any] | None:
        """Per-region server figures from the stack's Prometheus, once the handlers' last export is in."""
        state = self.stack_state
        if state is None:
            return None
        from harness.stack.serverside import try_server_side

        fresh = self.stack_fresh
        # Handlers export every few seconds and collectors batch: wait for the counts to settle.
        deadline, previous = time.time() + 20, None
        while True:
            # A stack started for this run counts everything; a shared one, the time since this run began.
            window = None if fresh or self.t0 is None else time.time() - self.t0 + 2
            figures, error = try_server_side(state["prometheus"], window)
            counts = {r: f["requests"] for r, f in figures.items()}
            if error or (counts and counts == previous) or time.time() > deadline:
                break
            previous = counts
            time.sleep(6)
        return {"source": "prometheus", "url": state["prometheus"], "regions": figures, "error": error}

    def finish(self, started: float, process_cold: list[dict[str, Any]], server: dict[str, Any] | None = None) -> int:
        """Judge the samples with what the run knows (harness.verdict), write results.json and report.html,
        print the table."""
        from harness.load.recorder import read_samples
        from harness.report.terminal import print_verdict
        from harness.verdict.facts import RunFacts
        from harness.verdict.results import build_results, write_outputs

        notes: list[str] = list(self.notes)
        samples = read_samples(self.out, notes)
        if self.profile.expects_cold_starts and self.profile.process_cold_start and not process_cold:
            notes.append("process-level cold start not measured (external targets, or the run was cut short)")
        facts = RunFacts(
            settings=self.s.to_dict(),
            profile=self.profile,
            slo=self.slo,
            started_at=started,
            t0=self.t0,
            finished_at=time.time(),
            planned_duration_s=self.profile.duration_s,
            load_processes=load_process_facts(
                self.out, self.plan, self.expected_processes(), self.interrupted, self.without_ledger
            ),
            interrupted=self.interrupted,
            pops={
                r: {"url": p.url, "local": p.child is not None, "ready_s": p.ready_s, "events": p.events}
                for r, p in self.pops.items()
            },
            process_cold_start=process_cold,
            server_side=server,
            catalogue=self.catalogue,
            notes=notes,
        )
        results = build_results(facts, samples)
        from harness.report import extras as ex  # --pricing, --baseline, --junit, --summary-md

        more = ex.prepare(results, samples, self.slo, self.out, pricing=self.s.pricing, baseline=self.s.baseline)
        write_outputs(results, self.out, samples, more.sections)
        print_verdict(results, self.console)
        ex.publish(results, more, self.out, self.console, junit=self.s.junit, summary_md=self.s.summary_md)
        self.say(f"results: {self.out / 'results.json'}   report: {self.out / 'report.html'}")
        return results.verdict.exit_code

    def expected_processes(self) -> list[tuple[str, str | None]]:
        """The load processes this run starts, as the gathering Locust names them."""
        if self.s.workers <= 0:
            return [("local", None)]
        return [(f"worker-{i}", None) for i in range(self.s.workers)]

    def say(self, text: str) -> None:
        """A progress line, unless quiet."""
        if not self.s.quiet:
            self.console.print(text)


def signal_name(exc: KeyboardInterrupt) -> str:
    """SIGINT for Ctrl-C, else the signal the Supervisor turned into KeyboardInterrupt ("signal 15")."""
    text = str(exc)
    if text.startswith("signal "):
        try:
            return signal.Signals(int(text.split()[1])).name
        except ValueError:
            return text
    return "SIGINT"


def wait_all_ready(pops: list[Pop], timeout_s: float) -> list[Pop]:
    """Poll every PoP's /readyz until all answer; each one's ready_s is its own spawn-to-ready time.
    RuntimeError (with the log tail) if one dies or the time runs out. Returns them in the order they
    became ready."""
    order: list[Pop] = []
    waiting = [p for p in pops if p.child is not None]
    start = time.monotonic()
    while waiting:
        for pop in list(waiting):
            child = pop.child
            assert child is not None
            if not child.alive():
                raise RuntimeError(
                    f"{child.name} exited with status {child.proc.returncode} before it was ready:\n{child.log_tail()}"
                )
            if http_ok(pop.url + "/readyz", timeout_s=1.0):
                pop.ready_s = time.monotonic() - child.started
                order.append(pop)
                waiting.remove(pop)
        if time.monotonic() - start > timeout_s:
            names = ", ".join(p.region for p in waiting)
            raise RuntimeError(f"PoP(s) {names} not ready after {timeout_s:g} s\n{waiting[0].child.log_tail()}")
        if waiting:
            time.sleep(0.02)
    return order


def load_process_facts(
    out: Path,
    plan: Plan | None,
    expected: list[tuple[str, str | None]],
    interrupted: str | None,
    without_ledger: str | None = None,
) -> list[LoadProcessFacts]:
    """Every load process's share of the plan and how far it got, from the ledger the gathering Locust
    kept (OUT/raw/processes.json); without one, from the plan alone, each process in state
    `without_ledger` (default: lost, as when Locust died before the start; `rejudge` says unknown).
    A process still marked running was never heard to stop: lost, or interrupted with the run."""
    from harness.verdict.facts import LoadProcessFacts

    if plan is None:
        return []
    ledger = Ledger.read(out)
    cut = INTERRUPTED if interrupted else (without_ledger or LOST)
    facts: list[LoadProcessFacts] = []
    if ledger is None or not ledger.processes:
        assignments, orphans = assign(plan.profile["regions"], expected)
        for a in assignments:
            facts.append(LoadProcessFacts(a.name, list(a.shares), plan.planned(a), cut, None))
    else:
        orphans = ledger.orphans
        for rec in ledger.processes.values():
            state = rec.state if rec.state in (FINISHED, LOST, INTERRUPTED) else cut
            if rec.state == RUNNING and not interrupted:
                state = LOST
            facts.append(
                LoadProcessFacts(
                    rec.name,
                    list(rec.shares),
                    dict(rec.planned),
                    state,
                    rec.last_flush_t_s,
                    rec.rtt_measured,
                    rec.reason,
                )
            )
    if orphans:
        # Regions no load process generated (e.g. workers pinned elsewhere): all their arrivals are lost.
        from harness.load.plan import Assignment, Share

        nobody = Assignment("no-load-process", {r: Share() for r in orphans})
        facts.append(LoadProcessFacts(nobody.name, list(orphans), plan.planned(nobody), LOST, None))
    return facts


def run(settings: RunSettings) -> int:
    """Do one run; returns its exit code."""
    return Run(settings).execute()


def rejudge(
    out: Path,
    slo: str | None = None,
    quiet: bool = False,
    *,
    pricing: str | None = None,
    baseline: str | None = None,
    junit: str | None = None,
    summary_md: str | None = None,
) -> int:
    """Judge the samples already under out/raw against the plan in out/plan.json (and the load processes'
    ledger, when there is one), rewriting results.json and report.html (priced, compared with a baseline,
    and with JUnit XML and a Markdown summary, as `run` does when asked); returns the verdict's exit code."""
    plan_path = Path(out) / "plan.json"
    if not plan_path.exists():
        raise ConfigError(plan_path, None, "no plan.json: not a run directory")
    plan = Plan.read(plan_path)
    previous = Path(out) / "results.json"
    before: dict[str, Any] = {}
    if previous.exists():
        try:
            before = json.loads(previous.read_text(encoding="utf-8"))
        except ValueError:
            before = {}
    # Priced and compared as the run was, unless told otherwise: a rejudge must not drop a cost bound the
    # run judged (nor leave its old cost.json beside a verdict that no longer says it).
    was = ((before.get("run") or {}).get("settings") or {}) if isinstance(before, dict) else {}
    given = {"pricing": pricing, "baseline": baseline}
    reused = {k: str(was[k]) for k in given if was.get(k) and not given[k]}
    settings = RunSettings(
        profile=plan.profile.get("name", "plan"),
        slo=slo,
        out=Path(out),
        quiet=quiet,
        targets=dict(plan.targets),
        workers=plan.instances_per_region,
        pricing=pricing or reused.get("pricing"),
        baseline=baseline or reused.get("baseline"),
        junit=junit,
        summary_md=summary_md,
    )
    r = Run(settings, profile=Profile.from_dict(plan.profile))
    if reused:
        r.notes.append("rejudged with the run's own " + " and ".join(f"--{k} {v}" for k, v in reused.items()))
    r.pops = {pop: Pop(pop, url) for pop, url in plan.targets.items()}
    r.t0 = plan.start_at
    # Without a ledger (a run from before it existed, or a folder copied without raw/processes.json) the
    # seeded plan still says how many arrivals each process had to account for: never judge without it.
    r.plan = plan
    if Ledger.read(out) is None:
        r.without_ledger = UNKNOWN
        r.notes.append(
            "no ledger (raw/processes.json): planned arrivals recomputed from plan.json for "
            f"{', '.join(n for n, _ in r.expected_processes())}; how each load process ended is unknown"
        )
    cold: list[dict[str, Any]] = []
    if before:
        # Keep what only the live run knew: PoP outages, process-level cold starts, an interruption.
        for pop, p in r.pops.items():
            p.events = before.get("pops", {}).get(pop, {}).get("events", [])
            p.ready_s = before.get("pops", {}).get(pop, {}).get("ready_s")
        cold = before.get("process_cold_start", [])
        r.interrupted = (before.get("run") or {}).get("interrupted")
    return r.finish(time.time(), cold)


def judge_gathered(out: Path, plan: Plan, interrupted: str | None) -> int:
    """Judge a run the gathering Locust process ran by itself (a plain `locust -f`, headless or web UI):
    the plan, the ledger and the samples under `out`; returns the verdict's exit code."""
    import os

    from rich.console import Console

    from harness.report.extras import extras_from_environment

    settings = RunSettings(
        profile=plan.profile.get("name", "plan"),
        slo=os.environ.get("EDGE_SLO") or None,
        out=Path(out),
        targets=dict(plan.targets),
        workers=plan.instances_per_region,
        **extras_from_environment(os.environ),
    )
    r = Run(settings, console=Console(highlight=False, width=150, stderr=True), profile=Profile.from_dict(plan.profile))
    r.pops = {pop: Pop(pop, url) for pop, url in plan.targets.items()}
    ledger = Ledger.read(out)
    r.t0 = ledger.t0 if ledger is not None and ledger.t0 is not None else plan.start_at
    r.plan = plan
    r.interrupted = interrupted
    return r.finish(r.t0 or time.time(), [])
