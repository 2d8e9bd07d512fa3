"""Dataclasses to JSON and back, and their JSON Schema, from the type hints alone (one source of truth).

Supports what the results model uses: str, int, float, bool, None unions, list[X], dict[str, X], Any and
nested dataclasses. Field comments become nothing; a dataclass's docstring becomes its description.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from functools import cache
from typing import Any


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def to_json(obj: Any) -> Any:
    """A JSON-ready value: dataclasses become objects with their fields in order."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    return obj


def from_json(tp: Any, data: Any) -> Any:
    """Rebuild a value of type `tp` from what `to_json` made (unknown keys are an error)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_json(arg, data)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{data!r} matches none of {tp}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(data, list):
            raise TypeError(f"expected a list, got {type(data).__name__}")
        return [from_json(item, v) for v in data]
    if origin is dict:
        _, value = typing.get_args(tp)
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return {k: from_json(value, v) for k, v in data.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise TypeError(f"{tp.__name__}: expected an object, got {type(data).__name__}")
        hints = _hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{tp.__name__}: unknown keys {sorted(unknown)}")
        return tp(**{k: from_json(hints[k], v) for k, v in data.items()})
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise TypeError(f"expected a number, got {data!r}")
        return float(data)
    if tp in (int, str, bool):
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise TypeError(f"expected {tp.__name__}, got {data!r}")
        return data
    raise TypeError(f"unsupported type {tp!r}")


def json_schema(root: type, schema_id: str, title: str, version: str | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of dataclass `root`, each nested dataclass under $defs; with
    `version`, root's `schema` field may hold only that value (an output file names its own format)."""
    defs: dict[str, Any] = {}

    def of(tp: Any) -> dict[str, Any]:
        origin = typing.get_origin(tp)
        if tp is Any:
            return {}
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [of(a) for a in typing.get_args(tp)]}
        if origin is list:
            return {"type": "array", "items": of(typing.get_args(tp)[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": of(typing.get_args(tp)[1])}
        if dataclasses.is_dataclass(tp):
            name = tp.__name__
            if name not in defs:
                defs[name] = {}  # placeholder: recursion stops here
                hints = _hints(tp)
                fields = dataclasses.fields(tp)
                required = [
                    f.name
                    for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                ]
                defs[name] = {
                    "type": "object",
                    "description": inspect.cleandoc(tp.__doc__ or name).splitlines()[0],
                    "properties": {f.name: of(hints[f.name]) for f in fields},
                    # Every field is written, defaults included: a reader may rely on each.
                    "required": [f.name for f in fields] if fields else required,
                    "additionalProperties": False,
                }
            return {"$ref": f"#/$defs/{name}"}
        simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
        if tp in simple:
            return {"type": simple[tp]}
        raise TypeError(f"unsupported type {tp!r}")

    top = of(root)
    if version is not None:
        defs[root.__name__]["properties"]["schema"] = {"const": version}
    draft = "https://json-schema.org/draft/2020-12/schema"
    return {"$schema": draft, "$id": schema_id, "title": title, **top, "$defs": defs}
