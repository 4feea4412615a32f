"""The parity suite's images: photographs at ImageNet's usual sizes, cuts with a short side of 256, synthetic
pictures at awkward sizes, and every colour mode, format and EXIF orientation the decoder must handle."""

from __future__ import annotations

from pathlib import Path

from images import common_size_photos, photo_set, sized_images, variant_images

SIZES = [  # (width, height)
    (256, 256), (256, 341), (341, 256), (256, 2000), (2000, 256), (3000, 256),  # short side exactly 256
    (100, 150), (150, 100), (223, 300), (300, 223), (64, 64), (17, 40),  # short side below the crop
    (257, 383), (333, 500), (375, 500), (500, 333), (500, 375), (511, 257), (1001, 667),  # odd and usual
    (260, 3000), (3000, 260), (230, 1800), (1800, 230), (2000, 257),  # extreme aspect ratios
    (224, 224), (225, 225), (257, 257), (225, 226), (226, 225),  # square and nearly
]  # fmt: skip


def parity_images(folder: Path) -> dict[str, Path]:
    """Write the parity images into `folder`; name -> path, names unique."""
    paths = (
        common_size_photos(folder / "photos")
        + photo_set(folder / "cuts", 40, short_256=True)
        + sized_images(folder / "sized", SIZES)
        + variant_images(folder / "variants")
    )
    named = {path.name: path for path in paths}
    assert len(named) == len(paths), "parity image names must be unique"
    return named
