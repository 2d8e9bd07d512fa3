"""`edgeharness sweep`: the highest arrival rate at which a region's SLOs still hold.

Doubles the rate from --start-rate until a step fails, then bisects between the last pass and the first
fail; each step is a full, judged steady run against the same PoP(s), started once.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from harness.load.processes import Supervisor
from harness.load.runner import Run, RunSettings
from harness.verdict.model import read_results


def next_rate(steps: list[dict[str, Any]], start: float, max_rate: float) -> float | None:
    """The next rate to try given the steps so far, or None when the search is done."""
    passed = [s["rate"] for s in steps if s["status"] == "pass"]
    failed = [s["rate"] for s in steps if s["status"] != "pass"]
    if not steps:
        return start
    lo = max(passed, default=None)
    hi = min((r for r in failed if lo is None or r > lo), default=None)
    if hi is None:
        nxt = (lo or start) * 2
        return None if lo is not None and lo >= max_rate else min(nxt, max_rate)
    if lo is None:
        return None  # even the first rate fails: no capacity to report
    if hi - lo <= max(0.5, 0.1 * lo):
        return None  # resolved to 10 %
    return round((lo + hi) / 2, 2)


def sweep(settings: RunSettings, *, region: str | None, start_rate: float, max_rate: float, steps: int) -> int:
    """Run the search; writes sweep.json and sweep.html under settings.out. Exit 0 when a capacity was
    found, 1 when even the first rate fails its SLOs, 2 when a step is invalid before any pass."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Run(settings)
    region = region or base.profile.regions[0]
    if region not in base.profile.regions:
        base.profile.regions.append(region)
    base.profile.regions = [region]
    base.profile.rates = {}
    history: list[dict[str, Any]] = []
    with Supervisor() as sup:
        base.out = out
        base.ensure_model(sup)
        base.start_pops(sup)
        targets = {r: p.url for r, p in base.pops.items()}
        while len(history) < steps:
            rate = next_rate(history, start_rate, max_rate)
            if rate is None:
                break
            step_settings = copy.copy(settings)
            step_settings.out = out / f"step-{len(history) + 1:02d}-{rate:g}rps"
            step_settings.targets = targets
            step_settings.rate = rate
            run = Run(step_settings, console=base.console)
            run.profile.regions = [region]
            run.profile.rates = {}
            base.say(f"[bold]sweep step {len(history) + 1}[/]: {region} at {rate:g} req/s")
            code = run.execute()
            results = read_results(step_settings.out / "results.json")
            r = results.regions.get(region)
            history.append(
                {
                    "rate": rate,
                    "status": results.verdict.status,
                    "exit_code": code,
                    "p50_ms": r.client_latency_ms.warm.value("p50") if r else None,
                    "p99_ms": r.client_latency_ms.warm.value("p99") if r else None,
                    "error_rate": r.error_rate if r else None,
                    "failed": results.verdict.failed,
                    "invalid_reasons": results.verdict.invalid_reasons,
                    "out": str(step_settings.out),
                }
            )
            if code == 2 and not any(s["status"] == "pass" for s in history):
                break
    passed = [s["rate"] for s in history if s["status"] == "pass"]
    capacity = max(passed, default=None)
    summary = {
        "region": region,
        "capacity_rps": capacity,
        "steps": history,
        "profile": base.profile.name,
        "duration_s": base.profile.duration_s,
    }
    (out / "sweep.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _plot(summary, out / "sweep.html")
    base.console.print(
        f"[bold]capacity[/] of {region}: {capacity:g} req/s" if capacity else f"[red]no rate passed[/] for {region}"
    )
    for s in history:
        base.console.print(f"  {s['rate']:>7g} req/s  {s['status']:<8} p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms")
    if capacity is not None:
        return 0
    return 2 if history and history[0]["exit_code"] == 2 else 1


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.html import png_img_tag

    steps = sorted(summary["steps"], key=lambda s: s["rate"])
    fig, ax = plt.subplots(figsize=(9, 4))
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        pts = [(s["rate"], s[key]) for s in steps if s[key] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for s in steps:
        if s["status"] != "pass" and s["p50_ms"] is not None:
            ax.annotate(s["status"], (s["rate"], s["p50_ms"]), color="red", fontsize=8)
    if summary["capacity_rps"]:
        ax.axvline(summary["capacity_rps"], color="green", linestyle="--", label="capacity")
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel("client latency (ms)")
    ax.set_title(f"{summary['region']}: latency against arrival rate")
    ax.legend()
    rows = "".join(
        f"<tr><td>{s['rate']:g}</td><td>{s['status']}</td><td>{s['p50_ms']}</td><td>{s['p99_ms']}</td>"
        f"<td>{s['error_rate']}</td></tr>"
        for s in steps
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {summary['region']}</title></head><body>"
        f"<h1>Capacity of {summary['region']}: {summary['capacity_rps']} req/s</h1>{png_img_tag(fig)}"
        f"<table border=1><tr><th>rate</th><th>status</th><th>p50 ms</th><th>p99 ms</th><th>error rate</th></tr>"
        f"{rows}</table></body></html>",
        encoding="utf-8",
    )
