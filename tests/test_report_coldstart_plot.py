"""The side-by-side cold-start plot: a PNG with every strategy, nothing for a run without answered starts."""

from __future__ import annotations

from harness.report.coldstart_plot import coldstart_figure, coldstart_png


def starts() -> list[dict]:
    out = []
    for i in range(12):
        out.append(
            {
                "strategy": "plain",
                "status": 200,
                "spawn_to_first_answer_ms": 300.0 + i,
                "phases": {"imports": 200.0, "session": 40.0, "server": 20.0},
            }
        )
        out.append(
            {
                "strategy": "zygote",
                "status": 200,
                "spawn_to_first_answer_ms": 80.0 + i,
                "phases": {"fork": 2.0, "session": 40.0, "server": 10.0},
            }
        )
    out.append({"strategy": "zygote", "status": 0, "spawn_to_first_answer_ms": None, "phases": {}})
    return out


def test_plot_shows_each_strategy_side_by_side() -> None:
    fig = coldstart_figure(starts())
    dist, phases = fig.axes
    assert [t.get_text() for t in dist.get_xticklabels()] == ["plain\n(n=12)", "zygote\n(n=12)"]
    assert dist.get_lines()  # boxes and the objective line
    # Stacked medians: plain's bars add up to its phases, zygote's start with the fork.
    labels = [t.get_text() for t in phases.get_legend().get_texts()]
    assert labels == ["imports", "fork", "session", "server"]
    png = coldstart_png(starts())
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_nothing_to_draw() -> None:
    assert coldstart_figure([{"strategy": "plain", "status": 0, "spawn_to_first_answer_ms": None}]) is None
    assert coldstart_png([]) == b""
