"""timm's and torchvision's RegNet layouts: a converted safetensors file with their tensor names, RGB input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

import regnet
from regnet.metadata import WeightsMetadata
from regnet_convert.export.target import Target, Writer


def _layout_writer(layout: str) -> Writer:
    def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
        regnet.save(path, state, replace(metadata, layout=layout))

    return write


TIMM = Target(
    "timm",
    "a .safetensors file: timm.create_model(NAME).load_state_dict(load_file(OUTPUT), strict=True)",
    "RGB",
    _layout_writer("timm"),
    "timm",
)
TORCHVISION = Target(
    "torchvision",
    "a .safetensors file for torchvision.models.RegNet(BlockParams(...)) built from its architecture;\n"
    "the zoo builders regnet_x_800mf ... load it too, except regnet_x_400mf, regnet_y_800mf\n"
    "and regnet_y_8gf, whose widths are not pycls's",
    "RGB",
    _layout_writer("torchvision"),
    "torchvision",
)
