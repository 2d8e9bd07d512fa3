"""The harness's output files checked against the schemas `edgeharness schema` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def output_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of an output file of the harness, by its file name."""
    if name == "cost.json":
        from harness.cost.estimate import cost_schema

        return cost_schema()
    if name == "compare.json":
        from harness.compare.diff import compare_schema

        return compare_schema()
    from harness.verdict.model import results_schema

    return results_schema()


OUTPUT_SCHEMAS = ("results.json", "cost.json", "compare.json")


def assert_follows_schema(path: Path, name: str | None = None) -> None:
    """`path` (an output written as `name`, default its own name) validates against its schema."""
    import json

    import jsonschema

    validator = jsonschema.Draft202012Validator(output_schema(name or path.name))
    errors = sorted(validator.iter_errors(json.loads(path.read_text(encoding="utf-8"))), key=str)
    assert not errors, f"{path} does not follow its schema: {errors[0].message} at {list(errors[0].path)}"
