"""Preprocessing: our crops equal each reference's pixel for pixel, and our network input each one's bit for bit.

The pycls oracle is pycls 0.1.1's own code (its `ImageNet` dataset and transforms); the mmcls one is
mmclassification 0.25's own test pipeline (the bundled RegNet config's `data.test.pipeline`, `mmcls_oracle`).
"""

from __future__ import annotations

import pickle
import re
import struct
import zlib
from pathlib import Path

import cv2
import mmcls_oracle
import numpy as np
import pytest
import torch
from images import photograph, synthetic, write_image
from mmcls_oracle import Compose
from opencv_reference import PYCLS_MEAN, PYCLS_STD, pycls_test_input, pycls_val_set, reference_crop
from parity_images import parity_images
from pycls.datasets.transforms import color_norm

from regnet import preprocess as shared_preprocess
from regnet_convert.errors import InputError
from regnet_convert.validation.loader import CropSettings, ValidationImages, make_loader
from regnet_convert.validation.preprocess import (
    IMAGE_EXTENSIONS,
    PRESETS,
    RESIZE_DTYPES,
    ImageDecodeError,
    center_crop,
    crop_origin,
    decode_bgr,
    load_crop,
    normalize,
    resized_size,
    to_chw_tensor,
)


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> dict[str, Path]:
    return parity_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def image_files(named) -> list[Path]:
    return list(named.values())


@pytest.fixture(scope="module")
def photos(named) -> list[Path]:
    return [p for p in named.values() if p.parent.name in ("photos", "cuts")]


@pytest.fixture(scope="module")
def folder(named) -> Path:
    return next(iter(named.values())).parent.parent


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: float32 values bit for bit (0.0 is not -0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("preset", PRESETS)
def test_crops_equal_the_reference_pixel_for_pixel(image_files, preset):
    assert len(image_files) > 100
    different = [p.name for p in image_files if not same_bits(load_crop(p, preset=preset), reference_crop(p, preset))]
    assert different == []


def test_network_input_is_mmcls_own_bit_for_bit(image_files):
    """Our mmcls preset (crop, CHW, `normalize`) gives the very float32 tensors mmcls 0.25's test pipeline gives."""
    different = []
    for path in image_files:
        ours = normalize(to_chw_tensor(load_crop(path, preset="mmcls"))[None], PYCLS_MEAN, PYCLS_STD)[0].numpy()
        if not same_bits(ours, mmcls_oracle.mmcls_input(path)):
            different.append(path.name)
    assert len(image_files) > 100 and different == []


@pytest.mark.parametrize("channel_order", ["BGR", "RGB"])
def test_network_input_is_pycls_own_bit_for_bit(tmp_path, image_files, channel_order):
    """Our loader's batches, normalised, are the very float32 tensors pycls 0.1.1's `ImageNet[i]` returns.

    The RGB case goes through two worker processes (float32 crops through shared memory).
    """
    pycls_val, order = pycls_val_set(image_files, tmp_path)
    settings = CropSettings("pycls", channel_order=channel_order)
    samples = [(path, 0) for path in image_files]
    flip = slice(None, None, -1 if channel_order == "RGB" else 1)  # an RGB network's mean, std and channels
    workers = 2 if channel_order == "RGB" else 0
    ours = []
    for batch, _, _, _ in make_loader(samples, settings, batch_size=32, workers=workers, pin_memory=False):
        assert batch.dtype == torch.float32
        ours.extend(normalize(batch, PYCLS_MEAN[flip], PYCLS_STD[flip]).numpy())
    expected = [pycls_val[i][0][flip] for i in order]
    different = [p.name for p, x, y in zip(image_files, ours, expected, strict=True) if not same_bits(x, y)]
    assert len(ours) == len(image_files) and different == []


def test_crops_have_the_presets_dtype(image_files):
    for path in image_files[:5]:
        for preset in PRESETS:
            crop = load_crop(path, preset=preset)
            assert crop.shape == (224, 224, 3) and crop.dtype == RESIZE_DTYPES[preset]
    assert (RESIZE_DTYPES["mmcls"], RESIZE_DTYPES["pycls"]) == (np.uint8, np.float32)


def test_pycls_resizes_in_float32_not_uint8(named):
    """pycls converts imread's uint8 to float32 before resizing: no rounding, unlike OpenCV's uint8 resize."""
    path = named["astronaut_500x375.jpg"]
    exact = load_crop(path, preset="pycls")
    image = decode_bgr(path)
    resized = cv2.resize(image, resized_size(*image.shape[:2], 256, "pycls")[::-1], interpolation=cv2.INTER_LINEAR)
    y, x = crop_origin(*resized.shape[:2], 224, "pycls")
    uint8 = resized[y : y + 224, x : x + 224].astype(np.float32)
    assert (exact != np.round(exact)).mean() > 0.5  # fractions: nothing rounded
    assert (exact != uint8).mean() > 0.5 and np.abs(exact - uint8).max() < 1
    unresized = named["synthetic_2000x256.jpg"]  # no resize: the decoded integers, as float32
    assert same_bits(load_crop(unresized, preset="pycls"), load_crop(unresized, preset="mmcls").astype(np.float32))


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
    path = named["photo_0001.JPEG"]  # 256 high, 4k + 1 wide: not resized, crop origins one column apart
    assert decode_bgr(path).shape[0] == 256 and (decode_bgr(path).shape[1] - 224) % 4 == 1
    pycls, mmcls = load_crop(path, preset="pycls"), load_crop(path, preset="mmcls").astype(np.float32)
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
    assert str(pickle.loads(pickle.dumps(error))) == str(error) and isinstance(error, InputError)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_channel_order(dtype):
    crop = np.arange(2 * 2 * 3, dtype=dtype).reshape(2, 2, 3)  # B, G, R per pixel
    bgr, rgb = to_chw_tensor(crop, "BGR"), to_chw_tensor(crop, "RGB")
    assert bgr.numpy().dtype == rgb.numpy().dtype == dtype
    assert bgr.shape == (3, 2, 2) and bgr.is_contiguous() and rgb.is_contiguous()
    assert bgr[:, 1, 0].tolist() == [6, 7, 8] and rgb[:, 1, 0].tolist() == [8, 7, 6]
    with pytest.raises(ValueError, match="channel order"):
        to_chw_tensor(crop, "rgb")


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_normalize_is_pycls_color_norm(device):
    """float32 (pycls preset) crops: bit for bit pycls's float32 `im / 255.0` then its own `color_norm`."""
    rng = np.random.default_rng(0)
    batch = np.concatenate([rng.uniform(0, 255, (3, 3, 9, 11)), np.zeros((1, 3, 9, 11))]).astype(np.float32)
    given = batch.copy()
    out = normalize(torch.from_numpy(batch).to(device), PYCLS_MEAN, PYCLS_STD).cpu().numpy()
    expected = np.stack([color_norm(im / np.float32(255.0), PYCLS_MEAN, PYCLS_STD) for im in batch])
    assert out.dtype == np.float32 and same_bits(out, expected)
    assert same_bits(batch, given), "the input batch was modified"
    assert out[0, 2, 4, 6] == pytest.approx((float(batch[0, 2, 4, 6]) / 255 - 0.485) / 0.229, abs=1e-6)


@pytest.mark.parametrize("route", ["float32-division", "float64-multiply"])
@pytest.mark.parametrize("device", DEVICES)
def test_normalize_of_uint8_is_mmcls_normalize(device, route, monkeypatch):
    """uint8 (mmcls preset) crops: bit for bit the `Normalize` step of mmcls's own test pipeline, for every value
    0..255 in every channel (and a batch of 40 images, sliced in 16s), by the fast float32 route and by mmcv's
    literal float64 one (its fallback); pycls's order of operations is not."""
    if route == "float64-multiply":
        monkeypatch.setattr(shared_preprocess, "_float32_division_is_exact", lambda mean, std: False)
    values = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * 3)
    batch = np.concatenate([values[None], np.random.default_rng(0).integers(0, 256, (39, 3, 16, 16), np.uint8)])
    steps = [step for step in mmcls_oracle.bundled_test_pipeline() if step["type"] == "Normalize"]
    mmcls_normalize = Compose(steps)
    expected = np.stack([mmcls_normalize({"img": im.transpose(1, 2, 0).astype(np.float32)})["img"] for im in batch])
    expected = expected.transpose(0, 3, 1, 2)
    out = normalize(torch.from_numpy(batch).to(device), PYCLS_MEAN, PYCLS_STD).cpu().numpy()
    assert out.dtype == np.float32 and same_bits(out, expected)
    pycls_order = np.stack([color_norm(im.astype(np.float32) / 255.0, PYCLS_MEAN, PYCLS_STD) for im in batch])
    assert 0 < np.abs(pycls_order - expected).max() <= 4.8e-7  # last bits only (two float32 ulps at 2..4)


def test_pycls_test_input_is_its_loaders_item(tmp_path, named):
    """The unbound `_prepare_im` oracle is the dataset's `__getitem__` after imread and `astype`."""
    path = named["coffee_375x500.jpg"]
    dataset, (index,) = pycls_val_set([path], tmp_path)
    expected = pycls_test_input(cv2.imread(str(path)).astype(np.float32))
    assert same_bits(dataset[index][0], expected)


@pytest.mark.parametrize("preset", PRESETS)
def test_undecodable_image_placeholder_stacks_with_the_crops(tmp_path, named, preset):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(named["coffee_375x500.jpg"].read_bytes()[:2000])
    samples = [(named["coffee_375x500.jpg"], 3), (broken, 4)]
    images, _, _, errors = next(iter(make_loader(samples, CropSettings(preset), 2, 0, False)))
    assert images.dtype == {"mmcls": torch.uint8, "pycls": torch.float32}[preset] and images.shape[0] == 2
    assert not images[1].any() and errors[0] == "" and "broken.jpg: truncated JPEG" in errors[1]
    assert ValidationImages(samples, CropSettings(preset))[1][0].dtype == images.dtype
