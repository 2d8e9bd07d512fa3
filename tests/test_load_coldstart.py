"""Process-level cold starts by strategy: the arithmetic of what can be claimed, and real starts of each."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from handler_fixtures import models_dir  # noqa: F401

from harness.load.coldstart import (
    STRATEGIES,
    ColdStartSpec,
    ProcessColdStart,
    describe_summary,
    measure,
    percentile,
    starts_needed,
    summarize,
)
from harness.load.processes import Supervisor
from harness.verdict.slo import judge_percentile
from harness.verdict.stats import nearest_rank

CONTRACT_KEYS = {
    "region",
    "strategy",
    "repeat",
    "spawn_to_listening_ms",
    "spawn_to_ready_ms",
    "spawn_to_first_answer_ms",
    "first_request_ms",
    "status",
    "phases",
}


def test_starts_needed_is_what_the_verdict_needs_to_decide() -> None:
    # The summary's "claimable" is the verdict's own rule: the fewest starts with which a check can pass.
    assert starts_needed(0.5, 0.99) == 7
    assert starts_needed(0.95, 0.99) == 107
    for q, pct in ((0.5, "p50"), (0.95, "p95")):
        n = starts_needed(q, 0.99)
        fast = [100.0 + i * 0.01 for i in range(n)]
        assert judge_percentile("paris", "process_cold_start_ms", pct, 1000, fast, 0.99).status == "pass"
        assert judge_percentile("paris", "process_cold_start_ms", pct, 1000, fast[:-1], 0.99).status == "inconclusive"
    # The same nearest rank as the verdict, and the same good answer: any 2xx.
    values = [float(i) for i in range(1, 21)]
    assert percentile(values, 0.95) == values[nearest_rank(0.95, 20) - 1] == 19.0
    (s,) = summarize([ProcessColdStart("paris", "plain", i, 1.0, 2.0, 3.0, 1.0, 204) for i in range(7)])
    assert (s.n, s.failed, s.claims["p50"]) == (7, 0, True)


def test_summary_says_what_the_starts_do_not_allow_to_claim() -> None:
    def start(strategy: str, i: int, ms: float, status: int = 200) -> ProcessColdStart:
        return ProcessColdStart("paris", strategy, i, ms / 2, ms / 2, ms, 5.0, status, {"fork": 1.0, "session": ms / 4})

    starts = [start("zygote", i, 100.0 + i) for i in range(10)] + [start("plain", 0, 300.0, status=0)]
    zygote, plain = summarize(starts)
    assert (zygote.strategy, zygote.n, zygote.failed) == ("zygote", 10, 0)
    assert zygote.p50["spawn_to_first_answer_ms"] == 104.0 and zygote.p95["spawn_to_first_answer_ms"] == 109.0
    assert zygote.phases_p50 == {"fork": 1.0, "session": 26.0}
    assert zygote.claims == {"p50": True, "p95": False}
    text = "\n".join(describe_summary(zygote))
    assert "p95 not claimable: needs at least 107 answered starts at 99% confidence, this run has 10" in text
    assert "p50 not claimable" not in text
    assert (plain.n, plain.failed, plain.p50["spawn_to_first_answer_ms"]) == (0, 1, None)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([], 0.5) is None


def test_spec_from_the_profile() -> None:
    spec = ColdStartSpec.from_profile({"region": "nairobi", "repeats": 4})
    assert spec == ColdStartSpec("nairobi", 4, STRATEGIES)
    assert ColdStartSpec.from_profile({"region": "x", "strategies": ["zygote"]}).strategies == ("zygote",)
    with pytest.raises(ValueError, match="unknown start strategy 'snapshot'"):
        ColdStartSpec.from_profile({"region": "x", "strategies": ["zygote", "snapshot"]})
    with pytest.raises(ValueError, match="at least 1"):
        ColdStartSpec.from_profile({"region": "x", "repeats": 0})


def test_every_strategy_starts_and_answers(models_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    model = tmp_path / "mobilenetv2-int8.onnx"
    shutil.copy(models_dir / model.name, model)

    def serve_argv(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "harness",
            "serve",
            "--region",
            "paris",
            "--port",
            str(port),
            "--model",
            str(model),
        ]

    said: list[str] = []
    with Supervisor() as sup:
        starts = measure(ColdStartSpec("paris", 2), serve_argv, str(model), sup, tmp_path / "logs", said.append)
        models = {c.name: c.argv[len(c.argv) - 1 - c.argv[::-1].index("--model") + 1] for c in sup.children}
    assert [(s["strategy"], s["repeat"]) for s in starts] == [(st, i) for i in range(2) for st in STRATEGIES]
    for s in starts:
        assert set(s) >= CONTRACT_KEYS and s["error"] is None and s["status"] == 200, s
        assert 0 < s["spawn_to_listening_ms"] <= s["spawn_to_ready_ms"] < s["spawn_to_first_answer_ms"]
        assert s["first_request_ms"] < s["spawn_to_first_answer_ms"]
        # The process's own phases: a fork replaces the imports for the zygote strategies.
        first = "fork" if s["strategy"].startswith("zygote") else "imports"
        assert {first, "fetch", "session", "warmup", "server"} <= set(s["phases"]), s
    # The prepared strategies served the model prepared beside the original (once, before measuring); the
    # zygotes were started once each, the plain processes once per start.
    prepared = str(tmp_path / "mobilenetv2-int8.ort")
    assert models == {
        "zygote-zygote": str(model),
        "zygote-zygote+prepared-model": prepared,
        **{f"cold-plain-{i}": str(model) for i in range(2)},
        **{f"cold-prepared-model-{i}": prepared for i in range(2)},
    }
    assert any(line.startswith("process cold start zygote:") for line in said)
    assert any("p95 not claimable" in line for line in said)
