"""What `edgeharness run` adds to its verdict when asked: the cost under a pricing file (`--pricing`,
with the SLO file's `cost_per_million` bounds judged), the comparison against a baseline run
(`--baseline`), and CI outputs (`--junit`, `--summary-md`).

`prepare` runs before results.json and report.html are written (cost checks join the verdict, the
sections join the report); `publish` runs after (cost.json, compare.json, JUnit XML, Markdown, tables).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.load.recorder import Sample
from harness.verdict.model import Results

if TYPE_CHECKING:
    from harness.compare.diff import Comparison
    from harness.cost.estimate import CostReport


@dataclass
class RunExtras:
    """The optional parts of a run's outputs."""

    cost: CostReport | None = None
    comparison: Comparison | None = None
    sections: list[str] = field(default_factory=list)  # HTML fragments for report.html


def prepare(
    results: Results,
    samples: Sequence[Sample],
    slo: Any,
    out: str | Path,
    *,
    pricing: str | None = None,
    baseline: str | None = None,
) -> RunExtras:
    """Price the run and compare it with the baseline; cost bounds join `results.verdict`. A pricing file or
    baseline that cannot be used becomes a note (the run's own figures are never lost over it)."""
    from harness.report.sections import comparison_section, cost_section, unavailable_section

    extras = RunExtras()
    notes = results.verdict.notes
    if pricing:
        from harness.cost.estimate import add_checks, cost_checks, estimate
        from harness.cost.pricing import load_pricing, resolve
        from harness.load.yamlfile import ConfigError

        try:
            extras.cost = estimate(results, samples, load_pricing(resolve(pricing)))
        except ConfigError as exc:
            notes.append(f"cost not computed: {exc}")
            extras.sections.append(unavailable_section("Cost", f"not computed: {exc}"))
        else:
            add_checks(results, cost_checks(extras.cost, slo))
            extras.sections.append(cost_section(extras.cost))
    elif any(slo.for_region(r).cost_per_million is not None for r in results.regions):
        notes.append("cost_per_million not judged: no --pricing file given")
    if baseline:
        from harness.compare.diff import IncomparableRuns, RunData, compare_runs, load_run, options_from_slo

        try:
            current = RunData(str(out), results, samples)
            extras.comparison = compare_runs(load_run(baseline), current, options_from_slo(slo, allow_invalid=True))
        except (IncomparableRuns, ValueError) as exc:
            notes.append(f"not compared with baseline {baseline}: {exc}")
            extras.sections.append(unavailable_section(f"Against baseline {baseline}", str(exc)))
        else:
            extras.sections.append(comparison_section(extras.comparison))
    return extras


def publish(
    results: Results,
    extras: RunExtras,
    out: str | Path,
    console: Any,
    *,
    junit: str | None = None,
    summary_md: str | None = None,
) -> None:
    """Write OUT/cost.json and OUT/compare.json (when made), the JUnit XML and the Markdown summary (when
    asked), and print the cost and comparison tables."""
    out = Path(out)
    # What was not computed this time is not left from an earlier judgement of the same folder (rejudge).
    for name, made in (("cost.json", extras.cost), ("compare.json", extras.comparison)):
        if made is not None:
            _write(out / name, json.dumps(made.to_json(), indent=2))
        else:
            (out / name).unlink(missing_ok=True)
    if junit:
        from harness.report.junit import write_junit

        write_junit(results, junit)
    if summary_md:
        from harness.report.markdown import summary_markdown, write_summary

        write_summary(summary_markdown(results, extras.cost, extras.comparison), summary_md)
    if extras.cost:
        print_cost(extras.cost, console)
    if extras.comparison:
        from harness.compare.table import print_comparison

        print_comparison(extras.comparison, console)


def print_cost(cost: CostReport, console: Any) -> None:
    """Per region: rate, latency, server time, and each plan's cost per million and per day."""
    from rich.markup import escape
    from rich.table import Table

    from harness.report.markdown import money
    from harness.report.terminal import fmt_value

    t = Table(title=escape(f"Cost ({cost.currency}, {cost.pricing_file}): marginal per region"), title_justify="left")
    for col in ("region", "req/s", "p50 ms", "server ms", "plan", "per million", "per day"):
        t.add_column(escape(col), justify="left" if col in ("region", "plan") else "right")
    for region, rc in cost.regions.items():
        for i, (plan, pc) in enumerate(rc.plans.items()):
            first = i == 0
            t.add_row(
                escape(region) if first else "",
                f"{rc.rate_rps:g}" if first else "",
                fmt_value(rc.client_p50_ms) if first else "",
                fmt_value(rc.server_ms_mean) if first else "",
                escape(plan) + (" (example)" if cost.plans[plan].example else ""),
                money(pc.per_million),
                money(pc.per_day),
            )
    for plan, a in cost.account.items():
        t.add_row("account", "", "", "", escape(plan), f"{money(a.per_million)} eff.", money(a.per_day))
    console.print(t)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def add_arguments(run: Any) -> None:
    """`run --pricing/--baseline/--junit/--summary-md`."""
    run.add_argument(
        "--pricing",
        default=None,
        metavar="FILE",
        help="pricing plans (YAML; e.g. loadtests/pricing/edge-platforms.yaml, or its name): cost per region "
        "in the report, cost.json, and the SLO file's cost_per_million bounds judged",
    )
    run.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="a previous run directory: compare each percentile per region and PoP with it (report section, "
        "compare.json; gate CI with `edgeharness compare`)",
    )
    run.add_argument("--junit", default=None, metavar="FILE", help="write a JUnit XML report (a test case per check)")
    run.add_argument("--summary-md", default=None, metavar="FILE", help="write a short Markdown summary")


# RunSettings' fields for --pricing/--baseline/--junit/--summary-md, and the environment variables a plain
# `locust -f loadtests/locustfile.py` run takes them from.
EXTRAS_ENV = {"pricing": "EDGE_PRICING", "baseline": "EDGE_BASELINE", "junit": "EDGE_JUNIT",
              "summary_md": "EDGE_SUMMARY_MD"}  # fmt: skip


def extras_from_arguments(args: Any) -> dict[str, str | None]:
    """`--pricing/--baseline/--junit/--summary-md` as RunSettings' fields (None where a command has none)."""
    return {name: getattr(args, name, None) for name in EXTRAS_ENV}


def extras_from_environment(env: Mapping[str, str]) -> dict[str, str | None]:
    """The same from EDGE_PRICING, EDGE_BASELINE, EDGE_JUNIT and EDGE_SUMMARY_MD (empty: not given)."""
    return {name: env.get(var) or None for name, var in EXTRAS_ENV.items()}


def check_arguments(args: Any) -> None:
    """Refuse a bad pricing file (ConfigError, file:line) or a baseline that is no run directory
    (ConfigError) before the run starts."""
    from harness.load.yamlfile import ConfigError

    if getattr(args, "pricing", None):
        from harness.cost.pricing import load_pricing, resolve

        load_pricing(resolve(args.pricing))
    baseline = getattr(args, "baseline", None)
    if baseline and not (Path(baseline) / "results.json").is_file():
        raise ConfigError(baseline, None, "--baseline: no results.json there (not a finished run directory)")
    if baseline and getattr(args, "out", None) and Path(baseline).resolve() == Path(args.out).resolve():
        # A run clears its output folder first (the baseline would be gone before it is compared), and a
        # rejudged folder compared with itself says nothing.
        raise ConfigError(baseline, None, "--baseline is the folder being judged; give another run's folder")
