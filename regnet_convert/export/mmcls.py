"""Export for mmcls: NOT YET WRITTEN (scaffold to be filled in)."""

from __future__ import annotations

from pathlib import Path

import torch

from regnet.metadata import WeightsMetadata
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    raise InputError(path, "export --to mmcls is not written yet")


TARGET = Target(
    "mmcls",
    "a .pth checkpoint for mmclassification 0.25's RegNet classifier (RegNetX only), BGR",
    "BGR",
    write,
    files=(),
)
