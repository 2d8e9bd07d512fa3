"""report.html: one self-contained file (plots embedded as base64 PNG) rendered from the typed results by
a Jinja2 template (templates/report.html.j2, autoescaped)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from typing import Any

from harness.report.terminal import fmt_interval, fmt_value
from harness.verdict.model import PCT_KEYS, Results


def plot_text(text: str) -> str:
    """Text for a matplotlib label: `$` would start mathtext, so it is escaped."""
    return str(text).replace("$", r"\$")


def png(fig: Any) -> str:
    """The figure as base64 PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def png_img_tag(fig: Any) -> str:
    """An <img> tag of the figure (for pages built without the template)."""
    return f'<img alt="plot" src="data:image/png;base64,{png(fig)}">'


def plots(results: Results, samples: Sequence[Any] | None) -> dict[str, str]:
    """The report's plots as base64 PNG, by key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for region, s in results.timeseries.items():
        t50 = [(x, v) for x, v in zip(s.t_s, s.p50_ms, strict=True) if v is not None]
        t99 = [(x, v) for x, v in zip(s.t_s, s.p99_ms, strict=True) if v is not None]
        line = ax.plot([x for x, _ in t50], [v for _, v in t50], label=plot_text(f"{region} p50"))[0]
        ax.plot(
            [x for x, _ in t99],
            [v for _, v in t99],
            linestyle=":",
            color=line.get_color(),
            label=plot_text(f"{region} p99"),
        )
    for pop, p in results.pops.items():
        for ev in p.events:
            ax.axvline(ev.at_s, color="red", linestyle="--")
            ax.text(ev.at_s, ax.get_ylim()[1] * 0.9, plot_text(f" {pop} {ev.event}"), color="red")
    ax.set_xlabel("time since t=0 (s)")
    ax.set_ylabel("client latency (ms)")
    ax.set_title("Latency over time per client region (1 s buckets, nearest-rank, from intended send time)")
    ax.set_yscale("log")
    if results.timeseries:
        ax.legend(fontsize=7, ncol=3)
    out["latency_time"] = png(fig)
    if results.process_cold_start:
        import base64
        from dataclasses import asdict

        from harness.report.coldstart_plot import coldstart_png

        starts = [asdict(pc) for pc in results.process_cold_start]
        out["coldstart"] = base64.b64encode(coldstart_png(starts)).decode("ascii")

    fig, ax = plt.subplots(figsize=(11, 3.2))
    for region, s in results.timeseries.items():
        ax.plot(s.t_s, s.ok, label=plot_text(f"{region} ok/s"))
        if any(s.errors):
            ax.plot(s.t_s, s.errors, linestyle="--", label=plot_text(f"{region} errors/s"))
    ax.set_xlabel("time since t=0 (s)")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput (by intended send time)")
    if results.timeseries:
        ax.legend(fontsize=7, ncol=3)
    out["throughput"] = png(fig)

    if samples:
        fig, ax = plt.subplots(figsize=(11, 3.8))
        for label, cold in (("warm", False), ("cold", True)):
            vals = [s.latency_us / 1000 for s in samples if s.ok and (s.cold == 1) == cold]
            if vals:
                ax.ecdf(vals, label=f"{label} (n={len(vals)})")
        ax.set_xscale("log")
        ax.set_xlabel("client latency (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title("Latency ECDF, cold vs warm (all regions)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        out["cdf"] = png(fig)

    cat = results.catalogue
    if cat and cat.regions:
        fig, ax = plt.subplots(figsize=(11, 5))
        ax.set_xlim(-180, 180)
        ax.set_ylim(-60, 75)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_title("PoPs (squares, p50 client latency served) and client regions (dots); lines: client -> PoP")
        for region, r in results.regions.items():
            src = cat.regions.get(region)
            for pop in r.pops:
                dst = cat.regions.get(pop)
                if src and dst:
                    ax.plot([src.lon, dst.lon], [src.lat, dst.lat], color="#999", linewidth=0.8)
        used = set(cat.used)
        for name, reg in cat.regions.items():
            pop_result = results.pops.get(name)
            if name not in used:
                ax.scatter([reg.lon], [reg.lat], s=12, color="#bbb")
                ax.annotate(
                    plot_text(reg.city),
                    (reg.lon, reg.lat),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7,
                    color="#999",
                )
                continue
            if pop_result:
                p50 = pop_result.client_latency_ms.all.value("p50")
                ax.scatter([reg.lon], [reg.lat], marker="s", s=80, color="#1f77b4")
                label = f"{reg.city}\np50 {p50:.2f} ms" if p50 is not None else f"{reg.city}\n(no traffic)"
            else:
                ax.scatter([reg.lon], [reg.lat], s=30, color="#ff7f0e")
                label = reg.city
            ax.annotate(plot_text(label), (reg.lon, reg.lat), textcoords="offset points", xytext=(6, 6), fontsize=8)
        out["map"] = png(fig)
    return out


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        num=lambda v, unit="ms": fmt_value(v, unit),
        interval=fmt_interval,
        pct=lambda c: f"{c:.0%}",
        pcts=PCT_KEYS,
    )
    return env


def render(results: Results, samples: Sequence[Any] | None = None, sections: Sequence[str] = ()) -> str:
    """The report as one HTML string; `sections`: extra HTML fragments (harness.report.sections), already
    escaped by their own templates, placed before the run settings."""
    from markupsafe import Markup

    template = _environment().get_template("report.html.j2")
    return template.render(
        r=results,
        plots=plots(results, samples),
        run_json=json.dumps(results.to_json()["run"], indent=2),
        sections=[Markup(s) for s in sections],
    )


def write_report(results: Results, path: Any, samples: Sequence[Any] | None = None) -> None:
    """Write report.html (not atomically: harness.verdict.results.write_outputs does that for runs)."""
    from pathlib import Path

    Path(path).write_text(render(results, samples), encoding="utf-8")
