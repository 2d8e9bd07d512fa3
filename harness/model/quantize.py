"""Static int8 quantization (QDQ, per-channel) of an fp32 image classifier, calibrated on generated photos."""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from harness import images
from harness.model.builder import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, INPUT_NAME

CALIBRATION_IMAGES = 24
CALIBRATION_SEED = 1000


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """An RGB image as a normalized 1x3xHxW float32 tensor, the reference model's input."""
    pixels = np.asarray(images.fit(image.convert("RGB"), size, size), dtype=np.float32) / 255.0
    normalized = (pixels - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return normalized.transpose(2, 0, 1)[None].astype(np.float32)


def calibration_batch(count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Photo-like calibration inputs: mostly synthetic scenes plus the real sample photos, Nx3xHxW."""
    pictures = [images.synthetic_photo(IMAGE_SIZE, IMAGE_SIZE, seed + i) for i in range(count)]
    pictures[: len(images.sample_photos())] = images.sample_photos()
    return np.concatenate([preprocess(p) for p in pictures])


class _ImageReader:
    """CalibrationDataReader feeding one image per run: faster than one large batch (cache-friendly)."""

    def __init__(self, batch: np.ndarray, input_name: str) -> None:
        self._feeds = iter([{input_name: batch[i : i + 1]} for i in range(len(batch))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # the MinMax calibrator reads the data once
        pass


def quantize_int8(
    fp32_model: pathlib.Path,
    out_path: pathlib.Path,
    calibration: np.ndarray,
    input_name: str = INPUT_NAME,
    nodes_to_exclude: Sequence[str] = (),
) -> None:
    """Write a statically quantized QDQ int8 model (per-channel weights, int8 activations) to `out_path`.

    Dynamic quantization is not an option: it quantizes activations at run time and is about 8x slower
    on this model.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgeharness-quant-") as tmp:
        # Shape inference first: the quantizer needs value shapes to place Q/DQ nodes. ORT's own graph
        # optimisation is skipped: BN is already folded, and it would tie the file to ORT's contrib domains.
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_model), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _ImageReader(calibration, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={"WeightSymmetric": True},
        )
