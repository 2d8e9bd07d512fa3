"""YAML documents: schema errors name the file, the line and the key, first in document order."""

import itertools

import pytest

from harness.load.yamlfile import MAX_BYTES, ConfigError, load, loads

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


# Hostile documents: each is refused with file:line quickly (the timeout bounds "quickly"; the old loader
# expanded a billion laughs in full, recursed on deep nesting and raised bare ValueErrors on bad dates).
LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in itertools.pairwise("abcdefghij")
)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (LAUGHS, 4, "aliases expand the document to more than 5000 values"),
        ("a: 1\nb: &x [1, *x]\n", 2, "recursive alias"),
        ("a: &x\n  b: *x\n", 2, "recursive alias"),
        ("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", 3, "merge keys (<<) are not supported"),
        ("rates:\n  1: 2\n", 2, "keys must be text; `1` reads as int here (quote it)"),
        ("regions: [a]\nyes: 1\n", 2, "`yes` reads as bool"),
        ("? null\n: 1\n", 1, "`null` reads as null"),
        ("? [a, b]\n: 1\n", 1, "keys must be text, not a list"),
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
        ("x: .nan\n", 1, "'.nan' is not a finite number"),
        ("x:\n  - 1\n  - -.inf\n", 3, "'-.inf' is not a finite number"),
        ("x: !!binary aGVsbG8=\n", 1, "the tag !!binary is not supported"),
        ("x: !!set {a, b}\n", 1, "the tag !!set is not supported"),
        ("x: !!timestamp 2024-01-01\n", 1, "the tag !!timestamp is not supported"),
        ("x: !python/object:os.system ls\n", 1, "the tag !python/object:os.system is not supported"),
        ("x: " + "[" * 100 + "]" * 100 + "\n", 1, "nested more than 32 levels deep"),
        ("a: 1\nx: [" + ", ".join(["0"] * 6000) + "]\n", 2, "the document holds more than 5000 values"),
        ("a: 1\nx: " + "9" * 5000 + "\n", 2, "cannot read this value"),
        ("a: *nope\n", 1, "YAML syntax error: found undefined alias"),
        ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
    ],
)
def test_hostile_yaml_is_a_config_error_at_its_line(text, line, message):
    with pytest.raises(ConfigError) as info:
        loads(text, "f.yaml")
    assert info.value.line == line
    assert message in info.value.problem


def test_dates_stay_text_so_an_impossible_date_is_a_schema_error_not_a_crash():
    doc = loads("description: 2024-01-02\nduration_s: 2024-13-45\n", "f.yaml")
    assert doc.data == {"description": "2024-01-02", "duration_s": "2024-13-45"}
    with pytest.raises(ConfigError, match=r"^f.yaml:2: duration_s: '2024-13-45' is not of type 'number'$"):
        doc.validate({"type": "object", "properties": {"duration_s": {"type": "number"}}})


def test_a_modest_alias_is_fine_and_lines_follow_the_text():
    doc = loads("sizes: &s\n  - [224, 224]\n  - [640, 480]\nmore:\n  again: *s\n", "f.yaml")
    assert doc.data["more"]["again"] == [[224, 224], [640, 480]]
    assert doc.line("sizes", 1) == 3
    assert doc.line("more", "again") == 5
    assert doc.line("more", "again", 0) == 5  # inside an alias: the alias's own line


@pytest.mark.timeout(10)
def test_a_huge_file_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.yaml"
    line = "# filler line of a config file that has grown far too large\n"
    big.write_text(line * 200_000)
    with pytest.raises(ConfigError) as info:
        load(big)
    assert info.value.file == str(big)
    assert info.value.line == MAX_BYTES // len(line) + 1
    assert "larger than 128 KiB" in info.value.problem


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: not UTF-8 text"):
        load(bad)


@pytest.mark.timeout(10)
def test_an_slo_file_with_a_billion_laughs_names_its_line(tmp_path):
    from harness.verdict.slo import load_slo

    bad = tmp_path / "slo.yaml"
    bad.write_text("defaults:\n  client_latency_ms: {p50: 10}\n" + LAUGHS)
    with pytest.raises(ConfigError) as info:
        load_slo(bad)
    assert (info.value.file, info.value.line) == (str(bad), 6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--profile", "--slo", "--regions-file"])
def test_the_cli_names_hostile_config_by_file_and_line_and_exits_2(tmp_path, flag):
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "bad.yaml"
    bad.write_text("# a hostile file\n" + LAUGHS)
    r = subprocess.run(
        [sys.executable, "-m", "harness", "run", flag, str(bad), "--out", str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert f"{bad}:5: aliases expand the document to more than" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
