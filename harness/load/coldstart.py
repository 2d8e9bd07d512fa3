"""Process-level cold starts by start strategy: start a region's PoP on demand, `repeats` times per strategy,
and time spawn -> listening -> ready -> first answer, and the first request's own client latency.

Strategies (the reference handler's; see `edgeharness serve --start-strategy`):
- `plain`: a new `edgeharness serve` process (interpreter, imports, model load, listen);
- `prepared-model`: the same with the model prepared ahead of time (`edgeharness model prepare`, ORT format);
- `zygote`: a warm zygote (started once, before measuring, as a platform keeps one per host) is asked for a
  serving process with SIGUSR1 and stops it with SIGUSR2; spawn is the moment the harness sends SIGUSR1;
- `zygote+prepared-model`: both.
Starts are interleaved (one of each strategy per round), so a spell of slow CPU hits every strategy alike.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.load.processes import Child, Supervisor, free_port
from harness.verdict.model import ProcessColdStart, answered_ok
from harness.verdict.stats import min_samples_to_pass, nearest_rank

STRATEGIES = ("plain", "prepared-model", "zygote", "zygote+prepared-model")
DEFAULT_REPEATS = 90
DEFAULT_CONFIDENCE = 0.99
POLL_S = 0.001  # how often a start is probed for listening: the resolution of spawn -> listening


@dataclass(frozen=True)
class ColdStartSpec:
    """What the profile's `process_cold_start` asks for."""

    region: str
    repeats: int = DEFAULT_REPEATS
    strategies: tuple[str, ...] = STRATEGIES

    @classmethod
    def from_profile(cls, data: Mapping[str, Any]) -> ColdStartSpec:
        """From `{region, repeats, strategies}`; ValueError names a bad value."""
        strategies = tuple(data.get("strategies") or STRATEGIES)
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown start strategy {unknown[0]!r}; expected some of {', '.join(STRATEGIES)}")
        repeats = int(data.get("repeats", DEFAULT_REPEATS))
        if repeats < 1:
            raise ValueError(f"process_cold_start.repeats must be at least 1: got {repeats}")
        return cls(region=str(data["region"]), repeats=repeats, strategies=strategies)


@dataclass(frozen=True)
class StrategySummary:
    """One strategy's starts, summarized for the terminal and the benchmark."""

    strategy: str
    n: int
    failed: int
    p50: dict[str, float | None]  # measure -> p50 (ms)
    p95: dict[str, float | None]
    phases_p50: dict[str, float]
    claims: dict[str, bool]  # "p50"/"p95" -> enough starts for a distribution-free interval at `confidence`
    confidence: float


MEASURES = ("spawn_to_listening_ms", "spawn_to_ready_ms", "spawn_to_first_answer_ms", "first_request_ms")


def starts_needed(q: float, confidence: float) -> int:
    """The fewest starts with which the verdict can claim the q-quantile at `confidence` (its interval has
    both ends within the samples): the verdict's own rule, harness.verdict.stats."""
    return min_samples_to_pass(q, confidence)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The verdict's nearest-rank percentile (harness.verdict.stats); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[nearest_rank(q, len(ordered)) - 1]


def summarize(
    starts: Sequence[ProcessColdStart | Mapping[str, Any]], confidence: float = DEFAULT_CONFIDENCE
) -> list[StrategySummary]:
    """Per strategy, in the order first seen: p50/p95 of every measure and the p50 of each init phase."""
    rows = [asdict(s) if isinstance(s, ProcessColdStart) else dict(s) for s in starts]
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == strategy]
        ok = [r for r in mine if answered_ok(int(r.get("status") or 0))]
        phase_names = dict.fromkeys(name for r in ok for name in (r.get("phases") or {}))
        out.append(
            StrategySummary(
                strategy=strategy,
                n=len(ok),
                failed=len(mine) - len(ok),
                p50={m: percentile([r[m] for r in ok if r.get(m) is not None], 0.5) for m in MEASURES},
                p95={m: percentile([r[m] for r in ok if r.get(m) is not None], 0.95) for m in MEASURES},
                phases_p50={
                    name: percentile([r["phases"][name] for r in ok if name in r["phases"]], 0.5) or 0.0
                    for name in phase_names
                },
                claims={
                    "p50": len(ok) >= starts_needed(0.5, confidence),
                    "p95": len(ok) >= starts_needed(0.95, confidence),
                },
                confidence=confidence,
            )
        )
    return out


def describe_summary(s: StrategySummary) -> list[str]:
    """Lines for a person: the figures, the phases, and what the number of starts does not allow to claim."""

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"{s.strategy}: n={s.n}" + (f" ({s.failed} failed)" if s.failed else "") + "; p50/p95 ms: "
        f"listening {ms(s.p50['spawn_to_listening_ms'])}/{ms(s.p95['spawn_to_listening_ms'])}, "
        f"ready {ms(s.p50['spawn_to_ready_ms'])}/{ms(s.p95['spawn_to_ready_ms'])}, "
        f"first answer {ms(s.p50['spawn_to_first_answer_ms'])}/{ms(s.p95['spawn_to_first_answer_ms'])}, "
        f"first request {ms(s.p50['first_request_ms'])}/{ms(s.p95['first_request_ms'])}",
        "  init phases p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in s.phases_p50.items()),
    ]
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        if not s.claims[label]:
            lines.append(
                f"  {label} not claimable: needs at least {starts_needed(q, s.confidence)} answered starts at "
                f"{s.confidence:.0%} confidence, this run has {s.n}"
            )
    return lines


# -- Measuring ---------------------------------------------------------------------------------------------


class _Target:
    """One strategy's way of starting a serving process on demand and stopping it again."""

    def __init__(
        self, strategy: str, serve_argv: Callable[[int], list[str]], model: str | None, sup: Supervisor, logs: Path
    ) -> None:
        self.strategy = strategy
        self.serve_argv = serve_argv
        self.sup = sup
        self.logs = logs
        self.extra: list[str] = []
        if strategy.endswith("prepared-model"):
            if model is None:
                raise ValueError(f"{strategy} needs a local ONNX model file to prepare")
            from harness.model.prepare import ensure_prepared

            # Prepared once, before measuring: preparing is a deploy step, not part of a start.
            self.extra = ["--model", str(ensure_prepared(Path(model))), "--model-sha256", ""]
        self.zygote: Child | None = None
        self.log = logs / f"process-cold-{strategy}.log"
        self.log_from = 0
        self.port = 0
        self.child: Child | None = None
        self.child_pid: int | None = None

    @property
    def uses_zygote(self) -> bool:
        return self.strategy.startswith("zygote")

    def prepare(self, timeout_s: float) -> None:
        """For a zygote: start it and wait until it is warm (untimed: the platform keeps it ahead of demand)."""
        if not self.uses_zygote:
            return
        self.port = free_port()
        argv = [*self.serve_argv(self.port), *self.extra, "--start-strategy", "zygote", "--zygote-spawn", "on-signal"]
        # The log is appended to: only what this zygote wrote counts (and a signal before it is warm kills it).
        self.log_from = self.log.stat().st_size if self.log.exists() else 0
        self.zygote = self.sup.start(f"zygote-{self.strategy}", argv, log_path=self.log, cwd=Path.cwd())
        deadline = time.monotonic() + timeout_s
        while " warm in " not in self.zygote_log():
            if not self.zygote.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.strategy} zygote did not warm up:\n{self.zygote.log_tail()}")
            time.sleep(0.02)

    def spawn(self, repeat: int) -> None:
        if self.zygote is not None:
            if not self.zygote.alive():
                raise RuntimeError(f"the {self.strategy} zygote exited:\n{self.zygote.log_tail()}")
            os.kill(self.zygote.proc.pid, signal.SIGUSR1)
            return
        self.port = free_port()
        self.child = self.sup.start(
            f"cold-{self.strategy}-{repeat}",
            [*self.serve_argv(self.port), *self.extra],
            log_path=self.logs / f"process-cold-{self.strategy}-{repeat}.log",
            cwd=Path.cwd(),
        )

    def alive(self) -> bool:
        process = self.zygote or self.child
        return process is not None and process.alive()

    def stop(self, timeout_s: float) -> None:
        if self.zygote is None:
            if self.child is not None:
                self.child.stop()
                self.child = None
            return
        if not self.zygote.alive():
            return
        pids = re.findall(r"forked serving process pid=(\d+)", self.zygote_log())
        os.kill(self.zygote.proc.pid, signal.SIGUSR2)
        if pids:
            pid = pids[-1]
            deadline = time.monotonic() + timeout_s
            # The zygote reaps its child and says so: only then is the next spawn a start from zero.
            while f"pid={pid} stopped" not in (text := self.zygote_log()) and f"pid={pid} crashed" not in text:
                if time.monotonic() > deadline or not self.zygote.alive():
                    break
                time.sleep(0.01)

    def zygote_log(self) -> str:
        return _read(self.log)[self.log_from :]

    def close(self) -> None:
        self.stop(10.0)
        if self.zygote is not None:
            self.zygote.stop()


def measure(
    spec: ColdStartSpec,
    serve_argv: Callable[[int], list[str]],
    model: str | None,
    sup: Supervisor,
    log_dir: Path,
    say: Callable[[str], None] = print,
    probe: tuple[bytes, str] | None = None,
    timeout_s: float = 120.0,
    pause_s: float = 0.2,
) -> list[dict[str, Any]]:
    """Start `spec.region`'s PoP `spec.repeats` times with each strategy, interleaved; one dict per start.

    `serve_argv(port)` is the PoP's `edgeharness serve` command line on that port (the strategy's flags are
    appended); `model` the local model file the prepared strategies prepare (None: a URL, not preparable)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    body, ctype = probe or _probe_image()
    targets = []
    for strategy in spec.strategies:
        try:
            targets.append(_Target(strategy, serve_argv, model, sup, log_dir))
        except ValueError as exc:
            say(f"process cold start: skipping {strategy}: {exc}")
    out: list[ProcessColdStart] = []
    try:
        for target in targets:
            target.prepare(timeout_s)
        for i in range(spec.repeats):
            for target in targets:
                start = _one_start(target, spec.region, i, body, ctype, timeout_s)
                target.stop(timeout_s)
                out.append(start)
                if start.error:
                    say(f"process cold start {target.strategy} #{i + 1}: {start.error}")
                time.sleep(pause_s)  # the previous start's teardown (and its telemetry process) settles
    finally:
        for target in targets:
            target.close()
    for summary in summarize(out):
        for line in describe_summary(summary):
            say("process cold start " + line if not line.startswith(" ") else line)
    return [asdict(s) for s in out]


def _one_start(
    target: _Target, region: str, repeat: int, body: bytes, ctype: str, timeout_s: float
) -> ProcessColdStart:
    record = ProcessColdStart(region=region, strategy=target.strategy, repeat=repeat)
    t0 = time.perf_counter()
    target.spawn(repeat)
    deadline = t0 + timeout_s
    try:
        while not _listening(target.port):
            if not target.alive():
                raise RuntimeError("the serving process exited before it listened")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not listening after {timeout_s:g} s")
            time.sleep(POLL_S)
        record.spawn_to_listening_ms = (time.perf_counter() - t0) * 1000
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout_s)
        try:
            while True:
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                ready = json.loads(response.read() or b"{}")
                if response.status == 200:
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"not ready after {timeout_s:g} s")
                time.sleep(POLL_S)
            record.spawn_to_ready_ms = (time.perf_counter() - t0) * 1000
            sent = time.perf_counter()
            conn.request("POST", "/v1/classify?top_k=5", body=body, headers={"Content-Type": ctype})
            response = conn.getresponse()
            response.read()
            answered = time.perf_counter()
        finally:
            conn.close()
        record.status = response.status
        record.first_request_ms = (answered - sent) * 1000
        record.spawn_to_first_answer_ms = (answered - t0) * 1000
        record.phases = {
            k: round(float(v), 3) for k, v in (ready.get("process_init_ms") or {}).items() if v is not None
        }
        record.phases.pop("total", None)
    except (OSError, RuntimeError, http.client.HTTPException, ValueError) as exc:
        record.error = str(exc) or type(exc).__name__
    return record


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _probe_image() -> tuple[bytes, str]:
    from harness.images import encode, synthetic_photo

    return encode(synthetic_photo(320, 240, seed=7), "jpeg"), "image/jpeg"
