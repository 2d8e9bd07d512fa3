"""Runs the handler under uvicorn and measures the process's own start, from creation to ready."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from harness.handler.settings import HandlerSettings

if TYPE_CHECKING:
    from concurrent.futures import Future

    from harness.handler.lifecycle import ColdStart, LoadedModel
    from harness.model.store import ModelStore

SWITCH_INTERVAL_S = 0.001


def process_age_s() -> float | None:
    """Seconds since the kernel created this process (Linux), so init includes interpreter start-up.

    Read from /proc rather than psutil: psutil's create_time() adds the boot time, which the kernel gives in
    whole seconds, so an age from it could be off by up to a second; both figures here count from boot."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # Field 22 is start time in clock ticks after boot; the command name may hold spaces.
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime_s = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files towards `wanted` (never past the hard limit): the connection cap,
    not a failing accept(), should be what refuses connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class _Server(uvicorn.Server):
    """uvicorn's server, noting the moment it listens: the end of the process's init."""

    def __init__(self, config: uvicorn.Config, on_listening: object, on_exit: object = None) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: object) -> None:  # type: ignore[override]
        # Draining begins at the signal, not at uvicorn's next look at its exit flag (up to 0.1 s on):
        # /readyz says 503 and new requests are refused from this moment.
        if callable(self._on_exit):
            self._on_exit()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM after draining, so the exit status says "killed"; a clean drain
        # is a clean exit, so only the graceful part is kept.
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)
        if self.started and callable(self._on_listening):
            self._on_listening(self)


def serve(
    settings: HandlerSettings,
    started_at: float,
    imports_done_at: float,
    store: ModelStore | None = None,
    loading: Future[tuple[LoadedModel, ColdStart]] | None = None,
    *,
    created_at: float | None = None,
    first_phase: str = "imports",
) -> int:
    """Build the app, load the model (if eager; `loading` when its load has begun already), listen;
    returns when SIGTERM/SIGINT drained it. `created_at` (perf_counter) is when the process was asked for,
    when its creator knows better than the kernel (a zygote's fork), and `first_phase` names what ran from
    then until `imports_done_at`."""
    from harness.handler.admission import ConnectionCount
    from harness.handler.app import InitRecord, create_app
    from harness.handler.protocol import HARD_CAP_FACTOR, protocol_class

    if created_at is None:
        age = process_age_s()
        # Process creation, measured back from now; falls back to the moment our code began running.
        created_at = time.perf_counter() - age if age is not None else started_at
    init = InitRecord()
    init.phases_ms[first_phase] = (imports_done_at - created_at) * 1000
    connections = ConnectionCount(settings.max_connections)
    _allow_open_files(HARD_CAP_FACTOR * settings.max_connections + 256)
    app = create_app(settings, init=init, store=store, connections=connections)
    handler = app.state.handler
    if settings.load == "eager":
        # Loaded before listening, so a missing or broken model is a clear error, not a served 503.
        handler.runtime.load_at_startup(loading)

    def on_listening(server: uvicorn.Server) -> None:
        now = time.perf_counter()
        cold = handler.runtime.last_cold_start
        loaded_at = imports_done_at
        if cold is not None and cold.reason == "startup":
            # Measured in the loading thread: these phases overlap the imports when the load ran beside them.
            init.phases_ms.update(cold.phases_ms)
            loaded_at = max(loaded_at, cold.ended_at)
        init.total_ms = (now - created_at) * 1000
        # From imports and model load both done to listening: what of building the app did not overlap
        # the load, binding the socket, the lifespan's start-up.
        init.phases_ms["server"] = (now - loaded_at) * 1000
        handler.record_process_init()
        # Everything allocated during start-up lives as long as the process: keeping it out of the cyclic
        # collector's generations spares requests the long full collections that would scan it. The
        # collector was off during start-up (commands.py); from here on it runs as usual.
        gc.freeze()
        gc.enable()
        loaded = handler.runtime.loaded
        session_pid = loaded.pid if loaded is not None else "-"
        for sock in server.servers[0].sockets if server.servers else []:
            host, port = sock.getsockname()[:2]
            print(
                f"edgeharness handler region={settings.region} pop={settings.pop_name} pid={os.getpid()} "
                f"session-pid={session_pid} "
                f"listening on http://{host}:{port} ready in {init.total_ms:.1f} ms",
                flush=True,
            )

    # A thread waiting for the GIL asks its holder to let go after this long (CPython's default is 5 ms):
    # the event loop, the inference workers and the telemetry threads share one interpreter, and a
    # request's next step should not wait 5 ms behind another thread's Python code.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(connections, settings.header_timeout, settings.max_header_bytes),
        lifespan="on",
        # No route takes a WebSocket; "auto" would import a WebSocket library (~100 ms) into every start.
        ws="none",
        access_log=False,
        log_level="warning",
        # A float: 0 and 0.5 mean what they say (int(0.5) or None would have meant "wait forever").
        timeout_graceful_shutdown=settings.drain_timeout,  # type: ignore[arg-type]
        server_header=False,
        # Nothing here reads the client's address, so X-Forwarded-* rewriting would be a wasted layer.
        proxy_headers=False,
    )
    server = _Server(config, on_listening, handler.start_draining)
    server.run()
    return 0 if server.started else 1
