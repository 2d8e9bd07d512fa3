"""The model store: fetch an ONNX model by path or URL, verify its sha256, cache it, and open it.

URL downloads are cached as `<cache_dir>/<sha256>.onnx`, so a model pinned by hash is fetched once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnxruntime

DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
# ONNX element types as reported by onnxruntime, and the numpy dtype name a client must send.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


class ModelError(Exception):
    """A model could not be fetched, verified or opened; the message names the model and the problem."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(f"model {model!r}: {message}")
        self.model = model
        self.message = message

    def __reduce__(self) -> tuple[type[ModelError], tuple[str, str]]:
        # Exceptions pickle as cls(*args); ours takes (model, message), not the formatted text.
        return type(self), (self.model, self.message)


@dataclass(frozen=True)
class LocalModel:
    """A verified model file on local disk."""

    source: str
    path: pathlib.Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    """How to feed a model and read its output, taken from the model itself."""

    source: str
    sha256: str
    name: str
    version: str
    input_name: str
    layout: str  # "NCHW" or "NHWC"
    height: int
    width: int
    channels: int
    input_dtype: str  # numpy dtype name, e.g. "float32"
    num_classes: int
    labels: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme.lower() in ("http", "https")


class ModelStore:
    """Fetches models into a local cache keyed by content hash."""

    def __init__(self, cache_dir: pathlib.Path, timeout_s: float = 30.0) -> None:
        self.cache_dir = pathlib.Path(cache_dir)
        self.timeout_s = timeout_s

    def fetch(self, source: str, expected_sha256: str | None = None) -> LocalModel:
        """A local file for `source` (a path, file:// URL or http(s) URL), verified against `expected_sha256`."""
        expected = _normalize_sha256(source, expected_sha256)
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            return self._fetch_url(source, expected)
        if scheme == "file":
            return self._fetch_path(
                source, pathlib.Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path)), expected
            )
        if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
            raise ModelError(source, f"unsupported URL scheme {scheme!r}; use a file path or an http(s) URL")
        return self._fetch_path(source, pathlib.Path(source).expanduser(), expected)

    def _fetch_path(self, source: str, path: pathlib.Path, expected: str | None) -> LocalModel:
        try:
            if not path.is_file():
                problem = "is a directory, not a model file" if path.is_dir() else "file not found"
                raise ModelError(source, f"{problem}: {path}")
            digest, size = _hash_file(path)
        except OSError as exc:
            raise ModelError(source, f"cannot read {path}: {exc.strerror or exc}") from exc
        if expected is not None and digest != expected:
            raise ModelError(source, f"sha256 mismatch: expected {expected}, got {digest}")
        return LocalModel(source=source, path=path.resolve(), sha256=digest, size_bytes=size)

    def _fetch_url(self, source: str, expected: str | None) -> LocalModel:
        if expected is not None:
            cached = self.cache_dir / f"{expected}.onnx"
            # Re-hash the cached file (milliseconds): a truncated or altered cache entry is downloaded again.
            with contextlib.suppress(OSError):
                digest, size = _hash_file(cached)
                if digest == expected:
                    return LocalModel(source=source, path=cached, sha256=digest, size_bytes=size)
        return self._download(source, expected)

    def _download(self, source: str, expected: str | None) -> LocalModel:
        import httpx

        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(source, f"cannot create cache directory {self.cache_dir}: {exc.strerror}") from exc
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=".download-", suffix=".part")
        tmp = pathlib.Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                try:
                    with (
                        httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client,
                        client.stream("GET", source) as response,
                    ):
                        if response.status_code != 200:
                            reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                            raise ModelError(source, f"download failed: HTTP {response.status_code}{reason}")
                        # httpx's timeout bounds each read; a deadline also bounds a server that trickles.
                        deadline = time.monotonic() + self.timeout_s
                        for chunk in response.iter_bytes(_CHUNK):
                            if time.monotonic() > deadline:
                                raise httpx.ReadTimeout("download exceeded its deadline")
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                except httpx.TimeoutException as exc:
                    raise ModelError(source, f"download timed out after {self.timeout_s:g} s") from exc
                except httpx.HTTPError as exc:
                    raise ModelError(source, f"download failed: {_describe_http_error(exc)}") from exc
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise ModelError(source, f"sha256 mismatch: expected {expected}, got {actual}")
            final = self.cache_dir / f"{actual}.onnx"
            os.replace(tmp, final)  # atomic: concurrent fetchers never see a partial file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return LocalModel(source=source, path=final, sha256=actual, size_bytes=size)


def create_session(model: LocalModel, intra_op_threads: int, inter_op_threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session for `model`; a file ORT cannot load becomes a ModelError naming it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op workers spin by default. On a shared CPU (an edge host, a load generator beside the
    # handler) spinning steals the cores the other threads need: measured 2x slower on 2 busy cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...) for bad files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(model.source, f"not a loadable ONNX model ({model.path}): {detail}") from exc


def describe(session: onnxruntime.InferenceSession, model: LocalModel) -> ModelInfo:
    """What `model` expects and returns, from the session's signature and the model's metadata."""
    meta: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    images = [i for i in session.get_inputs() if len(i.shape) == 4]
    if len(images) != 1:
        found = ", ".join(f"{i.name}{list(i.shape)}" for i in session.get_inputs()) or "none"
        raise ModelError(model.source, f"expected one 4-D image input, found: {found}")
    image = images[0]
    shape = list(image.shape)
    layout = meta.get("edgeharness.layout") or _detect_layout(model.source, shape)
    if layout not in ("NCHW", "NHWC"):
        raise ModelError(model.source, f"unsupported layout {layout!r}; expected NCHW or NHWC")
    channel_dim, height_dim, width_dim = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    input_dtype = _DTYPES.get(image.type)
    if input_dtype is None:
        raise ModelError(model.source, f"unsupported input type {image.type} for input {image.name!r}")

    outputs = session.get_outputs()
    if not outputs:
        raise ModelError(model.source, "model has no outputs")
    output_classes = _static_dim(outputs[0].shape[-1]) if outputs[0].shape else None
    labels = _json_list(model.source, meta, "edgeharness.labels")
    if labels is not None:
        labels = [str(label) for label in labels]
        if output_classes is not None and len(labels) != output_classes:
            raise ModelError(
                model.source, f"metadata has {len(labels)} labels but output {outputs[0].name!r} has {output_classes}"
            )
    num_classes = output_classes if output_classes is not None else len(labels) if labels is not None else None
    if num_classes is None:
        raise ModelError(model.source, f"cannot tell the number of classes: output shape {outputs[0].shape}")

    return ModelInfo(
        source=model.source,
        sha256=model.sha256,
        name=meta.get("edgeharness.name") or _stem(model.source),
        version=meta.get("edgeharness.version") or model.sha256[:12],
        input_name=image.name,
        layout=layout,
        height=_static_dim(shape[height_dim]) or DEFAULT_SIZE,
        width=_static_dim(shape[width_dim]) or DEFAULT_SIZE,
        channels=_static_dim(shape[channel_dim]) or 3,
        input_dtype=input_dtype,
        num_classes=num_classes,
        labels=tuple(labels) if labels is not None else tuple(f"class-{i}" for i in range(num_classes)),
        mean=_triple(model.source, meta, "edgeharness.mean", DEFAULT_MEAN),
        std=_triple(model.source, meta, "edgeharness.std", DEFAULT_STD),
    )


def _normalize_sha256(source: str, expected: str | None) -> str | None:
    if expected is None:
        return None
    value = expected.strip().lower()
    if not _SHA256.fullmatch(value):
        raise ModelError(source, f"expected sha256 must be 64 hex digits, got {expected!r}")
    return value


def _hash_file(path: pathlib.Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _describe_http_error(exc: Exception) -> str:
    """The root cause of an httpx error (e.g. "Connection refused"), not the wrapper's repr."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = getattr(cause, "strerror", None) or str(cause) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _detect_layout(source: str, shape: list[Any]) -> str:
    # Channels first wins when both ends could be channels (e.g. 3x224x3 is not an image anyway).
    if _static_dim(shape[1]) in (1, 3):
        return "NCHW"
    if _static_dim(shape[3]) in (1, 3):
        return "NHWC"
    raise ModelError(source, f"cannot tell NCHW from NHWC: input shape {shape} has no 1- or 3-channel axis")


def _static_dim(dim: Any) -> int | None:
    """A fixed dimension's size; None for symbolic or unknown dimensions."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _stem(source: str) -> str:
    path = urllib.parse.urlsplit(source).path if is_url(source) else source
    return pathlib.PurePosixPath(path.replace("\\", "/")).stem or source


def _json_list(source: str, meta: dict[str, str], key: str) -> list[Any] | None:
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except ValueError as exc:
        raise ModelError(source, f"metadata {key} is not valid JSON: {exc}") from exc
    if not isinstance(value, list):
        raise ModelError(source, f"metadata {key} must be a JSON list, got {type(value).__name__}")
    return value


def _triple(
    source: str, meta: dict[str, str], key: str, default: tuple[float, float, float]
) -> tuple[float, float, float]:
    value = _json_list(source, meta, key)
    if value is None:
        return default
    try:
        a, b, c = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ModelError(source, f"metadata {key} must be three numbers, got {meta[key]!r}") from exc
    return a, b, c
