"""The open-model load engine inside a Locust process: arrival loops, PoP routing, sample recording.

Imported only by the locustfile (it needs gevent). In each load process one TimingLoop (a timerfd the gevent
hub watches) releases every due arrival of the process's share of the plan; the region's ArrivalLoop sends
it from its own greenlet, so the schedule never waits for a response.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import os
import random
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import gevent.pool
import gevent.socket
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

from harness.load.gather import FINISHED, INTERRUPTED, encode_samples
from harness.load.plan import Assignment, Plan, Share
from harness.load.recorder import Sample

DROPPED = -1  # status of an arrival that was never sent: the outstanding limit was reached
CONN_ERROR = 0  # status of a request that got no HTTP response
UNFINISHED = -2  # status of a request still in flight when its load process stopped
DEFAULT_PATH = "/v1/classify?top_k=5"  # the reference handler's endpoint
FLUSH_EVERY_S = 2.0  # how often a load process hands its new samples over (at most this much is lost)


@dataclass
class Counters:
    """Live per-region counts, handed over with every chunk of samples (progress displays)."""

    scheduled: int = 0
    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    late: int = 0
    outstanding: int = 0


@dataclass
class OutcomeLog:
    """Every arrival's outcome, kept until it is handed over in a chunk."""

    process: str = "local"
    rows: list[Sample] = field(default_factory=list)
    # Client-side OpenTelemetry metrics (harness.load.client_telemetry.ClientTelemetry), when configured.
    telemetry: Any = None
    counters: dict[str, Counters] = field(default_factory=dict)

    def counter(self, region: str) -> Counters:
        """The region's live counters."""
        return self.counters.setdefault(region, Counters())

    def take(self) -> list[Sample]:
        """The samples recorded since the last take."""
        rows, self.rows = self.rows, []
        return rows

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The live counters as plain data."""
        return {r: dict(vars(c)) for r, c in self.counters.items()}


class PopHealth:
    """Which PoPs this process believes are up: a connection failure marks one down, a probe of its
    /healthz brings it back."""

    def __init__(self, targets: dict[str, str], probe_interval_s: float = 0.5) -> None:
        self.targets = targets
        self.down: set[str] = set()
        self.probe_interval_s = probe_interval_s
        self._prober: gevent.Greenlet | None = None

    def mark_down(self, pop: str) -> None:
        """Stop routing to `pop` until its /healthz answers again."""
        self.down.add(pop)
        if self._prober is None or self._prober.dead:
            self._prober = gevent.spawn(self._probe)

    def _probe(self) -> None:
        while self.down:
            gevent.sleep(self.probe_interval_s)
            for pop in list(self.down):
                url = URL(origin(self.targets[pop]) + "/healthz")
                try:
                    client = HTTPClient.from_url(url, connection_timeout=0.5, network_timeout=0.5)
                    try:
                        resp = client.get(url.request_uri)
                        resp.read()
                        if resp.status_code == 200:
                            self.down.discard(pop)
                    finally:
                        client.close()
                except (OSError, gevent.Timeout):
                    continue


def parse_server_timing(value: str | None) -> dict[str, float]:
    """`decode;dur=1.2, inference;dur=3.4` as {"decode": 1.2, "inference": 3.4} (ms)."""
    out: dict[str, float] = {}
    for part in (value or "").split(","):
        name, _, rest = part.strip().partition(";")
        for param in rest.split(";"):
            k, _, v = param.strip().partition("=")
            if k == "dur" and name:
                with contextlib.suppress(ValueError):
                    out[name.strip()] = float(v.strip('"'))
    return out


def request_path(url: str) -> str:
    """Where to POST images: the target URL's own path if it has one (any endpoint), else our handler's."""
    u = URL(url)
    return u.request_uri if u.path not in ("", "/") else DEFAULT_PATH


def origin(url: str) -> str:
    """scheme://host:port of a target URL."""
    u = URL(url)
    return f"{u.scheme}://{u.host}:{u.port}"


def traceparent(rng: random.Random) -> str:
    """A fresh W3C trace context header value (sampled)."""
    return f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64) or 1:016x}-01"


class ArrivalLoop:
    """Sends one client region's scheduled arrivals (its share of them, with several load processes)."""

    def __init__(
        self,
        plan: Plan,
        region: str,
        share: Share,
        recorder: OutcomeLog,
        health: PopHealth,
        corpus: list[tuple[str, str, bytes]],
        sends: gevent.pool.Group,
        fire: Any = None,
        measured_rtt_ms: dict[str, float] | None = None,
    ) -> None:
        self.plan, self.region, self.share, self.recorder, self.health = plan, region, share, recorder, health
        self.profile = plan.profile_obj()
        self.routes = plan.routes[region]
        self.paths = {r["pop"]: request_path(r["url"]) for r in self.routes}  # parsed once, not per request
        self.corpus = corpus
        self.sends = sends  # every in-flight request of this process, so that a stop can end them
        self.fire = fire  # locust's request event, so Locust's own stats and CSVs see every request
        self.measured = measured_rtt_ms  # PoP -> RTT this process measured (a region-pinned worker)
        self.rng = random.Random(f"{plan.seed}/{region}/{share.slot}")
        self.clients: dict[str, HTTPClient] = {}
        self.counter = recorder.counter(region)
        self.late_s = self.profile.late_threshold_ms / 1000.0
        self.max_outstanding = self.profile.max_outstanding
        self.process = recorder.process

    def client(self, pop: str, url: str) -> HTTPClient:
        """A pooled keep-alive client for `pop`, as wide as the outstanding limit."""
        if pop not in self.clients:
            self.clients[pop] = HTTPClient.from_url(
                URL(url),
                concurrency=self.profile.max_outstanding,
                connection_timeout=5.0,
                network_timeout=30.0,
            )
        return self.clients[pop]

    def route(self) -> dict[str, Any] | None:
        """The nearest PoP believed healthy, or None when all are down."""
        for r in self.routes:
            if r["pop"] not in self.health.down:
                return r
        return None

    def release(self, t: float, due: float) -> None:
        """Arrival `t` (s from t=0) is due at `due` (perf_counter): send it now, or drop it when the
        outstanding limit is reached. Called on the hub by the process's TimingLoop."""
        self.counter.scheduled += 1
        if self.counter.outstanding >= self.max_outstanding:
            self.counter.dropped += 1
            if self.recorder.telemetry is not None:
                self.recorder.telemetry.arrival(self.region, "dropped")
            self.recorder.rows.append(
                Sample(
                    region=self.region,
                    pop="",
                    t_s=round(t, 6),
                    send_delay_us=0,
                    latency_us=0,
                    status=DROPPED,
                    cold=-1,
                    server_total_us=0,
                    inference_us=0,
                    rtt_ms=0.0,
                    rtt_source="",
                    rtt_injected=0,
                    e2e_us=0,
                    error="dropped: outstanding limit",
                    process=self.process,
                )
            )
            return
        self.counter.outstanding += 1
        self.sends.spawn(self.send, t, due)

    def send(self, t: float, due: float) -> None:
        """One request: prepare it, send it at `due`, record the outcome measured from `due`."""
        _, ctype, body = self.corpus[self.rng.randrange(len(self.corpus))]
        route = self.route()
        pop = route["pop"] if route else ""
        headers = {"Content-Type": ctype, "traceparent": traceparent(self.rng), "X-Edge-Client-Region": self.region}
        client = self.client(pop, route["url"]) if route else None
        start = time.perf_counter()
        send_delay = start - due
        if send_delay > self.late_s:
            self.counter.late += 1
        status, cold, server_total, inference, error = CONN_ERROR, -1, 0.0, 0.0, ""
        end = start
        try:
            if client is None:
                raise ConnectionError("no healthy PoP")
            self.counter.sent += 1
            resp = client.post(self.paths[pop], body=body, headers=headers)
            resp.read()
            end = time.perf_counter()
            status = resp.status_code
            cold_h = (resp.get("x-cold-start") or "").lower()
            cold = 1 if cold_h == "true" else 0 if cold_h == "false" else -1
            timing = parse_server_timing(resp.get("server-timing"))
            server_total, inference = timing.get("total", 0.0), timing.get("inference", 0.0)
            if status >= 400:
                error = f"http {status}"
        except (OSError, ConnectionError, gevent.Timeout) as exc:
            end = time.perf_counter()
            error = f"{type(exc).__name__}: {exc}"[:200]
            if route is not None and isinstance(
                exc, ConnectionRefusedError | ConnectionResetError | BrokenPipeError | socket.timeout
            ):
                self.health.mark_down(pop)
        except gevent.GreenletExit:
            # Still in flight when the drain time ran out or the process stopped: a request the user never
            # got answered, recorded as such rather than silently left out of the counts.
            end = time.perf_counter()
            status, error = UNFINISHED, "unfinished: still in flight when the load process stopped"
        except Exception as exc:  # a malformed answer, say from a PoP dying mid-response
            # Whatever the client raises, the arrival has an outcome: never a silently missing sample.
            end = time.perf_counter()
            error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self.counter.outstanding -= 1
        latency = end - due
        if self.measured is not None and route is not None:
            # A region-pinned worker's network is real: its RTT is in the latency, measured, not added.
            rtt_ms, rtt_source, injected = self.measured.get(pop, 0.0), "measured", False
            e2e = latency
        else:
            rtt_ms = route["rtt_ms"] if route else 0.0
            rtt_source = route["rtt_source"] if route else ""
            injected = self.profile.inject_rtt and route is not None and status != UNFINISHED
            if injected:
                # Emulated network: the client waits the RTT before it has its answer (reported apart).
                gevent.sleep(rtt_ms / 1000.0)
                e2e = time.perf_counter() - due
            else:
                e2e = latency + rtt_ms / 1000.0
        ok = 200 <= status < 300
        if ok:
            self.counter.ok += 1
        else:
            self.counter.errors += 1
        self.recorder.rows.append(
            Sample(
                region=self.region,
                pop=pop,
                t_s=round(t, 6),
                send_delay_us=round(send_delay * 1e6),
                latency_us=round(latency * 1e6),
                status=status,
                cold=cold,
                server_total_us=round(server_total * 1000),
                inference_us=round(inference * 1000),
                rtt_ms=rtt_ms,
                rtt_source=rtt_source,
                rtt_injected=int(injected),
                e2e_us=round(e2e * 1e6),
                error=error,
                process=self.process,
            )
        )
        if self.recorder.telemetry is not None:
            self.recorder.telemetry.arrival(self.region, "late" if send_delay > self.late_s else "sent")
            self.recorder.telemetry.request(self.region, pop, latency, status, cold)
        if self.fire is not None:
            self.fire(
                request_type="POST",
                name=f"{self.region}->{pop or 'none'}",
                response_time=latency * 1000.0,
                response_length=len(body),
                exception=None if ok else RuntimeError(error or f"http {status}"),
                context={},
            )

    def close(self) -> None:
        """Close the pooled connections."""
        for c in self.clients.values():
            c.close()


class TimingLoop:
    """The one clock of a load process: releases every due arrival (every region's schedule merged) at its
    intended time, on the gevent hub, which starts its request at once.

    The hub's own timers wake up to a millisecond late (libev's epoll timeout is in ms), so the hub watches
    a Linux timerfd (timerfd_create(2), CLOCK_MONOTONIC, the clock of time.perf_counter) armed at the next
    arrival's absolute time: epoll returns when it fires, to the microsecond, and no timer slack applies.
    Nothing spins and no second thread wakes per arrival (the first version's clock thread took the GIL and
    signalled the hub for every arrival). A busy hub delays a send, never the schedule, and the delay is
    measured (send_delay) and counted as late past the profile's threshold.

    Measured against the clock thread it replaced (`bench_loadgen.py --only cost --baseline e7ae82c`,
    interleaved, the server pinned to one core of this 2-core VM and the load process to the other): CPU
    per request 0.374 and 0.391 ms against 0.456 and 0.521; send lateness p99 at 500 req/s 0.67 and 0.83 ms
    against 0.74 and 0.97 in those rounds, but 0.66 against 0.35 in the capacity step after; both sustain
    2000 req/s (0.56 % and 0.72 % late) and neither 4000. The gain is the CPU and a simpler clock; the
    lateness tail is the hub's work in progress when an arrival falls due, which neither clock changes.
    On a quiet machine (two runs of `--only cost --baseline 824c120`, 2026-12-01): 0.233 and 0.227 ms CPU
    per request, send lateness p99 at 500 req/s 0.273 and 0.277 ms, within the targets of 0.25 and 0.5."""

    def __init__(self, loops: list[ArrivalLoop], drain_s: float) -> None:
        self.loops, self.drain_s = loops, drain_s
        self.loop = gevent.get_hub().loop
        self.released = gevent.event.Event()  # set once the last arrival was handed over (or the clock failed)
        self.completed = False  # the whole schedule was released and drained
        self.failure = ""  # why the clock stopped before the end of the schedule, if it did
        self._arrivals: Iterator[tuple[float, int]] = iter(())
        self._next: tuple[float, int] | None = None
        self._t0_perf = 0.0

    def run(self, t0_wall: float, sends: gevent.pool.Group) -> None:
        """Release every arrival at its time from t0_wall (wall clock of t=0) on, then wait (drain_s at
        most) for the requests in flight; those still going are ended (recorded as unfinished)."""
        self._t0_perf = time.perf_counter() - (time.time() - t0_wall)
        tagged = [_tag(loop.plan.arrivals(loop.region, loop.share), i) for i, loop in enumerate(self.loops)]
        self._arrivals = heapq.merge(*tagged)
        self._next = next(self._arrivals, None)
        timer = MonotonicTimer.create()
        watcher = None
        sleeper: gevent.Greenlet | None = None
        try:
            if timer is not None:
                watcher = self.loop.io(timer.fd, 1)  # 1: readable
                watcher.start(self._fire, timer)
                self._fire(timer)
            else:  # not Linux: the hub's timers, to a millisecond
                sleeper = gevent.spawn(self._sleep_to_each)
            self.released.wait()
            sends.join(timeout=self.drain_s)
            sends.kill(block=True, timeout=2.0)
            self.completed = not self.failure
        finally:  # a killed run stops the clock too
            if sleeper is not None:
                sleeper.kill(block=True)
            if watcher is not None:
                watcher.stop()
                watcher.close()
            if timer is not None:
                timer.close()

    def _release_due(self, now: float) -> float | None:
        """Hand every arrival due by `now` to its loop; the next one's due time, or None when none is left."""
        while self._next is not None:
            t, i = self._next
            due = self._t0_perf + t
            if due > now:
                return due
            self.loops[i].release(t, due)
            self._next = next(self._arrivals, None)
        self.released.set()
        return None

    def _fire(self, timer: MonotonicTimer) -> None:
        # On the hub: an exception here would stop the watcher and, unsaid, the schedule with it.
        try:
            timer.clear()
            due = self._release_due(time.perf_counter())
            if due is not None:
                timer.arm(due)
        except Exception as exc:
            self._fail(exc)

    def _sleep_to_each(self) -> None:
        try:
            while (due := self._release_due(time.perf_counter())) is not None:
                gevent.sleep(max(0.0, due - time.perf_counter()))
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """The clock cannot go on: the rest of the schedule is not sent (its arrivals are counted lost) and
        the process ends interrupted, saying why."""
        self.failure = f"the load process's clock failed: {type(exc).__name__}: {exc}"[:300]
        self._next = None
        self.released.set()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class MonotonicTimer:
    """A one-shot timerfd on CLOCK_MONOTONIC, armed at absolute time.perf_counter() values."""

    CLOCK_MONOTONIC, TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1

    def __init__(self, fd: int, settime: Any) -> None:
        self.fd, self._settime = fd, settime
        self._spec = _Itimerspec()  # one per timer, reused by every arm (not built per arrival)
        self._spec_ref = ctypes.byref(self._spec)

    @classmethod
    def create(cls) -> MonotonicTimer | None:
        """The timer, or None where there is no timerfd (not Linux) or perf_counter is another clock."""
        if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = create(cls.CLOCK_MONOTONIC, cls.TFD_NONBLOCK | cls.TFD_CLOEXEC)
        return cls(fd, settime) if fd >= 0 else None

    def arm(self, at: float) -> None:
        """Fire at perf_counter time `at` (at once if it has passed)."""
        sec = int(at)
        nsec = max(1, min(999_999_999, round((at - sec) * 1e9)))  # an all-zero value would disarm it
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = sec, nsec
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def clear(self) -> None:
        """Consume an expiry, so the descriptor is no longer readable."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


def _tag(times: Iterator[float], i: int) -> Iterator[tuple[float, int]]:
    for t in times:
        yield t, i


def measure_rtt_ms(url: str, probes: int = 5, timeout_s: float = 2.0) -> float:
    """This machine's network RTT to `url`: the median time of a TCP handshake (one round trip), in ms."""
    u = URL(url)
    times = []
    for _ in range(probes):
        start = time.perf_counter()
        try:
            conn = gevent.socket.create_connection((u.host, u.port), timeout=timeout_s)
        except OSError:
            continue
        times.append((time.perf_counter() - start) * 1000)
        conn.close()
        gevent.sleep(0.02)
    return round(statistics.median(times), 3) if times else 0.0


class LoadProcess:
    """This process's part of the plan: an arrival loop per region of its assignment, and the hand-over
    of its new samples every FLUSH_EVERY_S (over `send`, Locust's message channel) so that a killed
    process loses at most its last seconds."""

    def __init__(
        self,
        plan: Plan,
        assignment: Assignment,
        send: Callable[[str, dict[str, Any]], None],
        corpus: list[tuple[str, str, bytes]],
        *,
        fire: Any = None,
        telemetry: Any = None,
        measure_rtt: bool = False,
    ) -> None:
        self.plan, self.assignment, self.send = plan, assignment, send
        self.recorder = OutcomeLog(process=assignment.name, telemetry=telemetry)
        self.health = PopHealth(plan.targets)
        self.sends = gevent.pool.Group()
        measured = None
        if measure_rtt:
            pops = {r["pop"]: r["url"] for region in assignment.shares for r in plan.routes.get(region, [])}
            measured = {pop: measure_rtt_ms(url) for pop, url in pops.items()}
        self.measured_rtt_ms = measured
        self.loops = [
            ArrivalLoop(plan, region, share, self.recorder, self.health, corpus, self.sends, fire, measured)
            for region, share in assignment.shares.items()
        ]
        self.timing = TimingLoop(self.loops, plan.profile_obj().drain_s)
        self.greenlets: list[gevent.Greenlet] = []
        self.flusher: gevent.Greenlet | None = None
        self.t0: float | None = None
        self.seq = 0
        self.finished = False

    def start(self, t0_wall: float) -> None:
        """Send the schedules from t0_wall (wall clock of t=0) on."""
        self.t0 = t0_wall
        self.greenlets = [gevent.spawn(self.timing.run, t0_wall, self.sends)]
        self.flusher = gevent.spawn(self._flush_every)

    def completed(self) -> bool:
        """Every loop sent its whole schedule and drained."""
        return self.timing.completed

    def _flush_every(self) -> None:
        while True:
            gevent.sleep(FLUSH_EVERY_S)
            self.flush()

    def flush(self) -> None:
        """Hand the samples recorded since the last flush over (one chunk, even if empty)."""
        rows = self.recorder.take()
        now_s = time.time() - (self.t0 or time.time())
        self.send(
            "edge_samples",
            {
                "process": self.assignment.name,
                "seq": self.seq,
                "t_s": now_s,
                "n": len(rows),
                "rows": encode_samples(rows),
                "counters": self.recorder.snapshot(),
            },
        )
        self.seq += 1

    def finish(self, reason: str = "") -> str:
        """Stop (idempotent): end what is still in flight (recorded as unfinished), hand the last samples
        over and say so; returns the state sent ("finished", or "interrupted" if the schedule was cut)."""
        if self.finished:
            return FINISHED if self.completed() else INTERRUPTED
        self.finished = True
        if self.flusher is not None:
            self.flusher.kill(block=True)
        state = FINISHED if self.completed() else INTERRUPTED
        reason = reason or self.timing.failure
        for g in self.greenlets:
            g.kill(block=True, timeout=2.0)
        self.sends.kill(block=True, timeout=2.0)
        self.flush()
        self.send("edge_done", {"process": self.assignment.name, "state": state, "reason": reason})
        for loop in self.loops:
            loop.close()
        if self.recorder.telemetry is not None:
            self.recorder.telemetry.shutdown()  # exports what the last interval recorded
        return state
