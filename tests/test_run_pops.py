"""PoPs started together report each one's own spawn-to-ready time."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def test_each_pop_reports_its_own_spawn_to_ready_time(tmp_path):
    from harness.load.processes import Supervisor, free_port, python
    from harness.load.runner import Pop, wait_all_ready

    def argv(port: int) -> list[str]:
        return [python(), "-m", "harness.load.testserver", "--port", str(port), "--delay", "constant:1"]

    with Supervisor() as sup:
        early, late = free_port(), free_port()
        first = Pop("paris", f"http://127.0.0.1:{early}", sup.start("pop-paris", argv(early)), early)
        time.sleep(1.5)  # the first PoP is long ready when the second is spawned
        second = Pop("nairobi", f"http://127.0.0.1:{late}", sup.start("pop-nairobi", argv(late)), late)
        order = wait_all_ready([first, second], timeout_s=30)
    assert {p.region for p in order} == {"paris", "nairobi"}
    assert first.ready_s is not None and second.ready_s is not None
    # Measured from each one's own spawn: the first waited through the pause, the second did not.
    assert first.ready_s >= 1.5 > second.ready_s > 0
