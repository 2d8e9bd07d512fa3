"""The inference pipeline's stages as plain functions: decode, preprocess, inference, post-process."""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.handler import errors

if TYPE_CHECKING:
    from harness.model.store import ModelInfo

# Content type -> the one Pillow format that may decode it. Decoding with only the declared format
# keeps a PNG sent as image/jpeg from being accepted silently.
FORMATS: dict[str, str] = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
CONTENT_TYPES: tuple[str, ...] = tuple(FORMATS)
# Rescale factors up to this use nearest-neighbour sampling (see preprocess).
NEAREST_MAX_FACTOR = 1.25
# A JPEG with more scans than this is refused: each scan of a progressive JPEG is a pass over all of its
# coefficients, so hundreds of (tiny) scans cost seconds of CPU. Encoders write about 10.
MAX_JPEG_SCANS = 64
# libjpeg keeps a progressive JPEG's coefficients for the whole image, whatever the draft scale: up to
# 3 components x 2 bytes per pixel (4:4:4).
PROGRESSIVE_COEFFICIENT_BYTES = 6


class Budget(Protocol):
    capacity: int

    def take(self, n: int) -> bool: ...

    def give(self, n: int) -> None: ...


@dataclass(frozen=True)
class DecodeLimits:
    """What one decode may cost: its pixels (a JPEG's after draft reduction) and its bytes, taken from a
    budget all requests share while they decode."""

    max_pixels: int
    budget: Budget | None = None


@dataclass(frozen=True)
class InputSpec:
    """What the model wants as input, derived once per model load."""

    layout: str  # "NCHW" or "NHWC"
    height: int
    width: int
    channels: int
    dtype: np.dtype[Any]
    scale: np.ndarray  # per channel: x * scale + offset == (x / 255 - mean) / std
    offset: np.ndarray

    @functools.cached_property
    def lut(self) -> np.ndarray:
        """Per channel, the normalised value of each of the 256 pixel values: a gather beats arithmetic."""
        levels = np.arange(256, dtype=np.float32)
        return (levels[None, :] * self.scale[:, None] + self.offset[:, None]).astype(self.dtype)

    @classmethod
    def from_info(cls, info: ModelInfo) -> InputSpec:
        mean = np.asarray(info.mean, dtype=np.float32)[: info.channels]
        std = np.asarray(info.std, dtype=np.float32)[: info.channels]
        return cls(
            layout=info.layout,
            height=info.height,
            width=info.width,
            channels=info.channels,
            dtype=np.dtype(info.input_dtype),
            scale=(1.0 / (255.0 * std)).astype(np.float32),
            offset=(-mean / std).astype(np.float32),
        )


class Prediction(NamedTuple):
    label: str
    index: int
    score: float


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, or raise 415."""
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    if bare not in FORMATS:
        raise errors.unsupported_media_type(content_type, CONTENT_TYPES)
    return bare


def decode(body: bytes, content_type: str, size: tuple[int, int], limits: DecodeLimits | int) -> Image.Image:
    """Decode an image body to RGB (see `decoded`), giving its decode budget back on return: for callers
    that drop the image at once; a request's pipeline holds the budget with `decoded` instead."""
    with decoded(body, content_type, size, limits) as image:
        return image


@contextlib.contextmanager
def decoded(body: bytes, content_type: str, size: tuple[int, int], limits: DecodeLimits | int) -> Iterator[Image.Image]:
    """Decode an image body to RGB, refusing corrupt data and images too large or too costly before decoding:
    over the pixel limit (a JPEG's after its draft reduction), with too many JPEG scans, or needing more
    memory than the decode budget has. The bytes taken from the decode budget are held until the block
    ends: the decoded image lives on through the block (preprocessing), and so do its bytes."""
    if not body:
        raise errors.empty_body()
    if isinstance(limits, int):
        limits = DecodeLimits(limits)
    fmt = FORMATS[media_type(content_type)]
    try:
        image = Image.open(io.BytesIO(body), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise errors.HandlerError(422, "image_too_large", f"the image declares too many pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise errors.invalid_image(f"cannot identify a {fmt} image ({_reason(exc)})") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise errors.invalid_image(f"declared size {width}x{height}")
    need = 0
    if fmt == "JPEG":
        if image.info.get("progressive") or image.info.get("progression"):
            # Only a progressive JPEG has many scans; a baseline one has one per component at most, and
            # scanning its whole body for markers would cost every ordinary request a pass over its bytes.
            scans = body.count(b"\xff\xda")  # SOS markers: entropy-coded data stuffs every 0xFF with 0x00
            if scans > MAX_JPEG_SCANS:
                raise errors.HandlerError(
                    422, "image_too_complex", f"the JPEG has {scans} scans, over the limit of {MAX_JPEG_SCANS}"
                )
            need += width * height * PROGRESSIVE_COEFFICIENT_BYTES
        # Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale: about 2x faster for large photos, and the
        # pixel limit applies to what is decoded.
        image.draft("RGB", size)
        width, height = image.size
    if width * height > limits.max_pixels:
        raise errors.image_too_large(width, height, limits.max_pixels)
    need += width * height * (_bytes_per_pixel(image.mode) + (0 if image.mode == "RGB" else 4))
    budget = limits.budget
    if budget is not None and not budget.take(need):
        if need > budget.capacity:
            raise errors.HandlerError(
                422,
                "image_too_large",
                f"the image needs {need} bytes to decode, over the decode budget of {budget.capacity} bytes",
            )
        raise errors.HandlerError(
            503,
            "overloaded",
            "the images being decoded hold the decode budget; retry later",
            headers={"Retry-After": "1"},
        )
    try:
        try:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
        except Image.DecompressionBombError as exc:
            raise errors.HandlerError(422, "image_too_large", f"the image declares too many pixels: {exc}") from exc
        except (OSError, SyntaxError, ValueError, MemoryError, EOFError) as exc:
            raise errors.invalid_image(f"{fmt} data is truncated or corrupt ({_reason(exc)})") from exc
        yield image
    finally:
        if budget is not None:
            budget.give(need)


def _bytes_per_pixel(mode: str) -> int:
    """Bytes a decoded pixel takes in Pillow: one per pixel for 1, L and P, two for 16-bit grey, else four."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def preprocess(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Centre-crop to the model's aspect, resize in the same step, normalise, lay out as the model wants.

    Float inputs are normalised as (x / 255 - mean) / std; uint8 inputs get the pixels unchanged, int8
    inputs the pixels minus 128.
    """
    width, height = image.size
    target_ratio = spec.width / spec.height
    if width / height > target_ratio:
        crop_w, crop_h = height * target_ratio, float(height)
    else:
        crop_w, crop_h = float(width), width / target_ratio
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    # JPEG draft decoding already brings a photo within a factor of two of the model's size. For such
    # near-unit rescales nearest-neighbour sampling moves each pixel by at most half a source pixel and
    # costs 0.03 ms instead of 0.5 ms; larger reductions need bilinear's antialiasing.
    resample = Image.Resampling.NEAREST if crop_h / spec.height <= NEAREST_MAX_FACTOR else Image.Resampling.BILINEAR
    resized = image.resize((spec.width, spec.height), resample, box=(left, top, left + crop_w, top + crop_h))
    if spec.channels == 1:
        resized = resized.convert("L")
    pixels = np.asarray(resized)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    nchw = spec.layout == "NCHW"
    if spec.dtype in (np.uint8, np.int8):
        # An integer input takes the pixels as they are (the model normalises, if at all, in its graph;
        # mean and std in its metadata are not applied): for uint8 NHWC that is the resized image's
        # array, with no arithmetic pass. int8 inputs take them shifted by -128, the convention of
        # full-integer quantized image models.
        if spec.dtype == np.int8:
            pixels = (pixels ^ np.uint8(0x80)).view(np.int8)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))[None] if nchw else pixels[None]
    shape = (1, spec.channels, spec.height, spec.width) if nchw else (1, spec.height, spec.width, spec.channels)
    out = np.empty(shape, dtype=spec.dtype)
    target = out[0]
    if spec.dtype == np.float32:
        # x * scale + offset per channel, straight into the output: two vectorised passes. bench_telemetry
        # measured 146 us for a whole preprocess this way, 240 us with the lookup table; same results.
        planes, per_channel = (pixels.transpose(2, 0, 1), (spec.channels, 1, 1)) if nchw else (pixels, (spec.channels,))
        np.multiply(planes, spec.scale.reshape(per_channel), out=target)
        np.add(target, spec.offset.reshape(per_channel), out=target)
    else:
        for c in range(spec.channels):
            np.take(spec.lut[c], pixels[:, :, c], out=target[c] if nchw else target[:, :, c])
    return out


def infer(session: Any, input_name: str, tensor: np.ndarray) -> np.ndarray:
    """One ONNX Runtime run; returns the first output (logits or probabilities) as a flat vector."""
    outputs = session.run(None, {input_name: tensor})
    return np.asarray(outputs[0], dtype=np.float32).reshape(-1)


def postprocess(logits: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """Softmax and top-k, highest score first; equal scores in class order, so an answer never varies."""
    k = min(k, logits.size)
    # Right after an inference every numpy call meets cold caches and costs tens of microseconds, so
    # this makes few: one stable sort ranks the classes, one exp(logit - max) gives every numerator.
    top = np.argsort(-logits, kind="stable")[:k]
    shifted = logits - logits[top[0]]
    np.exp(shifted, out=shifted)
    total = float(shifted.sum())
    return [
        Prediction(labels[i] if i < len(labels) else f"class-{i}", i, _finite(score / total))
        for i, score in zip(top.tolist(), shifted[top].tolist(), strict=True)
    ]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
