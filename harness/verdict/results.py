"""The one place a run's results are built (typed, `harness.verdict.model.Results`) and written.

`build_results(facts, samples)` accounts for every planned arrival, computes the figures and judges;
`write_outputs(results, out_dir, samples)` writes results.json and report.html atomically;
`harness.report.terminal.print_verdict(results, console)` prints the verdict.

Precedence of verdicts: interrupted (exit 3) > invalid (2) > fail (1) > inconclusive (2) > pass (0). A
definite failure outranks an undecided check; nothing missing or unmeasured can pass.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.load.gather import RUNNING_MARKER as RUNNING
from harness.load.recorder import Sample
from harness.verdict.facts import LOST, RunFacts
from harness.verdict.figures import pop_result, region_result, timeseries
from harness.verdict.model import (
    EXIT_CODES,
    FAIL,
    INCONCLUSIVE,
    PASS,
    SCHEMA,
    CatalogueInfo,
    CatalogueRegion,
    Check,
    Estimate,
    LoadProcessResult,
    PopEvent,
    ProcessColdStart,
    RegionResult,
    Results,
    RunInfo,
    ServerRegion,
    ServerSide,
    Summary,
    Verdict,
    decide,
    pct_fraction,
)
from harness.verdict.slo import check_name, judge_error_rate, judge_percentile
from harness.verdict.stats import min_samples_to_pass

LATENCY_BASIS = (
    "client latency from the intended send time (open model), emulated RTT excluded; e2e_latency_ms adds "
    "the emulated RTT"
)


def build_results(facts: RunFacts, samples: Sequence[Sample]) -> Results:
    """Account for every planned arrival, compute every figure with its interval, judge the SLOs."""
    spec, profile = facts.slo, facts.profile
    conf = spec.validity.confidence
    late_ms = profile.late_threshold_ms
    by_region: dict[str, list[Sample]] = {}
    for s in samples:
        by_region.setdefault(s.region, []).append(s)
    procs = facts.load_processes
    planned = {r: sum(p.planned.get(r, 0) for p in procs) for r in profile.regions} if procs else {}
    measured_rtt = {r for p in procs if p.rtt_measured for r in p.regions}
    regions: dict[str, RegionResult] = {}
    for region in sorted(set(profile.regions) | set(by_region)):
        regions[region] = region_result(
            by_region.get(region, []), late_ms, conf, planned.get(region) if procs else None, region in measured_rtt
        )
    for region, fig in ((facts.server_side or {}).get("regions") or {}).items():
        if region in regions:
            regions[region].server_latency_ms = Summary(
                count=int(fig["requests"]),
                percentiles={k: Estimate(float(v), None, None) for k, v in fig["latency_ms"].items()},
            )
    load_processes = _load_processes(facts, samples)
    duration_s, span_problem = _measured_span(facts, samples)
    cold_starts = [_cold_start(d) for d in facts.process_cold_start]
    verdict = _judge(facts, samples, regions, load_processes, cold_starts, duration_s, span_problem)
    by_pop: dict[str, list[Sample]] = {}
    for s in samples:
        by_pop.setdefault(s.pop, []).append(s)
    pops = {
        name: pop_result(
            by_pop.get(name, []),
            late_ms,
            conf,
            url=str(p.get("url", "")),
            local=bool(p.get("local", False)),
            ready_s=p.get("ready_s"),
            events=[PopEvent(str(e["event"]), float(e["at_s"])) for e in p.get("events", [])],
        )
        for name, p in facts.pops.items()
    }
    cat = facts.catalogue
    return Results(
        schema=SCHEMA,
        verdict=verdict,
        run=RunInfo(
            settings=facts.settings,
            profile=profile.to_dict(),
            started_at=facts.started_at,
            t0=facts.t0,
            finished_at=facts.finished_at,
            duration_s=duration_s,
            planned_duration_s=facts.planned_duration_s,
            interrupted=facts.interrupted,
            python=sys.version.split()[0],
            platform=platform.platform(),
            latency_basis=LATENCY_BASIS,
        ),
        load_processes=load_processes,
        pops=pops,
        regions=regions,
        process_cold_start=cold_starts,
        server_side=_server_side(facts.server_side),
        timeseries=timeseries(samples),
        catalogue=None
        if cat is None
        else CatalogueInfo(
            file=cat.file,
            regions={n: CatalogueRegion(**vars(r)) for n, r in sorted(cat.regions.items())},
            used=sorted(set(profile.regions) | set(facts.pops)),
        ),
    )


def _load_processes(facts: RunFacts, samples: Sequence[Sample]) -> list[LoadProcessResult]:
    out = []
    only = facts.load_processes[0].name if len(facts.load_processes) == 1 else None
    for p in facts.load_processes:
        recorded: dict[str, int] = {r: 0 for r in p.planned}
        for s in samples:
            # Files from before `process` existed name no process: with one load process, they are its own.
            if s.process == p.name or (not s.process and p.name == only):
                recorded[s.region] = recorded.get(s.region, 0) + 1
        lost = {r: max(n - recorded.get(r, 0), 0) for r, n in p.planned.items()}
        out.append(
            LoadProcessResult(
                name=p.name,
                regions=list(p.regions),
                state=p.state,
                last_flush_t_s=p.last_flush_t_s,
                rtt_measured=p.rtt_measured,
                planned=dict(p.planned),
                recorded=recorded,
                lost=lost,
            )
        )
    return out


def schedule_end_s(facts: RunFacts) -> float:
    """The last moment (0.1 s steps) at which the profile offers any arrivals."""
    profile = facts.profile
    t = facts.planned_duration_s
    while t > 0 and not any(profile.rate_at(r, t - 0.05) > 0 for r in profile.regions):
        t = round(t - 0.1, 3)
    return t


def _measured_span(facts: RunFacts, samples: Sequence[Sample]) -> tuple[float, str | None]:
    """How long the schedule really ran, and a reason when it ran short of the plan beyond the tolerance
    (the rules' duration_tolerance_s, plus the gap that random arrivals at the schedule's last rate leave)."""
    if not samples:
        return 0.0, None
    last = max(s.t_s for s in samples)
    end = schedule_end_s(facts)
    profile = facts.profile
    rate = sum(profile.rate_at(r, max(end - 0.05, 0.0)) for r in profile.regions)
    # P(no arrival in 10 / rate seconds) = e^-10 for a Poisson stream: a gap that long is no accident.
    slack = facts.slo.validity.duration_tolerance_s + (10.0 / rate if rate > 0 else 0.0)
    if last >= end - slack:
        return facts.planned_duration_s, None
    return round(last, 3), (
        f"the schedule ran {last:.1f} s of the planned {facts.planned_duration_s:g} s (its arrivals end at "
        f"{end:g} s; tolerance {slack:.1f} s): the load stopped early"
    )


def _cold_start(d: dict[str, Any]) -> ProcessColdStart:
    """One process-level cold start; older runs named the times alive_ms / ready_ms / first_response_ms."""

    def num(*keys: str) -> float | None:
        for k in keys:
            if d.get(k) is not None:
                return float(d[k])
        return None

    return ProcessColdStart(
        region=str(d.get("region", "")),
        strategy=str(d.get("strategy", "plain")),
        repeat=int(d.get("repeat") or 0),
        spawn_to_listening_ms=num("spawn_to_listening_ms", "alive_ms"),
        spawn_to_ready_ms=num("spawn_to_ready_ms", "ready_ms"),
        spawn_to_first_answer_ms=num("spawn_to_first_answer_ms", "first_response_ms"),
        first_request_ms=num("first_request_ms"),
        status=int(d.get("status") or 0),  # 0: no answer at all
        phases={str(k): float(v) for k, v in (d.get("phases") or {}).items() if v is not None},
        error=None if d.get("error") is None else str(d["error"]),
    )


def _server_side(d: dict[str, Any] | None) -> ServerSide | None:
    if d is None:
        return None
    return ServerSide(
        source=str(d.get("source", "prometheus")),
        url=str(d.get("url", "")),
        error=d.get("error"),
        regions={
            r: ServerRegion(
                requests=int(f["requests"]),
                errors=int(f["errors"]),
                latency_ms={k: float(v) for k, v in f["latency_ms"].items()},
                inference_ms={k: float(v) for k, v in f["inference_ms"].items()},
            )
            for r, f in (d.get("regions") or {}).items()
        },
    )


def _values(samples: Sequence[Sample], metric: str) -> list[float] | None:
    """The raw values (ms) a latency metric judges, or None when the run does not measure it."""
    ok = [s for s in samples if s.ok]
    pick = {
        "client_latency_ms": [s.latency_us for s in ok if s.cold != 1],
        "e2e_latency_ms": [s.e2e_us for s in ok if s.cold != 1],
        "server_inference_ms": [s.inference_us for s in ok if s.inference_us > 0],
        "server_total_ms": [s.server_total_us for s in ok if s.server_total_us > 0],
        "cold_start_ms": [s.latency_us for s in ok if s.cold == 1],
    }.get(metric)
    return None if pick is None else [v / 1000 for v in pick]


def _judge(
    facts: RunFacts,
    samples: Sequence[Sample],
    regions: dict[str, RegionResult],
    procs: list[LoadProcessResult],
    cold_starts: list[ProcessColdStart],
    duration_s: float,
    span_problem: str | None,
) -> Verdict:
    spec, profile = facts.slo, facts.profile
    v = spec.validity
    problems: list[str] = []
    notes = list(facts.notes)
    checks: list[Check] = []
    if not samples:
        problems.append("no samples were recorded (see logs/locust*.log)")
    if span_problem:
        problems.append(span_problem)
    if samples and duration_s < v.min_duration_s:
        problems.append(f"run lasted {duration_s:g} s, under the minimum of {v.min_duration_s:g} s")
    why = {f.name: f.reason for f in facts.load_processes}
    for p in procs:
        lost = sum(p.lost.values())
        if p.state == LOST:
            flushed = f"{p.last_flush_t_s:.1f} s" if p.last_flush_t_s is not None else "never"
            problems.append(
                f"load process {p.name} was lost (last samples flushed at {flushed}): {lost} of its "
                f"{sum(p.planned.values())} planned arrivals have no outcome; its {sum(p.recorded.values())} "
                "recorded samples are kept" + (f" ({why[p.name]})" if why.get(p.name) else "")
            )
        elif lost and why.get(p.name):
            # A process that ended early and said why (its clock failed, it was stopped): the why, once.
            problems.append(f"load process {p.name} ended {p.state} with {lost} arrivals unsent: {why[p.name]}")
    by_region: dict[str, list[Sample]] = {}
    for s in samples:
        by_region.setdefault(s.region, []).append(s)
    for region, r in regions.items():
        c = r.counts
        if region in profile.regions and not by_region.get(region):
            problems.append(f"{region}: a region of the profile has no samples")
        if c.lost:
            who = [p.name for p in procs if p.lost.get(region)]
            problems.append(
                f"{region}: {c.lost} of {c.planned} planned arrivals were lost (no outcome recorded; "
                f"load process {', '.join(who) or 'unknown'})"
            )
        if r.late_fraction > v.max_late_fraction:
            problems.append(
                f"{region}: {r.late_fraction:.1%} of sends were late (max {v.max_late_fraction:.1%}): "
                "the load generator fell behind its schedule"
            )
        slo = spec.for_region(region)
        if slo.error_rate is None and r.error_rate > v.max_unanswered_fraction:
            # Percentiles are over answered requests only: without an error_rate to judge the rest, too
            # many unanswered arrivals make the figures describe a survivor subset, not the service.
            problems.append(
                f"{region}: {r.error_rate:.1%} of arrivals got no good answer ({c.errors} errors, {c.dropped} "
                f"dropped, {c.unfinished} unfinished of {c.recorded}; max {v.max_unanswered_fraction:.1%} "
                "without an error_rate SLO): the percentiles describe only the answered requests"
            )
        if not by_region.get(region):
            continue
        rs = by_region[region]
        for metric, pcts in slo.latency.items():
            for pct, threshold in sorted(pcts.items(), key=lambda kv: float(kv[0][1:])):
                checks.extend(_metric_checks(region, metric, pct, threshold, rs, r, cold_starts, facts))
        if slo.error_rate is not None:
            checks.append(judge_error_rate(region, slo.error_rate, r.error_rate, c.recorded))
    for ch in checks:
        if ch.status == "no_data":
            problems.append(ch.reason)
    for c in cold_starts:
        if not c.answered:
            problems.append(
                f"{c.region}: process cold start #{c.repeat + 1} ({c.strategy}) got no good first answer "
                f"(status {c.status})"
            )
    if profile.expects_cold_starts and profile.process_cold_start and not cold_starts:
        notes.append("process-level cold start not measured (external targets)")
    # A claim the run could not measure is not a pass: say so beside the verdict.
    notes.extend(c.reason for c in checks if c.status == "not_observed" and c.samples == 0)
    failed = [c.name for c in checks if c.status == FAIL]
    undecided = [c.reason for c in checks if c.status == INCONCLUSIVE]
    if facts.interrupted:
        notes.insert(0, f"run interrupted ({facts.interrupted}): figures cover the samples gathered so far")
    status = decide(
        interrupted=bool(facts.interrupted), invalid=bool(problems), failed=bool(failed), inconclusive=bool(undecided)
    )
    return Verdict(
        status=status,
        exit_code=EXIT_CODES[status],
        valid=not problems,
        invalid_reasons=problems,
        inconclusive_reasons=undecided,
        failed=failed,
        checks=checks,
        notes=notes,
        slo_file=spec.file,
        validity_rules=v,
    )


def _metric_checks(
    region: str,
    metric: str,
    pct: str,
    threshold: float,
    samples: Sequence[Sample],
    r: RegionResult,
    cold_starts: list[ProcessColdStart],
    facts: RunFacts,
) -> list[Check]:
    conf = facts.slo.validity.confidence
    if metric == "process_cold_start_ms":
        # Starts that got no good first answer make the run invalid (see _judge); the rest are judged.
        mine = [c for c in cold_starts if c.region == region and c.answered]
        if not [c for c in cold_starts if c.region == region]:
            # The run measured no process start here (the profile asks for none in this region, or the
            # targets are external): the claim is shown unmeasured, never dropped.
            return [_unmeasured(region, metric, pct, threshold, "no process cold start was measured for the region")]
        out = []
        for strategy in sorted({c.strategy for c in mine}):
            values = [float(c.spawn_to_first_answer_ms or 0.0) for c in mine if c.strategy == strategy]
            out.append(judge_percentile(region, metric, pct, threshold, values, conf, strategy))
        return out
    if metric == "server_latency_ms":
        # Prometheus gives histogram quantiles, not samples: judged on the point estimate, no interval.
        figures = r.server_latency_ms
        value = figures.value(pct) if figures else None
        if figures is None or value is None:
            why = "measured only with the telemetry stack (edgeharness run --stack)"
            if facts.server_side is not None and facts.server_side.get("error"):
                why = f"Prometheus could not be read ({facts.server_side['error']})"
            return [_unmeasured(region, metric, pct, threshold, why)]
        name = check_name(region, metric, pct, threshold, None)
        # No interval from buckets; at least demand the count with which samples could decide this percentile.
        need = min_samples_to_pass(pct_fraction(pct), conf)
        if figures.count < need:
            status = INCONCLUSIVE
            reason = (
                f"{name}: Prometheus counted {figures.count} requests; a {pct} claim needs at least {need} "
                f"at {conf:.0%} confidence"
            )
        else:
            status = PASS if value <= threshold else FAIL
            reason = "point estimate from Prometheus histogram buckets (no interval)"
        ch = Check(name, region, metric, pct, threshold, value, None, None, figures.count, status, reason=reason)
        ch.needed_samples = need if status == INCONCLUSIVE else None
        return [ch]
    values = _values(samples, metric)
    assert values is not None, metric
    ch = judge_percentile(region, metric, pct, threshold, values, conf)
    few = len(values) < facts.slo.validity.min_cold_samples
    if metric == "cold_start_ms" and not facts.profile.expects_cold_starts and few and ch.status != FAIL:
        # A profile that does not aim at cold starts meets few (each PoP's first request): too few to
        # claim anything, and no reason to invalidate the run. A definite failure still counts. From
        # min_cold_samples on, an undecided check is inconclusive like any other: the cold requests are
        # left out of client_latency_ms, so leaving them unjudged too would let slow ones pass unseen.
        ch.status = "not_observed"
        ch.needed_samples = None
        ch.reason = f"{ch.name}: {len(values)} cold requests, too few to judge (the profile does not aim at them)"
    return [ch]


def _unmeasured(region: str, metric: str, pct: str, threshold: float, why: str) -> Check:
    name = check_name(region, metric, pct, threshold, None)
    return Check(
        name, region, metric, pct, threshold, None, None, None, 0, "not_observed", reason=f"{name}: not measured: {why}"
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(
    results: Results, out_dir: str | Path, samples: Sequence[Sample] | None = None, sections: Sequence[str] = ()
) -> None:
    """Write OUT/results.json and OUT/report.html (each a temporary file renamed into place, `sections`:
    extra HTML fragments for the report), then remove OUT/RUNNING."""
    from harness.report.html import render

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "results.json", json.dumps(results.to_json(), indent=2))
    _write_atomic(out / "report.html", render(results, samples, sections))
    (out / RUNNING).unlink(missing_ok=True)


__all__ = ["RUNNING", "build_results", "write_outputs"]
