"""Prepared models (ONNX Runtime's optimized form): the same logits as the original, a manifest, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from handler_fixtures import models_dir, photo  # noqa: F401

from harness.handler.pipeline import InputSpec, infer, preprocess
from harness.model.prepare import PrepareError, ensure_prepared, is_current, manifest_path, prepare
from harness.model.store import ModelStore, create_session, describe


def logits_on_test_images(path: Path, tmp_path: Path) -> list[np.ndarray]:
    model = ModelStore(tmp_path / "cache").fetch(str(path))
    session = create_session(model, intra_op_threads=1)
    info = describe(session, model)
    spec = InputSpec.from_info(info)
    images = [photo(640, 480, seed=1), photo(320, 240, seed=2), photo(1280, 720, seed=3), photo(224, 224, seed=4)]
    return [infer(session, info.input_name, preprocess(image, spec)) for image in images]


@pytest.mark.parametrize("precision", ["int8", "fp32"])
@pytest.mark.parametrize("fmt", ["ort", "onnx"])
def test_prepared_model_gives_the_originals_logits(
    models_dir: Path,  # noqa: F811
    tmp_path: Path,
    precision: str,
    fmt: str,
) -> None:
    source = tmp_path / f"mobilenetv2-{precision}.onnx"
    shutil.copy(models_dir / source.name, source)
    prepared = prepare(source, fmt=fmt)
    assert prepared.path.suffix == (".ort" if fmt == "ort" else ".onnx") and prepared.path != source
    original = logits_on_test_images(source, tmp_path)
    again = logits_on_test_images(prepared.path, tmp_path)
    for a, b in zip(original, again, strict=True):
        # The same optimizations run either way (at load or ahead of time): the same kernels, the same numbers.
        np.testing.assert_array_equal(a, b)
    # And the model still says what it is: a handler serving it reports the same name and version.
    store = ModelStore(tmp_path / "cache")
    for path in (source, prepared.path):
        model = store.fetch(str(path))
        info = describe(create_session(model, 1), model)
        assert (info.name, info.version) == (f"mobilenetv2-{precision}", "2.0.0")


def test_manifest_names_the_source_and_staleness_is_noticed(models_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "m.onnx"
    shutil.copy(models_dir / "mobilenetv2-int8.onnx", source)
    out = ensure_prepared(source)
    assert out == tmp_path / "m.ort"
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["format"] == "ort" and len(manifest["source_sha256"]) == 64
    assert is_current(source, out)
    stamp = out.stat().st_mtime_ns
    assert ensure_prepared(source) == out and out.stat().st_mtime_ns == stamp  # reused, not redone
    # A different source (here: the fp32 model under the same name) makes the prepared file stale.
    shutil.copy(models_dir / "mobilenetv2-fp32.onnx", source)
    assert not is_current(source, out)
    ensure_prepared(source)
    assert is_current(source, out)


def test_a_file_that_is_no_model_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PrepareError, match=r"cannot prepare .*bad\.onnx"):
        prepare(bad)
    assert not (tmp_path / "bad.ort").exists() and list(tmp_path.iterdir()) == [bad]
    with pytest.raises(PrepareError, match="cannot read"):
        prepare(tmp_path / "missing.onnx")
    with pytest.raises(PrepareError, match="overwrite its source"):
        prepare(bad, out=bad)
