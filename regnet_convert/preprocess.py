"""ImageNet test-time preprocessing, bit-exact with the pycls and mmclassification OpenCV pipelines.

Both decode with OpenCV in colour mode (uint8 HxWx3 BGR: grey expanded, alpha dropped, EXIF orientation
applied), resize the short side to 256 with `cv2.resize` INTER_LINEAR on the uint8 image (skipped when it
already is 256) and cut the centre 224x224. The presets differ only in their arithmetic:

- pycls: long side floor(long / short * 256), crop origin ceil((size - 224) / 2);
- mmcls: long side int(256 * long / short), crop origin round((size - 224) / 2), halves to even.

The long sides never differ for a short side of 256: scaling by a power of two is exact in binary floating
point, so both formulas round the same quotient. For other sizes they can (short 224: a 28x61 image becomes
224x487 in pycls, 224x488 in mmcls). The crop origins differ by one pixel when (size - 224) / 2 ends in .5
with an even floor, as for ImageNet's most common 500x375, resized to 341x256.

Normalisation happens later, on the batch (`normalize`), so that workers ship uint8 crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch

PRESETS = ("mmcls", "pycls")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # compare lower-cased

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_JPEG_WITHOUT_LENGTH = frozenset([0x00, 0x01, *range(0xD0, 0xD8)])  # stuffed 0xFF, TEM, RSTn


class ImageDecodeError(ValueError):
    """An image file that cannot be read or decoded completely; str() is one line naming the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(str(path), problem)  # both in args, so that the error survives pickling
        self.path, self.problem = str(path), problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {preset!r}; choose from {', '.join(PRESETS)}")


def resized_size(h: int, w: int, short: int, preset: str) -> tuple[int, int]:
    """(new_h, new_w) with the short side scaled to `short`, in the preset's own floating-point arithmetic."""
    _check_preset(preset)
    if preset == "pycls":
        return (math.floor(h / w * short), short) if w < h else (short, math.floor(w / h * short))
    return (int(short * h / w), short) if w < h else (short, int(short * w / h))


def crop_origin(h: int, w: int, crop: int, preset: str) -> tuple[int, int]:
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


def decode_bgr(path: str | Path) -> np.ndarray:
    """uint8 HxWx3 BGR, as pycls's `cv2.imread(path, cv2.IMREAD_COLOR)` gives; ImageDecodeError when impossible.

    Decodes the file's bytes with `cv2.imdecode`, as mmcls does: reading them ourselves lets us check that a JPEG
    is complete, and works with any path. In OpenCV 5.0 imdecode and imread give identical pixels for JPEG, PNG,
    WebP, BMP and TIFF, EXIF orientation applied by both. They differ only where imread goes wrong: it returns a
    truncated JPEG padded with grey (imdecode returns None; we raise, on any OpenCV), and it fails on a TIFF whose
    EXIF orientation is 5 to 8 (imdecode returns the rotated image, so do we).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read the file ({error.strerror or error})") from None
    if not raw:
        raise ImageDecodeError(path, "empty file")
    if raw.startswith(_JPEG_START) and not _jpeg_is_complete(raw):
        raise ImageDecodeError(path, "truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # e.g. a header announcing more pixels than OpenCV accepts
        raise ImageDecodeError(path, f"OpenCV refuses it ({error.err})") from None
    if image is None:
        raise ImageDecodeError(path, "not an image OpenCV can decode (corrupt, truncated or unknown format)")
    return image


@cache
def _opencv_single_threaded() -> None:
    """Run OpenCV on one thread in this process, once, on first use.

    Threads buy nothing here: the output is about 256 pixels a side (a 4000x3000 to 341x256 resize takes 0.3 ms
    on one thread, a little more on two), while DataLoader workers each starting a pool of one thread per core
    oversubscribe the CPU, and OpenCV's pool is the usual suspect in hangs after fork. Lazily, so that importing
    this module leaves OpenCV alone.
    """
    cv2.setNumThreads(1)


def center_crop(image: np.ndarray, resize: int = 256, crop: int = 224, preset: str = "mmcls") -> np.ndarray:
    """Resize the short side to `resize` (unless it already is) and cut the centre crop x crop.

    Returns a view into the resized image: `to_chw_tensor` makes the one copy the hot path needs.
    """
    _check_preset(preset)
    h, w = image.shape[:2]
    if min(h, w) != resize:
        h, w = resized_size(h, w, resize, preset)
        _opencv_single_threaded()
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if h < crop or w < crop:
        raise ValueError(f"a {h}x{w} image (after resizing to {resize}) cannot be centre-cropped to {crop}x{crop}")
    y, x = crop_origin(h, w, crop, preset)
    return image[y : y + crop, x : x + crop]


def load_crop(path: str | Path, resize: int = 256, crop: int = 224, preset: str = "mmcls") -> np.ndarray:
    """Decode, resize and centre-crop: the uint8 crop x crop x 3 BGR network input (a view, see `center_crop`)."""
    return center_crop(decode_bgr(path), resize, crop, preset)


def to_chw_tensor(crop: np.ndarray, channel_order: str = "BGR") -> torch.Tensor:
    """A uint8 CHW tensor of an HWC BGR crop, its channels reversed when the network takes RGB."""
    if channel_order not in ("BGR", "RGB"):
        raise ValueError(f"unknown channel order {channel_order!r}; choose BGR or RGB")
    chw = crop.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw[::-1] if channel_order == "RGB" else chw))


def normalize(batch_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 NCHW (x / 255 - mean) / std, on the batch's device; mean and std on a 0..1 scale, in its channel order.

    The same float32 operations as pycls's `color_norm`, so the result is bit-identical to it.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch_uint8.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch_uint8.device).view(1, -1, 1, 1)
    return (batch_uint8.float() / 255 - mean_t) / std_t
