"""The per-region verdict table printed at the end of a run (rich), read from the typed results.

Every name that came from a file (region, PoP, profile, reason) is escaped: `[` would otherwise be read
as rich markup.
"""

from __future__ import annotations

from typing import Any

from harness.verdict.model import PCT_KEYS, Estimate, Results, ServerSide, Summary

STATUS_STYLE = {
    "pass": "green",
    "fail": "bold red",
    "inconclusive": "yellow",
    "no_data": "yellow",
    "not_observed": "dim",
}
VERDICT_STYLE = {
    "pass": "bold green",
    "fail": "bold red",
    "invalid": "bold yellow",
    "inconclusive": "bold yellow",
    "interrupted": "bold magenta",
}


def fmt_value(v: float | None, unit: str = "ms") -> str:
    """A figure as every report shows it: `-` for none, a percentage for a fraction, else 3 decimals
    (1 from 100 on)."""
    if v is None:
        return "-"
    if unit == "fraction":
        return f"{v:.2%}"
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def _short(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def fmt_interval(lo: float | None, hi: float | None, short: bool = False) -> str:
    """`[1.234, 1.456]` (short: 3 significant digits), an open end shown as `..` (too few samples for
    that bound)."""
    f = _short if short else fmt_value
    return f"[{'..' if lo is None else f(lo)}, {'..' if hi is None else f(hi)}]"


def fmt_estimate(est: Estimate | None, sep: str = " ", short: bool = False) -> str:
    """`1.302 [1.234, 1.456]`: the point estimate and its confidence interval."""
    if est is None:
        return "-"
    return f"{fmt_value(est.value)}{sep}{fmt_interval(est.lo, est.hi, short)}"


def print_verdict(results: Results, console: Any) -> None:
    """Print per-region figures (each percentile with its interval), every SLO check, and the verdict."""
    from rich.markup import escape
    from rich.table import Table

    verdict = results.verdict
    conf = verdict.validity_rules.confidence
    t = Table(
        title=f"Per region: warm client latency in ms from intended send, point [{conf:.0%} interval]",
        title_justify="left",
    )
    for col in ("region", "verdict", "PoP(s)", "planned", "ok", "err", "drop", "late", "lost", *PCT_KEYS):
        t.add_column(
            escape(col), justify="left" if col in ("region", "verdict", "PoP(s)") else "right", no_wrap=col != "PoP(s)"
        )
    for name, r in results.regions.items():
        statuses = {ch.status for ch in verdict.checks if ch.region == name}
        # The region's own verdict, with the run's precedence: invalid, fail, inconclusive, pass.
        invalid = any(reason.startswith(f"{name}:") for reason in verdict.invalid_reasons)
        if invalid or "no_data" in statuses or r.counts.lost or not r.counts.recorded:
            own = "invalid"
        elif "fail" in statuses:
            own = "fail"
        else:
            own = "inconclusive" if "inconclusive" in statuses else "pass"
        c = r.counts
        w: Summary = r.client_latency_ms.warm
        pops = ", ".join(f"{p} {v.rtt_ms:g} ms{' measured' if r.rtt_measured else ''}" for p, v in r.pops.items())
        t.add_row(
            escape(name),
            f"[{VERDICT_STYLE.get(own, '')}]{own.upper()}[/]",
            escape(pops),
            "-" if c.planned is None else str(c.planned),
            str(c.ok),
            str(c.errors),
            str(c.dropped),
            str(c.late),
            "-" if c.lost is None else str(c.lost),
            # The interval on a line of its own under the estimate: rows stay two lines at any width.
            *(escape(fmt_estimate(w.percentiles.get(k), "\n", short=True)) for k in PCT_KEYS),
        )
    console.print(t)
    checks = Table(title=f"SLO checks ({conf:.0%} confidence intervals)", title_justify="left")
    for col in ("region", "metric", "pct", "threshold", "measured", "interval", "samples", "status"):
        checks.add_column(col)
    for ch in verdict.checks:
        style = STATUS_STYLE.get(ch.status, "")
        metric = ch.metric + (f" [{ch.strategy}]" if ch.strategy else "")
        checks.add_row(
            escape(ch.region),
            escape(metric),
            ch.percentile or "",
            fmt_value(ch.threshold, ch.unit),
            fmt_value(ch.measured, ch.unit),
            escape(fmt_interval(ch.lo, ch.hi)) if ch.percentile else "",
            str(ch.samples) + (f" (~{ch.needed_samples} needed)" if ch.needed_samples else ""),
            f"[{style}]{ch.status}[/]",
        )
    console.print(checks)
    if results.server_side:
        console.print(_server_side_table(results.server_side))
    if results.process_cold_start:
        from harness.load.coldstart import describe_summary, summarize

        console.print(f"process cold starts ({escape(results.process_cold_start[0].region)}), per start strategy:")
        for summary in summarize(results.process_cold_start):
            for line in describe_summary(summary):
                console.print("  " + escape(line))
    colour = VERDICT_STYLE[verdict.status]
    console.print(f"[{colour}]VERDICT: {verdict.status.upper()}[/] (exit {verdict.exit_code})")
    for note in verdict.notes:
        console.print(f"  [dim]note:[/] {escape(note)}")
    for reason in verdict.invalid_reasons:
        console.print(f"  [yellow]invalid:[/] {escape(reason)}")
    for name in verdict.failed:
        console.print(f"  [red]failed:[/] {escape(name)}")
    for reason in verdict.inconclusive_reasons:
        console.print(f"  [yellow]inconclusive:[/] {escape(reason)}")


def _server_side_table(server: ServerSide) -> Any:
    """The handlers' own latency per region, from Prometheus: beside the client's figures above."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"Server side, from Prometheus ({server.url}; ms)"), title_justify="left")
    for col in ("region", "requests", "5xx", "p50", "p90", "p95", "p99", "inference p50"):
        t.add_column(col, justify="left" if col == "region" else "right")
    if server.error:
        t.add_row(f"[yellow]unavailable: {escape(server.error)}[/]", *[""] * 7)
    for name, r in sorted(server.regions.items()):
        t.add_row(
            escape(name),
            str(r.requests),
            str(r.errors),
            *(fmt_value(r.latency_ms.get(k)) for k in ("p50", "p90", "p95", "p99")),
            fmt_value(r.inference_ms.get("p50")),
        )
    return t
