"""The per-region verdict table printed at the end of a run (rich)."""

from __future__ import annotations

from typing import Any

STATUS_STYLE = {"pass": "green", "fail": "bold red", "insufficient": "yellow", "not_observed": "dim"}


def _fmt(v: Any, unit: str = "ms") -> str:
    if v is None:
        return "-"
    if unit == "fraction":
        return f"{v:.2%}"
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def print_verdict(results: dict[str, Any], console: Any) -> None:
    """Print per-region figures, every SLO check, and the verdict line."""
    from rich.table import Table

    regions = results["regions"]
    t = Table(title="Per region (client latency in ms from intended send; warm requests)", title_justify="left")
    for col in (
        "region",
        "verdict",
        "PoP(s)",
        "ok",
        "err",
        "drop",
        "late",
        "cold",
        "p50",
        "p90",
        "p95",
        "p99",
        "p99.9",
        "+RTT p50",
        "inference p50",
    ):
        t.add_column(col, justify="left" if col in ("region", "verdict", "PoP(s)") else "right")
    need = results["verdict"].get("validity_rules", {}).get("min_samples", {})

    def pct(w: dict[str, Any], key: str) -> str:
        # A percentile with fewer samples than a claim needs is shown, but marked as not claimable.
        text = _fmt(w.get(key))
        return f"[dim]{text}*[/]" if w.get("count", 0) < need.get(key, 0) else text

    for name, r in regions.items():
        statuses = {ch["status"] for ch in results["verdict"]["checks"] if ch["region"] == name}
        own = "fail" if "fail" in statuses else "invalid" if "insufficient" in statuses else "pass"
        style = {"pass": "green", "fail": "bold red", "invalid": "yellow"}[own]
        c = r["counts"]
        w = r["client_latency_ms"]["warm"]
        pops = ", ".join(f"{p} ({v['rtt_ms']:g} ms)" for p, v in r["pops"].items())
        t.add_row(
            name,
            f"[{style}]{own.upper()}[/]",
            pops,
            str(c["ok"]),
            str(c["errors"]),
            str(c["dropped"]),
            str(c["late"]),
            str(c["cold"]),
            pct(w, "p50"),
            pct(w, "p90"),
            pct(w, "p95"),
            pct(w, "p99"),
            pct(w, "p99.9"),
            _fmt(r["e2e_latency_ms"]["warm"].get("p50")),
            _fmt(r["server_inference_ms"].get("p50")),
        )
    console.print(t)
    console.print("[dim]* too few samples to claim this percentile (validity.min_samples)[/]")
    verdict = results["verdict"]
    checks = Table(title="SLO checks", title_justify="left")
    for col in ("region", "metric", "pct", "threshold", "measured", "samples", "status"):
        checks.add_column(col)
    for ch in verdict["checks"]:
        style = STATUS_STYLE.get(ch["status"], "")
        checks.add_row(
            ch["region"],
            ch["metric"],
            ch["percentile"] or "",
            _fmt(ch["threshold"], ch["unit"]),
            _fmt(ch["measured"], ch["unit"]),
            f"{ch['samples']}/{ch['required_samples']}",
            f"[{style}]{ch['status']}[/]",
        )
    console.print(checks)
    server = results.get("server_side")
    if server:
        console.print(_server_side_table(server))
    for pc in results.get("process_cold_start", []):
        console.print(
            f"process cold start ({pc['region']}, #{pc['repeat'] + 1}): ready {pc['ready_ms']} ms, "
            f"first response {pc['first_response_ms']} ms"
        )
    status = verdict["status"]
    colour = {"pass": "bold green", "fail": "bold red", "invalid": "bold yellow"}[status]
    console.print(f"[{colour}]VERDICT: {status.upper()}[/] (exit {verdict['exit_code']})")
    for reason in verdict["invalid_reasons"]:
        console.print(f"  [yellow]invalid:[/] {reason}")
    for name in verdict["failed"]:
        console.print(f"  [red]failed:[/] {name}")


def _server_side_table(server: dict[str, Any]) -> Any:
    """The handlers' own latency per region, from Prometheus: beside the client's figures above."""
    from rich.table import Table

    t = Table(title=f"Server side, from Prometheus ({server['url']}; ms)", title_justify="left")
    for col in ("region", "requests", "5xx", "p50", "p90", "p95", "p99", "inference p50"):
        t.add_column(col, justify="left" if col == "region" else "right")
    if server.get("error"):
        t.add_row(f"[yellow]unavailable: {server['error']}[/]", *[""] * 7)
    for name, r in sorted(server["regions"].items()):
        lat = r["latency_ms"]
        t.add_row(
            name,
            str(r["requests"]),
            str(r["errors"]),
            *(_fmt(lat.get(k)) for k in ("p50", "p90", "p95", "p99")),
            _fmt(r["inference_ms"].get("p50")),
        )
    return t
