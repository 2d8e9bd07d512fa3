"""Named load profiles: per-region arrival rate over time, and the PoP events (outages) of a run.

A profile file says what load each client region offers as a function of time; the arrival generator
(harness.load.arrivals) turns that into a schedule, and the runner applies the PoP events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.load.yamlfile import ConfigError, Document, load, schema

SHAPES = ("steady", "follow-the-sun", "flash-crowd", "cold-start", "failover", "stages")


@dataclass(frozen=True)
class Stage:
    """Until `until_s`, each region offers `rates[region]` req/s (absent regions offer 0)."""

    until_s: float
    rates: dict[str, float]


@dataclass
class Profile:
    """A load profile: client regions, the arrival process, a rate function and PoP events."""

    name: str
    shape: str
    regions: list[str]
    duration_s: float
    rate: float  # the base arrival rate per region, req/s
    arrival: str = "poisson"  # or "constant"
    rates: dict[str, float] = field(default_factory=dict)  # per-region base rate overrides
    max_outstanding: int = 64  # per region and load process; beyond it an arrival is dropped
    late_threshold_ms: float = 5.0
    drain_s: float = 5.0  # how long in-flight requests may finish after the schedule ends
    inject_rtt: bool = False  # sleep the emulated RTT into the request's life (reported as emulated)
    pop_idle_timeout_s: float | None = None  # handler scale-to-zero timeout the runner sets
    expects_cold_starts: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # shape-specific settings
    stages: list[Stage] = field(default_factory=list)
    pop_down: list[dict[str, Any]] = field(default_factory=list)  # [{pop, at_s, until_s?}]
    process_cold_start: dict[str, Any] | None = None  # {region, repeats, strategies?}
    corpus: dict[str, Any] = field(default_factory=dict)  # {sizes: [[w, h], ...], formats: [...]}
    file: str = ""
    description: str = ""
    _tz_offsets_h: dict[str, float] = field(default_factory=dict, repr=False)

    def base_rate(self, region: str) -> float:
        """The region's base arrival rate in req/s."""
        return float(self.rates.get(region, self.rate))

    def rate_at(self, region: str, t: float) -> float:
        """Arrival rate (req/s) that `region` offers `t` seconds into the run."""
        if t < 0 or t >= self.duration_s:
            return 0.0
        base = self.base_rate(region)
        p = self.params
        if self.shape in ("steady", "failover"):
            return base
        if self.shape == "flash-crowd":
            start = float(p.get("at_s", self.duration_s / 3))
            length = float(p.get("length_s", self.duration_s / 3))
            if region == p.get("region") and start <= t < start + length:
                return base * float(p.get("factor", 10.0))
            return base
        if self.shape == "cold-start":
            burst, gap = float(p.get("burst_s", 5.0)), float(p.get("gap_s", 10.0))
            return base if (t % (burst + gap)) < burst else 0.0
        if self.shape == "follow-the-sun":
            return base * self.daylight_factor(region, t)
        if self.shape == "stages":
            for stage in self.stages:
                if t < stage.until_s:
                    return float(stage.rates.get(region, 0.0))
            return 0.0
        raise ValueError(f"unknown shape {self.shape!r}")

    def max_rate(self, region: str) -> float:
        """An upper bound of rate_at over the run, for thinning a Poisson process."""
        base = self.base_rate(region)
        if self.shape == "flash-crowd" and region == self.params.get("region"):
            return base * float(self.params.get("factor", 10.0))
        if self.shape == "stages":
            return max((float(s.rates.get(region, 0.0)) for s in self.stages), default=0.0)
        return base

    def daylight_factor(self, region: str, t: float) -> float:
        """Follow-the-sun demand (min_fraction..1) at the region's local hour; a day lasts day_s."""
        p = self.params
        day_s = float(p.get("day_s", self.duration_s))
        start_utc_h = float(p.get("start_utc_hour", 0.0))
        peak_h = float(p.get("peak_local_hour", 20.0))
        floor = float(p.get("min_fraction", 0.1))
        utc_h = start_utc_h + 24.0 * t / day_s
        local_h = (utc_h + self.tz_offset_h(region)) % 24.0
        wave = (1.0 + math.cos(2 * math.pi * (local_h - peak_h) / 24.0)) / 2.0
        return floor + (1.0 - floor) * wave

    def tz_offset_h(self, region: str) -> float:
        """The region's UTC offset in hours (from the catalogue's IANA zone)."""
        return self._tz_offsets_h.get(region, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The profile's settings, as recorded in results.json and handed to the load processes."""
        return {
            "name": self.name,
            "shape": self.shape,
            "regions": self.regions,
            "duration_s": self.duration_s,
            "rate": self.rate,
            "rates": self.rates,
            "arrival": self.arrival,
            "max_outstanding": self.max_outstanding,
            "late_threshold_ms": self.late_threshold_ms,
            "drain_s": self.drain_s,
            "inject_rtt": self.inject_rtt,
            "pop_idle_timeout_s": self.pop_idle_timeout_s,
            "expects_cold_starts": self.expects_cold_starts,
            "params": self.params,
            "stages": [{"until_s": s.until_s, "rates": s.rates} for s in self.stages],
            "pop_down": self.pop_down,
            "process_cold_start": self.process_cold_start,
            "corpus": self.corpus,
            "file": self.file,
            "description": self.description,
            "tz_offsets_h": self._tz_offsets_h,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        """Rebuild a profile from to_dict()'s output (in the load processes)."""
        stages = [Stage(float(s["until_s"]), dict(s["rates"])) for s in d.get("stages", [])]
        fields_ = {k: v for k, v in d.items() if k not in ("stages", "tz_offsets_h")}
        prof = cls(**fields_, stages=stages)
        prof._tz_offsets_h = dict(d.get("tz_offsets_h", {}))
        return prof


def profiles_dir() -> Path:
    """Where the named profiles live (loadtests/profiles in the repository)."""
    return Path(__file__).resolve().parents[2] / "loadtests" / "profiles"


def resolve(name_or_file: str) -> Path:
    """A profile name (`smoke`) or a path to a YAML file, as a path."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = profiles_dir() / f"{name_or_file}.yaml"
    if not candidate.exists():
        known = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.yaml")))
        raise ConfigError(name_or_file, None, f"no such profile (named profiles: {known})")
    return candidate


def load_profile(name_or_file: str, known_regions: dict[str, str] | None = None) -> Profile:
    """Load and check a profile; `known_regions` maps region name to IANA zone (the catalogue)."""
    doc = load(resolve(name_or_file))
    return parse_profile(doc, known_regions)


def parse_profile(doc: Document, known_regions: dict[str, str] | None = None) -> Profile:
    """Check a parsed profile: its structure against profile.schema.json, then the rules that relate
    fields to each other; errors carry the file and line."""
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("a profile must be a mapping")
    doc.validate(schema("profile.schema.json"))
    shape = data.get("shape", "steady")
    regions: list[str] = data["regions"]
    if known_regions is not None:
        for i, r in enumerate(regions):
            if r not in known_regions:
                raise doc.error(f"unknown region {r!r} (catalogue: {', '.join(sorted(known_regions))})", "regions", i)

    def region_of(key: str, *path: str | int) -> None:
        """The value at path/key names one of the profile's regions."""
        node = data
        for step in path:
            node = node[step]
        if node.get(key) not in regions:
            where = ".".join(str(p) for p in (*path, key))
            raise doc.error(f"`{where}` must be one of `regions` ({', '.join(regions)})", *path, key)

    rates = data.get("rates", {})
    for r in rates:
        if r not in regions:
            raise doc.error(f"`rates` names region {r!r}, which is not in `regions`", "rates", r)
    params = data.get("params", {})
    prof = Profile(
        name=str(data.get("name", Path(doc.file).stem)),
        description=data.get("description", ""),
        shape=shape,
        regions=list(regions),
        duration_s=float(data["duration_s"]),
        rate=float(data.get("rate", 0.0)),
        rates={k: float(v) for k, v in rates.items()},
        arrival=data.get("arrival", "poisson"),
        max_outstanding=int(data.get("max_outstanding", 64)),
        # 0 is a real threshold (every send later than its intended time is late), never "unset".
        late_threshold_ms=float(data.get("late_threshold_ms", 5.0)),
        drain_s=float(data.get("drain_s", 5.0)),
        inject_rtt=data.get("inject_rtt", False),
        pop_idle_timeout_s=float(data["pop_idle_timeout_s"]) if "pop_idle_timeout_s" in data else None,
        expects_cold_starts=data.get("expects_cold_starts", shape == "cold-start"),
        params=params,
        file=doc.file,
    )
    if shape == "flash-crowd":
        region_of("region", "params")
        at = float(params.get("at_s", prof.duration_s / 3))
        if at >= prof.duration_s:
            raise doc.error("params.at_s must fall inside the run", "params", "at_s")
    if shape == "cold-start":
        gap = float(params.get("gap_s", 10.0))
        idle = prof.pop_idle_timeout_s
        if idle is None or idle <= 0 or gap <= idle:
            raise doc.error(
                "cold-start needs pop_idle_timeout_s > 0 and params.gap_s longer than it, so each burst starts cold",
                "params",
            )
    if shape == "stages":
        last = 0.0
        for i, stage in enumerate(data["stages"]):
            until = float(stage["until_s"])
            if until <= last:
                raise doc.error("stages must have increasing until_s", "stages", i, "until_s")
            last = until
            for r in stage["rates"]:
                if r not in regions:
                    raise doc.error(
                        f"stage rates name region {r!r}, which is not in `regions`", "stages", i, "rates", r
                    )
            prof.stages.append(Stage(until, {k: float(v) for k, v in stage["rates"].items()}))
    pop_down = data.get("pop_down", [])
    if shape == "failover" and not pop_down:
        raise doc.error("failover needs `pop_down: [{pop: NAME, at_s: SECONDS}]`", "shape")
    for i, event in enumerate(pop_down):
        region_of("pop", "pop_down", i)
        at = float(event["at_s"])
        if at >= prof.duration_s:
            raise doc.error("pop_down.at_s must fall inside the run", "pop_down", i, "at_s")
        until = event.get("until_s")
        if until is not None and until <= at:
            raise doc.error("pop_down.until_s must come after at_s", "pop_down", i, "until_s")
        prof.pop_down.append({"pop": event["pop"], "at_s": at, "until_s": until})
    prof.corpus = data.get("corpus", {})
    pcs = data.get("process_cold_start")
    if pcs is not None:
        region_of("region", "process_cold_start")
        prof.process_cold_start = {"region": pcs["region"], "repeats": int(pcs.get("repeats", 3))}
        if "strategies" in pcs:
            prof.process_cold_start["strategies"] = list(pcs["strategies"])
    if known_regions:
        prof._tz_offsets_h = {r: utc_offset_h(known_regions[r]) for r in regions}
    return prof


def utc_offset_h(tz: str) -> float:
    """The zone's UTC offset in hours now (daylight saving included)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    offset = datetime.now(ZoneInfo(tz)).utcoffset()
    return offset.total_seconds() / 3600.0 if offset else 0.0


def scaled(profile: Profile, duration_s: float) -> Profile:
    """The profile with its duration replaced and its time-based events scaled to match."""
    import copy

    k = duration_s / profile.duration_s
    out = copy.deepcopy(profile)
    out.duration_s = duration_s
    for key in ("at_s", "length_s", "day_s"):
        if key in out.params:
            out.params[key] = float(out.params[key]) * k
    out.stages = [Stage(s.until_s * k, s.rates) for s in out.stages]
    out.pop_down = [{**ev, "at_s": ev["at_s"] * k} for ev in out.pop_down]
    return out


__all__ = ["SHAPES", "ConfigError", "Profile", "Stage", "load_profile", "resolve", "scaled"]
