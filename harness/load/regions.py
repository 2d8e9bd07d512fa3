"""The region catalogue: edge regions, their coordinates and time zones, and RTTs between them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.load.yamlfile import ConfigError, Document, load, schema

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Region:
    """One edge region: where it is and what local time it keeps."""

    name: str
    city: str
    lat: float
    lon: float
    tz: str
    country: str = ""
    continent: str = ""


@dataclass(frozen=True)
class Rtt:
    """A round-trip time between two regions and where the figure comes from."""

    ms: float
    source: str  # a citation key such as "wonderproxy-2011", "derived" or "local"


@dataclass
class Catalogue:
    """All regions plus the RTT between any two of them (measured where published, else derived)."""

    regions: dict[str, Region]
    measured: dict[frozenset[str], Rtt] = field(default_factory=dict)
    fibre_km_per_ms: float = 200.0
    route_factor: float = 1.8
    overhead_ms: float = 2.0
    local_rtt_ms: float = 5.0
    file: str = ""

    def region(self, name: str) -> Region:
        """The region called `name`; KeyError names the known ones."""
        try:
            return self.regions[name]
        except KeyError:
            known = ", ".join(sorted(self.regions))
            raise KeyError(f"unknown region {name!r} (known: {known})") from None

    def rtt(self, a: str, b: str) -> Rtt:
        """RTT between regions a and b: local, measured, or derived from great-circle distance."""
        if a == b:
            return Rtt(self.local_rtt_ms, "local")
        found = self.measured.get(frozenset((a, b)))
        if found:
            return found
        km = great_circle_km(self.region(a), self.region(b))
        ms = 2 * km / self.fibre_km_per_ms * self.route_factor + self.overhead_ms
        return Rtt(round(ms, 2), "derived")

    def by_distance(self, client: str, pops: list[str]) -> list[str]:
        """`pops` ordered from nearest to farthest for a client in region `client`, by RTT."""
        return sorted(pops, key=lambda pop: (self.rtt(client, pop).ms, pop))


def great_circle_km(a: Region, b: Region) -> float:
    """Haversine distance between two regions in kilometres."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def default_path() -> Path:
    """The catalogue shipped as package data."""
    return Path(__file__).resolve().parent.parent / "data" / "regions.yaml"


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read and check a catalogue file; errors name the file and line."""
    doc = load(path or default_path())
    return parse_catalogue(doc)


def parse_catalogue(doc: Document) -> Catalogue:
    """Build a Catalogue from a parsed document: its structure against regions.schema.json, then the
    time zones and the regions each measured RTT names."""
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("the catalogue must be a mapping with a `regions` key")
    doc.validate(schema("regions.schema.json"))
    regions: dict[str, Region] = {}
    for name, fields in data["regions"].items():
        _check_tz(doc, fields["tz"], ("regions", name, "tz"))
        regions[name] = Region(
            name=name,
            city=fields["city"],
            lat=float(fields["lat"]),
            lon=float(fields["lon"]),
            tz=fields["tz"],
            country=fields.get("country", ""),
            continent=fields.get("continent", ""),
        )
    cat = Catalogue(regions=regions, file=doc.file)
    for key, value in data.get("derivation", {}).items():
        setattr(cat, key, float(value))
    if "local_rtt_ms" in data:
        cat.local_rtt_ms = float(data["local_rtt_ms"])
    for i, entry in enumerate(data.get("rtt_ms", [])):
        for end in ("a", "b"):
            if entry[end] not in regions:
                raise doc.error(f"rtt_ms: unknown region {entry[end]!r}", "rtt_ms", i, end)
        if entry["a"] == entry["b"]:
            raise doc.error("rtt_ms: a and b must differ (a region's own RTT is local_rtt_ms)", "rtt_ms", i)
        cat.measured[frozenset((entry["a"], entry["b"]))] = Rtt(float(entry["ms"]), entry["source"].strip())
    return cat


def _check_tz(doc: Document, tz: str, path: tuple[str, ...]) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise doc.error(f"unknown IANA time zone {tz!r}", *path) from exc


__all__ = ["Catalogue", "ConfigError", "Region", "Rtt", "great_circle_km", "load_catalogue"]
