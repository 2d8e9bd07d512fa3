"""The harness's output files checked against the schemas `edgeharness schema` prints."""

from __future__ import annotations

from pathlib import Path

from harness.verdict.commands import OUTPUTS, schema_of

OUTPUT_SCHEMAS = tuple(f"{what}.json" for what in OUTPUTS)


def assert_follows_schema(path: Path, name: str | None = None) -> None:
    """`path` (an output written as `name`, default its own name) validates against its schema."""
    import json

    import jsonschema

    validator = jsonschema.Draft202012Validator(schema_of((name or path.name).removesuffix(".json")))
    errors = sorted(validator.iter_errors(json.loads(path.read_text(encoding="utf-8"))), key=str)
    assert not errors, f"{path} does not follow its schema: {errors[0].message} at {list(errors[0].path)}"
