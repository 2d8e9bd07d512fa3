"""The handler's ASGI app, built by `create_app` from settings; no state lives outside the app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness import __version__
from harness.handler import errors, pipeline
from harness.handler.admission import Admission, ByteBudget, ConnectionCount
from harness.handler.errors import HandlerError
from harness.handler.lifecycle import ColdStart, LoadedModel, ModelRuntime, ModelUnavailable, model_store
from harness.handler.openapi import MAX_TOP_K, openapi_document
from harness.handler.settings import HandlerSettings
from harness.handler.telemetry.link import TelemetrySink, make_telemetry
from harness.handler.telemetry.records import (
    CLASSIFY_ROUTE,
    InitEvent,
    ModelLoaded,
    RequestRecord,
    TelemetrySettings,
    TelemetryUnavailable,
)
from harness.handler.workers import WorkerPool
from harness.model.store import ModelInfo, ModelStore

DEFAULT_TOP_K = 5
# A body's minimum rate is checked over windows this long: a pause of a few TCP retransmissions passes.
RATE_WINDOW_S = 2.0
# A refused request's unread body is read and dropped, up to this much, before the answer and the close:
# a client that sends its whole body before reading (Python's urllib, most HTTP libraries) would otherwise
# meet a connection reset instead of the answer.
LINGER_MAX_BYTES = 32 * 1024 * 1024
LINGER_MAX_S = 2.0
# Answered even over the connection cap: a liveness probe or a scrape that fails there would restart or
# blind a handler that is only busy.
UNCAPPED_ROUTES = frozenset({"/healthz", "/metrics"})

logger = logging.getLogger(__name__)


class ClientDisconnected(Exception):
    """The client went away before its request body had arrived: there is no one left to answer."""


@dataclass
class BodyState:
    """How far a request's body was read, and what of the body budget it holds."""

    received: bool = False  # receive() was called at least once (an Expect: 100-continue was answered)
    complete: bool = False
    reserved: int = 0


@dataclass
class InitRecord:
    """The process's own start, from process creation to ready, by phase (milliseconds)."""

    phases_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float | None = None


@dataclass
class StageTimes:
    """Wall-clock nanosecond marks taken in the worker thread, turned into spans and metrics later."""

    marks: list[tuple[str, int, int]] = field(default_factory=list)
    started: float | None = None  # perf_counter when a worker took the request up

    def ms(self) -> dict[str, float]:
        return {name: (end - start) / 1e6 for name, start, end in self.marks}


@dataclass
class Outcome:
    """What one classify request did, gathered on the request path and recorded after the response."""

    start_ns: int
    status: int = 500
    error_code: str | None = None
    duration_s: float = 0.0
    queue_s: float | None = None
    cold_kind: str | None = None  # "process" (first request of the process), "model" (a load), or None
    model: ModelInfo | None = None
    stages: StageTimes = field(default_factory=StageTimes)


def run_pipeline(
    model: LoadedModel,
    body: bytes,
    content_type: str,
    top_k: int,
    limits: pipeline.DecodeLimits | int,
    times: StageTimes,
) -> list[pipeline.Prediction]:
    """All four stages, in one worker thread: one hop off the event loop instead of four."""
    clock = time.time_ns
    t0 = clock()
    # The decode budget is held until preprocessing is done with the decoded image, not just its decode.
    with pipeline.decoded(body, content_type, (model.spec.width, model.spec.height), limits) as image:
        t1 = clock()
        times.marks.append(("decode", t0, t1))
        tensor = pipeline.preprocess(image, model.spec)
        del image
    t2 = clock()
    times.marks.append(("preprocess", t1, t2))
    logits = pipeline.infer(model.session, model.info.input_name, tensor)
    t3 = clock()
    times.marks.append(("inference", t2, t3))
    predictions = pipeline.postprocess(logits, model.info.labels, top_k)
    times.marks.append(("postprocess", t3, clock()))
    return predictions


class Handler:
    """The request path: admission, body, model, pipeline, telemetry; one per app."""

    def __init__(
        self,
        settings: HandlerSettings,
        telemetry: TelemetrySink,
        store: ModelStore,
        init: InitRecord,
        connections: ConnectionCount | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.init = init
        self.connections = connections
        self.admission = Admission(settings.effective_concurrency, settings.queue)
        self.body_budget = ByteBudget(settings.body_budget_bytes)
        self.decode_budget = ByteBudget(settings.decode_budget_bytes)
        self.executor = WorkerPool(settings.effective_concurrency, "inference")
        self.runtime = ModelRuntime(
            store=store,
            source=settings.model,
            expected_sha256=settings.model_sha256 or None,
            threads=settings.threads,
            idle_timeout_s=settings.idle_timeout,
            on_cold_start=self._record_model_load,
            on_loaded_changed=lambda loaded: telemetry.submit(ModelLoaded(loaded)),
        )
        self.served = 0
        self.draining = False
        telemetry.start(
            active=lambda: self.admission.active,
            queued=lambda: self.admission.waiting,
            idle=lambda: self.admission.admitted == 0,
        )

    # -- lifecycle -------------------------------------------------------------------------------------

    def start_draining(self) -> None:
        """From now on /readyz answers 503 and new requests are refused; called at SIGTERM."""
        self.draining = True

    def _record_model_load(self, cold: ColdStart) -> None:
        kind = {"edgeharness.coldstart.kind": "model", "edgeharness.coldstart.reason": cold.reason}
        self.telemetry.submit(InitEvent(kind, cold.total_ms, dict(cold.phases_ms)))

    def record_process_init(self) -> None:
        if self.init.total_ms is not None:
            attrs = {"edgeharness.coldstart.kind": "process"}
            self.telemetry.submit(InitEvent(attrs, self.init.total_ms, dict(self.init.phases_ms)))

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.settings.load == "eager" and self.runtime.loaded is None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.executor, self.runtime.load_at_startup)
        self.telemetry.launch()
        watcher = asyncio.create_task(self.runtime.watch_idle())
        try:
            yield
        finally:
            self.draining = True
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.executor.shutdown(wait=True)
            self.telemetry.shutdown()

    # -- endpoints -------------------------------------------------------------------------------------

    async def classify(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/classify as a plain ASGI endpoint: no Request or Response objects on the hot path."""
        outcome = Outcome(start_ns=time.time_ns())
        start = time.perf_counter()
        headers = Headers(scope=scope)
        body = BodyState()
        try:
            payload, extra = await self._classify(scope, headers, receive, outcome, start, body)
        except HandlerError as exc:
            outcome.status, outcome.error_code = exc.status, exc.code
            payload, extra = json_bytes(exc.body()), exc.headers
            # A late body is not waited for again, and a refusal over the connection cap reads nothing more:
            # lingering there would hold the very connection the cap is there to shed.
            skip = exc.status == 408 or exc.code == "too_many_connections"
            drained = body.complete or await _linger(receive, headers, body, skip)
            if exc.close or not drained:
                extra = {**extra, "Connection": "close"}
        except ClientDisconnected:
            return
        except Exception:  # a defect, not bad input: answered as JSON and counted, never a crash
            logger.exception("classify failed")
            outcome.status, outcome.error_code = 500, "internal_error"
            payload = json_bytes({"error": {"code": "internal_error", "message": "the handler failed; see its log"}})
            extra = {"Connection": "close"} if not body.complete else {}
        finally:
            if body.reserved:
                self.body_budget.give(body.reserved)
        outcome.duration_s = time.perf_counter() - start
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()),
        ]
        await send({"type": "http.response.start", "status": outcome.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})
        # Spans and metrics are recorded elsewhere now that the response has gone: telemetry never delays
        # the answer, nor takes the event loop's time from the next request.
        model = outcome.model
        self.telemetry.submit(
            RequestRecord(
                outcome.start_ns,
                outcome.duration_s,
                outcome.status,
                outcome.error_code,
                outcome.queue_s,
                outcome.cold_kind,
                model.name if model is not None else None,
                model.version if model is not None else None,
                outcome.stages.marks,
                headers.get("traceparent"),
                headers.get("tracestate"),
            )
        )

    async def _classify(
        self, scope: Scope, headers: Headers, receive: Receive, outcome: Outcome, start: float, state: BodyState
    ) -> tuple[bytes, dict[str, str]]:
        if self.draining:
            raise errors.draining()
        if self.connections is not None and self.connections.over:
            raise errors.too_many_connections(self.connections.limit)
        top_k = _parse_top_k(scope.get("query_string", b""))
        content_type = pipeline.media_type(headers.get("content-type"))
        # A full house need not take the body in first; the admission itself comes once the body is here,
        # so a slow body holds bytes of the body budget, never a slot of the queue.
        self.admission.check()
        body = await self._read_body(receive, headers.get("content-length"), state)
        if not body:
            raise errors.empty_body()

        self.admission.enter()
        admitted = time.perf_counter()
        cold: ColdStart | None = None
        times = outcome.stages
        try:
            try:
                model, cold = await self.runtime.acquire(self.executor)
            except ModelUnavailable as exc:
                raise errors.model_unavailable(exc.retry_after_s) from None
            outcome.model = model.info
            try:
                predictions = await self.executor.run(self._run, model, body, content_type, top_k, times)
            finally:
                self.runtime.release()
        finally:
            self.admission.leave()
        # Waiting: from admission to a worker taking the request up, less this request's own model load.
        assert times.started is not None
        outcome.queue_s = max(times.started - admitted - (cold.total_ms / 1000 if cold is not None else 0.0), 0.0)

        injected_ms = self.settings.inject_delay_ms
        if injected_ms:
            # A drill's slowness: after the work, so the request is as slow as a slowed handler's, and
            # on the event loop, so it holds no worker.
            await asyncio.sleep(injected_ms / 1000)

        self.served += 1
        first = self.served == 1
        outcome.cold_kind = "model" if cold is not None else ("process" if first else None)
        phases = cold.phases_ms if cold is not None else (self.init.phases_ms if first else None)
        timings = {
            "queue": outcome.queue_s * 1000,
            **outcome.stages.ms(),
            **({"injected": injected_ms} if injected_ms else {}),
            "total": (time.perf_counter() - start) * 1000,
        }
        if cold is not None:
            timings["cold_start"] = cold.total_ms
        body_out = {
            "region": self.settings.region,
            "pop": self.settings.pop_name,
            "cold_start": outcome.cold_kind is not None,
            "model": {"name": model.info.name, "version": model.info.version, "sha256": model.info.sha256},
            "top_k": [{"label": p.label, "index": p.index, "score": p.score} for p in predictions],
            "timings_ms": {k: round(v, 4) for k, v in timings.items()},
            "cold_start_phases_ms": {k: round(v, 4) for k, v in phases.items()} if phases else None,
        }
        extra = {
            "X-Cold-Start": "true" if outcome.cold_kind else "false",
            "Server-Timing": ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items()),
        }
        outcome.status = 200
        return json_bytes(body_out), extra

    async def _read_body(self, receive: Receive, declared: str | None, state: BodyState) -> bytes:
        """The body, refused as soon as it passes the size limit, the body budget, its deadline or its
        minimum rate: never buffered whole first, never waited for without end."""
        settings = self.settings
        limit = settings.max_body_bytes
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise errors.body_too_large(limit)
            except ValueError:
                raise HandlerError(
                    400, "invalid_content_length", "Content-Length is not a number", close=True
                ) from None
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + settings.body_timeout
        window_end = started + RATE_WINDOW_S
        window_bytes = 0
        window_min = settings.body_min_rate * RATE_WINDOW_S
        chunks: list[bytes] = []
        size = 0
        while True:
            state.received = True
            try:
                async with asyncio.timeout_at(min(deadline, window_end)):
                    message = await receive()
            except TimeoutError:
                message = None
            if message is not None:
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise errors.body_too_large(limit)
                if chunk:
                    if not self.body_budget.take(len(chunk)):
                        raise errors.bodies_over_budget(self.body_budget.capacity)
                    state.reserved += len(chunk)
                    chunks.append(chunk)
                    window_bytes += len(chunk)
                if not message.get("more_body", False):
                    state.complete = True
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            now = loop.time()
            if now >= deadline:
                raise errors.request_timeout(f"did not arrive within {settings.body_timeout:g} s")
            if now >= window_end:
                if window_bytes < window_min:
                    raise errors.request_timeout(
                        f"arrived slower than {settings.body_min_rate} bytes/s ({window_bytes} bytes "
                        f"in {RATE_WINDOW_S:g} s)"
                    )
                window_end, window_bytes = now + RATE_WINDOW_S, 0

    def _run(
        self, model: LoadedModel, body: bytes, content_type: str, top_k: int, times: StageTimes
    ) -> list[pipeline.Prediction]:
        """In a worker: the pipeline, counted as running while it runs."""
        times.started = started = time.perf_counter()
        self.admission.started()
        try:
            limits = pipeline.DecodeLimits(self.settings.max_image_pixels, self.decode_budget)
            return run_pipeline(model, body, content_type, top_k, limits, times)
        finally:
            self.admission.finished(time.perf_counter() - started)

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "alive", "region": self.settings.region, "pop": self.settings.pop_name})

    async def readyz(self, _request: Request) -> Response:
        loaded = self.runtime.loaded
        last = self.runtime.last_cold_start
        body = {
            "ready": not self.draining,
            "region": self.settings.region,
            "pop": self.settings.pop_name,
            "model_loaded": loaded is not None,
            "model": None if loaded is None else {"name": loaded.info.name, "version": loaded.info.version},
            "model_loads": self.runtime.cold_starts,
            "last_model_load_ms": None if last is None else {**last.phases_ms, "total": last.total_ms},
            "process_init_ms": {**self.init.phases_ms, "total": self.init.total_ms},
            "in_flight": self.admission.active,
            "queued": self.admission.waiting,
            "shed": self.admission.shed,
        }
        return JSONResponse(body, status_code=503 if self.draining else 200)

    async def metrics(self, _request: Request) -> Response:
        loop = asyncio.get_running_loop()
        try:
            scrape = await loop.run_in_executor(None, self.telemetry.scrape)
        except TelemetryUnavailable as exc:
            body = {"error": {"code": "telemetry_unavailable", "message": str(exc)}}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        return Response(scrape.payload, headers={"content-type": scrape.content_type})

    async def openapi(self, _request: Request) -> Response:
        return JSONResponse(openapi_document(__version__))


def _parse_top_k(query_string: bytes) -> int:
    if not query_string:
        return DEFAULT_TOP_K
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError as exc:
        raise errors.invalid_query(str(exc)) from None
    values = [value for key, value in pairs if key == "top_k"]
    if not values:
        return DEFAULT_TOP_K
    if len(values) > 1:
        raise errors.invalid_query("top_k given more than once")
    raw = values[0]
    try:
        k = int(raw)
    except ValueError:
        raise errors.invalid_query(f"top_k must be an integer, got {raw[:40]!r}") from None
    if not 1 <= k <= MAX_TOP_K:
        raise errors.invalid_query(f"top_k must be between 1 and {MAX_TOP_K}, got {k}")
    return k


async def _linger(receive: Receive, headers: Headers, state: BodyState, skip: bool) -> bool:
    """Reads and drops what is left of a refused request's body, bounded in bytes and time; True when it
    all came (the connection can be kept), False when the connection must close after the answer."""
    if skip or (not state.received and headers.get("expect", "").lower() == "100-continue"):
        # A client waiting for 100 Continue has sent no body: it reads the answer and sends nothing more.
        return False
    loop = asyncio.get_running_loop()
    dropped = 0
    try:
        async with asyncio.timeout_at(loop.time() + LINGER_MAX_S):
            while dropped <= LINGER_MAX_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    state.complete = True
                    return True
    except TimeoutError:
        pass
    return False


def json_bytes(content: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code, headers=exc.headers
    )


class _Classify:
    """The classify endpoint as an ASGI app (an instance, so Starlette's Route does not wrap it)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler.classify(scope, receive, send)


class HandlerApp(Starlette):
    """The handler's Starlette app; POST /v1/classify goes straight to its endpoint, past the middleware
    and the router, whose per-request work is not needed there."""

    def __init__(self, classify: ASGIApp, connections: ConnectionCount | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._classify = classify
        self._connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif scope["method"] == "POST" and scope["path"] == CLASSIFY_ROUTE:
            await self._classify(scope, receive, send)  # which checks the connection cap itself
        elif self._connections is not None and self._connections.over and scope["path"] not in UNCAPPED_ROUTES:
            refused = errors.too_many_connections(self._connections.limit)
            await JSONResponse(refused.body(), refused.status, {**refused.headers, "Connection": "close"})(
                scope, receive, send
            )
        else:
            await _closing_unless_body_read(super().__call__, scope, receive, send)


async def _closing_unless_body_read(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Runs `app`, answering with `Connection: close` when the request's body was not read to its end: the
    other routes read no body, and one left unread would otherwise keep the connection open for as long as
    its client trickles bytes (no deadline applies to a body no one reads)."""
    headers = scope.get("headers", [])
    complete = not any(
        (name == b"content-length" and value.strip() not in (b"", b"0")) or name == b"transfer-encoding"
        for name, value in headers
    )

    async def tracked_receive() -> Message:
        nonlocal complete
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            complete = True
        return message

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start" and not complete:
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    await app(scope, tracked_receive, closing_send)


def create_app(
    settings: HandlerSettings,
    *,
    telemetry: TelemetrySink | None = None,
    store: ModelStore | None = None,
    init: InitRecord | None = None,
    connections: ConnectionCount | None = None,
) -> HandlerApp:
    """Build a handler app; every collaborator can be passed in, none is global."""
    if telemetry is None:
        telemetry = make_telemetry(
            TelemetrySettings(
                service_name=settings.service_name,
                service_version=__version__,
                region=settings.region,
                pop=settings.pop_name,
                otlp_endpoint=settings.otlp_endpoint,
                enabled=settings.telemetry,
            )
        )
    handler = Handler(
        settings, telemetry, store or model_store(settings), init or InitRecord(), connections=connections
    )
    routes = [
        # Reached only by other methods (405): HandlerApp takes POST straight to the endpoint.
        Route(CLASSIFY_ROUTE, _Classify(handler), methods=["POST"]),
        Route("/healthz", handler.healthz, methods=["GET"]),
        Route("/readyz", handler.readyz, methods=["GET"]),
        Route("/metrics", handler.metrics, methods=["GET"]),
        Route("/openapi.json", handler.openapi, methods=["GET"]),
    ]
    app = HandlerApp(
        handler.classify,
        connections,
        routes=routes,
        lifespan=handler.lifespan,
        exception_handlers={HTTPException: _http_exception},
    )
    app.state.handler = handler
    return app
