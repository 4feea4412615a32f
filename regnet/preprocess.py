"""ImageNet test-time preprocessing, bit-exact with the pycls 0.1.1 and mmclassification OpenCV pipelines: the
arithmetic `regnet.transforms` and `regnet-validate` share. OpenCV and Pillow are imported on first use.

Both decode with OpenCV in colour mode (uint8 HxWx3 BGR: grey expanded, alpha dropped, EXIF orientation
applied), resize the short side to 256 with `cv2.resize` INTER_LINEAR (skipped when it already is 256) and
cut the centre 224x224. The presets differ in the resize's arithmetic and in their rounding:

- pycls: resizes a float32 image (its loader converts imread's uint8 first), so the crop is float32 and
  unrounded; long side floor(long / short * 256), crop origin ceil((size - 224) / 2);
- mmcls: resizes the uint8 image (OpenCV's fixed-point INTER_LINEAR, rounded to uint8); long side
  int(256 * long / short), crop origin round((size - 224) / 2), halves to even.

The long sides never differ for a short side of 256: scaling by a power of two is exact in binary floating
point, so both formulas round the same quotient. For other sizes they can (short 224: a 28x61 image becomes
224x487 in pycls, 224x488 in mmcls). The crop origins differ by one pixel when (size - 224) / 2 ends in .5
with an even floor, as for ImageNet's most common 500x375, resized to 341x256.

Normalisation happens later, on the batch (`normalize`), so that workers ship the crops as they are: uint8
for mmcls, float32 for pycls; `normalize` repeats each preset's arithmetic step for step (mmcv's for uint8).
"""

from __future__ import annotations

import functools
import io
import math
import os
import sys
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np
import torch

MAX_FILE_BYTES = 64 << 20  # ImageNet's largest validation JPEG is a few MB
MAX_PIXELS = 1 << 26  # 67 megapixels, 192 MiB decoded; ImageNet's largest image has about 20
MAX_ASPECT_RATIO = 64  # resized to a short side of 256, the long side stays under 16,384 pixels
OPENCV_ENVIRONMENT = {
    "OPENCV_IO_MAX_IMAGE_PIXELS": str(MAX_PIXELS),  # OpenCV's own guard, read at import
    "OPENCV_LOG_LEVEL": "SILENT",  # decoder warnings would bypass the callers' one-line errors
}

Preset = Literal["mmcls", "pycls"]
PRESETS: tuple[Preset, ...] = get_args(Preset)
# what each preset resizes and crops
RESIZE_DTYPES: dict[Preset, np.dtype[Any]] = {"mmcls": np.dtype(np.uint8), "pycls": np.dtype(np.float32)}
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # compare lower-cased

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_JPEG_WITHOUT_LENGTH = frozenset([0x00, 0x01, *range(0xD0, 0xD8)])  # stuffed 0xFF, TEM, RSTn


class ImageDecodeError(ValueError):
    """An image that cannot be read or decoded completely; str() is one line naming it (`NAME: PROBLEM`).

    `regnet_convert` reports it as one of its input errors (`regnet_convert.validation.preprocess`).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path, self.problem = str(path), " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.problem)


@cache
def opencv() -> ModuleType:
    """OpenCV, imported on first use (importing `regnet` leaves it alone), with its pixel guard and quiet log set
    when this is its first import."""
    if "cv2" not in sys.modules:
        for name, value in OPENCV_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    import cv2

    return cv2


def _check_preset(preset: str) -> None:
    as_preset(preset)


def as_preset(value: str) -> Preset:
    """`value` as a `Preset`; ValueError naming the choices when it is not one."""
    for preset in PRESETS:
        if value == preset:
            return preset
    raise ValueError(f"unknown preprocessing preset {value!r}; choose from {', '.join(PRESETS)}")


def arithmetic(preset: Preset) -> str:
    """What the preset's resize computes in, for reports: "float32 resize" (pycls) or "uint8 resize" (mmcls)."""
    _check_preset(preset)
    return f"{RESIZE_DTYPES[preset].name} resize"


def resized_size(h: int, w: int, short: int, preset: Preset) -> tuple[int, int]:
    """(new_h, new_w) with the short side scaled to `short`, in the preset's own floating-point arithmetic."""
    _check_preset(preset)
    if preset == "pycls":
        return (math.floor(h / w * short), short) if w < h else (short, math.floor(w / h * short))
    return (int(short * h / w), short) if w < h else (short, int(short * w / h))


def crop_origin(h: int, w: int, crop: int, preset: Preset) -> tuple[int, int]:
    """(y, x) of the top-left corner of the centre `crop` x `crop` in an h x w image."""
    _check_preset(preset)
    if preset == "pycls":
        return math.ceil((h - crop) / 2), math.ceil((w - crop) / 2)
    return round((h - crop) / 2), round((w - crop) / 2)  # Python 3 round: halves to even


def _jpeg_is_complete(raw: bytes) -> bool:
    """Whether a JPEG's marker stream reaches its end-of-image marker (bytes some cameras append after it are fine).

    Segments are skipped by their length, so an end marker inside one (an EXIF thumbnail's) does not count;
    entropy-coded data holds no end marker, since a 0xFF there is always followed by 0x00 or a restart marker.
    """
    if raw.endswith(_JPEG_END):
        return True  # nearly every file: no need to walk it
    position = len(_JPEG_START)
    while True:
        position = raw.find(b"\xff", position)
        while 0 <= position < len(raw) - 1 and raw[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position < 0 or position + 2 > len(raw):
            return False
        marker = raw[position + 1]
        if marker == _JPEG_END[1]:
            return True
        if marker in _JPEG_WITHOUT_LENGTH:
            position += 2
        elif position + 4 > len(raw):
            return False
        else:
            position += 2 + int.from_bytes(raw[position + 2 : position + 4], "big")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes; ImageDecodeError for a file over MAX_FILE_BYTES (or not a regular file)."""
    if not path.is_file():  # a FIFO would block the reader; a link to nothing or a link loop is no file either
        raise ImageDecodeError(path, "not a regular file" if os.path.lexists(path) else "no such file")
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ImageDecodeError(path, f"over {MAX_FILE_BYTES >> 20} MB, too large for a validation image")
    return raw


def _check_dimensions(path: str | Path, raw: bytes) -> None:
    """Refuse, from the header alone, images over the pixel budget or with an absurd aspect ratio.

    Pillow reads the size without decoding; a file whose header it cannot parse is no validation image (OpenCV's
    own pixel limit is set to the same budget as well).
    """
    from PIL import Image  # on first use: importing `regnet` leaves Pillow alone

    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(raw)) as image:
            warnings.simplefilter("ignore")
            width, height = image.size
    except Image.DecompressionBombError:
        raise ImageDecodeError(path, f"is over the budget of {MAX_PIXELS:,} pixels") from None
    except Exception:  # OpenCV reads formats Pillow does not (HDR, PFM, ...): none is a validation image
        raise ImageDecodeError(path, "not a JPEG, PNG, WebP, BMP or TIFF image whose size can be read") from None
    if width < 1 or height < 1:
        raise ImageDecodeError(path, f"has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(path, f"{width}x{height} pixels is over the budget of {MAX_PIXELS:,} pixels")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError(path, f"{width}x{height} has an aspect ratio over {MAX_ASPECT_RATIO}:1")


def decode_bgr(path: str | Path) -> np.ndarray:
    """uint8 HxWx3 BGR, as pycls's `cv2.imread(path, cv2.IMREAD_COLOR)` gives; ImageDecodeError when impossible.

    Decodes the file's bytes with `cv2.imdecode`, as mmcls does: reading them ourselves lets us check that a JPEG
    is complete, and works with any path. In OpenCV 5.0 imdecode and imread give identical pixels for JPEG, PNG,
    WebP, BMP and TIFF, EXIF orientation applied by both. They differ only where imread goes wrong: it returns a
    truncated JPEG padded with grey (imdecode returns None; we raise, on any OpenCV), and it fails on a TIFF whose
    EXIF orientation is 5 to 8 (imdecode returns the rotated image, so do we).
    """
    try:
        raw = _read_bounded(Path(path))
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read the file ({error.strerror or error})") from None
    return decode_bytes(raw, path)


def decode_bytes(raw: bytes, name: str | Path) -> np.ndarray:
    """uint8 HxWx3 BGR of an image file's bytes (the "decode" step); ImageDecodeError naming `name` when impossible."""
    if not raw:
        raise ImageDecodeError(name, "empty file")
    _check_dimensions(name, raw)
    if raw.startswith(_JPEG_START) and not _jpeg_is_complete(raw):
        raise ImageDecodeError(name, "truncated JPEG (no end-of-image marker)")
    cv2 = opencv()
    try:
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # e.g. a header announcing more pixels than OpenCV accepts
        raise ImageDecodeError(name, f"OpenCV refuses it ({error.err})") from None
    if image is None:
        raise ImageDecodeError(name, "not an image OpenCV can decode (corrupt, truncated or unknown format)")
    return image


@cache
def _opencv_single_threaded() -> None:
    """Run OpenCV on one thread in this process, once, on first use.

    Threads buy nothing here: the output is about 256 pixels a side (a 4000x3000 to 341x256 resize takes 0.3 ms
    on one thread, a little more on two), while DataLoader workers each starting a pool of one thread per core
    oversubscribe the CPU, and OpenCV's pool is the usual suspect in hangs after fork. Lazily, so that importing
    this module leaves OpenCV alone.
    """
    opencv().setNumThreads(1)


def in_resize_dtype(image: np.ndarray, preset: Preset) -> np.ndarray:
    """`image` as the preset resizes it: float32 for pycls (as its loader's `astype`), unchanged uint8 for mmcls."""
    return image.astype(RESIZE_DTYPES[preset], copy=False)


def resize_short(image: np.ndarray, resize: int = 256, preset: Preset = "mmcls") -> np.ndarray:
    """The "resize" step: the short side scaled to `resize` (unless it already is), in the preset's dtype.

    INTER_LINEAR on uint8 (OpenCV's fixed point, mmcls) or on float32 (pycls, unrounded). An image whose short side
    already is `resize` is returned as it is (uint8 even for pycls: `crop_center` converts only the crop, which gives
    the same values as converting the whole image first).
    """
    _check_preset(preset)
    h, w = image.shape[:2]
    if min(h, w) == resize:
        return image
    h, w = resized_size(h, w, resize, preset)
    _opencv_single_threaded()
    cv2 = opencv()
    return cv2.resize(in_resize_dtype(image, preset), (w, h), interpolation=cv2.INTER_LINEAR)


def crop_center(image: np.ndarray, crop: int = 224, preset: Preset = "mmcls") -> np.ndarray:
    """The "crop" step: the centre `crop` x `crop` of a resized image, at the preset's rounded origin, in its dtype.

    A view into `image` (`to_chw_tensor` makes the one copy the hot path needs), except where a dtype conversion
    is due (an unresized image in pycls's float32).
    """
    _check_preset(preset)
    h, w = image.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"a {h}x{w} image cannot be centre-cropped to {crop}x{crop}")
    y, x = crop_origin(h, w, crop, preset)
    return in_resize_dtype(image[y : y + crop, x : x + crop], preset)


def center_crop(image: np.ndarray, resize: int = 256, crop: int = 224, preset: Preset = "mmcls") -> np.ndarray:
    """Resize the short side to `resize` (unless it already is) and cut the centre crop x crop, in the preset's
    dtype (`RESIZE_DTYPES`): `resize_short`, then `crop_center`."""
    resized = resize_short(image, resize, preset)
    if min(resized.shape[:2]) < crop:
        h, w = resized.shape[:2]
        raise ValueError(f"a {h}x{w} image (after resizing to {resize}) cannot be centre-cropped to {crop}x{crop}")
    return crop_center(resized, crop, preset)


def load_crop(path: str | Path, resize: int = 256, crop: int = 224, preset: Preset = "mmcls") -> np.ndarray:
    """Decode, resize and centre-crop: the crop x crop x 3 BGR network input before normalisation.

    uint8 for mmcls, float32 for pycls (see `center_crop`).
    """
    return center_crop(decode_bgr(path), resize, crop, preset)


def to_chw_tensor(crop: np.ndarray, channel_order: str = "BGR") -> torch.Tensor:
    """A contiguous CHW tensor of an HWC BGR crop, of the crop's dtype, its channels reversed for an RGB network."""
    if channel_order not in ("BGR", "RGB"):
        raise ValueError(f"unknown channel order {channel_order!r}; choose BGR or RGB")
    chw = crop.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw[::-1] if channel_order == "RGB" else chw))


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 NCHW normalised input of a uint8 (mmcls) or float32 (pycls) batch, on its device, in the arithmetic
    of the preset whose crops have that dtype (`RESIZE_DTYPES`); mean and std on a 0..1 scale, its channel order.

    float32 (pycls): `(x / 255 - mean) / std`, the same three correctly rounded float32 operations as pycls's
    `im / 255.0` and `color_norm` (subtract, then divide, per channel): bit-identical to pycls's network input. The
    divisor 255 is a tensor on the batch's device because CUDA multiplies by the reciprocal of a Python-number
    divisor (not always the same bits). One new tensor (the rest in place): on a CPU a batch-sized allocation costs
    more than the arithmetic.

    uint8 (mmcls): mmcv's `imnormalize` on the 0..255 scale, as mmcls's `Normalize` calls it: mean and std rounded
    to float32 (its `np.array(..., np.float32)`), `x - mean` in float32, then times `1 / std` in float64, rounded to
    float32 (`cv2.multiply` by a float64 scalar). `(x / 255 - mean) / std` differs from it in the last bits of 63%
    of the 3 x 256 possible values (4.8e-7 at most, ImageNet's mean and std); `(x - mean) / std` in float32 agrees
    on every value tried, and costs a third of the float64 route, so it is used when it agrees on all 768 possible
    inputs for this mean and std (checked once per pair), else the float64 route runs. Bit-identical either way.
    """
    device = batch.device
    if batch.dtype == torch.uint8:
        mean_t = torch.tensor([255 * m for m in mean], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor([255 * s for s in std], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        if _float32_division_is_exact(tuple(mean), tuple(std)):
            return batch.to(torch.float32).sub_(mean_t).div_(std_t)
        return _mmcv_normalize(batch, mean_t, std_t)
    scale = torch.tensor(255.0, dtype=torch.float32, device=device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (batch / scale).sub_(mean_t).div_(std_t)


def _mmcv_normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """mmcv's arithmetic, literally: float32 `x - mean`, then times the float64 `1 / std`, rounded to float32."""
    inverse = 1 / std.double()
    x = batch.to(torch.float32).sub_(mean)
    for part in x.split(16):  # float64 in slices: a batch-sized float64 copy would double the memory
        part.copy_(part.double().mul_(inverse))
    return x


@functools.cache
def _float32_division_is_exact(mean: tuple[float, ...], std: tuple[float, ...]) -> bool:
    """Whether float32 `(x - mean) / std` gives mmcv's bits for every uint8 x and channel."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, len(mean), 256, 1).contiguous()
    mean_t = torch.tensor([255 * m for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor([255 * s for s in std], dtype=torch.float32).view(1, -1, 1, 1)
    return torch.equal(values.to(torch.float32).sub_(mean_t).div_(std_t), _mmcv_normalize(values, mean_t, std_t))
