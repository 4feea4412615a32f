"""The reference preprocessing pipelines, written straight from their description with OpenCV."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

PYCLS_MEAN, PYCLS_STD = [0.406, 0.456, 0.485], [0.225, 0.224, 0.229]  # BGR order, 0..1 scale
MMCLS_MEAN, MMCLS_STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]  # BGR order, 0..255 scale


def reference_crop(path: Path, preset: str, size: int = 256, crop: int = 224) -> np.ndarray:
    """The oracle: each reference's steps as described (pycls: imread; mmcls: imdecode), written out plainly."""
    if preset == "pycls":
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    else:
        im = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    h, w = im.shape[:2]
    if not ((w <= h and w == size) or (h <= w and h == size)):
        if preset == "pycls":
            if w < h:
                new_w, new_h = size, math.floor(h / w * size)
            else:
                new_h, new_w = size, math.floor(w / h * size)
        else:
            if w < h:
                new_w, new_h = size, int(size * h / w)
            else:
                new_h, new_w = size, int(size * w / h)
        im = cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    h, w = im.shape[:2]
    if preset == "pycls":
        y, x = math.ceil((h - crop) / 2), math.ceil((w - crop) / 2)
    else:
        y, x = round((h - crop) / 2), round((w - crop) / 2)  # Python 3: an int, halves to even
    return im[y : y + crop, x : x + crop]


def reference_input(path: Path, preset: str) -> np.ndarray:
    """The float32 CHW network input each reference feeds (BGR, normalised its own way)."""
    im = reference_crop(path, preset).astype(np.float32)
    if preset == "pycls":
        im = (im / 255 - np.array(PYCLS_MEAN, np.float32)) / np.array(PYCLS_STD, np.float32)
    else:
        im = (im - np.array(MMCLS_MEAN, np.float32)) / np.array(MMCLS_STD, np.float32)
    return np.ascontiguousarray(im.transpose(2, 0, 1))
