"""Test images: real photographs (scikit-image's bundled samples) and synthetic ones, written to disk."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as samples

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


@cache
def photograph(name: str) -> np.ndarray:
    """A real RGB photograph shipped inside scikit-image (no download)."""
    return getattr(samples, name)()


def write_image(
    path: Path,
    rgb: np.ndarray,
    size: tuple[int, int] | None = None,
    mode: str = "RGB",
    quality: int = 90,
    orientation: int | None = None,
) -> Path:
    """Save `rgb` (resized to (width, height) with Pillow when given) as JPEG or PNG in a colour `mode`."""
    image = Image.fromarray(rgb)
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict = {}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        options["quality"] = quality
        if orientation is not None:
            exif = image.getexif()
            exif[0x0112] = orientation
            options["exif"] = exif
    image.save(path, **options)
    return path


def synthetic(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: a picture where resampling errors show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [np.sin(x / rng.uniform(3, 30) + y / rng.uniform(3, 30) + c) for c in range(3)]
    pixels = (np.stack(channels, -1) + 1) * 110 + rng.normal(0, 12, (height, width, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def photo_set(folder: Path, count: int, short_256: bool = False) -> list[Path]:
    """`count` JPEGs cut from the photographs at ImageNet-like sizes (short side 240..500, both orientations).

    With `short_256` every other image has a short side of exactly 256 (no resize) and a long side where
    pycls's and mmcls's crop origins differ (long - 224 odd, its floor half even).
    """
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        photo = photograph(PHOTOS[i % len(PHOTOS)])
        h, w = photo.shape[:2]
        top, left = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
        piece = photo[top : top + int(h * 0.75), left : left + int(w * 0.75)]
        short, long = int(rng.integers(240, 501)), int(rng.integers(300, 700))
        if short_256 and i % 2:
            short, long = 256, 4 * int(rng.integers(70, 150)) + 1
        size = (long, short) if i % 4 < 2 else (short, max(long, short))
        paths.append(write_image(folder / f"photo_{i:04d}.JPEG", piece, size=size))
    return paths
