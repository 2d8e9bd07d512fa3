"""The model's lifecycle in a handler: load (cold start, with phases), keep warm, release when idle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from harness.handler.pipeline import InputSpec, infer, preprocess
from harness.model.store import LocalModel, ModelError, ModelInfo, ModelStore, create_session, describe

if TYPE_CHECKING:
    from harness.handler.settings import HandlerSettings

logger = logging.getLogger(__name__)

# After a failed load, requests are refused at once (503) for this long before the next try; doubled at
# each failure in a row, up to the maximum.
RETRY_BACKOFF_S = 1.0
RETRY_BACKOFF_MAX_S = 60.0


class ModelUnavailable(Exception):
    """The model failed to load (its log line says why); the next try comes after `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the model could not be loaded; next try in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def model_store(settings: HandlerSettings) -> ModelStore:
    """The store a handler with these settings fetches its model through."""
    return ModelStore(
        settings.cache_dir,
        settings.model_download_timeout,
        max_bytes=settings.model_max_bytes,
        allow_unverified_urls=settings.insecure_model_url,
        redirects_anywhere=settings.model_redirects_anywhere,
    )


@dataclass(frozen=True)
class ColdStart:
    """One model load: why it happened and how long each phase took (milliseconds)."""

    reason: str  # "startup", "first_request" or "scaled_to_zero"
    phases_ms: dict[str, float]
    total_ms: float
    ended_at: float  # perf_counter when the load finished


@dataclass
class LoadedModel:
    """A ready model: the ONNX Runtime session and what the pipeline needs to feed it."""

    local: LocalModel
    info: ModelInfo
    session: Any
    spec: InputSpec
    loaded_at: float = field(default_factory=time.monotonic)
    pid: int = field(default_factory=os.getpid)  # the process that created the session (a zygote's child)


def load_model(
    store: ModelStore, source: str, expected_sha256: str | None, threads: int, reason: str
) -> tuple[LoadedModel, ColdStart]:
    """Fetch, create the session and run one warm-up inference, timing each phase."""
    phases: dict[str, float] = {}
    start = time.perf_counter()
    local = store.fetch(source, expected_sha256)
    t1 = time.perf_counter()
    phases["fetch"] = (t1 - start) * 1000
    session = create_session(local, intra_op_threads=threads)
    local = dataclasses.replace(local, content=None)  # the session has its own copy of the weights
    info = describe(session, local)
    spec = InputSpec.from_info(info)
    t2 = time.perf_counter()
    phases["session"] = (t2 - t1) * 1000
    # The warm-up goes through preprocessing too, so the first real request finds every path warm.
    warm_input = preprocess(Image.new("RGB", (spec.width + 32, spec.height + 24), (124, 116, 104)), spec)
    infer(session, info.input_name, warm_input)
    t3 = time.perf_counter()
    phases["warmup"] = (t3 - t2) * 1000
    cold = ColdStart(reason=reason, phases_ms=phases, total_ms=(t3 - start) * 1000, ended_at=t3)
    return LoadedModel(local=local, info=info, session=session, spec=spec), cold


def start_loading(
    store: ModelStore, source: str, expected_sha256: str | None, threads: int
) -> Future[tuple[LoadedModel, ColdStart]]:
    """The start-up load (`load_model`), begun in a thread of its own; pass the future to `load_at_startup`.

    A process's start overlaps the model's load with the import of the server's modules: ONNX Runtime
    reads the model and builds the session with the GIL released, while the main thread imports. ONNX
    Runtime itself is imported here first, on the caller's thread, so that the two threads never import
    at the same time."""
    import onnxruntime  # noqa: F401

    loading: Future[tuple[LoadedModel, ColdStart]] = Future()

    def load() -> None:
        try:
            loading.set_result(load_model(store, source, expected_sha256, threads, "startup"))
        except BaseException as exc:  # ModelError above all: the caller reports it as before
            loading.set_exception(exc)

    threading.Thread(target=load, name="model-load", daemon=True).start()
    return loading


class ModelRuntime:
    """Owns the one model of a handler: single-flight loads, use counting and scale-to-zero."""

    def __init__(
        self,
        store: ModelStore,
        source: str,
        expected_sha256: str | None,
        threads: int,
        idle_timeout_s: float,
        on_cold_start: Callable[[ColdStart], None],
        on_loaded_changed: Callable[[bool], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._source = source
        self._sha256 = expected_sha256 or None
        self._threads = threads
        self.idle_timeout_s = idle_timeout_s
        self._on_cold_start = on_cold_start
        self._on_loaded_changed = on_loaded_changed
        self._clock = clock
        self._model: LoadedModel | None = None
        self._loading: asyncio.Future[tuple[LoadedModel, ColdStart]] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._in_use = 0
        self._last_used = clock()
        self._ever_loaded = False
        self.cold_starts = 0
        self.last_cold_start: ColdStart | None = None

    @property
    def loaded(self) -> LoadedModel | None:
        return self._model

    def load_blocking(self, reason: str) -> tuple[LoadedModel, ColdStart]:
        """Fetch, create the session and run one warm-up inference; called off the event loop."""
        return load_model(self._store, self._source, self._sha256, self._threads, reason)

    async def acquire(self, executor: Executor | None = None) -> tuple[LoadedModel, ColdStart | None]:
        """The loaded model for one request, loading it first if needed; pair with `release`."""
        model = self._model
        cold: ColdStart | None = None
        if model is None:
            model, cold = await self._load(executor)
        self._in_use += 1
        self._last_used = self._clock()
        return model, cold

    async def _load(self, executor: Executor | None) -> tuple[LoadedModel, ColdStart | None]:
        """One load for every request waiting: they succeed or fail together. After a failure, requests
        fail at once until the backoff has passed, instead of each trying the load again in turn."""
        now = self._clock()
        if now < self._retry_at:
            raise ModelUnavailable(math.ceil(self._retry_at - now))
        loading = self._loading
        first = loading is None
        if loading is None:
            reason = "scaled_to_zero" if self._ever_loaded else "first_request"
            loop = asyncio.get_running_loop()
            loading = self._loading = loop.run_in_executor(executor, self.load_blocking, reason)
            # Registered before any waiter's wake-up, so the model is installed (or the failure noted)
            # before the first of them runs on.
            loading.add_done_callback(self._settle)
        try:
            model, cold = await asyncio.shield(loading)
        except asyncio.CancelledError:
            raise
        except Exception:
            raise ModelUnavailable(math.ceil(max(self._retry_at - self._clock(), 1))) from None
        return model, cold if first else None

    def _settle(self, loading: asyncio.Future[tuple[LoadedModel, ColdStart]]) -> None:
        self._loading = None
        if loading.cancelled():
            return
        error = loading.exception()
        if error is None:
            self._failures = 0
            self._install(*loading.result())
            return
        self._failures += 1
        backoff = min(RETRY_BACKOFF_S * 2 ** (self._failures - 1), RETRY_BACKOFF_MAX_S)
        self._retry_at = self._clock() + backoff
        # ModelError redacts a URL's credentials and query; anything else is a defect, with its traceback.
        if isinstance(error, ModelError):
            logger.error("model load failed (%d in a row; next try in %g s): %s", self._failures, backoff, error)
        else:
            logger.error("model load failed (%d in a row; next try in %g s)", self._failures, backoff, exc_info=error)

    def release(self) -> None:
        self._in_use -= 1
        self._last_used = self._clock()

    def load_at_startup(self, loading: Future[tuple[LoadedModel, ColdStart]] | None = None) -> ColdStart:
        """Loads the model now, or installs the one `loading` (from `start_loading`) brings, once it has."""
        model, cold = loading.result() if loading is not None else self.load_blocking("startup")
        self._install(model, cold)
        return cold

    def _install(self, model: LoadedModel, cold: ColdStart) -> None:
        self._model = model
        self._ever_loaded = True
        self.cold_starts += 1
        self.last_cold_start = cold
        self._on_cold_start(cold)
        self._on_loaded_changed(True)

    def maybe_unload(self) -> bool:
        """Release the session and weights when idle past the timeout; True when it did."""
        if self._model is None or self.idle_timeout_s <= 0 or self._in_use > 0:
            return False
        if self._clock() - self._last_used < self.idle_timeout_s:
            return False
        # acquire() and this run on the event loop, so no request can take the model up in between.
        self._model = None
        self._on_loaded_changed(False)
        return True

    async def watch_idle(self) -> None:
        """Background task: checks often enough that a release is at most ~1/10 of the timeout late."""
        if self.idle_timeout_s <= 0:
            return
        interval = min(max(self.idle_timeout_s / 10, 0.05), 1.0)
        while True:
            await asyncio.sleep(interval)
            self.maybe_unload()
