"""MobileNetV2's architecture as an ONNX graph, built from code with seeded weights (no training, no download).

The weights are random but scaled like a trained network's, so latency, activation ranges and int8
calibration behave realistically; the predictions themselves mean nothing, and the labels say so.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.model.manifest import ModelManifest, manifest_path, read_manifest, sha256_file, write_atomic
from harness.model.signature import IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME, PIXELS_NAME

OPSET = 13
# IR 8 (with opset 13) loads in every ONNX Runtime this project supports and in most other runtimes.
IR_VERSION = 8
# 2.0.0: uint8 NHWC pixels in, normalisation folded into the stem (1.x took normalised float NCHW).
MODEL_VERSION = "2.0.0"
NUM_CLASSES = 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper, table 2.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# Metadata keys (ONNX metadata_props) through which a model file describes itself.
META_NAME = "edgeharness.name"
META_VERSION = "edgeharness.version"
META_LABELS = "edgeharness.labels"
META_MEAN = "edgeharness.mean"
META_STD = "edgeharness.std"
META_LAYOUT = "edgeharness.layout"
META_PREPROCESS = "edgeharness.preprocess"
# The models take what a decoder gives: uint8 RGB pixels, NHWC. The usual normalisation,
# (x / 255 - mean) / std, is folded into the stem convolution's weights and bias (as deployment
# converters do), so a client or handler has no arithmetic pass to make before inference.
PREPROCESS = "RGB, resize to HxW, uint8 pixels as they are (normalisation by mean and std is in the graph)"
FP32_NAME = "mobilenetv2-fp32"
INT8_NAME = "mobilenetv2-int8"
DEFAULT_SEED = 0


def synthetic_labels(num_classes: int = NUM_CLASSES) -> list[str]:
    """Labels that say what they are: the weights are random, so no ImageNet class name would be honest."""
    return [f"class-{i:04d}" for i in range(num_classes)]


@dataclass
class _Graph:
    """Accumulates nodes and initializers, handing out unique tensor names."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    parameters: int = 0

    def constant(self, name: str, array: np.ndarray, trainable: bool = True) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        if trainable:
            self.parameters += int(array.size)
        return name

    def conv(
        self,
        name: str,
        x: str,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        groups: int = 1,
        gain: float = 2.0,
        relu6: bool = True,
    ) -> str:
        """Conv with batch norm folded into weight and bias, then optionally ReLU6 (as Clip 0..6)."""
        fan_in = (in_ch // groups) * kernel * kernel
        # He initialisation keeps each layer's output variance near its input's (gain 2 for ReLU).
        std = np.sqrt(gain / fan_in)
        weight = self.rng.normal(0.0, std, (out_ch, in_ch // groups, kernel, kernel)).astype(np.float32)
        # A trained network's folded BN bias is small and mostly negative before ReLU6: it sparsifies.
        bias = self.rng.normal(-0.1 if relu6 else 0.0, 0.1, out_ch).astype(np.float32)
        w = self.constant(f"{name}.weight", weight)
        b = self.constant(f"{name}.bias", bias)
        pad = kernel // 2
        out = f"{name}.out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [out],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        if not relu6:
            return out
        clipped = f"{name}.relu6"
        self.nodes.append(helper.make_node("Clip", [out, "relu6.min", "relu6.max"], [clipped], name=f"{name}.clip"))
        return clipped

    def add(self, name: str, a: str, b: str) -> str:
        out = f"{name}.out"
        self.nodes.append(helper.make_node("Add", [a, b], [out], name=name))
        return out


def build_mobilenetv2(seed: int = 0, num_classes: int = NUM_CLASSES) -> tuple[onnx.ModelProto, int]:
    """MobileNetV2 (width 1.0) on 224x224 uint8 RGB pixels (NHWC), seeded weights; returns (model, parameters).

    The graph starts with a Transpose to NCHW and a Cast to float; the stem convolution has the ImageNet
    normalisation folded in. Deterministic: the same seed gives the same serialized bytes.
    """
    g = _Graph(rng=np.random.default_rng(seed))
    g.constant("relu6.min", np.array(0.0, dtype=np.float32), trainable=False)
    g.constant("relu6.max", np.array(6.0, dtype=np.float32), trainable=False)

    # Transposing the uint8 pixels moves a quarter of the bytes a float transpose would.
    g.nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["input.nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
    g.nodes.append(helper.make_node("Cast", ["input.nchw"], [PIXELS_NAME], name="to_float", to=TensorProto.FLOAT))
    x = g.conv("stem", PIXELS_NAME, 3, STEM_CHANNELS, kernel=3, stride=2)
    _fold_normalisation(g, "stem", IMAGENET_MEAN, IMAGENET_STD)
    in_ch = STEM_CHANNELS
    block = 0
    for expansion, out_ch, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            name = f"block{block}"
            hidden = in_ch * expansion
            y = x
            if expansion != 1:
                y = g.conv(f"{name}.expand", y, in_ch, hidden, kernel=1, stride=1)
            y = g.conv(f"{name}.depthwise", y, hidden, hidden, kernel=3, stride=stride, groups=hidden)
            residual = stride == 1 and in_ch == out_ch
            # The linear bottleneck has no activation (gain 1). On residual branches it is damped, as
            # a trained network's small final BN scale does, so the skip sums do not grow with depth.
            y = g.conv(
                f"{name}.project", y, hidden, out_ch, kernel=1, stride=1, gain=0.5 if residual else 1.0, relu6=False
            )
            x = g.add(f"{name}.add", x, y) if residual else y
            in_ch = out_ch
            block += 1
    x = g.conv("head", x, in_ch, LAST_CHANNELS, kernel=1, stride=1)

    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool.out"], name="pool"))
    g.nodes.append(helper.make_node("Flatten", ["pool.out"], ["flatten.out"], name="flatten", axis=1))
    # A plain random head; fit_classifier() centres and scales it on calibration images' features.
    fc_weight = g.rng.normal(0.0, 3.0 / np.sqrt(LAST_CHANNELS), (num_classes, LAST_CHANNELS)).astype(np.float32)
    fc_bias = g.rng.normal(0.0, 0.1, num_classes).astype(np.float32)
    g.constant("classifier.weight", fc_weight)
    g.constant("classifier.bias", fc_bias)
    g.nodes.append(
        helper.make_node(
            "Gemm",
            ["flatten.out", "classifier.weight", "classifier.bias"],
            [OUTPUT_NAME],
            name="classifier",
            transB=1,
        )
    )

    graph = helper.make_graph(
        g.nodes,
        "mobilenetv2",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", IMAGE_SIZE, IMAGE_SIZE, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", num_classes])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgeharness",
        doc_string="MobileNetV2 architecture with seeded random weights (edgeharness reference model).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model, g.parameters


def _fold_normalisation(g: _Graph, conv: str, mean: Sequence[float], std: Sequence[float]) -> None:
    """Make conv `conv`, drawn for normalised input, take pixel values 0..255 instead.

    conv((x / 255 - mean) / std) == conv'(x) with W' = W / (255 std) per input channel and
    b' = b - sum(W * mean / std). (Only the zero padding differs: it now stands for black, not grey.)
    """
    tensors = {t.name: t for t in g.initializers}
    weight = numpy_helper.to_array(tensors[f"{conv}.weight"]).astype(np.float64)
    bias = numpy_helper.to_array(tensors[f"{conv}.bias"]).astype(np.float64)
    m = np.asarray(mean, np.float64)[None, :, None, None]
    s = np.asarray(std, np.float64)[None, :, None, None]
    folded_weight = (weight / (255.0 * s)).astype(np.float32)
    folded_bias = (bias - (weight * m / s).sum(axis=(1, 2, 3))).astype(np.float32)
    tensors[f"{conv}.weight"].CopyFrom(numpy_helper.from_array(folded_weight, f"{conv}.weight"))
    tensors[f"{conv}.bias"].CopyFrom(numpy_helper.from_array(folded_bias, f"{conv}.bias"))


def set_metadata(
    model: onnx.ModelProto,
    name: str,
    labels: Sequence[str],
    version: str = MODEL_VERSION,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    layout: str = "NHWC",
) -> None:
    """Embed the self-description, so a model fetched from a URL is one file with everything needed."""
    entries = {
        META_NAME: name,
        META_VERSION: version,
        META_LABELS: json.dumps(list(labels)),
        META_MEAN: json.dumps(list(mean)),
        META_STD: json.dumps(list(std)),
        META_LAYOUT: layout,
        META_PREPROCESS: PREPROCESS,
    }
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def fit_classifier(model: onnx.ModelProto, calibration: np.ndarray, logit_std: float = 3.0) -> None:
    """Centre and scale the classifier on calibration images' features, as a trained head would be.

    With random weights the pooled features share a large image-independent part, which would make one
    class win for every picture; subtracting it leaves logits that depend on the image, spread over a
    few units. Values are rounded so that float noise between machines does not change the bytes.
    """
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("flatten.out", TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    features = np.concatenate(
        [session.run(["flatten.out"], {INPUT_NAME: calibration[i : i + 1]})[0] for i in range(len(calibration))]
    ).astype(np.float64)
    mean = np.round(features.mean(axis=0), 3)

    weights = {t.name: t for t in model.graph.initializer}
    w = numpy_helper.to_array(weights["classifier.weight"]).astype(np.float64)
    spread = float(((features - mean) @ w.T).std(axis=1).mean())
    scale = float(f"{logit_std / spread:.2g}")
    w_scaled = (w * scale).astype(np.float32)
    bias = numpy_helper.to_array(weights["classifier.bias"]).astype(np.float64)
    bias = np.round(bias - w_scaled.astype(np.float64) @ mean, 4).astype(np.float32)
    weights["classifier.weight"].CopyFrom(numpy_helper.from_array(w_scaled, "classifier.weight"))
    weights["classifier.bias"].CopyFrom(numpy_helper.from_array(bias, "classifier.bias"))


def build_fingerprint(seed: int = DEFAULT_SEED) -> str:
    """Identifies what a build depends on: this package's model/image code and the library versions."""
    import onnxruntime
    import PIL

    digest = hashlib.sha256(f"seed={seed}".encode())
    for module in ("builder.py", "quantize.py", "manifest.py"):
        digest.update((pathlib.Path(__file__).parent / module).read_bytes())
    digest.update((pathlib.Path(__file__).parent.parent / "images.py").read_bytes())
    for version in (np.__version__, onnx.__version__, onnxruntime.__version__, PIL.__version__):
        digest.update(version.encode())
    return digest.hexdigest()[:16]


def build_reference_models(out_dir: pathlib.Path, seed: int = DEFAULT_SEED, force: bool = False) -> list[ModelManifest]:
    """Write the fp32 and int8 reference models and their manifests into `out_dir`; return the manifests.

    Skips the work when both models and manifests exist from an identical build (same fingerprint and
    file hashes), since rebuilding would give the same bytes anyway.
    """
    from harness.model.quantize import calibration_batch, quantize_int8

    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = build_fingerprint(seed)
    if not force:
        existing = [read_manifest(manifest_path(out_dir, name)) for name in (FP32_NAME, INT8_NAME)]
        if all(
            m is not None
            and m.build_fingerprint == fingerprint
            and (out_dir / m.file).is_file()
            and sha256_file(out_dir / m.file) == m.sha256
            for m in existing
        ):
            return [m for m in existing if m is not None]

    labels = synthetic_labels()
    calibration = calibration_batch()
    fp32, parameters = build_mobilenetv2(seed)
    fit_classifier(fp32, calibration)
    set_metadata(fp32, FP32_NAME, labels)
    fp32_path = out_dir / f"{FP32_NAME}.onnx"
    write_atomic(fp32_path, fp32.SerializeToString())

    with tempfile.TemporaryDirectory(prefix="edgeharness-build-") as tmp:
        quantized = pathlib.Path(tmp) / "int8.onnx"
        quantize_int8(fp32_path, quantized, calibration)
        int8 = onnx.load(str(quantized))
    set_metadata(int8, INT8_NAME, labels)
    int8_path = out_dir / f"{INT8_NAME}.onnx"
    write_atomic(int8_path, int8.SerializeToString())

    manifests = []
    for name, precision, path in ((FP32_NAME, "fp32", fp32_path), (INT8_NAME, "int8", int8_path)):
        manifest = ModelManifest(
            name=name,
            version=MODEL_VERSION,
            precision=precision,
            file=path.name,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            input_name=INPUT_NAME,
            input_shape=("batch", IMAGE_SIZE, IMAGE_SIZE, 3),
            input_layout="NHWC",
            input_dtype="uint8",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            output_name=OUTPUT_NAME,
            num_classes=NUM_CLASSES,
            labels=tuple(labels),
            parameters=parameters,
            build_fingerprint=fingerprint,
        )
        write_atomic(manifest_path(out_dir, name), manifest.to_json().encode())
        manifests.append(manifest)
    return manifests
