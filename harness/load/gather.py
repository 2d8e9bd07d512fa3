"""Where a run's samples land: every load process's samples as CSV chunks, and a ledger of the processes.

A load process hands its new samples over every couple of seconds (a local Locust to itself, a worker to
the master over Locust's messages); the gathering process writes each chunk as its own file, atomically
(`*.tmp`, then rename), so a process killed with SIGKILL loses at most its last seconds. The ledger,
OUT/raw/processes.json, says what each load process was given (its share of the plan, the arrivals that
share holds) and how far it got; the verdict accounts for every planned arrival with it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.load.recorder import Sample

LEDGER = "processes.json"
# A run folder's verdict and what comes with it: removed when a run starts, so an old one never looks current.
VERDICT_FILES = ("results.json", "report.html", "cost.json", "compare.json")
RUNNING_MARKER = "RUNNING"  # present while a run writes its folder; the verdict's writing removes it
RUNNING, FINISHED, LOST, INTERRUPTED = "running", "finished", "lost", "interrupted"


def sample_header() -> list[str]:
    """The CSV header: Sample's field names, in its order."""
    return [f.name for f in fields(Sample)]


def begin_output(out: Path) -> None:
    """A fresh output folder: no old verdict that could look current, an empty raw/ (an earlier run's
    samples would be judged with this one's), and a RUNNING marker."""
    out.mkdir(parents=True, exist_ok=True)
    for name in VERDICT_FILES:
        (out / name).unlink(missing_ok=True)
    raw = out / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir()
    (out / RUNNING_MARKER).write_text(f"started {time.time():.3f} pid {os.getpid()}\n", encoding="utf-8")


def encode_samples(samples: list[Sample]) -> bytes:
    """Samples as compressed CSV rows without a header (what a worker sends the master)."""
    names = sample_header()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerows([getattr(s, n) for n in names] for s in samples)
    return zlib.compress(buf.getvalue().encode("utf-8"), 1)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class ProcessRecord:
    """The ledger's line for one load process."""

    name: str
    shares: dict[str, list[int]]  # region -> [slot, of]
    planned: dict[str, int]
    pinned: str | None = None
    state: str = RUNNING
    last_flush_t_s: float | None = None
    chunks: int = 0
    samples: int = 0
    rtt_measured: bool = False
    host: str = ""
    reason: str = ""  # why it is lost or interrupted
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # live, per region (progress only)


@dataclass
class Ledger:
    """What every load process was given and how far it got; kept in OUT/raw/processes.json."""

    t0: float | None = None
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)  # profile regions no load process generates
    updated_at: float = 0.0

    @classmethod
    def read(cls, out_dir: str | Path) -> Ledger | None:
        """The ledger of a run directory, or None when there is none (or it cannot be read)."""
        path = Path(out_dir) / "raw" / LEDGER
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        procs = {name: ProcessRecord(**p) for name, p in data.get("processes", {}).items()}
        return cls(data.get("t0"), procs, list(data.get("orphans", [])), float(data.get("updated_at", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "t0": self.t0,
            "processes": {n: asdict(p) for n, p in self.processes.items()},
            "orphans": self.orphans,
            "updated_at": self.updated_at,
        }


class Gatherer:
    """The gathering side (a local Locust, or the master): writes chunks and keeps the ledger."""

    def __init__(self, out_dir: str | Path, on_rows: Callable[[list[str], str], None] | None = None) -> None:
        self.raw = Path(out_dir) / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger()
        self.on_rows = on_rows  # also given every chunk's rows (header, CSV body), e.g. for live figures

    def expect(self, record: ProcessRecord) -> None:
        """A load process was given its share of the plan."""
        self.ledger.processes[record.name] = record
        self.save()

    def chunk(self, process: str, seq: int, t_s: float, blob: bytes, n: int, counters: dict | None = None) -> Path:
        """Write one chunk of `n` of `process`'s samples (compressed rows, see encode_samples); `counters`
        are its live per-region counts (for progress displays)."""
        body = zlib.decompress(blob).decode("utf-8")
        head = io.StringIO()
        csv.writer(head).writerow(sample_header())
        path = self.raw / f"samples-{_safe(process)}-{seq:05d}.csv"
        write_atomic(path, (head.getvalue() + body).encode("utf-8"))
        if self.on_rows is not None:
            self.on_rows(sample_header(), body)
        rec = self.ledger.processes.get(process)
        if rec is not None:
            rec.chunks = max(rec.chunks, seq + 1)
            rec.samples += n
            if counters is not None:
                rec.counters = counters
            rec.last_flush_t_s = round(t_s, 3) if rec.last_flush_t_s is None else max(rec.last_flush_t_s, round(t_s, 3))
        self.save()
        return path

    def done(self, process: str, state: str, reason: str = "") -> None:
        """A load process said it has stopped and sent its last chunk."""
        rec = self.ledger.processes.get(process)
        if rec is not None and rec.state == RUNNING:
            rec.state, rec.reason = state, reason
            self.save()

    def lose(self, process: str, reason: str) -> None:
        """A load process is gone without saying it finished (killed, disconnected)."""
        rec = self.ledger.processes.get(process)
        if rec is not None and rec.state == RUNNING:
            rec.state, rec.reason = LOST, reason
            self.save()

    def all_done(self) -> bool:
        """Every expected load process has stopped (or is known lost)."""
        return all(p.state != RUNNING for p in self.ledger.processes.values())

    def save(self) -> None:
        """Rewrite the ledger (atomically)."""
        self.ledger.updated_at = time.time()
        write_atomic(self.raw / LEDGER, json.dumps(self.ledger.to_dict(), indent=1).encode("utf-8"))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
