"""Rate limits for the exporters' failure logs: with the collector down they would flood the log."""

from __future__ import annotations

import logging
import threading
import time

# Loggers that speak once per failed export: with the collector down they would flood the log.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk._shared_internal",
)


class _RateLimit(logging.Filter):
    """Lets one record through per interval and says how many it held back; drops are counted anyway."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._held += 1
                return False
            if self._held:
                record.msg = f"{record.msg} (and {self._held} similar messages in the last {self._interval_s:.0f} s)"
            self._next, self._held = now + self._interval_s, 0
            return True


def quiet_export_logs(interval_s: float = 60.0) -> None:
    """Rate-limits the exporters' failure logs (idempotent)."""
    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimit) for f in logger.filters):
            logger.addFilter(_RateLimit(interval_s))
