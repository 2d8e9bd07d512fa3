"""Test images: deterministic photo-like synthetic pictures, real sample photos, and encoded corpora.

Used to calibrate the int8 model and to give load tests request bodies of realistic size and decode cost.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720), (320, 240), (1920, 1080))
DEFAULT_FORMATS: tuple[str, ...] = ("jpeg", "png", "webp")
# Real photographs shipped inside installed packages (matplotlib's sample data); no downloads.
_SAMPLE_PHOTO_FILES = ("grace_hopper.jpg",)
_SYNTHETIC_SEEDS = (1, 2)
_SKIES = np.array(
    [[[60, 110, 190], [170, 205, 240]], [[70, 60, 120], [240, 150, 90]], [[120, 125, 135], [200, 200, 205]]]
)
_GROUNDS = np.array([[[90, 120, 60], [40, 70, 25]], [[140, 110, 80], [80, 55, 35]], [[130, 130, 130], [70, 70, 75]]])


def synthetic_photo(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic RGB picture with the statistics of a photo: sky, horizon, shapes, texture, noise.

    Flat colours would compress to almost nothing and decode instantly; this has smooth gradients,
    edges and fine grain so JPEG/PNG/WebP sizes and decode times resemble those of real photos.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    horizon = rng.uniform(0.35, 0.65)

    # Plausible palettes (clear, dusk, overcast sky; grass, soil, pavement) jittered per picture.
    sky_top, sky_bottom = _SKIES[int(rng.integers(len(_SKIES)))] + rng.normal(0, 12, (2, 3))
    ground_far, ground_near = _GROUNDS[int(rng.integers(len(_GROUNDS)))] + rng.normal(0, 12, (2, 3))
    sky = sky_top + (sky_bottom - sky_top) * (ys / horizon)
    ground = ground_far + (ground_near - ground_far) * ((ys - horizon) / (1.0 - horizon))
    img = np.where(ys < horizon, sky, ground) * np.ones((1, width, 1), dtype=np.float32)

    # Clouds on the sky and texture on the ground: multi-octave value noise, cheap to upscale.
    clouds = _value_noise(rng, width, height, octaves=(4, 8, 16))
    texture = _value_noise(rng, width, height, octaves=(16, 48, 128))
    img += np.where(ys < horizon, 40.0 * clouds, 35.0 * texture)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

    # Objects: shaded shapes with hard edges, like buildings, trees and things in the foreground.
    draw = ImageDraw.Draw(canvas)
    scale = min(width, height)
    for _ in range(int(rng.integers(6, 14))):
        cx, cy = rng.uniform(0, width), rng.uniform(horizon * height * 0.8, height)
        size = rng.uniform(0.05, 0.3) * scale
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        box = (cx - size, cy - size * rng.uniform(0.5, 2.0), cx + size, cy + size * 0.3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=max(1, scale // 300))
        else:
            points = [(cx + size * np.cos(a), cy + size * np.sin(a)) for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
            draw.polygon(points, fill=colour)
    # Lenses are not perfectly sharp; a slight blur turns aliased edges into photographic ones.
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=max(0.6, scale / 900)))

    pixels = np.asarray(canvas, dtype=np.float32)
    shading = 0.85 + 0.3 * _value_noise(rng, width, height, octaves=(2, 3))  # uneven light
    detail = 14.0 * _value_noise(rng, width, height, octaves=(96, 256))  # surface texture everywhere
    grain = 3.0 * rng.standard_normal(pixels.shape, dtype=np.float32)  # sensor noise
    out = np.clip(pixels * shading + detail + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def _value_noise(rng: np.random.Generator, width: int, height: int, octaves: tuple[int, ...]) -> np.ndarray:
    """Smooth noise in [-1, 1] of shape (height, width, 1): random grids upscaled bicubically and summed."""
    total = np.zeros((height, width), dtype=np.float32)
    weight = 0.0
    for i, cells in enumerate(octaves):
        grid_w = max(2, int(cells * width / max(width, height)) + 1)
        grid_h = max(2, int(cells * height / max(width, height)) + 1)
        grid = rng.uniform(0.0, 255.0, (grid_h, grid_w)).astype(np.uint8)
        layer = Image.fromarray(grid, "L").resize((width, height), Image.Resampling.BICUBIC)
        amplitude = 0.5**i
        total += amplitude * (np.asarray(layer, dtype=np.float32) / 127.5 - 1.0)
        weight += amplitude
    return (total / weight)[..., None]


def sample_photos() -> list[Image.Image]:
    """Real photographs shipped with matplotlib (its mpl-data/sample_data), as RGB images."""
    import matplotlib

    data_dir = pathlib.Path(matplotlib.get_data_path()) / "sample_data"
    photos = []
    for name in _SAMPLE_PHOTO_FILES:
        with Image.open(data_dir / name) as image:
            photos.append(image.convert("RGB"))
    return photos


def encode(image: Image.Image, fmt: str, quality: int = 85) -> bytes:
    """Encode `image` as "jpeg", "png" or "webp" bytes (quality applies to the lossy formats)."""
    fmt = fmt.lower()
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unsupported image format {fmt!r}; expected one of {sorted(CONTENT_TYPES)}")
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    elif fmt == "png":
        image.save(buffer, "PNG")
    else:
        image.save(buffer, "WEBP", quality=quality, method=4)
    return buffer.getvalue()


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale `image` to cover width x height, then centre-crop: how a camera frame would look."""
    scale = max(width / image.width, height / image.height)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.LANCZOS,
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def photo_corpus(
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> list[tuple[str, str, bytes]]:
    """Request bodies as (name, content_type, body): real sample photos and synthetic ones, per size and format.

    Deterministic: the same arguments give the same bytes (for the same Pillow build).
    """
    sources: list[tuple[str, Image.Image | None]] = [
        (pathlib.Path(name).stem, photo) for name, photo in zip(_SAMPLE_PHOTO_FILES, sample_photos(), strict=True)
    ]
    sources += [(f"synthetic-{seed}", None) for seed in _SYNTHETIC_SEEDS]
    corpus = []
    for width, height in sizes:
        for stem, photo in sources:
            if photo is None:
                image = synthetic_photo(width, height, seed=int(stem.rsplit("-", 1)[1]))
            else:
                image = fit(photo, width, height)
            for fmt in formats:
                name = f"{stem}-{width}x{height}.{fmt}"
                corpus.append((name, CONTENT_TYPES[fmt.lower()], encode(image, fmt)))
    return corpus
