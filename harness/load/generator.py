"""The open-model load engine inside a Locust process: arrival loops, PoP routing, sample recording.

Imported only by the locustfile (it needs gevent); one ArrivalLoop per region and load process sends
each scheduled arrival from its own greenlet, so the schedule never waits for a response.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

from harness.load.arrivals import schedule
from harness.load.plan import Plan

SAMPLE_FIELDS = (
    "region",
    "pop",
    "t_s",
    "send_delay_us",
    "latency_us",
    "status",
    "cold",
    "server_total_us",
    "inference_us",
    "rtt_ms",
    "rtt_source",
    "rtt_injected",
    "e2e_us",
    "error",
)
DROPPED = -1  # status of an arrival that was never sent: the outstanding limit was reached
CONN_ERROR = 0  # status of a request that got no HTTP response
DEFAULT_PATH = "/v1/classify?top_k=5"  # the reference handler's endpoint


@dataclass
class Counters:
    """Live per-region counts, written to the progress file every second."""

    scheduled: int = 0
    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    late: int = 0
    outstanding: int = 0


@dataclass
class Recorder:
    """Every arrival's outcome, kept whole (a run is thousands of rows) and written as CSV."""

    rows: list[tuple] = field(default_factory=list)
    # Client-side OpenTelemetry metrics (harness.load.client_telemetry.ClientTelemetry), when configured.
    telemetry: Any = None
    counters: dict[str, Counters] = field(default_factory=dict)

    def counter(self, region: str) -> Counters:
        """The region's live counters."""
        return self.counters.setdefault(region, Counters())

    def write(self, out_dir: str | Path, tag: str) -> Path:
        """Write samples-<tag>.csv under out_dir/raw (rewritten whole, so calling twice is safe)."""
        raw = Path(out_dir) / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        path = raw / f"samples-{tag}.csv"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(SAMPLE_FIELDS)
            w.writerows(self.rows)
        tmp.replace(path)
        return path

    def write_progress(self, out_dir: str | Path, tag: str, elapsed_s: float) -> None:
        """Write this process's live counters for the runner's progress display."""
        raw = Path(out_dir) / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        data = {"elapsed_s": elapsed_s, "regions": {r: vars(c) for r, c in self.counters.items()}}
        tmp = raw / f"progress-{tag}.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(raw / f"progress-{tag}.json")


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
    """Sends one client region's scheduled arrivals (a share of them, with several load processes)."""

    def __init__(
        self,
        plan: Plan,
        region: str,
        recorder: Recorder,
        health: PopHealth,
        corpus: list[tuple[str, str, bytes]],
        instance: int,
        fire: Any = None,
    ) -> None:
        self.plan, self.region, self.recorder, self.health = plan, region, recorder, health
        self.profile = plan.profile_obj()
        self.routes = plan.routes[region]
        self.corpus = corpus
        self.fire = fire  # locust's request event, so Locust's own stats and CSVs see every request
        self.seed = plan.seed * 1_000_003 + zlib.crc32(region.encode()) + 7919 * instance
        self.rng = random.Random(self.seed)
        self.clients: dict[str, HTTPClient] = {}
        self.counter = recorder.counter(region)
        self.late_s = self.profile.late_threshold_ms / 1000.0

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

    def run(self, t0_wall: float) -> None:
        """Start every arrival of the schedule just before its intended time, then wait for stragglers."""
        prof = self.profile
        t0_perf = time.perf_counter() - (time.time() - t0_wall)
        # Each arrival's greenlet starts this much early and prepares its request, so that neither the
        # spawn nor the preparation sits between the intended time and the send.
        lead_s = self.plan.spin_ms / 1000.0 + 0.001
        pending: list[gevent.Greenlet] = []
        times = schedule(
            lambda t: prof.rate_at(self.region, t),
            prof.max_rate(self.region),
            prof.duration_s,
            prof.arrival,
            self.seed,
            self.plan.instances_per_region,
        )
        for t in times:
            due = t0_perf + t
            wait = due - lead_s - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
            self.counter.scheduled += 1
            if self.counter.outstanding >= prof.max_outstanding:
                self.counter.dropped += 1
                if self.recorder.telemetry is not None:
                    self.recorder.telemetry.arrival(self.region, "dropped")
                self.recorder.rows.append(
                    (self.region, "", round(t, 6), 0, 0, DROPPED, -1, 0, 0, 0.0, "", 0, 0, "dropped: outstanding limit")
                )
                continue
            self.counter.outstanding += 1
            pending.append(gevent.spawn(self.send, t, due))
            if len(pending) > 4 * prof.max_outstanding:
                pending = [g for g in pending if not g.dead]
        gevent.joinall(pending, timeout=prof.drain_s + lead_s)
        for g in pending:
            if not g.dead:
                g.kill(block=False)

    def send(self, t: float, due: float) -> None:
        """One request: prepare it, send it at `due`, record the outcome measured from `due`."""
        _, ctype, body = self.corpus[self.rng.randrange(len(self.corpus))]
        route = self.route()
        pop = route["pop"] if route else ""
        headers = {"Content-Type": ctype, "traceparent": traceparent(self.rng), "X-Edge-Client-Region": self.region}
        client = self.client(pop, route["url"]) if route else None
        spin_s = self.plan.spin_ms / 1000.0
        while (left := due - time.perf_counter()) > 0:
            # Timers fire up to 1 ms late, so sleep only to within spin_s of the send, then yield-spin.
            gevent.sleep(left - spin_s if left > spin_s else 0)
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
            resp = client.post(request_path(route["url"]), body=body, headers=headers)
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
            # Still in flight when the drain time ran out: a request the user never got answered, so it
            # is recorded as an error rather than silently left out of the counts.
            end = time.perf_counter()
            error = "unfinished: still in flight when the run ended"
        finally:
            self.counter.outstanding -= 1
        latency = end - due
        rtt_ms = route["rtt_ms"] if route else 0.0
        injected = self.profile.inject_rtt and route is not None
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
            (
                self.region,
                pop,
                round(t, 6),
                round(send_delay * 1e6),
                round(latency * 1e6),
                status,
                cold,
                round(server_total * 1000),
                round(inference * 1000),
                rtt_ms,
                route["rtt_source"] if route else "",
                int(injected),
                round(e2e * 1e6),
                error,
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


def process_tag(worker_index: int | None) -> str:
    """A file-name tag unique to this load process (host, pid, worker index)."""
    host = socket.gethostname().replace("-", "")[:16]
    idx = "" if worker_index is None else f"-w{worker_index}"
    return f"{host}-{os.getpid()}{idx}"
