"""A short Markdown summary of a run (for a CI job summary or a pull-request comment): the verdict, every
check, the reasons, and with them the cost and the comparison against a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.verdict.model import Results

if TYPE_CHECKING:
    from harness.compare.diff import Comparison
    from harness.cost.estimate import CostReport

ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "not_observed": "➖", "no_data": "⚠️"}


def md(text: object) -> str:
    """Text safe in a Markdown table cell: pipes, backslashes, markup and line breaks neutralised."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "`*_[]<>#":
        s = s.replace(ch, "\\" + ch)
    return s


def _num(v: float | None, unit: str = "ms") -> str:
    if v is None:
        return "-"
    return f"{v:.2%}" if unit == "fraction" else f"{v:.3f}" if v < 100 else f"{v:.1f}"


def summary_markdown(results: Results, cost: CostReport | None = None, comparison: Comparison | None = None) -> str:
    """The summary as Markdown text."""
    v = results.verdict
    out = [
        f"## edgeharness: {v.status.upper()} (exit {v.exit_code})",
        "",
        f"Profile `{md(results.run.profile.get('name', ''))}`, {results.run.duration_s:g} s, SLO file "
        f"`{md(v.slo_file)}`; percentiles with {v.validity_rules.confidence:.0%} confidence intervals.",
        "",
    ]
    for title, items in (
        ("Invalid", v.invalid_reasons),
        ("Failed", v.failed),
        ("Inconclusive", v.inconclusive_reasons),
    ):
        if items:
            out += [f"**{title}:**", "", *(f"- {md(i)}" for i in items), ""]
    out += ["| region | check | measured | interval | status |", "|---|---|---:|---|---|"]
    for ch in v.checks:
        interval = f"[{_num(ch.lo, ch.unit)}, {_num(ch.hi, ch.unit)}]" if ch.percentile else ""
        out.append(
            f"| {md(ch.region)} | {md(ch.name)} | {_num(ch.measured, ch.unit)} | {interval} | "
            f"{ICON.get(ch.status, '')} {ch.status} |"
        )
    out.append("")
    if cost:
        out += [f"**Cost** ({md(cost.currency)}, pricing `{md(cost.pricing_file)}`):", ""]
        out += [
            "| region | req/s | p50 ms | server ms | plan | per million | per day |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        for region, rc in cost.regions.items():
            for plan, pc in rc.plans.items():
                out.append(
                    f"| {md(region)} | {rc.rate_rps:g} | {_num(rc.client_p50_ms)} | {_num(rc.server_ms_mean)} | "
                    f"{md(plan)} | {money(pc.per_million)} | {money(pc.per_day)} |"
                )
        out.append("")
    if comparison:
        c = comparison
        out += [
            f"**Against baseline** `{md(c.baseline)}`: {c.verdict} ({md(c.metric)}, "
            f"tolerance max({c.tolerance_ms:g} ms, {c.tolerance_pct:g} %)).",
            "",
            "| region | PoP | pct | baseline | current | change [interval] | verdict |",
            "|---|---|---|---:|---:|---|---|",
        ]
        for s in c.scopes:
            for ch in s.changes:
                interval = "" if ch.lo_ms is None else f" [{ch.lo_ms:+.3f}, {ch.hi_ms:+.3f}]"
                change = "-" if ch.change_ms is None else f"{ch.change_ms:+.3f}"
                out.append(
                    f"| {md(s.region)} | {md(s.pop or 'all')} | {ch.percentile} | {_num(ch.baseline_ms)} | "
                    f"{_num(ch.current_ms)} | {change}{interval} | {ch.verdict} |"
                )
        out.append("")
    return "\n".join(out)


def money(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if abs(v) < 10 else f"{v:,.2f}"


def write_summary(text: str, path: str | Path) -> None:
    """Write the summary (a temporary file renamed into place)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
