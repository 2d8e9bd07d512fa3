"""A tab in Locust's web UI with live per-region client latency in µs, each percentile with its
confidence interval, and each SLO check's live status (Locust's own tables round to whole milliseconds).

Fed by the gathering process with every chunk of samples; shown through Locust's web UI extension
points (the `extended_tabs`/`extended_tables` template arguments and `extended_stats` in /stats/requests).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.load.recorder import Sample, parse_row

TAB_KEY = "edge-latency"
PCTS = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))
COLUMNS = [
    ("region", "Region"),
    ("ok", "OK"),
    ("errors", "Errors"),
    *((f"{key}_us", f"{key} µs [interval]") for key, _ in PCTS),
    ("slo", "SLO (client latency)"),
]


class LiveLatency:
    """Every warm, answered request's client latency (µs) per region, as gathered so far."""

    def __init__(self, thresholds_ms: dict[str, dict[str, float]], confidence: float = 0.99) -> None:
        self.thresholds_ms = thresholds_ms  # region -> {percentile: ms} of client_latency_ms
        self.confidence = confidence
        self.values: dict[str, list[int]] = {}
        self.counts: dict[str, list[int]] = {}  # region -> [ok, errors]

    def add_csv(self, header: list[str], body: str) -> None:
        """Take in one chunk: CSV rows (without header) in `header`'s field order."""
        for row in csv.reader(io.StringIO(body)):
            if len(row) == len(header):
                self.add(parse_row(dict(zip(header, row, strict=True))))

    def add(self, s: Sample) -> None:
        """Take in one sample."""
        c = self.counts.setdefault(s.region, [0, 0])
        c[0 if s.ok else 1] += 1
        if s.ok and s.cold != 1:
            self.values.setdefault(s.region, []).append(s.latency_us)

    def rows(self) -> list[dict[str, Any]]:
        """One row per region for the tab."""
        from harness.verdict.stats import percentile_interval

        out = []
        for region in sorted(self.counts):
            v = np.sort(np.asarray(self.values.get(region, []), dtype=np.int64))
            row: dict[str, Any] = {"region": region, "ok": self.counts[region][0], "errors": self.counts[region][1]}
            status = []
            for key, q in PCTS:
                if not len(v):
                    row[f"{key}_us"] = "-"
                    continue
                iv = percentile_interval(v, q, self.confidence)
                lo = "..." if iv.lo is None else f"{iv.lo:.0f}"
                hi = "..." if iv.hi is None else f"{iv.hi:.0f}"
                row[f"{key}_us"] = f"{iv.value:.0f} [{lo}, {hi}]"
                limit = self.thresholds_ms.get(region, {}).get(key)
                if limit is not None:
                    us = limit * 1000
                    if iv.hi is not None and iv.hi <= us:
                        word = "pass"
                    elif iv.lo is not None and iv.lo > us:
                        word = "fail"
                    else:
                        word = "undecided"
                    status.append(f"{key} <= {limit:g} ms: {word}")
            row["slo"] = ", ".join(status) or "-"
            out.append(row)
        return out


def install(environment: Any, rows: Callable[[], list[dict[str, Any]]]) -> None:
    """Add the tab to the running web UI (no-op without one); `rows` gives its table's current rows."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import request

    web_ui.template_args["extended_tabs"] = [{"title": "Edge latency (µs)", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]

    @web_ui.app.after_request
    def _extend_stats(response: Any) -> Any:
        if request.path != "/stats/requests" or not response.is_json:
            return response
        data = response.get_json()
        data["extended_stats"] = [{"key": TAB_KEY, "data": rows()}]
        response.set_data(json.dumps(data))
        return response
