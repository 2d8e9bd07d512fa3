"""Test images: synthetic photos are deterministic and photo-like; corpora are well-formed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from harness import images


def test_synthetic_photo_is_deterministic_per_seed():
    a = images.synthetic_photo(160, 120, seed=7)
    assert a.size == (160, 120) and a.mode == "RGB"
    assert a.tobytes() == images.synthetic_photo(160, 120, seed=7).tobytes()
    assert a.tobytes() != images.synthetic_photo(160, 120, seed=8).tobytes()


def test_synthetic_photo_has_photo_statistics():
    pixels = np.asarray(images.synthetic_photo(640, 480, seed=3), dtype=np.float32)
    assert pixels.std() > 25, "nearly flat image"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10_000, "too few distinct colours"
    # Edges: some large neighbour differences, but mostly smooth (photos are not noise).
    dx = np.abs(np.diff(pixels.mean(axis=2), axis=1))
    assert (dx > 40).mean() > 0.0005
    assert np.median(dx) < 8
    # JPEG at quality 85 should need a photo-like number of bits per pixel, not a flat image's.
    jpeg = images.encode(Image.fromarray(pixels.astype(np.uint8)), "jpeg")
    assert 0.5 < len(jpeg) * 8 / (640 * 480) < 6


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 300), (300, 7)])
def test_synthetic_photo_odd_sizes(width, height):
    assert images.synthetic_photo(width, height, seed=0).size == (width, height)


def test_synthetic_photo_rejects_empty_size():
    with pytest.raises(ValueError, match="positive"):
        images.synthetic_photo(0, 10, seed=0)


def test_sample_photos_are_real_photos():
    photos = images.sample_photos()
    assert photos
    for photo in photos:
        assert photo.mode == "RGB" and min(photo.size) >= 256


@pytest.mark.parametrize(("fmt", "magic"), [("jpeg", b"\xff\xd8\xff"), ("png", b"\x89PNG"), ("webp", b"RIFF")])
def test_encode_round_trips(fmt, magic):
    image = images.synthetic_photo(64, 48, seed=1)
    data = images.encode(image, fmt)
    assert data.startswith(magic)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format.lower() == fmt and decoded.size == (64, 48)
    if fmt == "png":
        assert decoded.convert("RGB").tobytes() == image.tobytes()


def test_encode_quality_changes_size():
    image = images.synthetic_photo(320, 240, seed=2)
    assert len(images.encode(image, "jpeg", quality=30)) < len(images.encode(image, "jpeg", quality=95))


def test_encode_rejects_unknown_format():
    with pytest.raises(ValueError, match="unsupported image format 'gif'"):
        images.encode(images.synthetic_photo(8, 8, seed=0), "gif")


def test_fit_covers_and_crops():
    photo = images.sample_photos()[0]
    assert images.fit(photo, 300, 100).size == (300, 100)
    assert images.fit(photo, 2000, 2000).size == (2000, 2000)


def test_photo_corpus_is_deterministic_and_well_formed():
    sizes = ((96, 64), (32, 48))
    corpus = images.photo_corpus(sizes=sizes, formats=("jpeg", "webp"))
    assert corpus == images.photo_corpus(sizes=sizes, formats=("jpeg", "webp"))
    names = [name for name, _, _ in corpus]
    assert len(names) == len(set(names)) == 2 * 2 * 3  # sizes x formats x (1 real + 2 synthetic)
    assert "grace_hopper-96x64.jpeg" in names and "synthetic-1-32x48.webp" in names
    for name, content_type, body in corpus:
        decoded = Image.open(io.BytesIO(body))
        assert content_type == f"image/{decoded.format.lower()}"
        assert f"{decoded.width}x{decoded.height}" in name


def test_default_corpus_covers_sizes_and_formats():
    corpus = images.photo_corpus(sizes=((640, 480),))
    assert {ct for _, ct, _ in corpus} == {"image/jpeg", "image/png", "image/webp"}
    assert images.DEFAULT_SIZES == ((640, 480), (1280, 720), (320, 240), (1920, 1080))
    real = next(body for name, ct, body in corpus if name.startswith("grace_hopper") and ct == "image/jpeg")
    assert 20_000 < len(real) < 200_000  # a real 640x480 photo at quality 85
