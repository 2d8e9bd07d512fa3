"""YAML files whose errors name the file and line: one SafeLoader that keeps each node's source mark.

Config files hold plain JSON-like data (text keys; text, numbers, booleans, null, lists, mappings), so a
JSON Schema can check them and results.json can record them. Everything else YAML allows is refused
with a `file:line` ConfigError: merge keys, non-text keys, non-finite numbers, tags such as !!binary or
!!set, and documents too large, too deep or whose aliases fan out (a "billion laughs") or refer to
themselves. Date-like scalars stay text (no datetime objects, no errors for impossible dates).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Path_ = tuple[str | int, ...]

MAX_BYTES = 128 * 1024  # the shipped files are a few KiB; PyYAML reads 128 KiB of any shape in well under a second
MAX_NODES = 5_000  # aliases written out; the shipped files hold under 300, PyYAML composes ~15k a second
MAX_DEPTH = 32  # nesting of lists and mappings; the shipped files go 4 deep


class ConfigError(ValueError):
    """A bad profile, SLO file, catalogue or target; str() reads `file:line: problem`."""

    def __init__(self, file: str | Path, line: int | None, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {problem}")


@dataclass
class Document:
    """A parsed YAML document plus the 1-based line of every mapping key and sequence item."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, *path: str | int) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        p: Path_ = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def error(self, problem: str, *path: str | int) -> ConfigError:
        """A ConfigError pointing at `path` in this file."""
        return ConfigError(self.file, self.line(*path), problem)

    def validate(self, schema: dict[str, Any], *path: str | int) -> None:
        """Check the document (or the part at `path`) against a JSON Schema; the first error, in
        document order, becomes a ConfigError at its line, naming the offending key."""
        import jsonschema

        data = self.data
        for key in path:
            data = data[key]
        found = [self._schema_problem(err, path) for err in jsonschema.Draft202012Validator(schema).iter_errors(data)]
        if found:
            where, message = min(found, key=lambda f: (self.line(*f[0]) or 0, -len(f[0])))
            raise self.error(message, *where)

    @staticmethod
    def _schema_problem(err: Any, path: Path_) -> tuple[Path_, str]:
        where: Path_ = (*path, *err.absolute_path)
        known = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            extra = sorted(str(k) for k in err.instance if k not in known)
            if extra:
                return (*where, extra[0]), f"unknown key `{extra[0]}` (known: {', '.join(sorted(known))})"
        name = ".".join(str(p) for p in where)
        return where, f"{name}: {err.message}" if name else err.message


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in harness/data (e.g. `profile.schema.json`)."""
    import json

    return json.loads((Path(__file__).resolve().parent.parent / "data" / name).read_text(encoding="utf-8"))


def load(path: str | Path) -> Document:
    """Parse `path`; a syntax error becomes a ConfigError with the line yaml reports."""

    file = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        _too_large(file, raw[:MAX_BYTES].count(b"\n") + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text") from exc
    return loads(text, file)


def loads(text: str, file: str = "<string>") -> Document:
    """Parse YAML text, recording node lines (yaml marks are 0-based; ours are 1-based)."""
    import yaml

    if len(text.encode("utf-8")) > MAX_BYTES:
        _too_large(file, text.encode("utf-8")[:MAX_BYTES].count(b"\n") + 1)
    loader = _loader_class()(text, file)
    try:
        node = loader.get_single_node()
        doc = Document(file=file, data={})
        if node is not None:
            doc.lines[()] = node.start_mark.line + 1
            doc.data = loader.construct_object(node, deep=True)
            doc.lines.update(loader.lines)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, f"YAML syntax error: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, f"YAML syntax error: {exc}") from exc
    finally:
        loader.dispose()


def _too_large(file: str, line: int) -> None:
    raise ConfigError(file, line, f"the file is larger than {MAX_BYTES // 1024} KiB (it passes that size here)")


@functools.cache
def _loader_class() -> type:
    """Built on first use, so importing this module does not import yaml."""
    import yaml
    from yaml.events import AliasEvent
    from yaml.nodes import ScalarNode

    core = "tag:yaml.org,2002:"

    class ConfigLoader(yaml.SafeLoader):
        """SafeLoader that composes within bounds, records each key's and item's line while it constructs
        (by the path from the root), and builds only JSON-like values."""

        yaml_constructors: ClassVar = dict(yaml.SafeLoader.yaml_constructors)
        # Date-like plain scalars resolve as text: config files never need datetimes.
        yaml_implicit_resolvers: ClassVar = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != core + "timestamp"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def __init__(self, text: str, file: str) -> None:
            super().__init__(text)
            self.file = file
            self.lines: dict[Path_, int] = {}
            self.path: list[str | int] = []
            self.sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases written out
            self.expanded = 0
            self.depth = 0

        def fail(self, node_or_mark: Any, problem: str) -> ConfigError:
            mark = getattr(node_or_mark, "start_mark", node_or_mark)
            return ConfigError(self.file, mark.line + 1 if mark else None, problem)

        # Composition, bounded before anything is built: an alias counts as the values it stands for, so
        # `expanded` is the size of the document written out; each node's size is known once composed.
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if self.check_event(AliasEvent):
                node = super().compose_node(parent, index)
                if id(node) not in self.sizes:
                    raise self.fail(event.start_mark, "an alias inside the value it names (a recursive alias)")
                self.count(self.sizes[id(node)], event.start_mark, "aliases expand the document to")
                return node
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            self.count(1, event.start_mark, "the document holds")
            before = self.expanded
            node = super().compose_node(parent, index)
            self.sizes[id(node)] = self.expanded - before + 1
            self.depth -= 1
            return node

        def count(self, n: int, mark: Any, what: str) -> None:
            self.expanded += n
            if self.expanded > MAX_NODES:
                raise self.fail(mark, f"{what} more than {MAX_NODES} values; write it out more simply")

        # Construction: deep and in document order, so the path from the root is known at each node.
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=True)
            except ConfigError:
                raise
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise self.fail(node, f"cannot read this value: {exc}") from exc

        def construct_map(self, node: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == core + "merge":
                    raise self.fail(key_node, "merge keys (<<) are not supported here; write the keys out")
                key = self.construct_object(key_node)
                if not isinstance(key, str):
                    kind = "null" if key is None else type(key).__name__
                    if isinstance(key_node, ScalarNode):
                        problem = f"keys must be text; `{key_node.value}` reads as {kind} here (quote it)"
                    else:
                        problem = f"keys must be text, not a {kind}"
                    raise self.fail(key_node, problem)
                if key in out:
                    raise self.fail(key_node, f"duplicate key {key!r}")
                self.path.append(key)
                self.lines[tuple(self.path)] = key_node.start_mark.line + 1
                out[key] = self.construct_object(value_node)
                self.path.pop()
            return out

        def construct_seq(self, node: Any) -> list[Any]:
            items = []
            for i, item in enumerate(node.value):
                self.path.append(i)
                self.lines[tuple(self.path)] = item.start_mark.line + 1
                items.append(self.construct_object(item))
                self.path.pop()
            return items

        def construct_finite_float(self, node: Any) -> float:
            value = self.construct_yaml_float(node)
            if not math.isfinite(value):
                raise self.fail(node, f"{node.value!r} is not a finite number")
            return value

        def refuse_tag(self, node: Any) -> None:
            raise self.fail(node, f"the tag {node.tag.replace(core, '!!')} is not supported in config files")

    ConfigLoader.add_constructor(core + "map", ConfigLoader.construct_map)
    ConfigLoader.add_constructor(core + "seq", ConfigLoader.construct_seq)
    ConfigLoader.add_constructor(core + "float", ConfigLoader.construct_finite_float)
    for tag in ("timestamp", "binary", "set", "omap", "pairs"):
        ConfigLoader.add_constructor(core + tag, ConfigLoader.refuse_tag)
    ConfigLoader.add_constructor(None, ConfigLoader.refuse_tag)
    return ConfigLoader
