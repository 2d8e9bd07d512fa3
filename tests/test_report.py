"""Reports: report.html is self-contained with its plots, intervals and verdict; the terminal table names
checks with intervals; names with markup characters render as written everywhere (terminal, plots, HTML)."""

from __future__ import annotations

import io
import json
import time

import jsonschema
import pytest

from harness.load.profiles import Profile
from harness.load.recorder import Sample
from harness.load.regions import Catalogue, Region
from harness.load.sweep import next_rate
from harness.verdict.facts import LoadProcessFacts, RunFacts
from harness.verdict.model import results_schema
from harness.verdict.results import RUNNING, build_results, write_outputs
from harness.verdict.slo import load_slo

ODD = "a$b[bold]x[/]<i>&amp;"  # rich markup, mathtext, HTML and an entity in one name


def _results(paris: str = "paris", duration_s: float = 20.0):
    samples = [
        Sample(paris, paris, i * 0.05, 90, 4000 + i, 200, 1 if i == 0 else 0, 3000, 2500, 5.0, "local", 0, 9000 + i, "")
        for i in range(400)
    ]
    samples += [
        Sample("nairobi", paris, i * 0.05, 90, 6000 + i, 200, 0, 3000, 2500, 118.7, "derived", 0, 125000 + i, "")
        for i in range(400)
    ]
    regions = [paris, "nairobi"]
    cat = Catalogue(
        regions={
            paris: Region(paris, f"City {paris}", 48.8, 2.3, "Europe/Paris"),
            "nairobi": Region("nairobi", "Nairobi", -1.3, 36.8, "Africa/Nairobi"),
        }
    )
    now = time.time()
    facts = RunFacts(
        settings={},
        profile=Profile(name=f"t {paris}", shape="steady", regions=regions, duration_s=duration_s, rate=20.0),
        slo=load_slo(),
        started_at=now,
        t0=now,
        finished_at=now + duration_s,
        planned_duration_s=duration_s,
        load_processes=[LoadProcessFacts("local", regions, {paris: 400, "nairobi": 400}, "finished", duration_s)],
        pops={paris: {"url": "http://x", "local": True, "ready_s": 1.5, "events": [{"event": "down", "at_s": 10.0}]}},
        process_cold_start=[
            {"region": paris, "repeat": 0, "alive_ms": 400, "ready_ms": 900, "first_response_ms": 950, "status": 200}
        ],
        catalogue=cat,
    )
    return build_results(facts, samples), samples


def test_outputs_are_written_atomically_validate_and_replace_the_running_marker(tmp_path):
    results, samples = _results()
    (tmp_path / RUNNING).write_text("started")
    write_outputs(results, tmp_path, samples)
    assert not (tmp_path / RUNNING).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]  # no *.tmp left
    doc = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(doc, results_schema())
    assert doc["schema"] == "edgeharness.results/2"
    p50 = doc["regions"]["nairobi"]["client_latency_ms"]["warm"]["percentiles"]["p50"]
    assert p50["lo"] <= p50["value"] <= p50["hi"]  # every percentile carries its interval


@pytest.mark.parametrize(("what", "version"), [("results", "edgeharness.results/2"), ("cost", "edgeharness.cost/1"),
                                               ("compare", "edgeharness.compare/1")])  # fmt: skip
def test_the_schema_command_prints_the_schema(capsys, what, version):
    from harness.cli import main

    assert main(["schema", what]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    root = schema["$ref"].removeprefix("#/$defs/")
    assert schema["$defs"][root]["properties"]["schema"] == {"const": version}
    assert set(schema["$defs"][root]["required"]) >= {"schema"}


def test_html_report_is_self_contained_with_plots_intervals_and_verdict(tmp_path):
    results, samples = _results()
    write_outputs(results, tmp_path, samples)
    html = (tmp_path / "report.html").read_text()
    assert "VERDICT: INVALID" in html  # 20 s is under the default SLO's 30 s minimum
    # latency/time, ECDF, throughput, map, and the process cold starts side by side per strategy
    assert html.count("data:image/png;base64,") == 5
    assert 'alt="Process cold starts by strategy"' in html
    assert 'src="http' not in html and "<script" not in html
    assert "Process-level cold start" in html and "118.7" in html
    warm = results.regions["nairobi"].client_latency_ms.warm.percentiles["p50"]
    assert f"[{warm.lo:.3f}, {warm.hi:.3f}]" in html  # the interval is shown beside the estimate
    assert "1.50" in html  # the PoP's own spawn-to-ready time


def test_terminal_table_lists_regions_checks_intervals_and_verdict():
    from rich.console import Console

    from harness.report.terminal import print_verdict

    results, _ = _results()
    buf = io.StringIO()
    print_verdict(results, Console(file=buf, width=250))
    text = buf.getvalue()
    assert "nairobi" in text and "client_latency_ms" in text
    assert "VERDICT: INVALID (exit 2)" in text
    warm = results.regions["nairobi"].client_latency_ms.warm.percentiles["p50"]
    assert f"{warm.value:.3f}" in text and f"[{warm.lo:.3f}, {warm.hi:.3f}]" in text


def test_names_with_markup_characters_render_as_written(tmp_path):
    from rich.console import Console

    from harness.report.html import plots
    from harness.report.terminal import print_verdict

    results, samples = _results(paris=ODD, duration_s=40.0)
    buf = io.StringIO()
    print_verdict(results, Console(file=buf, width=300, no_color=True))
    assert ODD in buf.getvalue()  # rich did not eat [bold]...[/] as markup
    write_outputs(results, tmp_path, samples)
    html = (tmp_path / "report.html").read_text()
    assert "a$b[bold]x[/]&lt;i&gt;&amp;amp;" in html and "<i>" not in html  # escaped once, not interpreted
    # matplotlib would read `$b[bold]x[/]<i>&amp; and $` as mathtext; escaped, it is plain text.
    from matplotlib import cbook

    from harness.report.html import plot_text

    raw = ODD + " and $"
    assert cbook.is_math_text(raw) and not cbook.is_math_text(plot_text(raw))
    assert set(plots(results, samples)) == {"latency_time", "throughput", "cdf", "map", "coldstart"}


def test_sweep_search_doubles_then_bisects_to_ten_percent():
    def search(capacity: float) -> list[float]:
        steps: list[dict] = []
        while (rate := next_rate(steps, 5, 200)) is not None and len(steps) < 20:
            steps.append({"rate": rate, "status": "pass" if rate <= capacity else "fail"})
        return [s["rate"] for s in steps]

    rates = search(37)
    assert rates[:4] == [5, 10, 20, 40]
    best = max(r for r in rates if r <= 37)
    assert 37 * 0.9 <= best <= 37
    assert search(1) == [5]  # nothing passes: no capacity
    assert search(1000)[-1] == 200  # capped at max_rate
