"""Preprocessing: our uint8 crops equal a direct OpenCV transcription of each reference pipeline, pixel for pixel."""

from __future__ import annotations

import pickle
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from images import common_size_photos, photo_set, photograph, sized_images, synthetic, variant_images, write_image
from opencv_reference import reference_crop

from regnet_convert.preprocess import (
    IMAGE_EXTENSIONS,
    PRESETS,
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
    (256, 256), (256, 341), (341, 256), (256, 2000), (2000, 256), (3000, 256),  # short side exactly 256
    (100, 150), (150, 100), (223, 300), (300, 223), (64, 64), (17, 40),  # short side below the crop
    (257, 383), (333, 500), (375, 500), (500, 333), (500, 375), (511, 257), (1001, 667),  # odd and usual
    (260, 3000), (3000, 260), (230, 1800), (1800, 230), (2000, 257),  # extreme aspect ratios
    (224, 224), (225, 225), (257, 257), (225, 226), (226, 225),  # square and nearly
]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def photos(folder) -> list[Path]:
    return common_size_photos(folder / "photos") + photo_set(folder / "cuts", 40, short_256=True)


@pytest.fixture(scope="module")
def image_files(folder, photos) -> list[Path]:
    return photos + sized_images(folder / "sized", SIZES) + variant_images(folder / "variants")


@pytest.fixture(scope="module")
def named(image_files) -> dict[str, Path]:
    return {path.name: path for path in image_files}


@pytest.mark.parametrize("preset", PRESETS)
def test_crops_equal_the_reference_pixel_for_pixel(image_files, preset):
    assert len(image_files) > 100
    different = [
        p.name for p in image_files if not np.array_equal(load_crop(p, preset=preset), reference_crop(p, preset))
    ]
    assert different == []


def test_crops_are_uint8_bgr_of_the_crop_size(image_files):
    for path in image_files[:5]:
        crop = load_crop(path)
        assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8


def test_decode_equals_imread(image_files):
    for path in image_files:
        image = decode_bgr(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, path.name
        assert np.array_equal(image, cv2.imread(str(path), cv2.IMREAD_COLOR)), path.name


def test_every_image_extension_is_covered(image_files):
    assert {p.suffix.lower() for p in image_files} == set(IMAGE_EXTENSIONS)


EXIF_TURNS = {  # EXIF orientation: how the stored pixels are to be shown
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a),
}


def test_exif_orientation_is_applied(folder, named):
    """The same JPEG data, tagged, decodes to the untagged picture turned (exactly: turning is lossless)."""
    upright = decode_bgr(write_image(folder / "exif" / "upright.jpg", photograph("chelsea"), size=(451, 300)))
    for orientation, turn in EXIF_TURNS.items():
        assert np.array_equal(decode_bgr(named[f"exif{orientation}.jpg"]), turn(upright)), orientation
    upright = write_image(folder / "exif" / "upright.tif", photograph("chelsea"), size=(451, 300))
    turned = write_image(folder / "exif" / "exif6.tif", photograph("chelsea"), size=(451, 300), orientation=6)
    # OpenCV 5.0.0's imread fails on this file (orientations 5 to 8 of a TIFF); imdecode and decode_bgr turn it
    assert np.array_equal(decode_bgr(turned), np.rot90(decode_bgr(upright), -1))


def test_small_images_are_upscaled(named):
    for name in ("synthetic_100x150.jpg", "synthetic_17x40.jpg", "synthetic_300x223.jpg"):
        assert min(decode_bgr(named[name]).shape[:2]) < 224 and load_crop(named[name]).shape == (224, 224, 3)


def test_float_bilinear_resize_is_not_the_reference(named):
    """A resize in floating point (torch) misses OpenCV's fixed-point INTER_LINEAR: the parity test would see it."""
    path = named["astronaut_500x375.jpg"]
    image = decode_bgr(path)
    h, w = resized_size(*image.shape[:2], 256, "mmcls")
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(tensor, size=(h, w), mode="bilinear", align_corners=False)
    floated = resized.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()
    y, x = crop_origin(h, w, 224, "mmcls")
    differ = (floated[y : y + 224, x : x + 224] != reference_crop(path, "mmcls")).any(axis=2).mean()
    assert differ > 0.05


def test_presets_differ_in_crop_rounding(named):
    assert resized_size(375, 500, 256, "pycls") == resized_size(375, 500, 256, "mmcls") == (256, 341)
    assert crop_origin(256, 341, 224, "pycls") == (16, 59)  # (341 - 224) / 2 = 58.5: ceil
    assert crop_origin(256, 341, 224, "mmcls") == (16, 58)  # 58.5: half to even
    assert crop_origin(343, 256, 224, "mmcls") == crop_origin(343, 256, 224, "pycls") == (60, 16)  # 59.5: both up
    path = named["astronaut_500x375.jpg"]
    pycls, mmcls = load_crop(path, preset="pycls"), load_crop(path, preset="mmcls")
    assert not np.array_equal(pycls, mmcls)
    assert np.array_equal(pycls[:, :-1], mmcls[:, 1:])  # the same picture, one column apart


def test_long_side_formulas_agree_at_256_but_not_at_every_size():
    """h / w * 256 and 256 * h / w round alike (256 is a power of two); at 224 or 232 they need not."""
    for short in range(1, 400):
        for long in range(short, 3 * short + 1, 1 + short // 100):
            assert resized_size(long, short, 256, "pycls") == resized_size(long, short, 256, "mmcls")
            assert resized_size(short, long, 256, "pycls") == resized_size(short, long, 256, "mmcls")
    assert resized_size(61, 28, 224, "pycls") == (487, 224)  # 61 / 28 * 224 = 487.99999999999994
    assert resized_size(61, 28, 224, "mmcls") == (488, 224)
    assert resized_size(29, 62, 232, "pycls") == (232, 495)
    assert resized_size(29, 62, 232, "mmcls") == (232, 496)


def test_a_non_default_resize_keeps_each_presets_formula(tmp_path):
    path = write_image(tmp_path / "narrow.jpg", synthetic(62, 29))
    crops = {preset: load_crop(path, resize=232, preset=preset) for preset in PRESETS}
    for preset, crop in crops.items():
        assert np.array_equal(crop, reference_crop(path, preset, size=232)), preset
    assert not np.array_equal(crops["pycls"], crops["mmcls"])


def test_crop_larger_than_the_resized_image_is_an_error(named):
    with pytest.raises(ValueError, match="cannot be centre-cropped to 288x288"):
        center_crop(np.zeros((256, 300, 3), np.uint8), resize=256, crop=288)
    with pytest.raises(ValueError, match="cannot be centre-cropped"):
        load_crop(named["synthetic_500x375.jpg"], resize=224, crop=240)


def test_unknown_preset_is_an_error(named):
    with pytest.raises(ValueError, match="unknown preprocessing preset 'timm'"):
        load_crop(named["synthetic_256x256.jpg"], preset="timm")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    signature, header = b"\x89PNG\r\n\x1a\n", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_undecodable_files_raise_an_error_naming_the_file(tmp_path, photos, named):
    jpeg, progressive = photos[0].read_bytes(), named["progressive.jpg"].read_bytes()
    png = write_image(tmp_path / "good.png", photograph("rocket")).read_bytes()
    cases = {
        "random.jpg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "nearly_complete.jpg": jpeg[:-10],
        "no_end_marker.jpg": jpeg[:-2],
        "truncated_progressive.jpg": progressive[: len(progressive) * 3 // 4],
        "truncated.png": png[: len(png) // 2],
        "huge.png": png_header_only(200_000, 200_000),
        "text.jpg": b"not an image\n",
        "empty.jpg": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageDecodeError, match=re.escape(name)) as caught:
            decode_bgr(tmp_path / name)
        assert "\n" not in str(caught.value)
    for missing in (tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(ImageDecodeError, match=re.escape(str(missing))):
            decode_bgr(missing)


def test_bytes_after_the_end_of_a_jpeg_are_ignored(tmp_path, photos):
    """As by both references: cameras append data after the end-of-image marker."""
    jpeg = photos[1].read_bytes()
    for name, tail in {
        "zeros.jpg": bytes(1000),
        "one.jpg": b"\n",
        "junk.jpg": b"\xff\xda\x00\x08" + b"\xff" * 99,
    }.items():
        path = tmp_path / name
        path.write_bytes(jpeg + tail)
        assert np.array_equal(decode_bgr(path), cv2.imread(str(path), cv2.IMREAD_COLOR)), name


def test_decode_error_is_one_line_and_survives_pickling():
    error = ImageDecodeError(Path("val/n01440764/x.JPEG"), "truncated JPEG")
    assert str(error) == "val/n01440764/x.JPEG: truncated JPEG"
    assert str(pickle.loads(pickle.dumps(error))) == str(error) and isinstance(error, ValueError)


def test_channel_order():
    crop = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)  # B, G, R per pixel
    bgr, rgb = to_chw_tensor(crop, "BGR"), to_chw_tensor(crop, "RGB")
    assert bgr.dtype == torch.uint8 and bgr.shape == (3, 2, 2) and bgr.is_contiguous() and rgb.is_contiguous()
    assert bgr[:, 1, 0].tolist() == [6, 7, 8] and rgb[:, 1, 0].tolist() == [8, 7, 6]
    with pytest.raises(ValueError, match="channel order"):
        to_chw_tensor(crop, "rgb")


def test_normalize_is_pycls_color_norm():
    """Bit for bit pycls's float32 `im / 255`, then `(im[c] - mean[c]) / std[c]` per channel."""
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 5, 7), dtype=np.uint8))
    mean, std = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)
    expected = batch.numpy().astype(np.float32) / 255
    for c in range(3):
        expected[:, c] = (expected[:, c] - mean[c]) / std[c]
    out = normalize(batch, mean, std)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 5, 7)
    assert np.array_equal(out.numpy(), expected)
    assert out[1, 2, 4, 6].item() == pytest.approx((int(batch[1, 2, 4, 6]) / 255 - 0.485) / 0.229, abs=1e-6)
