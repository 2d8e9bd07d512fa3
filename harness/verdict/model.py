"""The typed results of a run: what results.json holds, what the terminal, the report and the verdict read.

`Results` is built in one place (`harness.verdict.results.build_results`), written with `to_json`, read
back with `read_results`, and described by `results_schema()` (`edgeharness schema results`).
Times are in milliseconds unless a name says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.verdict.typed import from_json, json_schema, to_json

SCHEMA = "edgeharness.results/2"
PCT_KEYS = ("p50", "p90", "p95", "p99", "p99.9")

# Verdicts and their exit codes.
PASS, FAIL, INVALID, INCONCLUSIVE, INTERRUPTED = "pass", "fail", "invalid", "inconclusive", "interrupted"
EXIT_CODES = {PASS: 0, FAIL: 1, INVALID: 2, INCONCLUSIVE: 2, INTERRUPTED: 3}


def decide(*, interrupted: bool, invalid: bool, failed: bool, inconclusive: bool) -> str:
    """The verdict's one precedence: interrupted > invalid > fail > inconclusive > pass."""
    if interrupted:
        return INTERRUPTED
    if invalid:
        return INVALID
    if failed:
        return FAIL
    return INCONCLUSIVE if inconclusive else PASS


def pct_fraction(key: str) -> float:
    """ "p99.9" -> 0.999."""
    return float(key[1:]) / 100.0


@dataclass
class Estimate:
    """A percentile: its point estimate (nearest rank) and its distribution-free confidence interval."""

    value: float
    lo: float | None  # None: too few samples for a lower bound at this confidence
    hi: float | None  # None: too few samples for an upper bound at this confidence


@dataclass
class Summary:
    """Count, min, mean, max and percentiles (with intervals) of one set of measurements."""

    count: int = 0
    min: float | None = None
    mean: float | None = None
    max: float | None = None
    confidence: float | None = None  # of every interval below
    percentiles: dict[str, Estimate] = field(default_factory=dict)  # "p50" .. "p99.9"

    def value(self, key: str) -> float | None:
        """The point estimate of percentile `key`, or None."""
        est = self.percentiles.get(key)
        return est.value if est else None


@dataclass
class LatencyBlock:
    """Client latency of answered requests: all of them, warm ones, and those that met a cold PoP."""

    all: Summary
    warm: Summary
    cold: Summary


@dataclass
class Accounting:
    """Every planned arrival's fate; lost = planned - every outcome recorded (None: plan unknown)."""

    planned: int | None
    recorded: int  # arrivals with a recorded outcome (sent + dropped)
    sent: int
    ok: int
    errors: int  # sent, answered with a non-2xx status or a transport error
    dropped: int  # never sent: the outstanding limit was reached
    late: int  # sent later than late_threshold_ms after the intended time
    unfinished: int  # sent, still unanswered when the load process stopped
    lost: int | None  # planned but recorded nowhere (a dead worker, a cut run, a lost flush)
    cold: int
    warm: int


@dataclass
class PopFigures:
    """What one client region saw from one PoP."""

    counts: Accounting
    rtt_ms: float
    rtt_source: str
    client_latency_ms: LatencyBlock


@dataclass
class RegionResult:
    """One client region: its accounting and every figure measured for it."""

    counts: Accounting
    error_rate: float  # (errors + dropped + unfinished) / recorded
    late_fraction: float  # late / sent
    processes: list[str]  # load processes that generated its arrivals
    rtt_measured: bool  # a region-pinned worker measured the network RTT (else emulated / excluded)
    client_latency_ms: LatencyBlock
    e2e_latency_ms: Summary  # warm client latency plus the emulated network RTT
    rtt_injected: bool
    server_total_ms: Summary
    server_inference_ms: Summary
    send_delay_ms: Summary
    server_latency_ms: Summary | None  # from Prometheus (no intervals); only in runs with the stack
    pops: dict[str, PopFigures]


@dataclass
class PopEvent:
    """Something done to a PoP during the run (taken down, brought back)."""

    event: str
    at_s: float


@dataclass
class PopResult:
    """One PoP of the run: where it was, how fast it got ready, what it served."""

    url: str
    local: bool
    ready_s: float | None  # this PoP's own spawn-to-ready time
    events: list[PopEvent]
    counts: Accounting
    client_regions: list[str]
    client_latency_ms: LatencyBlock
    server_inference_ms: Summary


@dataclass
class LoadProcessResult:
    """One load process and what became of the arrivals it was given."""

    name: str
    regions: list[str]
    state: str  # finished | lost | interrupted | unknown (rejudged without the ledger)
    last_flush_t_s: float | None
    rtt_measured: bool
    planned: dict[str, int]
    recorded: dict[str, int]
    lost: dict[str, int]


@dataclass
class ProcessColdStart:
    """One process-level cold start: spawn a PoP, time it to listening, ready and its first answer."""

    region: str
    strategy: str
    repeat: int
    spawn_to_listening_ms: float | None = None
    spawn_to_ready_ms: float | None = None
    spawn_to_first_answer_ms: float | None = None
    first_request_ms: float | None = None  # the first request's own client latency
    status: int = 0  # HTTP status of the first request; 0: none came back
    phases: dict[str, float] = field(default_factory=dict)  # the process's own init phases (its /readyz)
    error: str | None = None  # why the start did not answer

    @property
    def answered(self) -> bool:
        """A good first answer (2xx, as for every request) with its time: the starts that are judged."""
        return answered_ok(self.status) and self.spawn_to_first_answer_ms is not None


def answered_ok(status: int) -> bool:
    """The one rule for a good answer: a 2xx status."""
    return 200 <= status < 300


@dataclass
class Check:
    """One SLO check: threshold, measured estimate with its interval, outcome and why."""

    name: str
    region: str
    metric: str
    percentile: str | None
    threshold: float
    measured: float | None
    lo: float | None
    hi: float | None
    samples: int
    # pass | fail | inconclusive (interval straddles the threshold) | not_observed (too few cold starts
    # in a profile that does not aim at them, or a claim this run cannot measure: no --stack, no process
    # start in the region; named in the verdict's notes) | no_data (nothing measured: invalidates the run)
    status: str
    unit: str = "ms"
    needed_samples: int | None = None  # samples in all that would have decided it, at this rate
    strategy: str | None = None  # process_cold_start_ms: the start strategy judged
    reason: str = ""


@dataclass
class ValidityRules:
    """The rules a run must meet for its figures to mean anything (from the SLO file)."""

    confidence: float = 0.99
    min_duration_s: float = 30.0
    duration_tolerance_s: float = 2.0  # a measured span shorter than planned by more is invalid
    min_cold_samples: int = 5
    max_late_fraction: float = 0.05
    # Errors, dropped and unfinished arrivals over all recorded, where the SLO sets no error_rate: the
    # percentiles describe only answered requests, so a larger unanswered share can hide the whole tail.
    max_unanswered_fraction: float = 0.01


@dataclass
class Verdict:
    """The outcome: status, exit code and every reason."""

    status: str  # pass | fail | invalid | inconclusive | interrupted
    exit_code: int  # 0 pass, 1 fail, 2 invalid or inconclusive, 3 interrupted
    valid: bool
    invalid_reasons: list[str]
    inconclusive_reasons: list[str]
    failed: list[str]
    checks: list[Check]
    notes: list[str]
    slo_file: str
    validity_rules: ValidityRules


@dataclass
class RunInfo:
    """What was asked and when it happened."""

    settings: dict[str, Any]
    profile: dict[str, Any]
    started_at: float
    t0: float | None
    finished_at: float
    duration_s: float  # measured span of the schedule
    planned_duration_s: float
    interrupted: str | None
    python: str
    platform: str
    latency_basis: str


@dataclass
class TimeSeries:
    """One client region per time bucket: arrivals, answers, errors, nearest-rank p50 / p99."""

    bucket_s: float
    t_s: list[float]
    arrivals: list[int]
    ok: list[int]
    errors: list[int]
    p50_ms: list[float | None]
    p99_ms: list[float | None]


@dataclass
class ServerRegion:
    """The handlers' own figures for one region, from Prometheus."""

    requests: int
    errors: int
    latency_ms: dict[str, float]
    inference_ms: dict[str, float]


@dataclass
class ServerSide:
    """Server-side figures from the telemetry stack's Prometheus."""

    source: str
    url: str
    regions: dict[str, ServerRegion]
    error: str | None


@dataclass
class CatalogueRegion:
    """A region of the catalogue, for the map."""

    name: str
    city: str
    lat: float
    lon: float
    tz: str
    country: str = ""
    continent: str = ""


@dataclass
class CatalogueInfo:
    """The catalogue the run used, and which of its regions took part."""

    file: str
    regions: dict[str, CatalogueRegion]
    used: list[str]


@dataclass
class Results:
    """The results of one edgeharness run (results.json)."""

    schema: str
    verdict: Verdict
    run: RunInfo
    load_processes: list[LoadProcessResult]
    pops: dict[str, PopResult]
    regions: dict[str, RegionResult]
    process_cold_start: list[ProcessColdStart]
    server_side: ServerSide | None
    timeseries: dict[str, TimeSeries]
    catalogue: CatalogueInfo | None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (validates against `results_schema()`)."""
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        """Rebuild from a results.json document of this schema version."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"results schema {data.get('schema')!r} is not {SCHEMA!r}")
        return from_json(cls, data)


def read_results(path: str | Path) -> Results:
    """Read a results.json written by this version."""
    return Results.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def results_schema() -> dict[str, Any]:
    """The JSON Schema of results.json."""
    return json_schema(Results, "urn:edgeharness:results:2", "edgeharness results", SCHEMA)
