"""The reference preprocessing pipelines: pycls 0.1.1's own test loader, and mmclassification 0.25's own test
pipeline (`mmcls_oracle`: the bundled RegNet config's `data.test.pipeline` run by mmcls's `Compose`)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from mmcls_oracle import mmcls_crop, mmcls_input
from pycls.core.config import reset_cfg
from pycls.datasets import imagenet as pycls_imagenet
from pycls.datasets import transforms as pycls_transforms
from pycls.datasets.imagenet import ImageNet

PYCLS_MEAN, PYCLS_STD = pycls_imagenet._MEAN, pycls_imagenet._SD  # pycls's own: BGR order, 0..1 scale
PYCLS_CLASS = "n00000000"  # the one class folder of `pycls_val_set`


def reference_crop(path: Path, preset: str, size: int = 256, crop: int = 224) -> np.ndarray:
    """The oracle's HWC BGR crop before normalisation.

    pycls: its `ImageNet.__getitem__`'s imread and float32 `astype`, then its own `transforms.scale` and
    `transforms.center_crop` (float32); mmcls: its test pipeline's LoadImageFromFile, Resize, CenterCrop (uint8).
    """
    if preset == "pycls":
        im = cv2.imread(str(path)).astype(np.float32, copy=False)
        return pycls_transforms.center_crop(crop, pycls_transforms.scale(size, im))
    return mmcls_crop(path, size, crop)


def pycls_test_input(im: np.ndarray) -> np.ndarray:
    """pycls's own `ImageNet._prepare_im`, test branch, on an HWC float32 image: its float32 CHW network input."""
    reset_cfg()  # pycls's test pipeline at its defaults (TEST.IM_SIZE 256, TRAIN.IM_SIZE 224)
    loader = ImageNet.__new__(ImageNet)  # the method needs only the split, not a dataset folder
    loader._split = "val"
    return loader._prepare_im(im)


def reference_input(path: Path, preset: str) -> np.ndarray:
    """The float32 CHW network input each reference feeds (BGR, normalised its own way)."""
    if preset == "pycls":
        return pycls_test_input(cv2.imread(str(path)).astype(np.float32, copy=False))
    return mmcls_input(path)


def pycls_val_set(paths: list[Path], root: Path) -> tuple[ImageNet, list[int]]:
    """pycls's own ImageNet val dataset over `paths` (linked into one class folder), and each path's index in it.

    Its items are exactly what pycls's test loop feeds the network: `__getitem__` end to end.
    """
    reset_cfg()
    folder = root / "val" / PYCLS_CLASS
    folder.mkdir(parents=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    dataset = ImageNet(str(root), "val")
    position = {os.path.basename(item["im_path"]): i for i, item in enumerate(dataset._imdb)}
    return dataset, [position[path.name] for path in paths]
