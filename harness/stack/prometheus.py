"""A small client for Prometheus's HTTP API: instant queries, exemplars, readiness."""

from __future__ import annotations

import json
import time
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus answered with an error, or not at all."""


class PrometheusClient:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        import httpx

        try:
            response = httpx.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        except httpx.HTTPError as error:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {error}") from error
        return response.status_code, response.content

    def ready(self) -> bool:
        try:
            return self._get("/-/ready")[0] == 200
        except PrometheusError:
            return False

    def api(self, path: str, **params: str) -> Any:
        status, body = self._get(path, params)
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise PrometheusError(f"Prometheus {path}: HTTP {status}: not JSON: {body[:200]!r}") from error
        if status != 200 or payload.get("status") != "success":
            raise PrometheusError(f"Prometheus {path} {params}: HTTP {status}: {payload.get('error', payload)}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query: a list of {'metric': labels, 'value': [ts, 'v']}."""
        return self.api("/api/v1/query", query=promql)["result"]

    def scalar_by(self, promql: str, label: str) -> dict[str, float]:
        """An instant vector as {label value: number}, NaN results left out."""
        out: dict[str, float] = {}
        for sample in self.query(promql):
            value = float(sample["value"][1])
            if value == value:  # not NaN
                out[sample["metric"].get(label, "")] = value
        return out

    def exemplars(self, promql: str, window_s: float = 600.0) -> list[dict[str, Any]]:
        now = time.time()
        return self.api("/api/v1/query_exemplars", query=promql, start=str(now - window_s), end=str(now))
