"""Is this installation's preprocessing bit-exact with the reference arithmetic? A check before every validation.

The installed OpenCV, numpy and torch compute each preprocessing step; a new release can change the last bit of
one of them (OpenCV 5.1's `cv2.multiply` did, for mmcv's normalisation). Each step runs here on a fixed input and
its output's digest is compared with the known answer recorded from the reference arithmetic (mmcls 0.25 on
OpenCV 4.x for the mmcls preset, pycls 0.1.1 for pycls; `tests/test_known_answers.py` checks the records against
both, and ours against the records). The steps are checked apart, each from an input of its own (the decode step
from a JPEG shipped in the package, the others from arrays built with integer arithmetic), so a difference is
named where it arises. The whole check costs a few milliseconds.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch

from regnet_convert.errors import InputError
from regnet_convert.validation.preprocess import (
    RESIZE_DTYPES,
    Preset,
    crop_center,
    decode_bytes,
    normalize,
    resize_short,
    to_chw_tensor,
)

STEPS = ("decode", "resize", "crop", "normalize")
IMAGE = "selfcheck.jpg"  # 192x144, quality 90, 4:2:0: generated for this check (smooth gradients and noise)
IMAGE_SHA256 = "c2e53dd3e31732d7a13f17f3088c675917e67677fa2ebda94a91a2fc8e9b8439"
MEAN, STD = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)  # ImageNet's, BGR, 0..1 scale: both presets'
RESIZE, CROP = 256, 224

# digest of each step's output (`digest`), recorded from the reference arithmetic
KNOWN_ANSWERS: dict[str, dict[str, str]] = {
    "mmcls": {
        "decode": "4c12208e3076cbf5df406371c317e046",
        "resize": "814cadceb7e235d870ff5d071f60982a",
        "crop": "def4483404073033f5c3ecc26dc49746",
        "normalize": "ad1fb371ce9c5776a8bae78f5d59a2dc",
    },
    "pycls": {
        "decode": "4c12208e3076cbf5df406371c317e046",
        "resize": "2e6db9c6264b1e8286793337de651b59",
        "crop": "1a45af6701080c37700ade3daae65f7c",
        "normalize": "1b54f4a735e912cd785c00d077438439",
    },
}


@dataclass(frozen=True)
class PipelineCheck:
    """The outcome: whether every step of the preset is bit-exact, and which ones are not."""

    differs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def exact(self) -> bool:
        return not self.differs

    def to_json(self) -> dict:
        return {"exact": self.exact, "differs": list(self.differs)}


def digest(array: np.ndarray | torch.Tensor) -> str:
    """A short sha256 of an array's dtype, shape and bytes (float32 bit for bit: 0.0 is not -0.0)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()[:32]


def pattern(shape: tuple[int, ...], dtype: np.dtype | type, seed: int) -> np.ndarray:
    """A fixed array with texture at every scale, built with integer arithmetic only (identical on every machine).

    uint8: every value 0..255 appears; float32: quarters (k / 4 is exact), so a float32 step has fractions to round.
    """
    index = np.indices(shape, dtype=np.int64)
    y, x, c = index[-3], index[-2], index[-1]
    smooth = (x * 3 + y * 2 + c * 85 + seed * 17) % 256
    noise = (x * x * 7 + y * 13 + x * y * 5 + c * 31 + seed) % 61 - 30
    values = np.clip(smooth + noise, 0, 255)
    if np.dtype(dtype) == np.uint8:
        return values.astype(np.uint8)
    return ((values * 4 + (x + y) % 4) / 4).astype(np.float32)


def step_outputs(preset: Preset, device: torch.device | str = "cpu") -> dict[str, str]:
    """The digest of each step's output for `preset`, computed by this installation."""
    try:
        raw = resources.files(__package__).joinpath(IMAGE).read_bytes()
    except OSError as error:
        raise InputError(f"the self-check image {IMAGE}", f"cannot be read ({error.strerror or error}); reinstall "
                         "regnet-convert") from None  # fmt: skip
    if hashlib.sha256(raw).hexdigest() != IMAGE_SHA256:
        raise InputError(f"the self-check image {IMAGE}", "is damaged (sha256 differs); reinstall regnet-convert")
    dtype = RESIZE_DTYPES[preset]
    down = resize_short(pattern((375, 500, 3), np.uint8, 1), RESIZE, preset)  # ImageNet's most common size
    up = resize_short(pattern((150, 200, 3), np.uint8, 2), RESIZE, preset)  # short side below the crop
    crop = crop_center(pattern((256, 341, 3), dtype, 3), CROP, preset)  # 341: the presets' origins differ
    crops = torch.stack([to_chw_tensor(pattern((CROP, CROP, 3), dtype, seed)) for seed in (4, 5)])
    network_input = normalize(crops.to(device), MEAN, STD)
    return {
        "decode": digest(decode_bytes(raw, IMAGE)),
        "resize": digest(np.concatenate([down.ravel(), up.ravel()])),
        "crop": digest(crop),
        "normalize": digest(network_input),
    }


def check(preset: Preset, device: torch.device | str = "cpu") -> PipelineCheck:
    """Compare this installation's steps for `preset` with the known answers; `differs` names the steps that are not
    bit-exact, in pipeline order."""
    outputs = step_outputs(preset, device)
    return PipelineCheck(tuple(step for step in STEPS if outputs[step] != KNOWN_ANSWERS[preset][step]))


def announce(outcome: PipelineCheck) -> None:
    """One line on stderr before the run: its numbers cannot be compared with the published ones."""
    steps = ", ".join(outcome.differs)
    print(
        f"note: this installation computes {steps} differently from the reference arithmetic (OpenCV, numpy or "
        "torch version); the run is not bit-exact and its verdict will be NOT COMPARABLE",
        file=sys.stderr,
    )
