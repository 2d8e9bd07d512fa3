"""The main job: `edgeharness run` with no arguments but --out, against real local handlers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_default_smoke_run_against_local_handlers_passes(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    res_file = out / "results.json"
    assert res_file.exists(), r.stdout + r.stderr
    res = json.loads(res_file.read_text())
    # Whatever the verdict, the run must have been a valid one of three regions on real handlers.
    assert res["verdict"]["valid"], res["verdict"]["invalid_reasons"]
    assert len(res["regions"]) >= 3 and {"nairobi", "san-francisco"} <= set(res["regions"])
    for region, fig in res["regions"].items():
        assert fig["counts"]["errors"] == 0, region
        assert fig["server_inference_ms"]["count"] > 0, region  # Server-Timing from the real handler
    for f in ("report.html", "locust_stats.csv", "locust_stats_history.csv"):
        assert (out / f).exists(), f
    assert r.returncode == 0, "\n".join(res["verdict"]["failed"]) + "\n" + r.stdout[-3000:]
    # Every process it started is gone: no PoP still answers.
    from harness.load.processes import http_ok

    for pop in res["pops"].values():
        assert not http_ok(pop["url"] + "/healthz", timeout_s=0.5)
