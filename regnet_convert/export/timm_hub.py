"""Export for timm-hub: NOT YET WRITTEN (scaffold to be filled in)."""

from __future__ import annotations

from pathlib import Path

import torch

from regnet.metadata import WeightsMetadata
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    raise InputError(path, "export --to timm-hub is not written yet")


TARGET = Target(
    "timm-hub",
    'a folder for timm.create_model("local-dir:" + OUTPUT, pretrained=True)',
    "RGB",
    write,
    files=("config.json", "model.safetensors"),
)
