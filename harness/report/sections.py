"""Optional sections of report.html (cost, comparison against a baseline), each an HTML fragment rendered
from its own autoescaped template under templates/sections/ and placed in the report by
harness.report.html.render(sections=...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.compare.diff import Comparison
    from harness.cost.estimate import CostReport

CSS = {"regressed": "fail", "improved": "pass", "no significant change": "", "too few samples": "not_observed"}


def _env() -> Any:
    import jinja2

    from harness.report.markdown import money
    from harness.report.terminal import fmt_value

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates/sections"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        num=lambda v: fmt_value(v),
        money=money,
        signed=lambda v: "-" if v is None else f"{v:+.3f}",
        pct=lambda c: f"{c:.0%}",
        css=CSS,
    )
    return env


def cost_section(cost: CostReport) -> str:
    """The cost section's HTML."""
    return str(_env().get_template("cost.html.j2").render(cost=cost))


def comparison_section(comparison: Comparison) -> str:
    """The comparison section's HTML."""
    return str(_env().get_template("compare.html.j2").render(c=comparison))


def unavailable_section(title: str, why: str) -> str:
    """A section that says why it is missing (a baseline that could not be read, say)."""
    from markupsafe import escape

    return f'<h2>{escape(title)}</h2><p class="invalid">{escape(why)}</p>'
