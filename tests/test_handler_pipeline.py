"""The pipeline's stages, each on its own: decode, preprocess, post-process."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from handler_fixtures import encoded, int8_model, jpeg, models_dir, photo, png_bomb  # noqa: F401
from PIL import Image

from harness.handler import pipeline
from harness.handler.errors import HandlerError
from harness.handler.pipeline import InputSpec

MAX_PIXELS = 40_000_000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def spec(layout: str = "NCHW", height: int = 224, width: int = 224, dtype: str = "float32") -> InputSpec:
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return InputSpec(
        layout=layout, height=height, width=width, channels=3, dtype=np.dtype(dtype),
        scale=(1 / (255 * std)).astype(np.float32), offset=(-mean / std).astype(np.float32),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_decode_each_supported_format(fmt: str, content_type: str) -> None:
    body = encoded(photo(320, 240), fmt)
    image = pipeline.decode(body, content_type, (224, 224), MAX_PIXELS)
    assert image.mode == "RGB"
    assert image.size == (320, 240)


def test_jpeg_draft_mode_decodes_at_reduced_scale_but_not_below_target() -> None:
    image = pipeline.decode(jpeg(1280, 960), "image/jpeg", (224, 224), MAX_PIXELS)
    # libjpeg scales by 1/2, 1/4, 1/8: the smallest that keeps both sides >= 224 is 1/4 -> 320x240.
    assert image.size == (320, 240)


def test_content_type_parameters_are_ignored_and_case_folded() -> None:
    assert pipeline.media_type("Image/JPEG; charset=binary") == "image/jpeg"


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "image/gif", "application/octet-stream"])
def test_unsupported_or_missing_content_type_is_415(content_type: str | None) -> None:
    with pytest.raises(HandlerError) as err:
        pipeline.media_type(content_type)
    assert err.value.status == 415
    assert err.value.code == "unsupported_media_type"


def test_png_sent_as_jpeg_is_refused() -> None:
    with pytest.raises(HandlerError) as err:
        pipeline.decode(encoded(photo(64, 64), "PNG"), "image/jpeg", (224, 224), MAX_PIXELS)
    assert err.value.code == "invalid_image"
    assert "JPEG" in err.value.message


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_jpeg_is_invalid_image(cut: float) -> None:
    body = jpeg(640, 480)
    with pytest.raises(HandlerError) as err:
        pipeline.decode(body[: int(len(body) * cut)], "image/jpeg", (224, 224), MAX_PIXELS)
    assert (err.value.status, err.value.code) == (400, "invalid_image")


def test_garbage_is_invalid_image() -> None:
    with pytest.raises(HandlerError) as err:
        pipeline.decode(b"not an image at all" * 10, "image/png", (224, 224), MAX_PIXELS)
    assert (err.value.status, err.value.code) == (400, "invalid_image")


def test_empty_body_is_refused() -> None:
    with pytest.raises(HandlerError) as err:
        pipeline.decode(b"", "image/png", (224, 224), MAX_PIXELS)
    assert err.value.code == "empty_body"


@pytest.mark.parametrize("dims", [(60_000, 60_000), (7_000, 7_000)])
def test_decompression_bomb_is_refused_before_decoding(dims: tuple[int, int]) -> None:
    body = png_bomb(*dims)
    assert len(body) < 200
    with pytest.raises(HandlerError) as err:
        pipeline.decode(body, "image/png", (224, 224), MAX_PIXELS)
    assert (err.value.status, err.value.code) == (422, "image_too_large")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    image = photo(100, 80).convert(mode)
    fmt, ct = ("JPEG", "image/jpeg") if mode in ("L", "CMYK") else ("PNG", "image/png")
    decoded = pipeline.decode(encoded(image, fmt), ct, (224, 224), MAX_PIXELS)
    assert decoded.mode == "RGB"


def test_preprocess_layouts_and_normalisation() -> None:
    image = Image.new("RGB", (300, 200), (255, 0, 128))
    nchw = pipeline.preprocess(image, spec("NCHW"))
    nhwc = pipeline.preprocess(image, spec("NHWC"))
    assert nchw.shape == (1, 3, 224, 224)
    assert nhwc.shape == (1, 224, 224, 3)
    assert nchw.dtype == np.float32 and nchw.flags.c_contiguous
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    np.testing.assert_allclose(nchw[0, :, 100, 100], expected, rtol=1e-5)
    np.testing.assert_allclose(nhwc[0, 100, 100, :], expected, rtol=1e-5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_preprocess_normalises_every_pixel(layout: str, dtype: str) -> None:
    # float32 inputs are normalised arithmetically, others through a lookup table: both as the formula.
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    tensor = pipeline.preprocess(image, spec(layout, dtype=dtype))
    assert tensor.dtype == np.dtype(dtype) and tensor.flags.c_contiguous
    pixels = np.asarray(image, dtype=np.float64)
    expected = (pixels / 255 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    got = tensor[0].transpose(1, 2, 0) if layout == "NCHW" else tensor[0]
    np.testing.assert_allclose(got.astype(np.float64), expected, atol=1e-5 if dtype == "float32" else 4e-3)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("dtype", "shift"), [("uint8", 0), ("int8", -128)])
def test_preprocess_gives_integer_inputs_the_pixels(layout: str, dtype: str, shift: int) -> None:
    # A uint8 input wants pixels (the model normalises in its graph, as the reference models do);
    # an int8 input wants them minus 128.
    rng = np.random.default_rng(8)
    pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    tensor = pipeline.preprocess(Image.fromarray(pixels), spec(layout, dtype=dtype))
    assert tensor.dtype == np.dtype(dtype) and tensor.flags.c_contiguous
    assert tensor.shape == ((1, 3, 224, 224) if layout == "NCHW" else (1, 224, 224, 3))
    got = tensor[0].transpose(1, 2, 0) if layout == "NCHW" else tensor[0]
    np.testing.assert_array_equal(got.astype(np.int16), pixels.astype(np.int16) + shift)


def test_preprocess_centre_crops_to_the_model_aspect() -> None:
    # Left third red, middle green, right third blue: a centre crop of a 3:1 image keeps only green.
    image = Image.new("RGB", (600, 200))
    image.paste((255, 0, 0), (0, 0, 200, 200))
    image.paste((0, 255, 0), (200, 0, 400, 200))
    image.paste((0, 0, 255), (400, 0, 600, 200))
    tensor = pipeline.preprocess(image, spec("NHWC", 32, 32))
    centre = tensor[0, :, 2:-2, :]
    green = (1.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    np.testing.assert_allclose(centre[..., 1], green, rtol=1e-4)


def test_postprocess_softmax_top_k_ordered() -> None:
    logits = np.array([0.0, 3.0, 1.0, 2.0, -1.0], dtype=np.float32)
    labels = ("a", "b", "c", "d", "e")
    top = pipeline.postprocess(logits, labels, 3)
    assert [p.label for p in top] == ["b", "d", "c"]
    assert [p.index for p in top] == [1, 3, 2]
    probs = np.exp(logits) / np.exp(logits).sum()
    assert top[0].score == pytest.approx(float(probs[1]), rel=1e-6)


def test_postprocess_k_larger_than_classes_and_missing_labels() -> None:
    top = pipeline.postprocess(np.array([1.0, 2.0], dtype=np.float32), (), 10)
    assert [p.label for p in top] == ["class-1", "class-0"]
    assert sum(p.score for p in top) == pytest.approx(1.0)


def test_near_unit_rescale_samples_pixels_and_large_reductions_average_them() -> None:
    checker = Image.fromarray(((np.indices((240, 240)).sum(axis=0) % 2) * 255).astype(np.uint8)).convert("RGB")
    near = pipeline.preprocess(checker, spec("NHWC"))  # 240 -> 224: within NEAREST_MAX_FACTOR
    levels = {(0 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (255 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]}
    values = np.unique(near[0, :, :, 0])
    assert all(min(abs(float(v) - level) for level in levels) < 1e-4 for v in values), values
    far = pipeline.preprocess(checker.resize((960, 960), Image.Resampling.NEAREST), spec("NHWC"))
    grey = (0.5 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert abs(float(far[0, :, :, 0].mean()) - grey) < 0.1  # a 4x reduction averages the checkerboard
    assert len(np.unique(far[0, :, :, 0].round(3))) > 2


def test_postprocess_lists_equal_scores_in_class_order() -> None:
    logits = np.array([5.0, 1.0, 5.0, 0.0, 5.0, 2.0, 5.0, 5.0], dtype=np.float32)
    top = pipeline.postprocess(logits, (), 4)
    assert [p.index for p in top] == [0, 2, 4, 6]
    assert len({p.score for p in top}) == 1


def test_decoded_bytes_are_taken_from_the_decode_budget_and_given_back() -> None:
    from harness.handler.admission import ByteBudget

    rgba = encoded(Image.new("RGBA", (1000, 1000), (1, 2, 3, 4)), "PNG")
    need = 1000 * 1000 * (4 + 4)  # RGBA, then its RGB conversion, four bytes a pixel each in Pillow
    budget = ByteBudget(need)
    assert pipeline.decode(rgba, "image/png", (224, 224), pipeline.DecodeLimits(10**7, budget)).mode == "RGB"
    assert budget.used == 0
    with pytest.raises(HandlerError) as err:  # more than the whole budget: the image itself is too large
        pipeline.decode(rgba, "image/png", (224, 224), pipeline.DecodeLimits(10**7, ByteBudget(need - 1)))
    assert (err.value.status, err.value.code) == (422, "image_too_large")
    assert budget.take(1)  # another decode holds a byte: this one must wait its turn
    with pytest.raises(HandlerError) as err:
        pipeline.decode(rgba, "image/png", (224, 224), pipeline.DecodeLimits(10**7, budget))
    assert (err.value.status, err.value.code, err.value.headers["Retry-After"]) == (503, "overloaded", "1")


def test_a_jpeg_s_pixel_limit_applies_after_its_draft_reduction() -> None:
    big = encoded(photo(2400, 1800), "JPEG", quality=80)  # 4.3 MP, decoded at 1/8: 300x225
    assert pipeline.decode(big, "image/jpeg", (224, 224), 100_000).size == (300, 225)
    with pytest.raises(HandlerError) as err:
        pipeline.decode(encoded(photo(2400, 1800), "PNG"), "image/png", (224, 224), 100_000)
    assert err.value.code == "image_too_large"


def test_the_decode_budget_is_held_while_the_decoded_image_lives() -> None:
    from harness.handler.admission import ByteBudget

    rgba = encoded(Image.new("RGBA", (1000, 1000), (1, 2, 3, 4)), "PNG")
    need = 1000 * 1000 * (4 + 4)
    budget = ByteBudget(need)
    with pipeline.decoded(rgba, "image/png", (224, 224), pipeline.DecodeLimits(10**7, budget)) as image:
        assert image.mode == "RGB" and budget.used == need
        pipeline.preprocess(image, spec())
    assert budget.used == 0
    with (
        pytest.raises(RuntimeError),
        pipeline.decoded(rgba, "image/png", (224, 224), pipeline.DecodeLimits(10**7, budget)),
    ):
        raise RuntimeError("preprocessing failed")
    assert budget.used == 0


def test_a_request_s_pipeline_holds_the_decode_budget_through_preprocess(
    int8_model: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.handler.admission import ByteBudget
    from harness.handler.app import StageTimes, run_pipeline
    from harness.handler.lifecycle import load_model
    from harness.model.store import ModelStore

    model, _cold = load_model(ModelStore(tmp_path / "cache"), str(int8_model), None, 1, "test")
    budget = ByteBudget(10**9)
    held_while_preprocessing: list[int] = []
    real_preprocess = pipeline.preprocess

    def preprocess(image: Image.Image, input_spec: InputSpec) -> np.ndarray:
        held_while_preprocessing.append(budget.used)
        return real_preprocess(image, input_spec)

    monkeypatch.setattr(pipeline, "preprocess", preprocess)
    body = encoded(photo(640, 480), "PNG")
    predictions = run_pipeline(model, body, "image/png", 3, pipeline.DecodeLimits(10**7, budget), StageTimes())
    assert len(predictions) == 3
    assert held_while_preprocessing == [640 * 480 * 4]  # the decoded RGB image's bytes, still accounted
    assert budget.used == 0


def test_only_a_progressive_jpeg_is_counted_for_scans() -> None:
    # A baseline JPEG whose comment holds the SOS marker's bytes a hundred times: one scan, accepted.
    image = photo(64, 64)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80, comment=b"\xff\xda" * 100)
    decoded = pipeline.decode(buffer.getvalue(), "image/jpeg", (224, 224), MAX_PIXELS)
    assert decoded.size == (64, 64)
