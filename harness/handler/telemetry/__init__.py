"""The handler's telemetry: records handed over by the serving process, recorded by the OpenTelemetry SDK in a
process of its own. This package's own import is light (names and log limits): the SDK is imported only by
the modules that use it."""

from harness.handler.telemetry.logs import quiet_export_logs
from harness.handler.telemetry.names import (
    ACTIVE_REQUESTS,
    COLDSTARTS,
    INFERENCE_DURATION,
    INIT_BUCKETS_S,
    INIT_DURATION,
    INIT_PHASE_DURATION,
    LATENCY_BUCKETS_S,
    MODEL_LOADED,
    QUEUE_DURATION,
    QUEUED_REQUESTS,
    REQUEST_DURATION,
    SHED_REQUESTS,
    STAGE_DURATION,
    TELEMETRY_DROPPED,
)

__all__ = [
    "ACTIVE_REQUESTS",
    "COLDSTARTS",
    "INFERENCE_DURATION",
    "INIT_BUCKETS_S",
    "INIT_DURATION",
    "INIT_PHASE_DURATION",
    "LATENCY_BUCKETS_S",
    "MODEL_LOADED",
    "QUEUED_REQUESTS",
    "QUEUE_DURATION",
    "REQUEST_DURATION",
    "SHED_REQUESTS",
    "STAGE_DURATION",
    "TELEMETRY_DROPPED",
    "quiet_export_logs",
]
