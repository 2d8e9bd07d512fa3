"""The comparison as a rich table; every name from a file is escaped (`[` would be read as markup)."""

from __future__ import annotations

from typing import Any

from harness.compare.diff import IMPROVED, REGRESSED, TOO_FEW, Comparison

STYLE = {REGRESSED: "bold red", IMPROVED: "green", TOO_FEW: "dim"}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def _styled(verdict: str, text: str | None = None) -> str:
    style = STYLE.get(verdict)
    return f"[{style}]{text or verdict}[/]" if style else (text or verdict)


def print_comparison(cmp: Comparison, console: Any) -> None:
    """Per region and PoP, each percentile: baseline, current, change [interval], allowed, verdict."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(
            f"{cmp.metric} (ms): current {cmp.current} against baseline {cmp.baseline}; change "
            f"[{cmp.confidence:.0%} bootstrap interval, {cmp.resamples} resamples, seed {cmp.seed}]"
        ),
        title_justify="left",
    )
    for col in ("region", "PoP", "pct", "baseline", "current", "change [interval]", "allowed", "verdict"):
        t.add_column(col, justify="left" if col in ("region", "PoP", "verdict") else "right")
    for scope in cmp.scopes:
        for i, ch in enumerate(scope.changes):
            interval = "" if ch.lo_ms is None else f" [{_signed(ch.lo_ms)}, {_signed(ch.hi_ms)}]"
            t.add_row(
                escape(scope.region) if i == 0 else "",
                escape(scope.pop or "all") if i == 0 else "",
                ch.percentile,
                _ms(ch.baseline_ms),
                _ms(ch.current_ms),
                escape(_signed(ch.change_ms) + interval),
                "-" if ch.allowed_ms is None else f"±{ch.allowed_ms:.3f}",
                _styled(ch.verdict),
            )
    console.print(t)
    for w in cmp.warnings:
        console.print(f"  [yellow]warning:[/] {escape(w)}")
    for side, names in (("baseline", cmp.only_in_baseline), ("current", cmp.only_in_current)):
        if names:
            console.print(f"  [dim]only in the {side} run (not compared):[/] {escape(', '.join(names))}")
    console.print(
        _styled(cmp.verdict, f"COMPARISON: {cmp.verdict.upper()}") + f" (exit {cmp.exit_code}; "
        f"tolerance max({cmp.tolerance_ms:g} ms, {cmp.tolerance_pct:g} %) of the baseline)"
    )
