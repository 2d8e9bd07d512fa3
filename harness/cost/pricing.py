"""Pricing files: named plans with a per-request fee, a per-CPU-ms or per-GB-second price, a monthly fee
and a monthly free tier, each plan with the source and date of its prices.

The file's structure is checked by a JSON Schema (errors name file and line), like every config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.load.yamlfile import load

_PRICE = {"type": "number", "minimum": 0}
PRICING_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "currency": {"type": "string", "minLength": 1},
        "plans": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "source": {"type": "string", "minLength": 1},
                    "date": {"type": "string", "minLength": 1},
                    "example": {"type": "boolean"},
                    "monthly_fee": _PRICE,
                    "per_million_requests": _PRICE,
                    "per_million_cpu_ms": _PRICE,
                    "per_gb_second": _PRICE,
                    "memory_gb": {"type": "number", "exclusiveMinimum": 0},
                    "billing_granularity_ms": _PRICE,
                    "free_per_month": {
                        "type": "object",
                        "properties": {"requests": _PRICE, "cpu_ms": _PRICE, "gb_seconds": _PRICE},
                        "additionalProperties": False,
                    },
                },
                "required": ["source", "date"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["plans"],
    "additionalProperties": False,
}
DAYS_PER_MONTH = 30  # free tiers and fees are monthly; a day is a thirtieth of them


@dataclass
class FreeTier:
    """What a month includes before usage is billed."""

    requests: float = 0.0
    cpu_ms: float = 0.0
    gb_seconds: float = 0.0


@dataclass
class PricePlan:
    """One pricing model. Server time is billed either per CPU-ms or per GB-second (memory x duration)."""

    name: str
    source: str
    date: str
    description: str = ""
    example: bool = False  # made-up round numbers, not a provider's price
    monthly_fee: float = 0.0
    per_million_requests: float = 0.0
    per_million_cpu_ms: float = 0.0
    per_gb_second: float = 0.0
    memory_gb: float = 0.128
    billing_granularity_ms: float = 0.0  # each request's time rounded up to a multiple (0: exact)
    free: FreeTier = field(default_factory=FreeTier)

    @property
    def bills_time(self) -> bool:
        """Whether the plan charges for server time (so a run without Server-Timing cannot be priced)."""
        return self.per_million_cpu_ms > 0 or self.per_gb_second > 0 or self.free.cpu_ms > 0


@dataclass
class Pricing:
    """A parsed pricing file."""

    file: str
    currency: str
    plans: dict[str, PricePlan]


def load_pricing(path: str | Path) -> Pricing:
    """Load and check a pricing file; errors name the file and line."""
    doc = load(path)
    if not isinstance(doc.data, dict):
        raise doc.error("a pricing file must be a mapping with `plans`")
    doc.validate(PRICING_SCHEMA)
    plans = {}
    for name, raw in doc.data["plans"].items():
        values = {k: v for k, v in raw.items() if k != "free_per_month"}
        plans[str(name)] = PricePlan(name=str(name), **values, free=FreeTier(**(raw.get("free_per_month") or {})))
        if raw.get("per_million_cpu_ms") and raw.get("per_gb_second"):
            raise doc.error(f"plan {name!r}: bill server time per CPU-ms or per GB-second, not both", "plans", name)
    return Pricing(str(path), str(doc.data.get("currency", "USD")), plans)


def pricing_dir() -> Path:
    """Where the shipped pricing files live."""
    return Path(__file__).resolve().parents[2] / "loadtests" / "pricing"


def resolve(path: str | Path) -> Path:
    """A file, or the name of a shipped one (`edge-platforms`)."""
    p = Path(path)
    if not p.exists() and (pricing_dir() / f"{path}.yaml").exists():
        return pricing_dir() / f"{path}.yaml"
    return p
