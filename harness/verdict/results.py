"""The one place a run's results are built (typed, `harness.verdict.model.Results`) and written.

`build_results(facts, samples)` judges and assembles; `write_outputs(results, out_dir, samples)` writes
results.json and report.html atomically; `harness.report.terminal.print_verdict(results, console)` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.load.recorder import Sample
    from harness.verdict.facts import RunFacts
    from harness.verdict.model import Results


def build_results(facts: RunFacts, samples: list[Sample]) -> Results:
    """Account for every planned arrival, compute every figure with its interval, judge the SLOs."""
    raise NotImplementedError  # being written; the signature is the contract


def write_outputs(results: Results, out_dir: str | Path, samples: list[Sample] | None = None) -> None:
    """Write OUT/results.json and OUT/report.html (each a temporary file renamed into place), then
    remove OUT/RUNNING."""
    raise NotImplementedError  # being written; the signature is the contract
