"""The model store: fetch an ONNX model by path or URL, verify its sha256, cache it, and open it.

URL downloads are cached as `<cache_dir>/<sha256>.onnx`, so a model pinned by hash is fetched once. A
download is bounded in size and in time as a whole, asks for identity encoding, follows redirects only on
the same host and never from https to http (unless allowed), and needs an expected sha256 unless the
store allows unverified URLs. What is loaded is the bytes that were hashed: a file replaced between the
hash and the load cannot slip in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
import socket
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnxruntime

DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
MAX_REDIRECTS = 5
PART_PREFIX, PART_SUFFIX = ".download-", ".part"
logger = logging.getLogger(__name__)
_SHA256 = re.compile(r"[0-9a-f]{64}")
# ONNX element types as reported by onnxruntime, and the numpy dtype name a client must send.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


def redact(source: str) -> str:
    """A model source as logs and messages may show it: a URL loses its user, password, query and fragment
    (credentials and signed query strings live there); a path is kept."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme.lower() not in ("http", "https"):
        return source
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            host += f":{parts.port}"
    hidden = "?<redacted>" if parts.query or parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + hidden


class ModelError(Exception):
    """A model could not be fetched, verified or opened; the message names the model (a URL redacted) and
    the problem."""

    def __init__(self, model: str, message: str) -> None:
        shown = redact(model)
        if shown != model:
            message = message.replace(model, shown)
        super().__init__(f"model {shown!r}: {message}")
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
    # The bytes that were hashed, for the session to load (None once loaded, or for a caller that only
    # wanted the file).
    content: bytes | None = field(default=None, repr=False, compare=False)


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


class _Cancel:
    """A download's cancel, from the waiting thread: it shuts down the download's socket, so that a read
    blocked in the download thread returns at once instead of at its own timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.cancelled = False

    def attach(self, response: Any) -> None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock
            if self.cancelled:
                self._shutdown()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme.lower() in ("http", "https")


class ModelStore:
    """Fetches models into a local cache keyed by content hash."""

    def __init__(
        self,
        cache_dir: pathlib.Path,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_unverified_urls: bool = False,
        redirects_anywhere: bool = False,
    ) -> None:
        self.cache_dir = pathlib.Path(cache_dir)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.allow_unverified_urls = allow_unverified_urls
        self.redirects_anywhere = redirects_anywhere
        self._downloads: dict[str, threading.Thread] = {}
        self._downloads_lock = threading.Lock()

    def fetch(self, source: str, expected_sha256: str | None = None) -> LocalModel:
        """A local file for `source` (a path, file:// URL or http(s) URL), verified against `expected_sha256`,
        with its bytes (`content`) read once."""
        expected = _normalize_sha256(source, expected_sha256)
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            if expected is None:
                if not self.allow_unverified_urls:
                    raise ModelError(
                        source,
                        "a model fetched over http(s) needs its expected sha256 (serve: --model-sha256 or "
                        "EDGE_MODEL_SHA256; model inspect: --sha256); --insecure-model-url loads it unverified",
                    )
                logger.warning("loading model %s without verifying its sha256 (--insecure-model-url)", redact(source))
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
            content = self._read(source, path)
        except OSError as exc:
            raise ModelError(source, f"cannot read {path}: {exc.strerror or exc}") from exc
        digest = hashlib.sha256(content).hexdigest()
        if expected is not None and digest != expected:
            raise ModelError(source, f"sha256 mismatch: expected {expected}, got {digest}")
        return LocalModel(source=source, path=path.resolve(), sha256=digest, size_bytes=len(content), content=content)

    def _read(self, source: str, path: pathlib.Path) -> bytes:
        """The file's bytes from one open file, refused past the size cap."""
        with open(path, "rb") as f:
            content = f.read(self.max_bytes + 1)
        if len(content) > self.max_bytes:
            raise ModelError(source, f"the model file is larger than the limit of {self.max_bytes} bytes")
        return content

    def _fetch_url(self, source: str, expected: str | None) -> LocalModel:
        return self._cached(source, expected) or self._download(source, expected)

    def _cached(self, source: str, expected: str | None) -> LocalModel | None:
        if expected is not None:
            cached = self.cache_dir / f"{expected}.onnx"
            # Re-hash the cached file (milliseconds): a truncated or altered cache entry is downloaded again.
            with contextlib.suppress(OSError, ModelError):
                content = self._read(source, cached)
                if hashlib.sha256(content).hexdigest() == expected:
                    return LocalModel(source, cached, expected, len(content), content)
        return None

    def _download(self, source: str, expected: str | None) -> LocalModel:
        """The download, in a thread of its own so that its deadline holds for the whole of it: a server
        that trickles, or stalls just under the read timeout, cannot stretch it. At the deadline the
        download's socket is shut down, so its thread ends then too; one download per source runs at once."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(source, f"cannot create cache directory {self.cache_dir}: {exc.strerror}") from exc
        deadline = time.monotonic() + self.timeout_s
        done = threading.Event()
        download = _Cancel()
        outcome: list[LocalModel | BaseException] = []

        def work() -> None:
            try:
                outcome.append(self._download_now(source, expected, download, deadline))
            except BaseException as exc:  # handed to the waiting caller
                outcome.append(exc)
            finally:
                done.set()
                with self._downloads_lock:
                    if self._downloads.get(source) is threading.current_thread():
                        del self._downloads[source]

        while True:
            with self._downloads_lock:
                earlier = self._downloads.get(source)
                if earlier is None or not earlier.is_alive():
                    # Started under the lock: a registered download is always seen alive until it ends.
                    self._remove_orphaned_parts()
                    thread = threading.Thread(target=work, name="model-download", daemon=True)
                    self._downloads[source] = thread
                    thread.start()
                    break
            # Another caller's download of this source is in flight (or ending): wait for it, then take
            # what it cached rather than download beside it.
            earlier.join(max(0.0, deadline - time.monotonic()))
            if earlier.is_alive():
                raise ModelError(source, f"download timed out: not complete within {self.timeout_s:g} s")
            cached = self._cached(source, expected)
            if cached is not None:
                return cached
        if not done.wait(max(0.0, deadline - time.monotonic())):
            download.cancel()  # the thread's read ends at once; it removes its partial file
            raise ModelError(source, f"download timed out: not complete within {self.timeout_s:g} s")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _remove_orphaned_parts(self) -> None:
        """Partial downloads of processes that died mid-download: older than any download may last."""
        cutoff = time.time() - max(2 * self.timeout_s, 300.0)
        for part in self.cache_dir.glob(f"{PART_PREFIX}*{PART_SUFFIX}"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def _download_now(self, source: str, expected: str | None, download: _Cancel, deadline: float) -> LocalModel:
        import httpx

        def left() -> httpx.Timeout:
            # Each connect and read may wait only for what is left of the whole download's time.
            remaining = deadline - time.monotonic()
            if remaining <= 0 or download.cancelled:
                raise ModelError(source, "download cancelled: past its deadline")
            return httpx.Timeout(remaining)

        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=PART_PREFIX, suffix=PART_SUFFIX)
        tmp = pathlib.Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            # Written to the private file, not held in memory as it arrives; read back from the same open
            # file at the end, once, and hashed again: the bytes loaded are the bytes that were hashed.
            with os.fdopen(fd, "w+b") as out:
                try:
                    with httpx.Client(follow_redirects=False, headers={"Accept-Encoding": "identity"}) as client:
                        url = httpx.URL(source)
                        for _hop in range(MAX_REDIRECTS + 1):
                            with client.stream("GET", url, timeout=left()) as response:
                                download.attach(response)
                                if response.is_redirect and "location" in response.headers:
                                    url = self._redirect_target(source, response.url, response.headers["location"])
                                    continue
                                self._check_response(source, response)
                                for chunk in response.iter_raw():  # as each read returns: a cancel is noticed soon
                                    if download.cancelled:
                                        raise ModelError(source, "download cancelled: past its deadline")
                                    size += len(chunk)
                                    if size > self.max_bytes:
                                        raise ModelError(
                                            source, f"the model is larger than the limit of {self.max_bytes} bytes"
                                        )
                                    digest.update(chunk)
                                    out.write(chunk)
                                break
                        else:
                            raise ModelError(source, f"more than {MAX_REDIRECTS} redirects")
                except httpx.TimeoutException as exc:
                    raise ModelError(source, f"download timed out after {self.timeout_s:g} s") from exc
                except httpx.HTTPError as exc:
                    if download.cancelled:
                        raise ModelError(source, "download cancelled: past its deadline") from exc
                    raise ModelError(source, f"download failed: {_describe_http_error(exc)}") from exc
                actual = digest.hexdigest()
                if expected is not None and actual != expected:
                    raise ModelError(source, f"sha256 mismatch: expected {expected}, got {actual}")
                out.flush()
                out.seek(0)
                content = out.read(self.max_bytes + 1)
            if hashlib.sha256(content).hexdigest() != actual:
                raise ModelError(source, "the downloaded file changed on disk before it was loaded")
            final = self.cache_dir / f"{actual}.onnx"
            os.replace(tmp, final)  # atomic: concurrent fetchers never see a partial file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return LocalModel(source=source, path=final, sha256=actual, size_bytes=size, content=content)

    def _redirect_target(self, source: str, current: Any, location: str) -> Any:
        target = current.join(location)
        if self.redirects_anywhere:
            return target
        if (current.scheme, target.scheme) == ("http", "https") and target.host == current.host:
            return target  # the same host, upgraded to TLS: nothing is lost
        if current.scheme == "https" and target.scheme != "https":
            raise ModelError(source, f"refused a redirect from https to {target.scheme}: {redact(str(target))}")
        if (target.host, target.port) != (current.host, current.port) or target.scheme != current.scheme:
            raise ModelError(
                source,
                f"refused a redirect to another host ({redact(str(target))}); --model-redirects-anywhere follows it",
            )
        return target

    def _check_response(self, source: str, response: Any) -> None:
        if response.status_code != 200:
            reason = f" {response.reason_phrase}" if response.reason_phrase else ""
            raise ModelError(source, f"download failed: HTTP {response.status_code}{reason}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ModelError(source, f"the server sent Content-Encoding {encoding!r}; a model must come as identity")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise ModelError(source, f"the model is {declared} bytes, larger than the limit of {self.max_bytes} bytes")


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
    # From the bytes that were hashed when there are any, so the file cannot change in between.
    what: Any = model.content if model.content is not None else str(model.path)
    try:
        return ort.InferenceSession(what, options, providers=["CPUExecutionProvider"])
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
