"""YAML files whose errors name the file and line: a loader that keeps each node's source mark."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Path_ = tuple[str | int, ...]


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


def load(path: str | Path) -> Document:
    """Parse `path`; a syntax error becomes a ConfigError with the line yaml reports."""

    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read: {exc.strerror or exc}") from exc
    return loads(text, file)


def loads(text: str, file: str = "<string>") -> Document:
    """Parse YAML text, recording node lines (yaml marks are 0-based; ours are 1-based)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, f"YAML syntax error: {exc.problem or exc}") from exc
    doc = Document(file=file, data=None)
    if node is None:
        doc.data = {}
        return doc
    doc.lines[()] = node.start_mark.line + 1
    doc.data = _construct(node, (), doc.lines, file)
    return doc


def _construct(node: Any, path: Path_, lines: dict[Path_, int], file: str) -> Any:
    import yaml

    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(" ").construct_object(key_node)
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1
            if key in out:
                raise ConfigError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            out[key] = _construct(value_node, child, lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            items.append(_construct(item, child, lines, file))
        return items
    return yaml.SafeLoader(" ").construct_object(node)
