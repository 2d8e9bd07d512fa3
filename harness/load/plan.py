"""The run plan: what every load process needs (profile, targets, routes, clock), as one JSON file.

The runner writes it and passes its path in EDGE_PLAN; without one (compose, a bare `locust -f`), the
locustfile builds it from EDGE_PROFILE, EDGE_TARGETS and EDGE_OUT.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.load.arrivals import schedule
from harness.load.profiles import Profile, load_profile
from harness.load.regions import Catalogue, load_catalogue
from harness.load.yamlfile import ConfigError


@dataclass
class Route:
    """One PoP a client region may use, with the emulated RTT of that client-PoP pair."""

    pop: str
    url: str
    rtt_ms: float
    rtt_source: str


@dataclass
class Plan:
    """Everything a load process needs; JSON-serialisable."""

    profile: dict[str, Any]
    targets: dict[str, str]
    routes: dict[str, list[dict[str, Any]]]
    out_dir: str
    start_at: float | None = None  # wall-clock epoch of t=0; None: each process starts at its test start
    instances_per_region: int = 1  # informational: the workers `edgeharness run` started (0: none)
    seed: int = 1
    spin_ms: float = 1.0  # unused since the generator stopped spinning before sends; kept so older plans read
    corpus: dict[str, Any] = field(default_factory=dict)
    # Where load processes send client-side metrics: `region=url,...` (each client region to its own
    # collector) or one OTLP/HTTP URL for all; empty: none.
    client_otlp: str = ""
    # Whether the gathering Locust process judges the run at its end (a plain `locust -f` run); False
    # when `edgeharness run` drives Locust and judges with what only it knows (PoPs, cold starts).
    judge: bool = True

    def profile_obj(self) -> Profile:
        """The profile as an object."""
        return Profile.from_dict(self.profile)

    def arrivals(self, region: str, share: Share) -> Iterator[float]:
        """The intended send times (s from t=0) of `region`'s arrivals that `share` carries: a seeded
        schedule, the same in every process that computes it."""
        prof = self.profile_obj()
        seed = self.seed * 1_000_003 + zlib.crc32(region.encode()) + 7919 * share.slot
        return schedule(
            lambda t: prof.rate_at(region, t),
            prof.max_rate(region),
            prof.duration_s,
            prof.arrival,
            seed,
            share.of,
        )

    def planned(self, assignment: Assignment) -> dict[str, int]:
        """How many arrivals the load process given `assignment` must account for, per client region."""
        return {region: sum(1 for _ in self.arrivals(region, share)) for region, share in assignment.shares.items()}

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> Plan:
        """Read a plan written by save()."""
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Share:
    """Slot `slot` of `of`: the part of a region's arrivals one load process carries (rate / of)."""

    slot: int = 0
    of: int = 1


@dataclass
class Assignment:
    """What one load process generates: a share of each of its client regions' arrivals."""

    name: str  # "local", "worker-0", "worker-nairobi-0"
    shares: dict[str, Share]
    pinned: str | None = None  # the region a region-pinned worker was started for

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (also the message a master sends a worker)."""
        return {"name": self.name, "pinned": self.pinned, "shares": {r: [s.slot, s.of] for r, s in self.shares.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Assignment:
        """Inverse of to_dict."""
        return cls(d["name"], {r: Share(int(a), int(b)) for r, (a, b) in d["shares"].items()}, d.get("pinned"))


def assign(regions: Sequence[str], processes: Sequence[tuple[str, str | None]]) -> tuple[list[Assignment], list[str]]:
    """Share the client regions among load processes, each given as (name, pinned region or None).

    A region with pinned processes is shared among those alone; every other region among the unpinned
    ones. Returns the assignments (in the order given) and the regions no process generates."""
    shares: dict[str, dict[str, Share]] = {name: {} for name, _ in processes}
    unpinned = [name for name, pin in processes if pin is None]
    orphans: list[str] = []
    for region in regions:
        carriers = [name for name, pin in processes if pin == region] or unpinned
        if not carriers:
            orphans.append(region)
        for slot, name in enumerate(carriers):
            shares[name][region] = Share(slot, len(carriers))
    return [Assignment(name, shares[name], pin) for name, pin in processes], orphans


def parse_targets(items: list[str] | str, where: str = "--target") -> dict[str, str]:
    """`REGION=URL` items (or one comma-separated string) as a mapping; ConfigError on a bad one."""
    if isinstance(items, str):
        items = [x for x in items.split(",") if x.strip()]
    out: dict[str, str] = {}
    for item in items:
        region, sep, url = item.strip().partition("=")
        if not sep or not region or not url.startswith(("http://", "https://")):
            raise ConfigError(where, None, f"bad target {item!r}: use REGION=http://host:port")
        out[region] = url.rstrip("/")
    return out


def routes_for(profile: Profile, targets: dict[str, str], catalogue: Catalogue) -> dict[str, list[dict]]:
    """For each client region, every target PoP from nearest to farthest with its emulated RTT."""
    routes: dict[str, list[dict]] = {}
    for pop in targets:
        catalogue.region(pop)  # a PoP must be a catalogue region, so that its RTTs are known
    for client in profile.regions:
        ordered = catalogue.by_distance(client, list(targets))
        routes[client] = [
            asdict(Route(pop, targets[pop], catalogue.rtt(client, pop).ms, catalogue.rtt(client, pop).source))
            for pop in ordered
        ]
    return routes


def build_plan(
    profile: Profile,
    targets: dict[str, str],
    out_dir: str | Path,
    *,
    catalogue: Catalogue | None = None,
    start_at: float | None = None,
    instances_per_region: int = 1,
    seed: int = 1,
) -> Plan:
    """A plan for `profile` against `targets` (PoP region -> base URL)."""
    cat = catalogue or load_catalogue()
    if not targets:
        raise ConfigError("--target", None, "no targets: give at least one REGION=URL")
    return Plan(
        profile=profile.to_dict(),
        targets=targets,
        routes=routes_for(profile, targets, cat),
        out_dir=str(out_dir),
        start_at=start_at,
        instances_per_region=instances_per_region,
        seed=seed,
    )


def plan_from_env(env: dict[str, str] | None = None) -> Plan:
    """The plan named by EDGE_PLAN, else one built from EDGE_PROFILE, EDGE_TARGETS, EDGE_OUT."""
    env = dict(os.environ if env is None else env)
    if env.get("EDGE_PLAN"):
        return Plan.read(env["EDGE_PLAN"])
    cat = load_catalogue(env.get("EDGE_REGIONS") or None)
    profile = load_profile(env.get("EDGE_PROFILE", "smoke"), {k: r.tz for k, r in cat.regions.items()})
    if env.get("EDGE_DURATION"):
        from harness.load.profiles import scaled

        profile = scaled(profile, float(env["EDGE_DURATION"]))
    targets = parse_targets(env.get("EDGE_TARGETS", ""), "EDGE_TARGETS")
    plan = build_plan(
        profile,
        targets,
        env.get("EDGE_OUT", "out"),
        catalogue=cat,
        instances_per_region=int(env.get("EDGE_INSTANCES_PER_REGION", "1")),
    )
    # Compose names one collector for the load generator with the standard OpenTelemetry variable.
    plan.client_otlp = env.get("EDGE_CLIENT_OTLP") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    return plan
