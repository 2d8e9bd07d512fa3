"""A known-latency stand-in for the handler: same HTTP contract, a response delay drawn from a stated
distribution. It calibrates the harness (the truth is exact) and plays slow or cold targets in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delay:
    """A latency distribution in ms: `constant:5`, `uniform:2:8` or `lognormal:MEDIAN:SIGMA`."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Delay:
        """Parse `kind:a[:b]`; ValueError says what is wrong."""
        parts = spec.split(":")
        kind, args = parts[0], [float(x) for x in parts[1:]]
        if kind == "constant" and len(args) == 1:
            return cls(kind, args[0])
        if kind in ("uniform", "lognormal") and len(args) == 2:
            return cls(kind, args[0], args[1])
        raise ValueError(f"bad delay {spec!r}: use constant:MS, uniform:LO:HI or lognormal:MEDIAN:SIGMA")

    def quantile(self, q: float) -> float:
        """The exact q-quantile (0 < q < 1) in ms: the truth calibration compares against."""
        if self.kind == "constant":
            return self.a
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * q
        return self.a * math.exp(self.b * statistics.NormalDist().inv_cdf(q))

    def draw(self, rng: random.Random) -> float:
        """One delay in ms."""
        return self.quantile(min(max(rng.random(), 1e-12), 1 - 1e-12))


SPIN_S = 0.0005
NOT_FOUND = b'{"error":{"code":"not_found","message":"no such path"}}'


class _State:
    def __init__(self, delay: Delay, region: str, idle_timeout_s: float, cold_ms: float, seed: int) -> None:
        self.delay, self.region = delay, region
        self.idle_timeout_s, self.cold_ms = idle_timeout_s, cold_ms
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.last: float | None = None
        self.count = 0

    def next(self) -> tuple[float, bool]:
        """The next request's delay (ms) and whether it finds the instance cold."""
        with self.lock:
            now = time.monotonic()
            cold = self.last is None or (self.idle_timeout_s > 0 and now - self.last > self.idle_timeout_s)
            self.last = now
            self.count += 1
            return self.delay.draw(self.rng), cold


def _hold(ms: float, since: float) -> None:
    # Hold to an absolute deadline from when the request was read. A sleep wakes up late by 0.1-0.3 ms
    # (more under contention), so sleep to just short of it and yield-spin the rest: the truth stays exact.
    deadline = since + ms / 1000.0
    while (left := deadline - time.perf_counter()) > SPIN_S:
        time.sleep(left - SPIN_S)
    while time.perf_counter() < deadline:
        time.sleep(0)  # releases the GIL, so other connections' threads are not held up


def make_handler(state: _State) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `state`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real client pool expects
        # Headers and body go out in two writes; with Nagle on, delayed ACKs would add ~40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path in ("/healthz", "/readyz"):
                self._send(200, b'{"status":"ok"}', "application/json")
            elif self.path == "/metrics":
                self._send(200, f"testserver_requests_total {state.count}\n".encode(), "text/plain")
            else:
                self._send(404, NOT_FOUND, "application/json")

        def do_POST(self) -> None:
            start = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if not self.path.startswith("/v1/classify"):
                self._send(404, NOT_FOUND, "application/json")
                return
            if length == 0:
                self._send(400, b'{"error":{"code":"empty_body","message":"no image"}}', "application/json")
                return
            ms, cold = state.next()
            total = ms + (state.cold_ms if cold else 0.0)
            _hold(total, start)
            # The hold as it happened (a sleep can overrun under CPU contention): calibration compares
            # the client's figures with this as well as with the distribution's exact quantiles.
            held = (time.perf_counter() - start) * 1000.0
            body = json.dumps(
                {
                    "region": state.region,
                    "cold_start": cold,
                    "model": {"name": "testserver", "version": "0", "sha256": ""},
                    "top_k": [{"label": "known-latency", "index": 0, "score": 1.0}],
                    "timings_ms": {
                        "queue": 0.0,
                        "decode": 0.0,
                        "preprocess": 0.0,
                        "inference": ms,
                        "postprocess": 0.0,
                        "total": total,
                    },
                    "cold_start_phases_ms": {"load": state.cold_ms} if cold else None,
                }
            ).encode()
            self._send(
                200,
                body,
                "application/json",
                {
                    "X-Cold-Start": "true" if cold else "false",
                    "Server-Timing": f"inference;dur={ms:.3f}, hold;dur={held:.3f}, total;dur={held:.3f}",
                },
            )

    return Handler


def serve(
    host: str,
    port: int,
    delay: Delay,
    region: str = "test",
    idle_timeout_s: float = 0.0,
    cold_ms: float = 0.0,
    seed: int = 1,
) -> ThreadingHTTPServer:
    """Build (not start) a server; call serve_forever() on it, shutdown() to stop."""
    state = _State(delay, region, idle_timeout_s, cold_ms, seed)
    server = ThreadingHTTPServer((host, port), make_handler(state))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.load.testserver --port 8080 --delay lognormal:5:0.4`."""
    p = argparse.ArgumentParser(prog="python -m harness.load.testserver", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--region", default="test")
    p.add_argument("--delay", default="constant:2", help="constant:MS | uniform:LO:HI | lognormal:MEDIAN:SIGMA")
    p.add_argument("--idle-timeout", type=float, default=0.0, help="idle seconds after which it is cold")
    p.add_argument("--cold-ms", type=float, default=0.0, help="extra delay of a cold request")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    server = serve(
        args.host, args.port, Delay.parse(args.delay), args.region, args.idle_timeout, args.cold_ms, args.seed
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
