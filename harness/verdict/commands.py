"""`edgeharness schema results|cost|compare|slo`: print the JSON Schema an output file or SLO file follows."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `schema` command."""
    p = subparsers.add_parser(
        "schema",
        help="print a JSON Schema of the harness's outputs (results.json, cost.json, compare.json) or SLO file",
        description="Print the JSON Schema (draft 2020-12) of an output file, for validating it elsewhere.",
    )
    p.add_argument(
        "what",
        choices=[*OUTPUTS, "slo"],
        help="results: results.json; cost: cost.json; compare: compare.json (and `compare --json`); "
        "slo: an SLO file's structure",
    )
    p.set_defaults(func=_schema)


OUTPUTS = ("results", "cost", "compare")  # the output files (NAME.json) that carry a schema


def schema_of(what: str) -> dict[str, Any]:
    """The JSON Schema of an output (one of OUTPUTS) or of an SLO file ("slo")."""
    if what == "results":
        from harness.verdict.model import results_schema

        return results_schema()
    if what == "cost":
        from harness.cost.estimate import cost_schema

        return cost_schema()
    if what == "compare":
        from harness.compare.diff import compare_schema

        return compare_schema()
    if what == "slo":
        from harness.verdict.slo import SLO_SCHEMA

        return SLO_SCHEMA
    raise ValueError(f"no schema for {what!r}")


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema_of(args.what), indent=2))
    return 0
