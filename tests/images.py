"""Test images written to disk: real photographs (scikit-image's bundled samples) and synthetic pictures."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as samples

# photographs shipped inside the scikit-image wheel: loading them needs no download
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
COMMON_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (640, 480))  # ImageNet's usual (w, h)
EXIF_ORIENTATION = 0x0112


@cache
def photograph(name: str) -> np.ndarray:
    """A real RGB photograph from scikit-image."""
    return getattr(samples, name)()


def synthetic(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise, RGB: a picture where resampling errors show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [np.sin(x / rng.uniform(3, 30) + y / rng.uniform(3, 30) + c) for c in range(3)]
    pixels = (np.stack(channels, -1) + 1) * 110 + rng.normal(0, 12, (height, width, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def write_image(
    path: Path,
    rgb: np.ndarray,
    size: tuple[int, int] | None = None,
    mode: str = "RGB",
    quality: int = 90,
    orientation: int | None = None,
    **options,
) -> Path:
    """Save `rgb` (resized to (width, height) with Pillow when given) in the colour `mode` and the suffix's format.

    `orientation` writes an EXIF orientation tag; further `options` go to Pillow's `save`.
    """
    image = Image.fromarray(rgb)
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    image = image.convert(mode)
    if path.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        options["quality"] = quality
    if orientation is not None:
        exif = image.getexif()
        exif[EXIF_ORIENTATION] = orientation
        options["exif"] = exif
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def sized_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """A synthetic JPEG of each (width, height)."""
    return [write_image(folder / f"synthetic_{w}x{h}.jpg", synthetic(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]


def common_size_photos(folder: Path) -> list[Path]:
    """Each photograph as a JPEG at its own size and at ImageNet's usual sizes."""
    paths = []
    for i, name in enumerate(PHOTOS):
        paths.append(write_image(folder / f"{name}.jpg", photograph(name)))
        for w, h in COMMON_SIZES[i % 2 :: 2]:
            paths.append(write_image(folder / f"{name}_{w}x{h}.jpg", photograph(name), size=(w, h)))
    return paths


def variant_images(folder: Path) -> list[Path]:
    """Colour modes, formats and EXIF orientations OpenCV must turn into the same 3-channel BGR as imread."""
    coffee, chelsea = photograph("coffee"), photograph("chelsea")
    rgba = np.dstack([synthetic(300, 420, seed=7), np.linspace(0, 255, 300 * 420).reshape(420, 300).astype(np.uint8)])
    paths = [
        write_image(folder / "grey.jpg", photograph("astronaut"), size=(380, 300), mode="L"),
        write_image(folder / "cmyk.jpg", coffee, size=(500, 333), mode="CMYK"),
        write_image(folder / "progressive.jpg", coffee, size=(333, 500), progressive=True),
        write_image(folder / "upper_case.JPEG", chelsea, size=(375, 500)),
        write_image(folder / "alpha.png", rgba, mode="RGBA"),
        write_image(folder / "grey.png", chelsea, size=(300, 260), mode="L"),
        write_image(folder / "palette.png", chelsea, size=(260, 390), mode="P"),
        write_image(folder / "photo.webp", coffee, size=(420, 280)),
        write_image(folder / "photo.bmp", chelsea, size=(257, 383)),
        write_image(folder / "photo.tif", coffee, size=(300, 450)),
        write_image(folder / "photo.tiff", chelsea, size=(450, 300), compression="tiff_lzw"),
        write_image(folder / "exif6.png", chelsea, size=(451, 300), orientation=6),
    ]
    for orientation in (2, 3, 5, 6, 7, 8):
        paths.append(write_image(folder / f"exif{orientation}.jpg", chelsea, size=(451, 300), orientation=orientation))
    return paths


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
