"""Raw samples: one row per planned arrival's outcome, µs integers, one CSV file per load process.

Every load process writes its samples with `Sample`'s field order as the header; `read_samples` merges
them. The figures computed from them live in harness/verdict/figures.py; Locust's own (rounded)
statistics decide nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

DROPPED = -1  # status of an arrival never sent (the outstanding limit was reached)
UNFINISHED = -2  # status of an arrival sent but unanswered when its load process stopped


@dataclass(frozen=True)
class Sample:
    """One arrival's outcome; times in µs except t_s (seconds from the run's t=0)."""

    region: str
    pop: str
    t_s: float
    send_delay_us: int
    latency_us: int
    status: int
    cold: int  # 1 cold, 0 warm, -1 unknown (no X-Cold-Start header)
    server_total_us: int
    inference_us: int
    rtt_ms: float
    rtt_source: str
    rtt_injected: int
    e2e_us: int
    error: str
    process: str = ""  # the load process that generated the arrival ("local", "worker-0", ...); "": unknown

    @property
    def ok(self) -> bool:
        """A 2xx response."""
        return 200 <= self.status < 300

    @property
    def dropped(self) -> bool:
        """Never sent: the outstanding limit was reached."""
        return self.status == DROPPED


SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))  # the CSV header, in this order
_CONVERT = {"int": int, "float": float, "str": str}


def sample_row(sample: Sample) -> tuple[object, ...]:
    """A CSV row in SAMPLE_FIELDS order."""
    return tuple(getattr(sample, name) for name in SAMPLE_FIELDS)


def parse_row(row: dict[str, str]) -> Sample:
    """A Sample from a CSV row keyed by header; fields an older file lacks take their defaults."""
    values = {}
    for f in fields(Sample):
        raw = row.get(f.name)
        if raw is None:
            continue  # e.g. `process` in files written before it existed
        values[f.name] = _CONVERT[str(f.type)](raw)
    return Sample(**values)


def read_samples(out_dir: str | Path, problems: list[str] | None = None) -> list[Sample]:
    """All samples under out_dir/raw (one file per load process), sorted by intended time. A row that
    cannot be read (say, cut by a killed writer) is skipped and described in `problems`."""
    out: list[Sample] = []
    for path in sorted((Path(out_dir) / "raw").glob("samples-*.csv")):
        bad = 0
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    out.append(parse_row(row))
                except (TypeError, ValueError):
                    bad += 1
        if bad and problems is not None:
            problems.append(f"{path.name}: {bad} unreadable row(s) skipped")
    out.sort(key=lambda s: s.t_s)
    return out


def write_samples(path: str | Path, samples: Iterable[Sample]) -> Path:
    """Write samples as CSV atomically (a temporary file renamed into place)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(SAMPLE_FIELDS)
        w.writerows(sample_row(s) for s in samples)
    tmp.replace(p)
    return p
