"""`edgeharness rejudge` on a folder without the load processes' ledger: the accounting comes from the
seeded plan, so missing arrivals are still found (never a PASS without accounting)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.load.plan import Plan, Share
from harness.load.profiles import Profile
from harness.load.recorder import Sample, write_samples
from harness.load.runner import rejudge
from harness.verdict.slo import EXIT_INVALID, EXIT_PASS

SLO = "defaults:\n  client_latency_ms: {p50: 10}\n  error_rate: 0.01\nvalidity:\n  min_duration_s: 5\n"


def _folder(tmp_path: Path, keep: float) -> tuple[Path, int]:
    """A run folder with plan.json and one local process's samples for the first `keep` of its arrivals,
    no raw/processes.json. Returns the folder and the planned count."""
    out = tmp_path / "run"
    (out / "raw").mkdir(parents=True)
    prof = Profile(name="t", shape="steady", regions=["paris"], duration_s=20.0, rate=20.0)
    plan = Plan(profile=prof.to_dict(), targets={"paris": "http://127.0.0.1:9"}, routes={}, out_dir=str(out))
    plan.instances_per_region = 0  # one local load process, as `edgeharness run` without --workers
    plan.save(out / "plan.json")
    times = list(plan.arrivals("paris", Share()))
    kept = times[: round(len(times) * keep)]
    samples = [
        Sample("paris", "paris", t, 100, 5000 + i % 7, 200, 0, 4500, 4000, 5.0, "local", 0, 10000, "", "local")
        for i, t in enumerate(kept)
    ]
    write_samples(out / "raw" / "samples-local.csv", samples)
    (tmp_path / "slo.yaml").write_text(SLO)
    return out, len(times)


def test_rejudge_without_ledger_finds_lost_arrivals_from_the_plan(tmp_path):
    out, planned = _folder(tmp_path, keep=0.5)
    assert rejudge(out, str(tmp_path / "slo.yaml"), quiet=True) == EXIT_INVALID
    res = json.loads((out / "results.json").read_text())
    counts = res["regions"]["paris"]["counts"]
    assert counts["planned"] == planned and counts["lost"] == planned - round(planned * 0.5) > 0
    (proc,) = res["load_processes"]
    assert proc["name"] == "local" and proc["state"] == "unknown"
    assert any("planned arrivals were lost" in r for r in res["verdict"]["invalid_reasons"])
    assert any("no ledger" in n for n in res["verdict"]["notes"])


def test_rejudge_without_ledger_passes_a_complete_run(tmp_path):
    out, planned = _folder(tmp_path, keep=1.0)
    assert rejudge(out, str(tmp_path / "slo.yaml"), quiet=True) == EXIT_PASS
    counts = json.loads((out / "results.json").read_text())["regions"]["paris"]["counts"]
    assert counts["planned"] == counts["recorded"] == planned and counts["lost"] == 0
