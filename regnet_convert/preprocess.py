"""Test-time preprocessing exactly as the reference numbers were measured (OpenCV decode and resize).

Both presets decode with OpenCV (BGR, 3 channels, EXIF orientation applied: `cv2.imdecode` and
`cv2.imread` agree on this), resize the short side to 256 with OpenCV's fixed-point bilinear
(INTER_LINEAR on uint8, no antialiasing) and crop the centre 224x224. They differ in rounding:

- pycls: long side = floor(long / short * 256); crop origin = ceil((size - 224) / 2);
- mmcls: long side = int(256 * long / short); crop origin = round((size - 224) / 2), halves to even.

Normalisation happens later, on the batch (`normalize`), so workers ship uint8 crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

PRESETS = ("mmcls", "pycls")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"

cv2.setNumThreads(1)  # one image per call, parallelism comes from DataLoader workers


class ImageDecodeError(ValueError):
    """An image file OpenCV cannot decode completely."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def resized_size(h: int, w: int, short: int, preset: str) -> tuple[int, int]:
    """(new_h, new_w) with the short side scaled to `short`, in the preset's own arithmetic."""
    if preset == "pycls":
        return (math.floor(h / w * short), short) if w < h else (short, math.floor(w / h * short))
    if preset == "mmcls":
        return (int(short * h / w), short) if w < h else (short, int(short * w / h))
    raise ValueError(f"unknown preprocessing preset {preset!r}; choose from {', '.join(PRESETS)}")


def crop_origin(h: int, w: int, crop: int, preset: str) -> tuple[int, int]:
    """(y, x) of the top-left corner of the centre crop."""
    if preset == "pycls":
        return math.ceil((h - crop) / 2), math.ceil((w - crop) / 2)
    if preset == "mmcls":
        return round((h - crop) / 2), round((w - crop) / 2)  # Python 3 round: halves to even
    raise ValueError(f"unknown preprocessing preset {preset!r}; choose from {', '.join(PRESETS)}")


def decode_bgr(path: str | Path) -> np.ndarray:
    """uint8 HxWx3 BGR, as `cv2.imread(path, cv2.IMREAD_COLOR)` gives; truncated JPEGs are an error."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read ({exc.strerror or exc})") from None
    if not raw:
        raise ImageDecodeError(path, "empty file")
    if raw.startswith(_JPEG_START) and not raw[-64:].rstrip(b"\x00\r\n ").endswith(_JPEG_END):
        raise ImageDecodeError(path, "truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(path, "not a decodable image")
    return image


def center_crop(image: np.ndarray, resize: int = 256, crop: int = 224, preset: str = "mmcls") -> np.ndarray:
    """Resize the short side to `resize` (unless it already is) and cut the centre `crop` x `crop`."""
    h, w = image.shape[:2]
    if min(h, w) != resize:
        h, w = resized_size(h, w, resize, preset)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if h < crop or w < crop:
        raise ValueError(f"a {h}x{w} image cannot be centre-cropped to {crop}x{crop}")
    y, x = crop_origin(h, w, crop, preset)
    return image[y : y + crop, x : x + crop]  # a view: `to_chw_tensor` makes the one copy


def load_crop(path: str | Path, resize: int = 256, crop: int = 224, preset: str = "mmcls") -> np.ndarray:
    """Decode + resize + centre crop: the uint8 crop x crop x 3 BGR network input (a view of the resized image)."""
    return center_crop(decode_bgr(path), resize, crop, preset)


def to_chw_tensor(crop: np.ndarray, channel_order: str = "BGR") -> torch.Tensor:
    """A uint8 CHW tensor in the network's channel order (the crop is BGR)."""
    if channel_order not in ("BGR", "RGB"):
        raise ValueError(f"unknown channel order {channel_order!r}")
    chw = crop.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw[::-1] if channel_order == "RGB" else chw))


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 NCHW: (x / 255 - mean) / std, with mean and std on a 0..1 scale."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float() / 255 - mean_t) / std_t
