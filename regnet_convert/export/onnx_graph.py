"""Export for onnx: NOT YET WRITTEN (scaffold to be filled in)."""

from __future__ import annotations

from pathlib import Path

import torch

from regnet.metadata import WeightsMetadata
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    raise InputError(path, "export --to onnx is not written yet")


TARGET = Target(
    "onnx",
    "one .onnx file, dynamic batch, for onnxruntime; its metadata_props say the channel order",
    None,
    write,
    files=(),
)
