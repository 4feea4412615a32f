"""Known answers of the preprocessing steps, computed by the reference code itself, and how they are recorded.

The reference arithmetic is mmclassification 0.25's test pipeline on mmcv 1.7.2 and OpenCV 4.x (the mmcls preset)
and pycls 0.1.1's test loader (the pycls preset). `step_digests` runs each reference step by step on one image file;
`selfcheck_digests` runs the self-check's fixed inputs (`regnet_convert.validation.selfcheck`) through the same
reference steps. Recorded once with the pinned oracles; the tests compare both ours and the live oracles with the
records, so a release of OpenCV, numpy, torch or Pillow that moves any step fails with the step's name.

    .venv/bin/python tests/known_answers.py record   # rewrite tests/data/known_answers.json (review the diff!)
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
from mmcls_oracle import Compose, bundled_test_pipeline
from opencv_reference import PYCLS_MEAN, PYCLS_STD, pycls_test_input
from pycls.datasets import transforms as pycls_transforms

from regnet_convert.validation import selfcheck
from regnet_convert.validation.selfcheck import CROP, RESIZE, digest, pattern

RECORDS = Path(__file__).parent / "data" / "known_answers.json"
PACKAGES = ("opencv-python-headless", "numpy", "torch", "pillow", "mmcv", "mmcls", "pycls", "scikit-image")


def versions() -> dict[str, str]:
    """The versions of every package whose arithmetic (or test images) the records depend on."""
    return {name: metadata.version(name) for name in PACKAGES} | {"python": platform.python_version()}


def _mmcls(step_types: list[str]) -> Compose:
    """mmcls's own Compose over the bundled test pipeline's steps of those types, in its order."""
    return Compose([copy.deepcopy(s) for s in bundled_test_pipeline() if s["type"] in step_types])


def _mmcls_resize(image: np.ndarray) -> np.ndarray:
    return _mmcls(["Resize"])({"img": image})["img"]


def _mmcls_crop(image: np.ndarray) -> np.ndarray:
    return _mmcls(["CenterCrop"])({"img": image})["img"]


def _mmcls_input(image: np.ndarray) -> np.ndarray:
    return _mmcls(["Normalize", "ImageToTensor"])({"img": image})["img"].numpy()


def _pycls_input(chw: np.ndarray) -> np.ndarray:
    """pycls's `_prepare_im` after its crop: CHW, `/ 255.0`, then `color_norm` (here on a CHW float32 crop)."""
    return pycls_transforms.color_norm(chw / 255.0, PYCLS_MEAN, PYCLS_STD)


def step_digests(path: Path) -> dict:
    """The digest of every step of both references on one image file (decode is the same imread for both)."""
    decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
    load = Compose([{"type": "LoadImageFromFile"}])({"img_info": {"filename": str(path)}, "img_prefix": None})["img"]
    assert load.tobytes() == decoded.tobytes(), f"{path.name}: mmcv's decode differs from imread"
    mm_resized = _mmcls_resize(decoded)
    mm_crop = _mmcls_crop(mm_resized)
    py_resized = pycls_transforms.scale(RESIZE, decoded.astype(np.float32))
    py_crop = pycls_transforms.center_crop(CROP, py_resized)
    return {
        "file": hashlib.sha256(path.read_bytes()).hexdigest()[:32],
        "decode": digest(decoded),
        "mmcls": {
            "resize": digest(mm_resized),
            "crop": digest(mm_crop),
            "normalize": digest(_mmcls_input(mm_crop)),
        },
        "pycls": {
            "resize": digest(py_resized),
            "crop": digest(py_crop),
            "normalize": digest(pycls_test_input(decoded.astype(np.float32))),
        },
    }


def selfcheck_digests(preset: str) -> dict[str, str]:
    """The reference code's digest of each self-check step (the inputs `selfcheck.step_outputs` uses)."""
    raw = (Path(selfcheck.__file__).parent / selfcheck.IMAGE).read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / selfcheck.IMAGE
        image.write_bytes(raw)
        decoded = cv2.imread(str(image), cv2.IMREAD_COLOR)
    down, up = pattern((375, 500, 3), np.uint8, 1), pattern((150, 200, 3), np.uint8, 2)
    if preset == "mmcls":
        resized = [_mmcls_resize(down), _mmcls_resize(up)]
        crop = _mmcls_crop(pattern((256, 341, 3), np.uint8, 3))
        network_input = np.stack([_mmcls_input(pattern((CROP, CROP, 3), np.uint8, s)) for s in (4, 5)])
    else:
        resized = [pycls_transforms.scale(RESIZE, im.astype(np.float32)) for im in (down, up)]
        crop = pycls_transforms.center_crop(CROP, pattern((256, 341, 3), np.float32, 3))
        crops = [pattern((CROP, CROP, 3), np.float32, s).transpose(2, 0, 1) for s in (4, 5)]
        network_input = np.stack([_pycls_input(np.ascontiguousarray(c)) for c in crops])
    return {
        "decode": digest(decoded),
        "resize": digest(np.concatenate([r.ravel() for r in resized])),
        "crop": digest(crop),
        "normalize": digest(network_input),
    }


def load_records() -> dict:
    return json.loads(RECORDS.read_text())


def record(images: dict[str, Path]) -> None:
    """Write the records of the parity images and the self-check (run with the pinned oracles only)."""
    records = {
        "recorded_with": versions(),
        "selfcheck": {preset: selfcheck_digests(preset) for preset in ("mmcls", "pycls")},
        "images": {name: step_digests(path) for name, path in sorted(images.items())},
    }
    RECORDS.parent.mkdir(exist_ok=True)
    RECORDS.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    from parity_images import parity_images

    with tempfile.TemporaryDirectory() as tmp:
        record(parity_images(Path(tmp)))
    print(f"wrote {RECORDS}")
