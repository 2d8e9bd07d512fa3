"""One metric reader for both /metrics and OTLP: every measurement is aggregated once, not once per reader.

With a `PrometheusMetricReader` and a `PeriodicExportingMetricReader` side by side, the SDK keeps a
separate aggregation per reader, and every histogram record updates both. Both want
cumulative temporality, so one aggregation serves both: a scrape collects it for the Prometheus text
format as before, and a timer thread collects the same state for the OTLP exporter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData

from harness.handler.telemetry.threads import background_priority

logger = logging.getLogger(__name__)


class ScrapeAndPushReader(PrometheusMetricReader):
    """A `PrometheusMetricReader` that also pushes the same collection to `exporter` every interval."""

    def __init__(
        self,
        exporter: MetricExporter | None,
        interval_s: float,
        timeout_s: float,
        idle_priority: bool = True,
        **prometheus: Any,
    ) -> None:
        super().__init__(**prometheus)
        self._idle_priority = idle_priority
        self.before_collect: Callable[[], None] | None = None  # e.g. record what is still pending
        self._exporter = exporter
        self._interval_s = interval_s
        self._timeout_ms = timeout_s * 1000
        self._pushing = threading.local()
        self._stop = threading.Event()
        self._push_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if exporter is not None:
            self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        if self._idle_priority:
            background_priority()
        while not self._stop.wait(self._interval_s):
            self.push()

    def push(self) -> None:
        """Collects now and exports to OTLP (the timer does this every interval)."""
        if self._exporter is None:
            return
        with self._push_lock:
            self._pushing.active = True
            try:
                self.collect(timeout_millis=self._timeout_ms)
            except Exception:  # a failed collection must not end the timer thread
                logger.exception("metric collection for OTLP export failed")
            finally:
                self._pushing.active = False

    def collect(self, timeout_millis: float = 10_000) -> None:
        if self.before_collect is not None:
            self.before_collect()
        super().collect(timeout_millis=timeout_millis)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if getattr(self._pushing, "active", False):
            if metrics_data is not None and self._exporter is not None:
                self._exporter.export(metrics_data, timeout_millis=self._timeout_ms)
            return
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        # The base class would collect into the scrape queue, and the next scrape would then show every
        # series twice; flushing means pushing.
        self.push()
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_millis / 1000)
            self.push()
        if self._exporter is not None:
            self._exporter.shutdown(timeout_millis=timeout_millis)
        super().shutdown(timeout_millis=timeout_millis, **kwargs)
