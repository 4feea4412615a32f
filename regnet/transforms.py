"""The network input of one image, as `regnet-validate` makes it: `regnet.transforms(model)(image)`.

Bit-exact with the validator for image files and their bytes (decoded by OpenCV, as the reference numbers were):
decode, resize the short side, centre crop, channels in the model's order, normalise. An array is taken as given
(uint8 HxWx3, its channel order stated), so it matches the validator only if it was decoded the same way.
OpenCV is imported on the first image, not with `regnet`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from regnet import preprocess
from regnet.metadata import CHANNEL_ORDERS, ChannelOrder, Preprocessing, WeightsMetadata
from regnet.model import RegNet
from regnet.preprocess import PRESETS, Preset
from regnet.weights import read_metadata

ImageInput = str | os.PathLike | bytes | np.ndarray
Source = RegNet | WeightsMetadata | Preprocessing | str | os.PathLike


@dataclass(frozen=True)
class Transform:
    """Image -> float32 CHW network input for a model whose preprocessing is `preprocessing`, in `preset`'s
    arithmetic (mmcls: uint8 resize, the seed table's; pycls: float32 resize, pycls's own numbers)."""

    preprocessing: Preprocessing
    preset: Preset = "mmcls"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preprocessing preset {self.preset!r}; choose from {', '.join(PRESETS)}")

    def __call__(self, image: ImageInput, order: ChannelOrder | None = None) -> torch.Tensor:
        """The normalised 3 x crop x crop input of one image: a file's path, its bytes, or a uint8 HxWx3 array
        whose channel `order` ("RGB" from Pillow, "BGR" from OpenCV) must be given."""
        return self.normalize(self.crop(image, order)[None])[0]

    def batch(self, images: Sequence[ImageInput], order: ChannelOrder | None = None) -> torch.Tensor:
        """The normalised N x 3 x crop x crop input of several images (see `__call__`)."""
        return self.normalize(torch.stack([self.crop(image, order) for image in images]))

    def crop(self, image: ImageInput, order: ChannelOrder | None = None) -> torch.Tensor:
        """The CHW centre crop before normalisation, channels in the model's order: uint8 (mmcls) or float32
        (pycls). `regnet.preprocess.ImageDecodeError` (a ValueError) names a file that cannot be decoded."""
        pre = self.preprocessing
        crop = preprocess.center_crop(self.decode(image, order), pre.resize, pre.crop, self.preset)
        return preprocess.to_chw_tensor(crop, pre.channel_order)

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """float32 NCHW network input of a batch of `crop`s (on their device), in the preset's arithmetic."""
        return preprocess.normalize(crops, self.preprocessing.mean, self.preprocessing.std)

    @staticmethod
    def decode(image: ImageInput, order: ChannelOrder | None = None) -> np.ndarray:
        """uint8 HxWx3 BGR pixels of a path, bytes or array (every image checked against the pixel budget)."""
        if isinstance(image, np.ndarray):
            return _bgr_array(image, order)
        if order is not None:
            raise ValueError("order= is for arrays; a file's channel order is its decoder's")
        if isinstance(image, bytes | bytearray | memoryview):
            return preprocess.decode_bytes(bytes(image), "image bytes")
        if isinstance(image, str | os.PathLike):
            return preprocess.decode_bgr(Path(image))
        raise TypeError(f"an image is a path, bytes or a uint8 HxWx3 array, not {type(image).__name__}")


def _bgr_array(image: np.ndarray, order: ChannelOrder | None) -> np.ndarray:
    """A uint8 HxWx3 array in BGR order, checked like a decoded file."""
    if order not in CHANNEL_ORDERS:
        raise ValueError(
            "say which channel order the array is in: order='RGB' (Pillow, imageio, matplotlib) or 'BGR' (OpenCV)"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"an image array is uint8 HxWx3, not {image.dtype} of shape {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < 1 or height * width > preprocess.MAX_PIXELS:
        raise ValueError(f"a {width}x{height} image is outside 1 to {preprocess.MAX_PIXELS:,} pixels")
    if max(height, width) > preprocess.MAX_ASPECT_RATIO * min(height, width):
        raise ValueError(f"a {width}x{height} image has an aspect ratio over {preprocess.MAX_ASPECT_RATIO}:1")
    return np.ascontiguousarray(image[..., ::-1] if order == "RGB" else image)


def transforms(source: Source, preset: Preset = "mmcls") -> Transform:
    """The preprocessing of a model: `regnet.load`'s model, its metadata, a `Preprocessing`, or a converted file's
    path (only its header is read). `preset="pycls"` gives pycls's own arithmetic (its published numbers)."""
    if isinstance(source, RegNet):
        if source.metadata is None:
            raise ValueError("the model has no metadata (regnet.load gives it); pass a Preprocessing instead")
        source = source.metadata
    if isinstance(source, str | os.PathLike):
        source = read_metadata(os.fspath(source))
    if isinstance(source, WeightsMetadata):
        source = source.preprocessing
    if not isinstance(source, Preprocessing):
        raise TypeError(f"transforms() takes a model, its metadata or a file, not {type(source).__name__}")
    return Transform(source, preset)
