"""`edgeharness schema results`: print the JSON Schema that every results.json validates against."""

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
        choices=["results", "cost", "compare", "slo"],
        help="results: results.json; cost: cost.json; compare: compare.json (and `compare --json`); "
        "slo: an SLO file's structure",
    )
    p.set_defaults(func=_schema)


def _schema(args: argparse.Namespace) -> int:
    if args.what == "results":
        from harness.verdict.model import results_schema

        schema = results_schema()
    elif args.what == "cost":
        from harness.cost.estimate import cost_schema

        schema = cost_schema()
    elif args.what == "compare":
        from harness.compare.diff import compare_schema

        schema = compare_schema()
    else:
        from harness.verdict.slo import SLO_SCHEMA

        schema = SLO_SCHEMA
    print(json.dumps(schema, indent=2))
    return 0
