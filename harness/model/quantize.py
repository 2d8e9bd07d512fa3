"""Static int8 quantization (QDQ, per-channel) of an fp32 image classifier, calibrated on generated photos."""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from PIL import Image

from harness import images
from harness.model.signature import IMAGE_SIZE, INPUT_NAME, PIXELS_NAME

CALIBRATION_IMAGES = 24
CALIBRATION_SEED = 1000


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """An RGB image as a 1xHxWx3 uint8 tensor of its pixels, the reference model's input."""
    return np.asarray(images.fit(image.convert("RGB"), size, size), dtype=np.uint8)[None]


def calibration_batch(count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Photo-like calibration inputs: mostly synthetic scenes plus the real sample photos, NxHxWx3."""
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
    """Write a statically quantized QDQ model (per-channel int8 weights, uint8 activations) to `out_path`.

    The pixels' quantization is pinned to scale 1, zero point 0, which makes it the identity on uint8
    pixels; the Cast and QuantizeLinear in front of the stem are then removed, so the uint8 input feeds
    the first quantized convolution as it is (unless `nodes_to_exclude` keeps the stem in float, when
    nothing quantizes the pixels and the Cast stays). Dynamic quantization is not an option: it quantizes
    activations at run time and is about 8x slower on this model.
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
            extra_options={
                "WeightSymmetric": True,
                "TensorQuantOverrides": {
                    PIXELS_NAME: [{"scale": np.array(1.0, np.float32), "zero_point": np.array(0, np.uint8)}]
                },
            },
        )
        model = onnx.load(str(out_path))
    _feed_pixels_directly(model)
    onnx.save(model, str(out_path))


def _feed_pixels_directly(model: onnx.ModelProto) -> None:
    """Remove Cast -> QuantizeLinear(scale 1, zero point 0) on the pixels: on uint8 values it is the identity."""
    nodes = list(model.graph.node)
    quantize = [n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] == PIXELS_NAME]
    if not quantize:
        return  # the stem was left in float: the pixels are cast, not quantized
    cast = [n for n in nodes if n.op_type == "Cast" and n.output[0] == PIXELS_NAME]
    readers = [n for n in nodes if PIXELS_NAME in n.input]
    if len(quantize) != 1 or len(cast) != 1 or readers != quantize or not _is_uint8(model, cast[0].input[0]):
        raise ValueError(f"expected {PIXELS_NAME!r} to be cast from uint8 and read only by one QuantizeLinear")
    q, c = quantize[0], cast[0]
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scale, zero_point = constants[q.input[1]], constants[q.input[2]]
    if float(scale) != 1.0 or zero_point.dtype != np.uint8 or int(zero_point) != 0:
        raise ValueError(f"pixel quantization is scale {scale}, zero point {zero_point!r}; expected 1 and uint8 0")
    for node in nodes:
        node.input[:] = [c.input[0] if name == q.output[0] else name for name in node.input]
    model.graph.node.remove(q)
    model.graph.node.remove(c)
    gone = {PIXELS_NAME, q.output[0]}
    kept = [v for v in model.graph.value_info if v.name not in gone]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    onnx.checker.check_model(model, full_check=True)


def _is_uint8(model: onnx.ModelProto, tensor: str) -> bool:
    """Whether `tensor` is a uint8 graph input, directly or through Transpose nodes."""
    producers = {n.output[0]: n for n in model.graph.node}
    while tensor in producers and producers[tensor].op_type == "Transpose":
        tensor = producers[tensor].input[0]
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return inputs.get(tensor) == onnx.TensorProto.UINT8
