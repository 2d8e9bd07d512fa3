"""The handler app in-process: the API, errors, lifecycle, overload, telemetry and a fuzzed endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from handler_fixtures import encoded, int8_model, jpeg, models_dir, photo, png_bomb  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient
from telemetry_fixtures import InProcessTelemetry

from harness.handler import pipeline
from harness.handler.app import create_app
from harness.handler.errors import HandlerError
from harness.handler.settings import HandlerSettings, SettingsError
from harness.handler.telemetry.records import TelemetrySettings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def make_settings(model: Path, tmp_path: Path, **overrides: Any) -> HandlerSettings:
    values: dict[str, Any] = {
        "region": "nairobi",
        "model": str(model),
        "model_cache": str(tmp_path / "cache"),
        "concurrency": 2,
    }
    values.update(overrides)
    return HandlerSettings(**values)


@pytest.fixture
def client(int8_model: Path, tmp_path: Path) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(make_settings(int8_model, tmp_path))) as c:
        yield c


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://handler") as c:
            yield c


def classify(c: TestClient, body: bytes, content_type: str = "image/jpeg", **params: Any) -> httpx.Response:
    return c.post("/v1/classify", content=body, headers={"content-type": content_type}, params=params)


def test_classify_returns_top_k_model_and_timings(client: TestClient) -> None:
    response = classify(client, jpeg(), top_k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["region"] == "nairobi" and body["pop"] == "nairobi"
    assert body["model"]["name"] == "mobilenetv2-int8"
    assert len(body["model"]["sha256"]) == 64
    assert len(body["top_k"]) == 3
    scores = [p["score"] for p in body["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1.0 + 1e-6
    timings = body["timings_ms"]
    for stage in ("queue", "decode", "preprocess", "inference", "postprocess", "total"):
        assert timings[stage] >= 0
    assert timings["total"] >= timings["decode"] + timings["inference"]
    assert "inference;dur=" in response.headers["server-timing"]


def test_an_injected_delay_slows_every_answer_and_says_so(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    with TestClient(create_app(make_settings(int8_model, tmp_path, inject_delay_ms=40))) as c:
        answers = [classify(c, jpeg()) for _ in range(3)]
    for r in answers:
        assert r.status_code == 200
        timings = r.json()["timings_ms"]
        assert timings["injected"] == 40 and timings["total"] >= 40 + timings["inference"]
        assert "injected;dur=40.000" in r.headers["server-timing"]
    with pytest.raises(SettingsError, match="inject_delay_ms"):
        make_settings(int8_model, tmp_path, inject_delay_ms=-1)


def test_first_request_of_a_process_is_a_cold_start_then_warm(client: TestClient) -> None:
    first, second = classify(client, jpeg()), classify(client, jpeg())
    assert first.json()["cold_start"] is True and first.headers["x-cold-start"] == "true"
    assert second.json()["cold_start"] is False and second.headers["x-cold-start"] == "false"
    assert second.json()["cold_start_phases_ms"] is None


def test_each_format_classifies(client: TestClient) -> None:
    image = photo(320, 240)
    for fmt, ct in (("PNG", "image/png"), ("WEBP", "image/webp"), ("JPEG", "image/jpeg")):
        assert classify(client, encoded(image, fmt), ct).status_code == 200


def test_same_image_same_answer(client: TestClient) -> None:
    body = jpeg(seed=7)
    assert classify(client, body).json()["top_k"] == classify(client, body).json()["top_k"]


@pytest.mark.parametrize(
    ("body", "content_type", "params", "status", "code"),
    [
        (b"", "image/jpeg", {}, 400, "empty_body"),
        (b"\xff\xd8\xff", "", {}, 415, "unsupported_media_type"),
        (b"GIF89a", "image/gif", {}, 415, "unsupported_media_type"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "image/png", {}, 400, "invalid_image"),
        (png_bomb(), "image/png", {}, 422, "image_too_large"),
        (b"x", "image/jpeg", {"top_k": "abc"}, 400, "invalid_query"),
        (b"x", "image/jpeg", {"top_k": "0"}, 400, "invalid_query"),
        (b"x", "image/jpeg", {"top_k": "101"}, 400, "invalid_query"),
    ],
)
def test_bad_input_gets_a_precise_4xx(
    client: TestClient, body: bytes, content_type: str, params: dict[str, str], status: int, code: str
) -> None:
    response = classify(client, body, content_type, **params)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    # The process lives on: a good request right after still works.
    assert classify(client, jpeg()).status_code == 200


def test_truncated_jpeg_is_400(client: TestClient) -> None:
    body = jpeg()
    response = classify(client, body[: len(body) // 2])
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_image")


def test_body_over_limit_is_413(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    app = create_app(make_settings(int8_model, tmp_path, max_body_bytes=10_000))
    with TestClient(app) as c:
        response = classify(c, jpeg(1280, 960))
        assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    assert client.get("/v1/classify").json()["error"]["code"] == "method_not_allowed"


def test_a_defect_is_a_json_500_counted_and_the_handler_lives_on(
    int8_model: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(make_settings(int8_model, tmp_path))
    with TestClient(app) as c:
        real_postprocess = pipeline.postprocess

        def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(pipeline, "postprocess", broken)
        response = classify(c, jpeg())
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        monkeypatch.setattr(pipeline, "postprocess", real_postprocess)
        assert classify(c, jpeg()).status_code == 200
        text = c.get("/metrics").text
        assert 'error_type="internal_error"' in text and 'http_response_status_code="500"' in text
        assert app.state.handler.admission.admitted == 0


def test_a_client_gone_before_its_body_gets_no_answer_and_holds_nothing(client: TestClient) -> None:
    handler = client.app.state.handler  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/classify",
        "query_string": b"",
        "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"1000")],
    }
    asyncio.run(handler.classify(scope, receive, send))
    assert sent == [] and handler.admission.admitted == 0
    assert classify(client, jpeg()).status_code == 200


def test_health_ready_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "alive"
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["model_loaded"] is True
    assert set(ready["last_model_load_ms"]) >= {"fetch", "session", "warmup", "total"}
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]) == {
        "image/jpeg", "image/png", "image/webp"
    }  # fmt: skip


def test_metrics_expose_the_instruments_with_fine_buckets(
    int8_model: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = create_app(make_settings(int8_model, tmp_path))
    with TestClient(app) as client:
        classify(client, jpeg())
        classify(client, b"", "image/jpeg")
        text = client.get("/metrics").text
        assert app.state.handler.telemetry.pid is not None  # a telemetry process answered
    assert "http_server_request_duration_seconds_bucket{" in text
    assert 'le="0.00025"' in text and 'le="0.02"' in text and 'le="10.0"' in text
    assert 'cloud_region="nairobi"' in text
    assert 'http_response_status_code="400"' in text
    for name in (
        "edgeharness_stage_duration_seconds_bucket",
        "edgeharness_inference_duration_seconds_bucket",
        "faas_coldstarts_total",
        "faas_init_duration_seconds_bucket",
        "edgeharness_init_phase_duration_seconds_bucket",
        "http_server_active_requests",
        "edgeharness_model_loaded",
    ):
        assert name in text, name


def test_lazy_load_makes_the_first_request_a_model_cold_start(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    with TestClient(create_app(make_settings(int8_model, tmp_path, load="lazy"))) as c:
        assert c.get("/readyz").json()["model_loaded"] is False
        body = classify(c, jpeg()).json()
        assert body["cold_start"] is True
        assert set(body["cold_start_phases_ms"]) == {"fetch", "session", "warmup"}
        assert body["timings_ms"]["cold_start"] > 0
        assert c.get("/readyz").json()["model_loaded"] is True


def test_scale_to_zero_releases_the_model_and_the_next_request_is_cold(
    int8_model: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = create_app(make_settings(int8_model, tmp_path, idle_timeout=0.3))
    runtime = app.state.handler.runtime
    with TestClient(app) as c:
        classify(c, jpeg())
        assert classify(c, jpeg()).json()["cold_start"] is False
        deadline = time.monotonic() + 5
        while runtime.loaded is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json()["model_loaded"] is False
        assert "edgeharness_model_loaded{" in c.get("/metrics").text
        cold = classify(c, jpeg()).json()
        assert cold["cold_start"] is True
        assert set(cold["cold_start_phases_ms"]) == {"fetch", "session", "warmup"}
        assert runtime.last_cold_start.reason == "scaled_to_zero"
        assert classify(c, jpeg()).json()["cold_start"] is False


def test_model_that_cannot_load_is_503_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with TestClient(create_app(make_settings(bad, tmp_path, load="lazy"))) as c:
        response = classify(c, jpeg())
        assert (response.status_code, response.json()["error"]["code"]) == (503, "model_unavailable")
        # Generic: a model's source may hold credentials; the log says what failed.
        assert "broken.onnx" not in response.text
        assert c.get("/healthz").status_code == 200


def test_admission_counts_running_and_waiting_and_sheds_beyond_both() -> None:
    from harness.handler.admission import Admission

    admission = Admission(limit=2, queue_limit=1)
    for _ in range(3):
        admission.enter()
    with pytest.raises(HandlerError) as err:
        admission.enter()
    assert (err.value.status, err.value.code, admission.shed) == (503, "overloaded", 1)
    assert int(err.value.headers["Retry-After"]) >= 1
    admission.started()
    admission.started()
    assert (admission.active, admission.waiting) == (2, 1)
    admission.finished(0.005)
    admission.leave()
    assert (admission.active, admission.waiting, admission.admitted) == (1, 1, 2)
    admission.enter()  # a place freed up
    admission.leave()  # one that never ran (e.g. the model failed to load)
    assert admission.admitted == 2


def test_overload_sheds_with_retry_after(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    app = create_app(make_settings(int8_model, tmp_path, concurrency=1, queue=1))
    asyncio.run(_overload(app, jpeg(1280, 960)))


async def _overload(app: Any, body: bytes) -> None:
    async with running(app) as c:
        responses = await asyncio.gather(
            *(c.post("/v1/classify", content=body, headers={"content-type": "image/jpeg"}) for _ in range(8))
        )
        statuses = sorted(r.status_code for r in responses)
        # One runs, one waits in the queue, the other six are shed at once.
        assert statuses == [200, 200, 503, 503, 503, 503, 503, 503]
        shed = [r for r in responses if r.status_code == 503]
        assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
        assert all(r.json()["error"]["code"] == "overloaded" for r in shed)
        assert app.state.handler.admission.shed == 6
        assert "edgeharness_requests_shed_total" in (await c.get("/metrics")).text


def test_trace_context_and_stage_spans(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    # Recorded in this process (a test helper), where an in-memory exporter can see the spans.
    telemetry = InProcessTelemetry(TelemetrySettings("edgeharness-handler", "0", "nairobi", "nairobi"))
    exporter = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(make_settings(int8_model, tmp_path), telemetry=telemetry)
    with TestClient(app) as c:
        assert classify(c, jpeg(), top_k=2).status_code == 200
        response = c.post(
            "/v1/classify", content=jpeg(), headers={"content-type": "image/jpeg", "traceparent": TRACEPARENT}
        )
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name == "POST /v1/classify"]
    assert len(server) == 2
    traced = next(s for s in server if format(s.context.trace_id, "032x") == TRACE_ID)
    assert traced.attributes["faas.coldstart"] is False
    assert server[0].attributes["faas.coldstart"] is True
    assert traced.attributes["http.response.status_code"] == 200
    assert traced.attributes["edgeharness.model.name"] == "mobilenetv2-int8"
    assert traced.resource.attributes["cloud.region"] == "nairobi"
    assert traced.resource.attributes["service.name"] == "edgeharness-handler"
    assert traced.resource.attributes["service.instance.id"]
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == traced.context.span_id}
    assert set(children) == {"decode", "preprocess", "inference", "postprocess"}
    assert all(s.context.trace_id == traced.context.trace_id for s in children.values())
    assert children["decode"].end_time <= children["inference"].start_time


def test_collector_down_requests_succeed_and_drops_are_counted(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    import socket

    with socket.socket() as s:  # a port with nothing listening: the collector is down
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    app = create_app(make_settings(int8_model, tmp_path, otlp_endpoint=f"http://127.0.0.1:{dead}"))
    telemetry = app.state.handler.telemetry
    with TestClient(app) as c:
        for _ in range(5):
            assert classify(c, jpeg()).status_code == 200
        # Push the queued spans through the (failing) exporter now instead of waiting for the schedule.
        telemetry.force_flush()
        text = c.get("/metrics").text
    dropped = [
        line for line in text.splitlines()
        if line.startswith("edgeharness_telemetry_dropped_total{") and 'signal="traces"' in line
    ]  # fmt: skip
    assert dropped, text[:2000]
    assert float(dropped[0].rsplit(" ", 1)[1]) >= 25  # 5 requests x (server span + 4 stages)


def test_a_lost_telemetry_process_costs_no_request(int8_model: Path, tmp_path: Path) -> None:  # noqa: F811
    app = create_app(make_settings(int8_model, tmp_path))
    telemetry = app.state.handler.telemetry
    with TestClient(app) as c:
        assert classify(c, jpeg()).status_code == 200
        assert c.get("/metrics").status_code == 200
        telemetry.restart_after_s, telemetry._next_start = 3600.0, time.monotonic() + 3600  # none replaces it yet
        pid = telemetry.pid
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # reaped here: the handler's own wait then finds nothing
        for _ in range(3):
            assert classify(c, jpeg()).status_code == 200
        response = c.get("/metrics")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "telemetry_unavailable"
        assert response.headers["retry-after"]
        telemetry._next_start = 0.0  # now it may start a new one
        text = c.get("/metrics").text
    (line,) = [line for line in text.splitlines() if line.startswith("edgeharness_telemetry_dropped_total{")]
    assert 'reason="process_down"' in line and float(line.rsplit(" ", 1)[1]) == 3


VALID = jpeg(320, 240, seed=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2048),
        st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)).map(
            lambda t: VALID[: t[0]] + bytes([t[1]]) + VALID[t[0] + 1 :]
        ),
    ),
    content_type=st.one_of(
        st.sampled_from(["image/jpeg", "image/png", "image/webp", "IMAGE/JPEG; q=1", "", "text/html"]),
        st.text(max_size=30).filter(lambda s: "\n" not in s and "\r" not in s),
    ),
    query=st.dictionaries(st.sampled_from(["top_k", "x", "top-k"]), st.text(max_size=12), max_size=2),
)
def test_fuzzed_requests_never_500(client: TestClient, body: bytes, content_type: str, query: dict[str, str]) -> None:
    try:
        response = client.post("/v1/classify", content=body, headers={"content-type": content_type}, params=query)
    except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError):
        return  # the client refused to send it; nothing reached the handler
    assert response.status_code in (200, 400, 413, 415, 422), response.text
    if response.status_code != 200:
        assert response.json()["error"]["code"]


def test_the_app_module_does_not_import_uvicorn_s_protocol() -> None:
    # The app needs the connection count's type only; uvicorn's httptools protocol is the server's business.
    probe = "import sys, harness.handler.app; print('uvicorn.protocols.http.httptools_impl' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
