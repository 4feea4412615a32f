"""`regnet-convert export`: any converted file (or a pycls checkpoint) -> another library's layout, checked first.

Both targets take RGB input (the stem's channels are reversed when the source is BGR) and keep every other
tensor bit for bit. Before writing, the renamed tensors are mapped back to native names, loaded strictly into the
native model and run on a probe batch; the output is written atomically, never over the source.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args

import torch

from regnet.metadata import WeightsMetadata
from regnet.weights import LAYOUT_NAMES
from regnet_convert.conversion.atomic import check_output
from regnet_convert.conversion.convert import build_checked_model, load_any, reverse_channels, write_converted
from regnet_convert.errors import InputError

Target = Literal["timm", "torchvision"]
TARGETS: tuple[Target, ...] = get_args(Target)


def read_native(source: Path) -> tuple[dict[str, torch.Tensor], WeightsMetadata]:
    """Native-named tensors and metadata of a converted file (any layout) or a pycls checkpoint."""
    model, metadata = load_any(source)
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, metadata


def export(source: str | Path, output: str | Path, target: Target, force: bool = False) -> WeightsMetadata:
    """Write `source`'s weights in `target`'s layout, taking RGB input; returns the written metadata."""
    source = Path(source)
    check_output(output, force, inputs=[source])  # before Path(): a trailing "/" is refused
    output = Path(output)
    state, metadata = read_native(source)
    preprocessing = metadata.preprocessing
    if preprocessing.channel_order == "BGR":
        state, preprocessing = reverse_channels(state, preprocessing)
    metadata = replace(metadata, preprocessing=preprocessing, layout=target)
    to_target, to_native = LAYOUT_NAMES[target]
    mapped_back = {to_native(to_target(k)): v for k, v in state.items()}
    if mapped_back.keys() != state.keys():
        raise InputError(source, f"its tensor names do not survive the {target} layout and back")
    build_checked_model(source, metadata.config, mapped_back)
    write_converted(output, state, metadata, force, layout=target, inputs=(source,))
    return metadata
