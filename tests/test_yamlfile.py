"""YAML documents: schema errors name the file, the line and the key, first in document order."""

import pytest

from harness.load.yamlfile import ConfigError, loads

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "a": {"type": "integer"},
        "b": {"type": "object", "additionalProperties": False, "properties": {"c": {"type": "number"}}},
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb:\n  c: x\n  d: 2\n", "f.yaml:3: b.c: 'x' is not of type 'number'"),
        ("a: 1\nb:\n  c: 3\n  d: 2\n", "f.yaml:4: unknown key `d` (known: c)"),
        ("a: z\n", "f.yaml:1: a: 'z' is not of type 'integer'"),
    ],
)
def test_schema_errors_point_at_the_offending_line(text, expected):
    with pytest.raises(ConfigError) as info:
        loads(text, "f.yaml").validate(SCHEMA)
    assert str(info.value) == expected


def test_a_valid_document_passes_and_a_part_can_be_checked_alone():
    doc = loads("outer:\n  a: 1\n  b: {c: 2.5}\n", "f.yaml")
    doc.validate(SCHEMA, "outer")
    with pytest.raises(ConfigError, match=r"f.yaml:1: unknown key `outer`"):
        doc.validate(SCHEMA)
