"""The validator's preprocessing: the shared arithmetic of `regnet.preprocess` (see its docstring), with OpenCV
imported up front and an image that cannot be decoded reported as one of the tools' input errors.

Normalisation happens later, on the batch (`normalize`), so that workers ship the crops as they are: uint8 for
mmcls, float32 for pycls.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from regnet import preprocess as _shared
from regnet.preprocess import (
    IMAGE_EXTENSIONS,
    MAX_ASPECT_RATIO,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    OPENCV_ENVIRONMENT,
    PRESETS,
    RESIZE_DTYPES,
    Preset,
    arithmetic,
    crop_center,
    crop_origin,
    in_resize_dtype,
    normalize,
    resize_short,
    resized_size,
    to_chw_tensor,
)
from regnet_convert.errors import InputError

for _name, _value in OPENCV_ENVIRONMENT.items():  # before OpenCV's first import, which reads them
    os.environ.setdefault(_name, _value)

import cv2  # noqa: E402,F401  # imported when the validator is (its workers fork with it loaded)
import numpy as np  # noqa: E402

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT_RATIO",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "PRESETS",
    "RESIZE_DTYPES",
    "ImageDecodeError",
    "Preset",
    "arithmetic",
    "center_crop",
    "crop_center",
    "crop_origin",
    "decode_bgr",
    "decode_bytes",
    "in_resize_dtype",
    "load_crop",
    "normalize",
    "resize_short",
    "resized_size",
    "to_chw_tensor",
]

P = ParamSpec("P")
R = TypeVar("R")


class ImageDecodeError(InputError):
    """An image file that cannot be read or decoded completely; str() is one line naming the file."""


def _reported(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, its `regnet.preprocess.ImageDecodeError` raised as the tools' `ImageDecodeError` (an InputError)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except _shared.ImageDecodeError as error:
            raise ImageDecodeError(error.path, error.problem) from None

    return wrapper


decode_bgr = _reported(_shared.decode_bgr)
decode_bytes = _reported(_shared.decode_bytes)
center_crop = _shared.center_crop


def load_crop(path: str | Path, resize: int = 256, crop: int = 224, preset: Preset = "mmcls") -> np.ndarray:
    """Decode, resize and centre-crop: the crop x crop x 3 BGR network input before normalisation (uint8 for mmcls,
    float32 for pycls); ImageDecodeError naming the file when it cannot be decoded."""
    return center_crop(decode_bgr(path), resize, crop, preset)
