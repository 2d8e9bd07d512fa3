"""Model manifests (`<name>.manifest.json`): what a built model file is, its hash, and how to feed it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: pathlib.Path) -> str:
    """Hex sha256 of a file, read in chunks (a 4 MB model takes a few milliseconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelManifest:
    """Describes one model file beside it; `sha256` lets a consumer verify the file it fetched."""

    name: str
    version: str
    precision: str
    file: str
    sha256: str
    size_bytes: int
    input_name: str
    input_shape: tuple[int | str, ...]
    input_layout: str
    input_dtype: str
    # The normalisation (x / 255 - mean) / std. A float input expects it applied; for a uint8 input (the
    # reference models) it is what the graph already does, recorded for information only.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_name: str
    num_classes: int
    labels: tuple[str, ...]
    parameters: int
    # Hash of the builder's sources and library versions; a rebuild with the same one may be skipped.
    build_fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        data: dict[str, Any] = json.loads(text)
        for key in ("input_shape", "mean", "std", "labels"):
            data[key] = tuple(data[key])
        return cls(**data)


def manifest_path(out_dir: pathlib.Path, name: str) -> pathlib.Path:
    return out_dir / f"{name}.manifest.json"


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_manifest(path: pathlib.Path) -> ModelManifest | None:
    """The manifest at `path`, or None if it is missing or unreadable (then the model is rebuilt)."""
    try:
        return ModelManifest.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
