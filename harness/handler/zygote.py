"""The zygote start strategy: a parent that has imported everything heavy forks serving processes on demand.

`edgeharness serve --start-strategy zygote` pays for the interpreter and the imports (numpy, Pillow, ONNX
Runtime, Starlette, uvicorn, the handler) once. Each serving process is then a fork of that warm parent: it
fetches the model, creates its own ONNX Runtime session, threads and listening socket, and serves. Nothing of
those exists in the parent, because none of them survives a fork (ORT's thread pools, the event loop, a
socket two processes would accept on). The parent only waits for signals, as a platform's scaler would talk
to it:

- SIGUSR1: scale up, fork a serving process if none runs (`--zygote-spawn on-signal` waits for this first);
- SIGUSR2: scale to zero, stop the serving process (it drains) and keep none;
- a serving process that crashes (killed by a signal, or exits with a status other than 0 and 2) is replaced,
  at once the first time and with a growing pause while it keeps crashing young;
- status 2 is a bad setting: the parent exits with it, as plain serve would (a missing or corrupt model is
  found before any fork: the zygote fetches and verifies it once, and its children use that file while it
  is unchanged on disk); five young crashes in a row (a port taken) end it with status 1;
- SIGTERM/SIGINT: stop the serving process and exit.

Importing ONNX Runtime starts one native thread of its own in the parent, idle in a wait; fork copies only
the calling thread, so the child starts with none, and no session exists in the parent to be copied.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from harness.handler.settings import HandlerSettings

SPAWN_SIGNAL = signal.SIGUSR1
STOP_SIGNAL = signal.SIGUSR2
_HANDLED = {SPAWN_SIGNAL, STOP_SIGNAL, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
YOUNG_S = 10.0  # a serving process that crashes younger than this counts towards a crash loop
MAX_YOUNG_CRASHES = 5  # in a row: a crash loop (a port taken, a model ORT cannot run) ends the zygote
MAX_PAUSE_S = 5.0
FIRST_PAUSE_S = 0.05


@dataclass
class ServingProcess:
    pid: int
    requested_at: float  # perf_counter when the parent took the spawn up
    stopping: bool = False


def warm_up() -> None:
    """Import and exercise, in the parent, what every serving process would otherwise import first."""
    import encodings.idna  # noqa: F401  (asyncio encodes the host to bind with it)
    import io

    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import uvicorn.lifespan.on
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl  # noqa: F401
    import uvloop  # noqa: F401
    from PIL import Image

    import harness.handler.app
    import harness.handler.lifecycle
    import harness.handler.server  # noqa: F401
    from harness.handler import pipeline

    # Decoding one tiny image of each accepted format imports Pillow's plugins and runs the decoder's Python
    # paths once; none of it starts a thread.
    for content_type, fmt in pipeline.FORMATS.items():
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (120, 110, 100)).save(buffer, format=fmt)
        pipeline.decode(buffer.getvalue(), content_type, (8, 8), 64)


class PrefetchedStore:
    """The model store a serving process gets: the zygote fetched (and verified) the model once; a child
    takes that file as long as it is unchanged on disk, and fetches anew otherwise."""

    def __init__(self, store: Any, source: str, expected_sha256: str | None) -> None:
        self._store = store
        self._key = (source, expected_sha256)
        self._model = store.fetch(source, expected_sha256)
        self._stamp = _stamp(self._model.path)

    def fetch(self, source: str, expected_sha256: str | None = None) -> Any:
        if (source, expected_sha256) == self._key and _stamp(self._model.path) == self._stamp:
            return self._model
        return self._store.fetch(source, expected_sha256)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _stamp(path: Any) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def run_zygote(settings: HandlerSettings, started_at: float) -> int:
    """The zygote parent: warm up, then fork serving processes as signals ask; returns its exit status."""
    # Signals are taken synchronously (sigtimedwait) from here on: no Python handler can run in the middle of
    # a fork, and a signal that arrives while a child is being forked waits its turn.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    warm_up()
    from harness.handler.lifecycle import model_store
    from harness.model.store import ModelError

    try:
        # Fetched and verified once, here: a missing or wrong model is the zygote's clear error, not a child's.
        store = PrefetchedStore(model_store(settings), settings.model, settings.model_sha256 or None)
    except ModelError as exc:
        print(f"edgeharness serve: {exc}", file=sys.stderr)
        return 2
    # Everything imported lives as long as the zygote: frozen, the collector never touches (so never copies)
    # those pages in a child. Start-up ran without the collector (commands.py); the children turn it on.
    gc.collect()
    gc.freeze()
    from harness.handler.server import process_age_s

    age_s = process_age_s()
    warm_ms = (age_s if age_s is not None else time.perf_counter() - started_at) * 1000
    mode = "at once" if settings.zygote_spawn == "at-start" else f"on {SPAWN_SIGNAL.name}"
    _say(
        f"edgeharness zygote region={settings.region} pop={settings.pop_name} pid={os.getpid()} warm in "
        f"{warm_ms:.1f} ms; serving processes fork {mode}, {STOP_SIGNAL.name} stops them"
    )
    return Zygote(settings, store, previous_mask).run(spawn_now=settings.zygote_spawn == "at-start")


class Zygote:
    """The parent's loop: one serving process at most, forked, watched and replaced."""

    def __init__(self, settings: HandlerSettings, store: PrefetchedStore, child_mask: set[signal.Signals]) -> None:
        self.settings = settings
        self.store = store
        self.child_mask = child_mask
        self.child: ServingProcess | None = None
        self.wanted = False  # a serving process should be running
        self.crashes = 0  # consecutive crashes of young serving processes
        self.respawn_at: float | None = None  # monotonic time of a pending replacement

    def run(self, spawn_now: bool) -> int:
        if spawn_now:
            self.wanted = True
            self.fork(time.perf_counter(), "start")
        while True:
            timeout = 1.0 if self.respawn_at is None else max(self.respawn_at - time.monotonic(), 0.0)
            info = signal.sigtimedwait(_HANDLED, timeout)
            requested_at = time.perf_counter()
            status = self.reap()
            if status is not None:
                return status
            if info is None:
                if self.respawn_at is not None and time.monotonic() >= self.respawn_at:
                    self.respawn_at = None
                    if self.wanted and self.child is None:
                        self.fork(time.perf_counter(), "replace")
                continue
            signum = info.si_signo
            if signum == SPAWN_SIGNAL:
                self.wanted = True
                if self.child is None:
                    self.respawn_at = None
                    self.fork(requested_at, "signal")
            elif signum == STOP_SIGNAL:
                self.wanted = False
                self.respawn_at = None
                self.stop_child(wait=True)
            elif signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.wanted = False
                self.stop_child(wait=True)
                return 0

    def fork(self, requested_at: float, reason: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _serve_child(self.settings, self.store, requested_at, self.child_mask)  # never returns
        self.child = ServingProcess(pid, requested_at)
        _say(f"edgeharness zygote: forked serving process pid={pid} ({reason})")

    def stop_child(self, wait: bool) -> None:
        child = self.child
        if child is None:
            return
        child.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
        if not wait:
            return
        deadline = time.monotonic() + self.settings.drain_timeout + 5.0
        while self.child is not None and time.monotonic() < deadline:
            # A spawn request meanwhile stays pending (blocked), and is taken up after this stop.
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            self.reap(replace=False)
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, signal.SIGKILL)
            os.waitpid(self.child.pid, 0)
            self.child = None

    def reap(self, replace: bool = True) -> int | None:
        """Collects an ended serving process; returns the zygote's exit status when it must end too."""
        child = self.child
        if child is None:
            return None
        try:
            pid, wait_status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, wait_status = child.pid, 0
        if pid == 0:
            return None
        self.child = None
        code = os.waitstatus_to_exitcode(wait_status)
        lived_s = time.perf_counter() - child.requested_at
        if child.stopping or code == 0:
            _say(f"edgeharness zygote: serving process pid={pid} stopped (status {code})")
            if not child.stopping:  # it ended cleanly by itself (someone else's SIGTERM): scaled to zero
                self.wanted = False
            return None
        if code == 2:
            _say(f"edgeharness zygote: serving process pid={pid} reported a bad setting (status 2); exiting")
            return 2
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        self.crashes = self.crashes + 1 if lived_s < YOUNG_S else 1
        if self.crashes >= MAX_YOUNG_CRASHES:
            _say(
                f"edgeharness zygote: serving process pid={pid} crashed ({how}), the {self.crashes}th in a row "
                f"within {YOUNG_S:g} s of its start; giving up"
            )
            return 1
        pause = 0.0 if self.crashes == 1 else min(FIRST_PAUSE_S * 2 ** (self.crashes - 2), MAX_PAUSE_S)
        _say(f"edgeharness zygote: serving process pid={pid} crashed ({how}); replacing it in {pause:.2f} s")
        if replace and self.wanted:
            self.respawn_at = time.monotonic() + pause
            if pause == 0.0:
                self.respawn_at = None
                self.fork(time.perf_counter(), "replace")
        return None


def _serve_child(
    settings: HandlerSettings, store: PrefetchedStore, requested_at: float, mask: set[signal.Signals]
) -> None:
    """The serving process, right after the fork: everything stateful is created here. Never returns."""
    forked_at = time.perf_counter()
    status = 1
    try:
        for signum in _HANDLED:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        from harness.handler.lifecycle import start_loading
        from harness.handler.server import serve
        from harness.model.store import ModelError

        loading = None
        if settings.load == "eager":
            loading = start_loading(store, settings.model, settings.model_sha256 or None, settings.threads)
        try:
            status = serve(
                settings,
                requested_at,
                forked_at,
                store=store,
                loading=loading,
                created_at=requested_at,
                first_phase="fork",
            )
        except ModelError as exc:
            print(f"edgeharness serve: {exc}", file=sys.stderr)
            status = 2
        except OSError as exc:
            print(f"edgeharness serve: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
            status = 2
    except SystemExit as exc:  # uvicorn exits so when it cannot bind
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the child must never return into the parent's loop
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _say(line: str) -> None:
    print(line, flush=True)
