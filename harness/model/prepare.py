"""Prepared models: an ONNX model saved in ONNX Runtime's optimized form, so a session starts with less work.

ONNX Runtime spends most of a session's creation on graph optimizations (fusions, constant folding, layout
changes). `prepare` runs them once, ahead of time, and saves the result in ORT format (or as an optimized ONNX
file), beside a small JSON manifest naming the source, its sha256 and the ONNX Runtime version. A session on the
prepared file skips the work. With every optimization on, the result may hold layout choices made for this
CPU and this ONNX Runtime version, so a prepared model is a build artifact of the machine that serves it, never
something to ship; `is_current` says whether one still matches its source and the installed ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
from dataclasses import asdict, dataclass

FORMATS = ("ort", "onnx")
SUFFIX = {"ort": ".ort", "onnx": ".prepared.onnx"}


class PrepareError(Exception):
    """The model could not be prepared; the message names the file and why."""


@dataclass(frozen=True)
class PreparedModel:
    """A prepared model file and what it was prepared from."""

    path: pathlib.Path
    source: str
    source_sha256: str
    format: str
    onnxruntime_version: str
    machine: str

    def manifest(self) -> dict[str, str]:
        data = asdict(self)
        data["path"] = self.path.name
        return data


def default_output(source: pathlib.Path, fmt: str = "ort") -> pathlib.Path:
    """`models/mobilenetv2-int8.onnx` -> `models/mobilenetv2-int8.ort` (or `.prepared.onnx`)."""
    name = source.name[: -len(".onnx")] if source.name.endswith(".onnx") else source.name
    return source.with_name(name + SUFFIX[fmt])


def manifest_path(prepared: pathlib.Path) -> pathlib.Path:
    return prepared.with_name(prepared.name + ".json")


def prepare(source: pathlib.Path, out: pathlib.Path | None = None, fmt: str = "ort") -> PreparedModel:
    """Optimize `source` with every graph optimization ONNX Runtime has and save it as `fmt` at `out`."""
    import onnxruntime as ort

    if fmt not in FORMATS:
        raise PrepareError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    source = pathlib.Path(source)
    out = pathlib.Path(out) if out is not None else default_output(source, fmt)
    if out.resolve() == source.resolve():
        raise PrepareError(f"{out}: the prepared model would overwrite its source")
    try:
        digest = _sha256(source)
    except OSError as exc:
        raise PrepareError(f"cannot read {source}: {exc.strerror or exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    # ORT picks the saved format from this entry (ORT) or the file name; the temporary name must not end in
    # `.ort` for an ONNX output, so it keeps the final suffix.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{out.suffix}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp)
    # The layout warning says what the module docstring says; on every preparation it would be noise.
    options.log_severity_level = 3
    if fmt == "ort":
        options.add_session_config_entry("session.save_model_format", "ORT")
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        os.replace(tmp, out)
    except Exception as exc:  # ORT raises its own pybind types for files it cannot load
        tmp.unlink(missing_ok=True)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrepareError(f"cannot prepare {source}: {detail}") from exc
    prepared = PreparedModel(
        path=out,
        source=str(source),
        source_sha256=digest,
        format=fmt,
        onnxruntime_version=ort.__version__,
        machine=platform.machine(),
    )
    _write_atomically(manifest_path(out), json.dumps(prepared.manifest(), indent=2) + "\n")
    return prepared


def is_current(source: pathlib.Path, prepared: pathlib.Path) -> bool:
    """The prepared file exists and its manifest names this source's content and the installed ONNX Runtime."""
    import onnxruntime as ort

    try:
        manifest = json.loads(manifest_path(prepared).read_text(encoding="utf-8"))
        return (
            prepared.is_file()
            and manifest.get("source_sha256") == _sha256(source)
            and manifest.get("onnxruntime_version") == ort.__version__
            and manifest.get("machine") == platform.machine()
        )
    except (OSError, ValueError):
        return False


def ensure_prepared(source: pathlib.Path, fmt: str = "ort") -> pathlib.Path:
    """The prepared file for `source` beside it, prepared now when missing or stale."""
    out = default_output(pathlib.Path(source), fmt)
    if not is_current(pathlib.Path(source), out):
        prepare(pathlib.Path(source), out, fmt)
    return out


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
