"""The handler's metric names and histogram buckets (no OpenTelemetry import)."""

from __future__ import annotations

# Seconds. 0.25 ms steps up to 20 ms resolve a p50 SLO of 10 ms well; coarser steps reach 10 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    *(round(i * 0.00025, 5) for i in range(1, 81)),
    0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# Cold starts and init run from tens of milliseconds to seconds.
INIT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip

REQUEST_DURATION = "http.server.request.duration"
STAGE_DURATION = "edgeharness.stage.duration"
INFERENCE_DURATION = "edgeharness.inference.duration"
QUEUE_DURATION = "edgeharness.queue.duration"
COLDSTARTS = "faas.coldstarts"
INIT_DURATION = "faas.init_duration"
INIT_PHASE_DURATION = "edgeharness.init.phase.duration"
ACTIVE_REQUESTS = "http.server.active_requests"
QUEUED_REQUESTS = "edgeharness.queued_requests"
SHED_REQUESTS = "edgeharness.requests.shed"
MODEL_LOADED = "edgeharness.model.loaded"
TELEMETRY_DROPPED = "edgeharness.telemetry.dropped"

# The resource attributes copied onto every /metrics series, so a scrape alone tells region and PoP apart.
LABELLED_RESOURCE_ATTRIBUTES = frozenset({"cloud.region", "edgeharness.pop", "service.instance.id"})
