"""Preprocessing parity: our uint8 crops equal the OpenCV reference pipelines pixel for pixel."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from images import PHOTOS, photo_set, photograph, synthetic, write_image
from opencv_reference import reference_crop

from regnet_convert.preprocess import (
    ImageDecodeError,
    center_crop,
    crop_origin,
    decode_bgr,
    load_crop,
    normalize,
    resized_size,
    to_chw_tensor,
)

SIZES = [  # (width, height)
    (256, 256), (256, 341), (341, 256), (256, 2000), (3000, 256),  # short side exactly 256
    (100, 150), (150, 100), (223, 300), (64, 64),  # smaller than the crop
    (257, 383), (333, 500), (375, 500), (500, 333), (511, 257), (500, 375), (1001, 667),  # odd and usual
    (260, 3000), (1800, 230), (2000, 257),  # extreme aspect ratios
    (224, 224), (225, 225), (257, 257), (225, 226),
]  # fmt: skip


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    files = []
    for i, (w, h) in enumerate(SIZES):
        files.append(write_image(folder / f"synthetic_{w}x{h}.jpg", synthetic(w, h, seed=i)))
    files.append(write_image(folder / "synthetic_341x256.png", synthetic(341, 256, seed=99)))
    rgba = np.dstack([synthetic(300, 420, seed=7), np.full((420, 300), 128, np.uint8)])
    files.append(write_image(folder / "alpha.png", rgba, mode="RGBA"))
    files.append(write_image(folder / "grey.jpg", photograph("astronaut"), size=(380, 300), mode="L"))
    files.append(write_image(folder / "cmyk.jpg", photograph("coffee"), size=(500, 333), mode="CMYK"))
    for orientation in (3, 6, 8):
        files.append(
            write_image(
                folder / f"exif{orientation}.jpg", photograph("chelsea"), size=(451, 300), orientation=orientation
            )
        )
    for name in PHOTOS:
        files.append(write_image(folder / f"{name}.jpg", photograph(name)))
    files += photo_set(folder / "photos", 40)
    return files


@pytest.mark.parametrize("preset", ["mmcls", "pycls"])
def test_crops_equal_opencv_reference_pixel_for_pixel(image_files, preset):
    identical = [np.array_equal(load_crop(path, preset=preset), reference_crop(path, preset)) for path in image_files]
    assert sum(identical) == len(image_files), [
        p.name for p, same in zip(image_files, identical, strict=True) if not same
    ]


def test_exif_orientation_is_applied_like_imread(image_files):
    rotated = next(p for p in image_files if p.name == "exif6.jpg")
    assert decode_bgr(rotated).shape == (451, 300, 3)  # stored 451 wide, shown 300 wide
    assert np.array_equal(decode_bgr(rotated), cv2.imread(str(rotated), cv2.IMREAD_COLOR))


def test_grey_and_cmyk_become_three_channels(image_files):
    for name in ("grey.jpg", "cmyk.jpg", "alpha.png"):
        path = next(p for p in image_files if p.name == name)
        assert decode_bgr(path).shape[2] == 3
        assert np.array_equal(decode_bgr(path), cv2.imread(str(path), cv2.IMREAD_COLOR))


def test_float_bilinear_resize_would_not_be_exact(image_files):
    """Why OpenCV is used: torch's float bilinear resize differs from INTER_LINEAR's fixed point."""
    path = next(p for p in image_files if p.name == "coffee.jpg")
    image = decode_bgr(path)
    h, w = resized_size(*image.shape[:2], 256, "mmcls")
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(tensor, size=(h, w), mode="bilinear", align_corners=False)
    floated = resized.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()
    y, x = crop_origin(h, w, 224, "mmcls")
    differ = (floated[y : y + 224, x : x + 224] != load_crop(path)).any(axis=2).mean()
    assert differ > 0.01


def test_presets_differ_only_in_crop_rounding():
    assert crop_origin(256, 341, 224, "pycls") == (16, 59)  # (341 - 224) / 2 = 58.5: ceil
    assert crop_origin(256, 341, 224, "mmcls") == (16, 58)  # half to even
    assert crop_origin(256, 343, 224, "mmcls") == (16, 60)  # 59.5 rounds up to even 60
    for h in range(40, 700, 3):
        for w in range(h, 3 * h, 7):
            assert resized_size(h, w, 256, "pycls") == resized_size(h, w, 256, "mmcls")


def test_presets_give_different_crops_where_rounding_differs(tmp_path):
    path = write_image(tmp_path / "wide.jpg", synthetic(341, 256))
    assert not np.array_equal(load_crop(path, preset="pycls"), load_crop(path, preset="mmcls"))
    assert np.array_equal(load_crop(path, preset="pycls")[:, :-1], load_crop(path, preset="mmcls")[:, 1:])


def test_crop_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="cannot be centre-cropped"):
        center_crop(np.zeros((256, 300, 3), np.uint8), resize=256, crop=288)


def test_undecodable_files_name_the_file(tmp_path):
    jpeg = write_image(tmp_path / "good.jpg", photograph("rocket")).read_bytes()
    cases = {
        "random.jpg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "empty.jpg": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageDecodeError, match=re.escape(name)):
            decode_bgr(tmp_path / name)
    with pytest.raises(ImageDecodeError, match=r"missing\.jpg"):
        decode_bgr(tmp_path / "missing.jpg")


def test_channel_order_and_normalisation():
    crop = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)  # B, G, R per pixel
    bgr, rgb = to_chw_tensor(crop, "BGR"), to_chw_tensor(crop, "RGB")
    assert bgr.dtype == torch.uint8 and bgr.shape == (3, 2, 2)
    assert torch.equal(rgb, bgr.flip(0)) and int(bgr[0, 0, 0]) == 0 and int(rgb[0, 0, 0]) == 2
    mean, std = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)
    out = normalize(bgr[None], mean, std)
    assert out.dtype == torch.float32
    assert out[0, 2, 1, 1].item() == pytest.approx((11 / 255 - 0.485) / 0.229, abs=1e-6)
