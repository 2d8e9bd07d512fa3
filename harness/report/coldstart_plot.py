"""The process-level cold starts of a run, side by side by strategy: one figure (or PNG) for the report."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from harness.load.coldstart import summarize

PHASE_ORDER = ("imports", "fork", "fetch", "session", "warmup", "server")


def coldstart_figure(starts: Sequence[Mapping[str, Any]], objective_ms: float | None = 200.0) -> Any:
    """Left: each strategy's spawn -> first answer distribution (box and every start); right: the median of
    each init phase, stacked. `objective_ms` draws the promise as a line. None when there are no answered starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    answered = [s for s in starts if s.get("status") == 200 and s.get("spawn_to_first_answer_ms") is not None]
    if not answered:
        return None
    summaries = summarize(answered)
    names = [s.strategy for s in summaries]
    fig, (dist, phases) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})

    values = [[s["spawn_to_first_answer_ms"] for s in answered if s["strategy"] == name] for name in names]
    positions = range(1, len(names) + 1)
    dist.boxplot(values, positions=list(positions), widths=0.5, showfliers=False)
    for x, vs in zip(positions, values, strict=True):
        # A deterministic spread, so the same run always draws the same picture.
        offsets = [((i * 7919) % 101 / 100 - 0.5) * 0.3 for i in range(len(vs))]
        dist.scatter([x + o for o in offsets], vs, s=9, alpha=0.55)
    if objective_ms is not None:
        dist.axhline(objective_ms, linestyle="--", color="tab:red", linewidth=1, label=f"{objective_ms:g} ms")
        dist.legend(loc="upper right")
    dist.set_xticks(list(positions), [f"{n}\n(n={len(v)})" for n, v in zip(names, values, strict=True)])
    dist.set_ylabel("spawn -> first answer (ms)")
    dist.set_ylim(bottom=0)
    dist.set_title("process cold start by strategy")

    seen = [p for p in PHASE_ORDER if any(p in s.phases_p50 for s in summaries)]
    seen += sorted({p for s in summaries for p in s.phases_p50} - set(seen))
    bottoms = [0.0] * len(summaries)
    for phase in seen:
        heights = [s.phases_p50.get(phase, 0.0) for s in summaries]
        phases.bar(list(positions), heights, bottom=bottoms, width=0.6, label=phase)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    phases.set_xticks(list(positions), names, rotation=15)
    phases.set_ylabel("median phase (ms)")
    phases.set_title("init phases (the load may overlap the imports)")
    if seen:  # a PoP that reports no init phases (e.g. the known-latency test server) draws no bars
        phases.legend(fontsize=8)
    fig.tight_layout()
    return fig


def coldstart_png(starts: Sequence[Mapping[str, Any]], objective_ms: float | None = 200.0, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; empty when there is nothing to draw."""
    fig = coldstart_figure(starts, objective_ms)
    if fig is None:
        return b""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
