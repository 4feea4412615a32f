"""Export for hf: NOT YET WRITTEN (scaffold to be filled in)."""

from __future__ import annotations

from pathlib import Path

import torch

from regnet.metadata import WeightsMetadata
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    raise InputError(path, "export --to hf is not written yet")


TARGET = Target(
    "hf",
    "a folder for transformers' RegNetForImageClassification.from_pretrained(OUTPUT)",
    "RGB",
    write,
    files=("config.json", "model.safetensors", "preprocessor_config.json"),
)
