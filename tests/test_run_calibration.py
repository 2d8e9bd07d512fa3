"""Calibration: against a server whose latency distribution is known exactly, the harness reports p50
within 0.2 ms and p99 within 5 % of the truth (see harness.load.calibration for how the truth is made)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_reported_percentiles_match_a_known_distribution(tmp_path):
    from harness.load.calibration import calibrate

    result = calibrate(tmp_path, quick=True)
    assert result["samples"] >= 1000  # enough to claim p99
    assert abs(result["p50"]["error_ms"]) <= 0.2, result
    assert abs(result["p99"]["error_rel"]) <= 0.05, result
