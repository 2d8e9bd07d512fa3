"""Distributed and plain Locust runs that gather and judge themselves: a master with region-pinned
workers in folders of their own (no shared files), a bare `locust -f` run, and the web UI's live tab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
LOCUST = (sys.executable, "-m", "locust", "-f", str(LOCUSTFILE))
pytestmark = pytest.mark.integration

REGIONS = ("paris", "nairobi", "san-francisco")
LENIENT = "defaults:\n  client_latency_ms: {p50: 10}\nvalidity:\n  min_duration_s: 5\n  max_late_fraction: 0.5\n"


def write_profile(tmp_path: Path, regions: tuple[str, ...], duration: int = 8, rate: int = 10) -> Path:
    f = tmp_path / "profile.yaml"
    f.write_text(
        f"name: dist\nshape: steady\nregions: [{', '.join(regions)}]\nduration_s: {duration}\nrate: {rate}\n"
        "drain_s: 1\ncorpus: {sizes: [[64, 48]], formats: [jpeg]}\n"
    )
    return f


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any EDGE_* setting (a worker elsewhere knows nothing of the run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(extra)
    return env


def free_port() -> int:
    from harness.load.processes import free_port as fp

    return fp()


def master_env(tmp_path: Path, targets: dict[str, str], slo_text: str, regions: tuple[str, ...]) -> dict[str, str]:
    slo = tmp_path / "slo.yaml"
    slo.write_text(slo_text)
    return clean_env(
        EDGE_PROFILE=str(write_profile(tmp_path, regions)),
        EDGE_TARGETS=",".join(f"{r}={u}" for r, u in targets.items()),
        EDGE_OUT=str(tmp_path / "out"),
        EDGE_SLO=str(slo),
        PYTHONPATH=str(REPO),
    )


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_master_with_three_region_pinned_workers_in_their_own_folders_judges_itself(tmp_path, known_server):
    targets = {r: known_server("constant:1", region=r) for r in REGIONS}
    port = free_port()
    (tmp_path / "master").mkdir()
    master = subprocess.Popen(
        [
            *LOCUST,
            "--headless",
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            *("--master-bind-port", str(port)),
            *("--expect-workers", "3"),
        ],
        cwd=tmp_path / "master",
        env=master_env(tmp_path, targets, LENIENT, REGIONS),
        stdout=(tmp_path / "master.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    workers = []
    for region in REGIONS:
        home = tmp_path / f"worker-{region}"
        home.mkdir()
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "harness", "worker", "--region", region, "--master", f"127.0.0.1:{port}"],
                cwd=home,
                env=clean_env(),
                stdout=(tmp_path / f"{region}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        code = master.wait(120)
        for w in workers:
            w.wait(30)
    finally:
        stop(master, *workers)
    log = (tmp_path / "master.log").read_text()
    assert code == 0, log[-3000:]
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    assert res["verdict"]["status"] == "pass" and (out / "report.html").exists() and not (out / "RUNNING").exists()
    procs = {p["name"]: p for p in res["load_processes"]}
    # One worker per region, each generating that region's whole schedule, every arrival accounted for.
    assert sorted(p["regions"][0] for p in procs.values()) == sorted(REGIONS)
    for name, p in procs.items():
        (region,) = p["regions"]
        assert name.startswith(f"worker-{region}-") and p["state"] == "finished" and p["rtt_measured"]
        assert p["recorded"] == p["planned"] and p["planned"][region] > 40
        # Its RTT is this machine's own (loopback), measured, not the catalogue's emulated figure.
        r = res["regions"][region]
        assert r["rtt_measured"] is True and r["counts"]["lost"] == 0
        (pop,) = r["pops"].values()
        assert pop["rtt_source"] == "measured" and pop["rtt_ms"] < 5
    # The workers wrote nothing where they ran: their samples travelled over Locust's messages.
    for region in REGIONS:
        assert list((tmp_path / f"worker-{region}").iterdir()) == []
    assert len(list((out / "raw").glob("samples-worker-*.csv"))) >= 3


def test_a_plain_headless_locust_run_ends_judged_with_the_verdicts_exit_code(tmp_path, known_server):
    slow = {"paris": known_server("constant:30", region="paris")}
    proc = subprocess.run(
        [*LOCUST, "--headless", "--only-summary"],
        cwd=tmp_path,
        env={
            **master_env(tmp_path, slow, LENIENT, ("paris",)),
            # What `run` does with --pricing, --junit and --summary-md, a plain run does from its environment.
            "EDGE_PRICING": str(REPO / "loadtests" / "pricing" / "edge-platforms.yaml"),
            "EDGE_JUNIT": str(tmp_path / "junit.xml"),
            "EDGE_SUMMARY_MD": str(tmp_path / "summary.md"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    # 30 ms against p50 <= 10 ms: an SLO failure, and Locust exits with the verdict's code.
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["verdict"]["status"] == "fail" and (tmp_path / "out" / "report.html").exists()
    (local,) = res["load_processes"]
    assert local["name"] == "local" and local["state"] == "finished" and local["lost"] == {"paris": 0}
    assert "VERDICT: FAIL" in proc.stderr
    cost = json.loads((tmp_path / "out" / "cost.json").read_text())  # validated by conftest's schema check
    assert cost["regions"]["paris"]["requests"] > 0 and cost["plans"]
    assert (tmp_path / "summary.md").read_text().startswith("## edgeharness: FAIL (exit 1)")
    assert "client_latency_ms p50" in (tmp_path / "junit.xml").read_text()


def test_the_web_ui_shows_live_microsecond_percentiles_and_a_stop_is_judged(tmp_path, known_server):
    targets = {"paris": known_server("constant:2", region="paris")}
    web = free_port()
    env = master_env(tmp_path, targets, LENIENT, ("paris",))
    env["EDGE_DURATION"] = "60"
    proc = subprocess.Popen(
        [*LOCUST, "--web-host", "127.0.0.1", "--web-port", str(web), "--autostart"],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "locust.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        rows: list[dict] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(base + "/stats/requests", timeout=2) as resp:
                    stats = json.loads(resp.read())
                rows = next(e["data"] for e in stats.get("extended_stats", []) if e["key"] == "edge-latency")
                if rows and rows[0]["ok"] >= 20:
                    break
            except (OSError, ValueError, StopIteration):
                pass
            time.sleep(0.5)
        assert rows and rows[0]["region"] == "paris", (tmp_path / "locust.log").read_text()[-3000:]
        p50 = rows[0]["p50_us"]
        assert int(p50.split()[0]) > 1000 and "[" in p50  # µs, with its interval
        assert "p50 <= 10 ms" in rows[0]["slo"]
        with urllib.request.urlopen(base + "/", timeout=5) as resp:
            page = resp.read().decode()
        args = json.loads(page.split("window.templateArgs = ", 1)[1].split("\n", 1)[0])
        assert args["extended_tabs"] == [{"title": "Edge latency (µs)", "key": "edge-latency"}]
        proc.send_signal(signal.SIGTERM)  # stopped long before the 60 s schedule ends
        code = proc.wait(60)
    finally:
        stop(proc)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 3 and res["verdict"]["status"] == "interrupted", (tmp_path / "locust.log").read_text()[-3000:]
    (local,) = res["load_processes"]
    assert local["state"] == "interrupted" and local["recorded"]["paris"] >= 20


def test_a_plain_locust_run_refuses_a_bad_slo_file_before_it_starts(tmp_path):
    env = master_env(
        tmp_path, {"paris": "http://127.0.0.1:9"}, "defaults:\n  client_latency_ms: {p50: fast}\n", ("paris",)
    )
    proc = subprocess.run([*LOCUST, "--headless"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{tmp_path / 'slo.yaml'}:2: defaults.client_latency_ms.p50" in proc.stderr
    assert not (tmp_path / "out" / "raw").exists()


def test_a_plain_locust_run_refuses_a_bad_pricing_file_before_it_starts(tmp_path):
    bad = tmp_path / "pricing.yaml"
    bad.write_text("plans:\n  p:\n    source: s\n    date: d\n    per_million_requests: -1\n")
    env = {**master_env(tmp_path, {"paris": "http://127.0.0.1:9"}, LENIENT, ("paris",)), "EDGE_PRICING": str(bad)}
    proc = subprocess.run([*LOCUST, "--headless"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{bad}:5" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "raw").exists()
