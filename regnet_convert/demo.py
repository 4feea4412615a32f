"""`make demo`: the whole job on an embedded default, with no downloads and no ImageNet.

1. write a genuine pycls-format checkpoint of a RegNetX (RegNetX-200MF one block shorter) with random weights;
2. convert it with `regnet-convert pycls`;
3. generate a small image set whose class folders are the *unconverted* model's own predictions;
4. validate the converted file with `regnet-validate`: 100% top-1 means conversion and the
   input pipeline reproduced the original model exactly. The weights are random, so this says
   nothing about ImageNet accuracy: the file is no zoo model, so the report compares it with nothing.

Everything goes into a new (or empty) folder: the one named on the command line, else the first of `demo-output`,
`demo-output-2`, ... that does not exist; a named folder that holds anything is refused with one line (exit 2),
never cleared.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import regnet
from regnet.imagenet import wnids
from regnet.metadata import Preprocessing
from regnet.model import RegNet
from regnet_convert.cli import convert as cli_convert
from regnet_convert.cli import validate as cli_validate
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation.preprocess import load_crop, normalize, to_chw_tensor

# RegNetX-200MF's design point one block shorter: a RegNet no zoo model is, so the report compares the random
# weights with no published numbers (NO REFERENCE) by what the file holds, not by a flag
DESIGN = dataclasses.replace(regnet.ZOO["regnetx_200mf"], depth=12)
IMAGES = 48


def synthetic_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like picture: smooth colour gradients, a few shapes, sensor-like noise."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)], axis=-1)
    base += np.stack([np.cos(y * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)], axis=-1)
    pixels = ((base + 2) / 4 * 255 + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        box = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([box[0][0], box[1][0], box[0][1], box[1][1]], fill=colour)
    return image


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs of ImageNet-like sizes (short side 333..500)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        short, long = int(rng.integers(333, 501)), int(rng.integers(400, 640))
        size = (long, short) if i % 2 else (short, long)
        path = folder / f"demo_{i:05d}.JPEG"
        synthetic_photo(rng, *size).save(path, quality=90)
        paths.append(path)
    return paths


@torch.inference_mode()
def predictions(model: torch.nn.Module, images: list[Path]) -> list[int]:
    """The original model's top-1 class of each image, preprocessed as the seed table's numbers were."""
    pre = Preprocessing()
    batch = torch.stack([to_chw_tensor(load_crop(p), pre.channel_order) for p in images])
    return model(normalize(batch, pre.mean, pre.std)).argmax(1).tolist()


def claim(out: Path) -> str | None:
    """Create `out` for the demo, or say why not: an existing folder is used only when empty, never cleared (the
    demo deletes nothing it did not create)."""
    try:
        out.mkdir(parents=True)
        return None
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    if out.is_symlink() or not out.is_dir():
        return "exists and is not a folder; give a new folder for the demo"
    try:
        with os.scandir(out) as entries:
            empty = next(entries, None) is None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if empty else "already exists and is not empty (the demo deletes nothing); remove it or name another"


def run(out: Path) -> int:
    if problem := claim(out):
        print(f"error: {out}: {problem}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    original = RegNet(DESIGN.config()).init_weights().eval()
    for bn in (m for m in original.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    checkpoint = write_pycls_checkpoint(original, out / "RegNetX-demo.pyth", DESIGN)
    print(f"[demo] 1/4 wrote a pycls checkpoint with random weights: {checkpoint}")

    converted = out / "regnetx-demo.safetensors"
    print("[demo] 2/4 regnet-convert pycls", checkpoint, converted)
    cli_convert.main(["pycls", str(checkpoint), str(converted), "--verbose"], standalone_mode=False)
    cli_convert.main(["inspect", str(converted)], standalone_mode=False)

    staging = out / "generated"
    images = make_images(staging, IMAGES)
    val = out / "val"
    for path, label in zip(images, predictions(original, images), strict=True):
        (val / wnids()[label]).mkdir(parents=True, exist_ok=True)
        path.rename(val / wnids()[label] / path.name)
    staging.rmdir()
    print(f"[demo] 3/4 generated {IMAGES} JPEGs in {val}, filed under the original model's predicted classes")

    print("[demo] 4/4 regnet-validate --weights", converted, "--data", val)
    args = ["--weights", str(converted), "--data", str(val), "--workers", "2", "--json", str(out / "result.json")]
    try:
        cli_validate.main([*args, "--quiet"], standalone_mode=False)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def default_folder() -> Path:
    """`demo-output`, or the first of `demo-output-2`, `-3`, ... that does not exist yet: a second demo runs too."""
    candidates = (Path("demo-output" if n == 1 else f"demo-output-{n}") for n in range(1, 1000))
    return next((c for c in candidates if not os.path.lexists(c)), Path("demo-output"))


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else default_folder()))
