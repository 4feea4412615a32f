"""The reference preprocessing pipelines, written straight from their description with OpenCV."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

PYCLS_MEAN, PYCLS_STD = [0.406, 0.456, 0.485], [0.225, 0.224, 0.229]  # BGR order, 0..1 scale
MMCLS_MEAN, MMCLS_STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]  # BGR order, 0..255 scale


def reference_crop(path: Path, preset: str) -> np.ndarray:
    """The reference pipelines, written straight from their description (pycls: imread; mmcls: imdecode)."""
    if preset == "pycls":
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    else:
        im = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    h, w = im.shape[:2]
    if not ((w <= h and w == 256) or (h <= w and h == 256)):
        if preset == "pycls":
            new_w, new_h = (256, math.floor(h / w * 256)) if w < h else (math.floor(w / h * 256), 256)
        else:
            new_w, new_h = (256, int(256 * h / w)) if w < h else (int(256 * w / h), 256)
        im = cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    h, w = im.shape[:2]
    if preset == "pycls":
        y, x = math.ceil((h - 224) / 2), math.ceil((w - 224) / 2)
    else:
        y, x = round((h - 224) / 2), round((w - 224) / 2)
    return im[y : y + 224, x : x + 224]


def reference_input(path: Path, preset: str) -> np.ndarray:
    """The float32 CHW network input each reference feeds (BGR, normalised its own way)."""
    im = reference_crop(path, preset).astype(np.float32)
    if preset == "pycls":
        im = (im / 255 - np.array(PYCLS_MEAN, np.float32)) / np.array(PYCLS_STD, np.float32)
    else:
        im = (im - np.array(MMCLS_MEAN, np.float32)) / np.array(MMCLS_STD, np.float32)
    return np.ascontiguousarray(im.transpose(2, 0, 1))
