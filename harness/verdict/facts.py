"""What the runner knows about a run that its samples do not say: the plan, the load processes, the PoPs.

The runner fills these in; `harness.verdict.results.build_results` judges them together with the samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.load.profiles import Profile
    from harness.load.regions import Catalogue
    from harness.verdict.slo import SloSpec

# Load process states.
FINISHED, LOST, INTERRUPTED = "finished", "lost", "interrupted"
# A run folder without its ledger (raw/processes.json): the plan says what each process had to do, the
# samples what it did; whether it stopped cleanly is not known.
UNKNOWN = "unknown"
PROCESS_STATES = (FINISHED, LOST, INTERRUPTED, UNKNOWN)


@dataclass
class LoadProcessFacts:
    """One load process (the local Locust, or one worker) and the share of the plan it was given."""

    name: str  # "local", "worker-0", "worker-nairobi-1", ...
    regions: list[str]  # client regions whose arrivals it generated
    planned: dict[str, int]  # region -> arrivals its schedules hold (exact, from the seeded plan)
    state: str  # "finished" | "lost" (died / disconnected / never reported) | "interrupted" | "unknown"
    last_flush_t_s: float | None  # run time (s from t0) of the last samples it flushed / sent
    rtt_measured: bool = False  # a region-pinned worker on a real machine measures its network RTT
    reason: str = ""  # why it was lost or interrupted, as the gathering process saw it


@dataclass
class RunFacts:
    """Everything the runner knows that the samples do not say."""

    settings: dict[str, Any]
    profile: Profile
    slo: SloSpec
    started_at: float  # wall clock (time.time()) when the run began
    t0: float | None  # wall clock of the schedule's t=0
    finished_at: float
    planned_duration_s: float
    # Empty: unknown (e.g. rejudging an old run without a plan of processes); accounting is then "unknown".
    load_processes: list[LoadProcessFacts] = field(default_factory=list)
    interrupted: str | None = None  # why the run was cut ("SIGINT", "SIGTERM", "locust exited with 1")
    # region -> {url, local, ready_s (spawn->ready of THAT PoP), events: [{event, at_s}]}
    pops: dict[str, dict[str, Any]] = field(default_factory=dict)
    # One entry per process-level cold start (see CONTRACTS.md): {region, strategy, repeat,
    # spawn_to_listening_ms, spawn_to_ready_ms, spawn_to_first_answer_ms, first_request_ms, status, phases}
    process_cold_start: list[dict[str, Any]] = field(default_factory=list)
    server_side: dict[str, Any] | None = None  # {source, url, regions: {region: {...}}, error}
    catalogue: Catalogue | None = None
    notes: list[str] = field(default_factory=list)  # facts worth a line in the verdict (not judged)
