"""report.html: one self-contained file (plots embedded as base64 PNG) with the run's verdict."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}.pass{color:#187a2f;font-weight:600}
.fail{color:#b00020;font-weight:700}.invalid,.insufficient{color:#a66b00;font-weight:700}.not_observed{color:#888}
.verdict{font-size:1.6rem;padding:.5rem 1rem;display:inline-block;border-radius:.3rem;border:2px solid}
img{max-width:100%}code{background:#f4f4f4;padding:0 .2rem}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _e(x: Any) -> str:
    return html.escape(str(x))


def _plots(results: dict[str, Any], samples: list[Any] | None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, str] = {}
    ts = results.get("timeseries", {})
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for region, s in ts.items():
        t = [x for x, v in zip(s["t_s"], s["p50_ms"], strict=True) if v is not None]
        line = ax.plot(t, [v for v in s["p50_ms"] if v is not None], label=f"{region} p50")[0]
        ax.plot(
            [x for x, v in zip(s["t_s"], s["p99_ms"], strict=True) if v is not None],
            [v for v in s["p99_ms"] if v is not None],
            linestyle=":",
            color=line.get_color(),
            label=f"{region} p99",
        )
    for pop, p in results.get("pops", {}).items():
        for ev in p.get("events", []):
            ax.axvline(ev["at_s"], color="red", linestyle="--")
            ax.text(ev["at_s"], ax.get_ylim()[1] * 0.9, f" {pop} {ev['event']}", color="red")
    ax.set_xlabel("time since t=0 (s)")
    ax.set_ylabel("client latency (ms)")
    ax.set_title("Latency over time per client region (1 s buckets, from intended send time)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=3)
    out["latency_time"] = _png(fig)

    fig, ax = plt.subplots(figsize=(11, 3.2))
    for region, s in ts.items():
        ax.plot(s["t_s"], s["ok"], label=f"{region} ok/s")
        if any(s["errors"]):
            ax.plot(s["t_s"], s["errors"], linestyle="--", label=f"{region} errors/s")
    ax.set_xlabel("time since t=0 (s)")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput (by intended send time)")
    ax.legend(fontsize=7, ncol=3)
    out["throughput"] = _png(fig)

    if samples:
        fig, ax = plt.subplots(figsize=(11, 3.8))
        for label, pick in (("warm", lambda s: s.ok and s.cold != 1), ("cold", lambda s: s.ok and s.cold == 1)):
            vals = np.sort(np.array([s.latency_us for s in samples if pick(s)], dtype=float) / 1000)
            if len(vals):
                ax.step(vals, np.arange(1, len(vals) + 1) / len(vals), where="post", label=f"{label} (n={len(vals)})")
        ax.set_xscale("log")
        ax.set_xlabel("client latency (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title("Latency CDF, cold vs warm (all regions)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        out["cdf"] = _png(fig)

    cat = results.get("catalogue", {}).get("regions", {})
    if cat:
        fig, ax = plt.subplots(figsize=(11, 5))
        ax.set_xlim(-180, 180)
        ax.set_ylim(-60, 75)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_title("PoPs (squares, p50 client latency served) and client regions (dots); lines: client -> PoP")
        for region, r in results.get("regions", {}).items():
            src = cat.get(region)
            for pop in r.get("pops", {}):
                dst = cat.get(pop)
                if src and dst:
                    ax.plot([src["lon"], dst["lon"]], [src["lat"], dst["lat"]], color="#999", linewidth=0.8)
        used = set(results.get("catalogue", {}).get("used", cat))
        for name, r in cat.items():
            pop = results.get("pops", {}).get(name)
            if name not in used:
                # Catalogue regions this run did not use: context only.
                ax.scatter([r["lon"]], [r["lat"]], s=12, color="#bbb")
                ax.annotate(
                    r["city"], (r["lon"], r["lat"]), textcoords="offset points", xytext=(5, 4), fontsize=7, color="#999"
                )
                continue
            if pop:
                p50 = pop.get("client_latency_ms", {}).get("all", {}).get("p50")
                ax.scatter([r["lon"]], [r["lat"]], marker="s", s=80, color="#1f77b4")
                label = f"{r['city']}\np50 {p50:.2f} ms" if p50 is not None else f"{r['city']}\n(no traffic)"
            else:
                ax.scatter([r["lon"]], [r["lat"]], s=30, color="#ff7f0e")
                label = r["city"]
            ax.annotate(label, (r["lon"], r["lat"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        out["map"] = _png(fig)
    return out


def _pct_row(s: dict[str, Any]) -> str:
    cells = "".join(
        f"<td>{s.get(k, '-') if s.get('count') else '-'}</td>"
        for k in ("count", "p50", "p90", "p95", "p99", "p99.9", "max")
    )
    return cells


def render(results: dict[str, Any], samples: list[Any] | None = None) -> str:
    """The report as one HTML string."""
    v = results["verdict"]
    plots = _plots(results, samples)
    prof = results["run"]["profile"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgeharness run: {_e(prof['name'])}"
        f"</title><style>{CSS}</style></head><body>",
        f"<h1>edgeharness run: profile <code>{_e(prof['name'])}</code> ({_e(prof['shape'])})</h1>",
        f"<p class='verdict {v['status']}'>VERDICT: {v['status'].upper()} (exit {v['exit_code']})</p>",
    ]
    if v["invalid_reasons"]:
        parts.append(
            "<h3>Why the run is invalid</h3><ul>"
            + "".join(f"<li class='invalid'>{_e(r)}</li>" for r in v["invalid_reasons"])
            + "</ul>"
        )
    if v["failed"]:
        parts.append(
            "<h3>Failed SLOs</h3><ul>" + "".join(f"<li class='fail'>{_e(r)}</li>" for r in v["failed"]) + "</ul>"
        )
    parts.append(f"<p>{_e(results['run']['latency_basis'])}. SLO file <code>{_e(v['slo_file'])}</code>.</p>")
    parts.append(
        "<h2>SLO checks</h2><table><tr><th class='l'>region</th><th class='l'>metric</th><th>pct</th>"
        "<th>threshold</th><th>measured</th><th>samples / required</th><th>status</th></tr>"
    )
    for c in v["checks"]:
        parts.append(
            f"<tr><td class='l'>{_e(c['region'])}</td><td class='l'>{_e(c['metric'])}</td>"
            f"<td>{_e(c['percentile'] or '')}</td><td>{c['threshold']:g}</td><td>{_e(c['measured'])}</td>"
            f"<td>{c['samples']} / {c['required_samples']}</td><td class='{c['status']}'>{c['status']}"
            "</td></tr>"
        )
    parts.append("</table>")
    head = (
        "<tr><th class='l'>region</th><th class='l'>PoP</th><th>RTT ms</th><th>ok</th><th>errors</th>"
        "<th>dropped</th><th>late</th><th>cold</th><th>n</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th>"
        "<th>p99.9</th><th>max</th></tr>"
    )
    parts.append("<h2>Regions and PoPs (client latency ms, warm, from intended send)</h2><table>" + head)
    for name, r in results["regions"].items():
        c = r["counts"]
        parts.append(
            f"<tr><td class='l'><b>{_e(name)}</b></td><td class='l'>all</td><td></td><td>{c['ok']}</td>"
            f"<td>{c['errors']}</td><td>{c['dropped']}</td><td>{c['late']}</td><td>{c['cold']}</td>"
            f"{_pct_row(r['client_latency_ms']['warm'])}</tr>"
        )
        for pop, p in r["pops"].items():
            pc = p["counts"]
            parts.append(
                f"<tr><td></td><td class='l'>{_e(pop)}</td><td>{p['rtt_ms']:g} ({_e(p['rtt_source'])})</td>"
                f"<td>{pc['ok']}</td><td>{pc['errors']}</td><td>{pc['dropped']}</td><td>{pc['late']}</td>"
                f"<td>{pc['cold']}</td>{_pct_row(p['client_latency_ms']['warm'])}</tr>"
            )
    parts.append("</table>")
    parts.append(
        "<h2>Other figures per region (ms)</h2><table><tr><th class='l'>region</th><th class='l'>figure</th>"
        "<th>n</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>"
    )
    for name, r in results["regions"].items():
        for label, s in (
            ("cold client latency", r["client_latency_ms"]["cold"]),
            ("client + emulated RTT (warm)", r["e2e_latency_ms"]["warm"]),
            ("server total (Server-Timing)", r["server_total_ms"]),
            ("server inference (Server-Timing)", r["server_inference_ms"]),
            ("send delay (generator lateness)", r["send_delay_ms"]),
        ):
            parts.append(f"<tr><td class='l'>{_e(name)}</td><td class='l'>{label}</td>{_pct_row(s)}</tr>")
    parts.append("</table>")
    server = results.get("server_side")
    if server:
        parts.append(
            f"<h2>Server side, from Prometheus (ms)</h2><p>{_e(server['url'])}"
            + (f": unavailable ({_e(server['error'])})" if server.get("error") else "")
            + "</p><table><tr><th class='l'>region</th><th>requests</th><th>5xx</th><th>p50</th><th>p90</th>"
            "<th>p95</th><th>p99</th><th>inference p50</th></tr>"
        )
        for name, r in sorted(server["regions"].items()):
            cells = "".join(f"<td>{r['latency_ms'].get(k, '-')}</td>" for k in ("p50", "p90", "p95", "p99"))
            parts.append(
                f"<tr><td class='l'>{_e(name)}</td><td>{r['requests']}</td><td>{r['errors']}</td>{cells}"
                f"<td>{r['inference_ms'].get('p50', '-')}</td></tr>"
            )
        parts.append("</table>")
    for key, title in (
        ("latency_time", "Latency over time"),
        ("cdf", "Latency CDF, cold vs warm"),
        ("throughput", "Throughput"),
        ("map", "Regions and PoPs"),
    ):
        if key in plots:
            parts.append(f"<h2>{title}</h2>{plots[key]}")
    if results.get("process_cold_start"):
        parts.append(
            "<h2>Process-level cold start</h2><table><tr><th>#</th><th class='l'>region</th>"
            "<th>alive ms</th><th>ready ms</th><th>first response ms</th><th>status</th></tr>"
        )
        for pc in results["process_cold_start"]:
            parts.append(
                f"<tr><td>{pc['repeat'] + 1}</td><td class='l'>{_e(pc['region'])}</td><td>{pc['alive_ms']}"
                f"</td><td>{pc['ready_ms']}</td><td>{pc['first_response_ms']}</td><td>{pc['status']}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Run settings</h2><pre>" + _e(json.dumps(results["run"], indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: dict[str, Any], path: str | Path, samples: list[Any] | None = None) -> Path:
    """Write report.html."""
    p = Path(path)
    p.write_text(render(results, samples), encoding="utf-8")
    return p
