"""The reference model builder: determinism, architecture, self-description, realistic scales, int8 quality."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from harness import images
from harness.model import builder
from harness.model.manifest import ModelManifest, sha256_file
from harness.model.quantize import preprocess


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[ModelManifest]]:
    out = tmp_path_factory.mktemp("models")
    return out, builder.build_reference_models(out)


@pytest.fixture(scope="module")
def test_batch() -> np.ndarray:
    # Pictures the calibration never saw (other seeds, other sizes) plus the real sample photo.
    pictures = [images.synthetic_photo(320, 240, 9000 + i) for i in range(7)] + images.sample_photos()
    return np.concatenate([preprocess(p) for p in pictures])


def _session(path: pathlib.Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_rebuild_gives_identical_bytes(built, tmp_path):
    first_dir, _ = built
    builder.build_reference_models(tmp_path, force=True)
    for name in ("mobilenetv2-fp32.onnx", "mobilenetv2-int8.onnx", "mobilenetv2-int8.manifest.json"):
        assert (tmp_path / name).read_bytes() == (first_dir / name).read_bytes(), name


def test_different_seed_gives_different_weights():
    a, _ = builder.build_mobilenetv2(seed=0)
    b, _ = builder.build_mobilenetv2(seed=1)
    assert a.SerializeToString() != b.SerializeToString()


def test_architecture_is_mobilenetv2():
    model, parameters = builder.build_mobilenetv2()
    # torchvision's MobileNetV2 has 3,504,872 parameters; folding BN into conv biases removes
    # 17,056 (gamma per BN channel), leaving 3,487,816.
    assert parameters == 3_487_816
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 52
    assert ops.count("Add") == 10  # residual connections
    assert "BatchNormalization" not in ops
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert clips and all(n.input[1:] == ["relu6.min", "relu6.max"] for n in clips)
    inputs = model.graph.input[0].type.tensor_type
    assert [d.dim_value or d.dim_param for d in inputs.shape.dim] == ["batch", 224, 224, 3]
    assert inputs.elem_type == onnx.TensorProto.UINT8
    assert ops[:2] == ["Transpose", "Cast"]  # uint8 NHWC pixels to float NCHW, before the stem


def test_files_and_manifests(built):
    out, manifests = built
    assert [m.name for m in manifests] == ["mobilenetv2-fp32", "mobilenetv2-int8"]
    for m in manifests:
        on_disk = ModelManifest.from_json((out / f"{m.name}.manifest.json").read_text())
        assert on_disk == m
        assert m.file == f"{m.name}.onnx"
        assert m.sha256 == sha256_file(out / m.file)
        assert m.size_bytes == (out / m.file).stat().st_size
        assert (m.input_name, m.input_layout, m.input_dtype, m.output_name) == ("input", "NHWC", "uint8", "logits")
        assert m.input_shape == ("batch", 224, 224, 3)
        assert m.num_classes == len(m.labels) == 1000
        assert m.parameters == 3_487_816
    fp32, int8 = manifests
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert int8.size_bytes < fp32.size_bytes / 3


def test_metadata_describes_the_model(built):
    out, _ = built
    for name in ("mobilenetv2-fp32", "mobilenetv2-int8"):
        meta = {p.key: p.value for p in onnx.load(str(out / f"{name}.onnx")).metadata_props}
        assert meta["edgeharness.name"] == name
        assert meta["edgeharness.version"] == builder.MODEL_VERSION
        assert meta["edgeharness.layout"] == "NHWC"
        labels = json.loads(meta["edgeharness.labels"])
        assert len(labels) == 1000 and labels[42] == "class-0042" and len(set(labels)) == 1000
        assert json.loads(meta["edgeharness.mean"]) == [0.485, 0.456, 0.406]
        assert json.loads(meta["edgeharness.std"]) == [0.229, 0.224, 0.225]


def test_skips_rebuild_when_outputs_match(built, tmp_path):
    shutil.copytree(built[0], tmp_path, dirs_exist_ok=True)
    model = tmp_path / "mobilenetv2-int8.onnx"
    mtime = model.stat().st_mtime_ns
    builder.build_reference_models(tmp_path)
    assert model.stat().st_mtime_ns == mtime
    model.write_bytes(b"corrupted")  # a file that no longer matches its manifest is rebuilt
    builder.build_reference_models(tmp_path)
    assert model.read_bytes() == (built[0] / "mobilenetv2-int8.onnx").read_bytes()


def test_activations_neither_vanish_nor_explode(test_batch):
    model, _ = builder.build_mobilenetv2()
    watched = [n.output[0] for n in model.graph.node if n.op_type in ("Clip", "Add")]
    for name in watched:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    values = ort.InferenceSession(model.SerializeToString()).run(watched, {"input": test_batch[:2]})
    for name, value in zip(watched, values, strict=True):
        assert 0.2 < float(value.std()) < 3.0, f"{name}: std {value.std():.3f}"
        if name.endswith("relu6"):
            assert 0.01 < float((value > 0).mean()) < 0.95, f"{name}: all dead or all active"


def test_logits_have_realistic_scale(built, test_batch):
    out, _ = built
    logits = _session(out / "mobilenetv2-fp32.onnx").run(None, {"input": test_batch})[0]
    assert logits.shape == (len(test_batch), 1000)
    assert np.all((logits.std(axis=1) > 1.0) & (logits.std(axis=1) < 6.0))
    top = _softmax(logits).max(axis=1)
    assert np.all(top > 5 / 1000), "softmax is nearly uniform"
    assert np.all(top < 0.99), "softmax is one-hot"
    # Predictions depend on the picture: not the same class for every image.
    assert len(set(logits.argmax(axis=1).tolist())) >= len(test_batch) // 2


def test_int8_is_statically_quantized_and_close_to_fp32(built, test_batch):
    out, _ = built
    model = onnx.load(str(out / "mobilenetv2-int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "DynamicQuantizeLinear" not in ops and "ConvInteger" not in ops
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs and all(n.input[0] in dequantized and n.input[1] in dequantized for n in convs)
    fp32 = _session(out / "mobilenetv2-fp32.onnx").run(None, {"input": test_batch})[0]
    int8 = _session(out / "mobilenetv2-int8.onnx").run(None, {"input": test_batch})[0]
    for a, b in zip(fp32, int8, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.9
    # The uint8 pixels feed the first quantized op unchanged: the pinned Cast and QuantizeLinear are gone.
    readers = [n for n in model.graph.node if "input" in n.input]
    assert [n.op_type for n in readers] == ["Transpose"]
    first = [n for n in model.graph.node if readers[0].output[0] in n.input]
    assert first and all(n.op_type == "DequantizeLinear" for n in first)
    assert "Cast" not in ops and all(n.input[0] != builder.PIXELS_NAME for n in model.graph.node)


def test_removing_the_pixel_quantization_changes_no_logit(built, test_batch, tmp_path, monkeypatch):
    from harness.model import quantize

    out, _ = built
    monkeypatch.setattr(quantize, "_feed_pixels_directly", lambda model: None)
    untouched = tmp_path / "qdq.onnx"
    quantize.quantize_int8(out / "mobilenetv2-fp32.onnx", untouched, quantize.calibration_batch())
    assert "Cast" in [n.op_type for n in onnx.load(str(untouched)).graph.node]  # Cast -> Q still there
    before = _session(untouched).run(None, {"input": test_batch})[0]
    after = _session(out / "mobilenetv2-int8.onnx").run(None, {"input": test_batch})[0]
    np.testing.assert_array_equal(after, before)


def test_folded_normalisation_matches_normalising_first():
    # One 3x3 conv drawn for normalised input; folded, it must give the same output on raw pixels
    # everywhere but the one-pixel border, where zero padding now stands for black.
    rng = np.random.default_rng(3)
    g = builder._Graph(rng=rng)
    g.conv("c", "x", 3, 4, kernel=3, stride=1, relu6=False)
    unfolded = [onnx.TensorProto() for _ in g.initializers]
    for copy, original in zip(unfolded, g.initializers, strict=True):
        copy.CopyFrom(original)
    builder._fold_normalisation(g, "c", builder.IMAGENET_MEAN, builder.IMAGENET_STD)

    def run(initializers: list[onnx.TensorProto], x: np.ndarray) -> np.ndarray:
        graph = helper.make_graph(
            g.nodes,
            "one-conv",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
            [helper.make_tensor_value_info("c.out", onnx.TensorProto.FLOAT, None)],
            initializer=initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", builder.OPSET)])
        model.ir_version = builder.IR_VERSION
        return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]

    pixels = rng.integers(0, 256, (1, 3, 16, 16)).astype(np.float32)
    mean = np.asarray(builder.IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.asarray(builder.IMAGENET_STD, np.float32)[None, :, None, None]
    expected = run(unfolded, (pixels / 255 - mean) / std)
    got = run(g.initializers, pixels)
    np.testing.assert_allclose(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, expected, atol=1e-4)  # only the border differs: padding now means black


def test_cli_build(built, tmp_path, capsys):
    from harness import cli

    out = tmp_path / "models"
    shutil.copytree(built[0], out)
    assert cli.main(["model", "build", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mobilenetv2-fp32.onnx" in printed and built[1][1].sha256 in printed


def test_cli_build_error_exit_2(tmp_path, capsys):
    from harness import cli

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cli.main(["model", "build", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err
