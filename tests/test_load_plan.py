"""The plan's shares of the arrivals (who generates what, and exactly how many) and the gathering side's
chunks and ledger, without starting any process."""

from __future__ import annotations

import json

from harness.load.gather import (
    FINISHED,
    LOST,
    RUNNING,
    RUNNING_MARKER,
    VERDICT_FILES,
    Gatherer,
    Ledger,
    ProcessRecord,
    begin_output,
    encode_samples,
)
from harness.load.plan import Assignment, Share, assign, build_plan
from harness.load.profiles import Profile
from harness.load.recorder import Sample, read_samples


def plan(tmp_path, regions=("paris", "nairobi"), rate=40.0, duration=20.0, arrival="poisson"):
    prof = Profile(name="t", shape="steady", regions=list(regions), duration_s=duration, rate=rate, arrival=arrival)
    return build_plan(prof, {"paris": "http://127.0.0.1:9"}, tmp_path, seed=7)


def test_pinned_workers_share_their_region_and_the_rest_share_the_others():
    got, orphans = assign(
        ["paris", "nairobi", "tokyo"],
        [("worker-0", None), ("worker-nairobi-1", "nairobi"), ("worker-2", None), ("worker-nairobi-3", "nairobi")],
    )
    shares = {a.name: a.shares for a in got}
    assert shares["worker-nairobi-1"] == {"nairobi": Share(0, 2)}
    assert shares["worker-nairobi-3"] == {"nairobi": Share(1, 2)}
    assert shares["worker-0"] == {"paris": Share(0, 2), "tokyo": Share(0, 2)}
    assert shares["worker-2"] == {"paris": Share(1, 2), "tokyo": Share(1, 2)}
    assert orphans == []
    # Only pinned workers, none for tokyo: nobody generates it, and the caller is told.
    got, orphans = assign(["paris", "tokyo"], [("worker-paris-0", "paris")])
    assert orphans == ["tokyo"] and got[0].shares == {"paris": Share(0, 1)}


def test_planned_counts_are_exact_and_the_same_wherever_computed(tmp_path):
    p = plan(tmp_path)
    (a,), _ = assign(p.profile["regions"], [("local", None)])
    planned = p.planned(a)
    # Exactly the schedule the load process will send, recomputed independently.
    assert planned == {r: len(list(p.arrivals(r, Share()))) for r in ("paris", "nairobi")}
    assert planned == p.planned(Assignment.from_dict(json.loads(json.dumps(a.to_dict()))))
    assert all(abs(n - 800) < 4 * 800**0.5 for n in planned.values())  # Poisson: 40/s for 20 s
    # Two workers' halves are different seeded streams at half the rate; together about the whole.
    halves = [p.planned(x) for x in assign(p.profile["regions"], [("w0", None), ("w1", None)])[0]]
    assert halves[0] != halves[1]
    assert all(abs(h["paris"] - 400) < 4 * 400**0.5 for h in halves)
    assert list(p.arrivals("paris", Share(0, 2))) != list(p.arrivals("paris", Share(1, 2)))


def test_constant_arrivals_split_evenly(tmp_path):
    p = plan(tmp_path, regions=("paris",), rate=10.0, duration=10.0, arrival="constant")
    assert p.planned(Assignment("local", {"paris": Share()})) == {"paris": 100}
    assert sum(p.planned(Assignment("w", {"paris": Share(i, 4)}))["paris"] for i in range(4)) == 100


def sample(region: str, t: float, process: str) -> Sample:
    return Sample(region, "paris", t, 10, 2000, 200, 0, 0, 0, 5.0, "local", 0, 2000, "", process)


def test_chunks_are_written_whole_and_the_ledger_says_how_far_each_process_got(tmp_path):
    g = Gatherer(tmp_path)
    g.expect(ProcessRecord("w0", {"paris": [0, 1]}, {"paris": 3}))
    g.expect(ProcessRecord("w1", {"nairobi": [0, 1]}, {"nairobi": 2}))
    g.chunk("w0", 0, 2.0, encode_samples([sample("paris", 0.1, "w0"), sample("paris", 1.2, "w0")]), 2)
    g.chunk("w1", 0, 2.1, encode_samples([sample("nairobi", 0.5, "w1")]), 1)
    g.chunk("w0", 1, 4.0, encode_samples([sample("paris", 3.3, "w0")]), 1)
    g.done("w0", FINISHED)
    assert not g.all_done()
    g.lose("w1", "w1 stopped reporting")
    g.done("w1", FINISHED)  # too late: a lost process stays lost
    assert g.all_done()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "processes.json",
        "samples-w0-00000.csv",
        "samples-w0-00001.csv",
        "samples-w1-00000.csv",
    ]
    got = read_samples(tmp_path)
    assert [(s.process, s.t_s) for s in got] == [("w0", 0.1), ("w1", 0.5), ("w0", 1.2), ("w0", 3.3)]
    ledger = Ledger.read(tmp_path)
    assert ledger is not None
    w0, w1 = ledger.processes["w0"], ledger.processes["w1"]
    assert (w0.state, w0.samples, w0.chunks, w0.last_flush_t_s) == (FINISHED, 3, 2, 4.0)
    assert (w1.state, w1.samples, w1.last_flush_t_s, w1.reason) == (LOST, 1, 2.1, "w1 stopped reporting")


def test_a_missing_or_broken_ledger_reads_as_none(tmp_path):
    assert Ledger.read(tmp_path) is None
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "processes.json").write_text("{not json")
    assert Ledger.read(tmp_path) is None


def test_a_process_never_heard_from_again_is_lost_or_interrupted(tmp_path):
    from harness.load.gather import write_atomic
    from harness.load.runner import load_process_facts

    p = plan(tmp_path, regions=("paris",))
    g = Gatherer(tmp_path)
    g.expect(ProcessRecord("local", {"paris": [0, 1]}, p.planned(Assignment("local", {"paris": Share()}))))
    assert g.ledger.processes["local"].state == RUNNING
    (lost,) = load_process_facts(tmp_path, p, [("local", None)], None)
    (cut,) = load_process_facts(tmp_path, p, [("local", None)], "SIGINT")
    assert (lost.state, cut.state) == ("lost", "interrupted")
    # Without any ledger (Locust died before its start), the plan alone says what was planned.
    write_atomic(tmp_path / "raw" / "processes.json", b"{}")
    (none,) = load_process_facts(tmp_path, p, [("local", None)], None)
    assert none.state == "lost" and none.planned == lost.planned and none.last_flush_t_s is None


def test_a_run_begins_with_no_earlier_verdict_or_samples_in_its_folder(tmp_path):
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    for name in VERDICT_FILES:
        (out / name).write_text("{}")  # an earlier run's PASS, its cost and its comparison
    (out / "raw" / "samples-local-00000.csv").write_text("region\nparis\n")
    (out / "raw" / "processes.json").write_text("{}")
    (out / "notes.txt").write_text("the user's own")
    begin_output(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([RUNNING_MARKER, "raw", "notes.txt"])
    assert list((out / "raw").iterdir()) == []
    assert (out / RUNNING_MARKER).read_text().startswith("started ")
