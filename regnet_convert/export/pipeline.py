"""`regnet-convert export`: any converted file (or a pycls checkpoint) -> another library's format, checked first.

One pipeline for every target: read the source into native tensors, refuse what the target cannot express,
turn the stem to the channel order the target expects, map the names to the target's and back and load them
strictly into the native model with a probe forward pass, then let the target write into a temporary file or
folder that becomes OUTPUT atomically (never the source, never a folder holding other files).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError

from regnet import RegNetConfig
from regnet.metadata import WeightsMetadata
from regnet_convert.conversion.pipeline import build_checked_model, load_any, reverse_channels
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target
from regnet_convert.export.targets import TARGETS
from regnet_convert.fs.outputs import atomic_directory, atomic_output, check_output, check_output_directory


def read_native(source: Path) -> tuple[dict[str, torch.Tensor], WeightsMetadata]:
    """Native-named tensors and metadata of a converted file (any layout) or a pycls checkpoint."""
    model, metadata = load_any(source)
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, metadata


def check_names_round_trip(source: Path, target: Target, state: dict[str, torch.Tensor], config: RegNetConfig) -> None:
    """The target's names map back to exactly the native ones, and those load strictly and run."""
    to_target, to_native = target.name_map(config)
    renamed = {to_target(k): v for k, v in state.items()}
    mapped_back = {to_native(k): v for k, v in renamed.items()}
    if len(renamed) != len(state) or mapped_back.keys() != state.keys():
        raise InputError(source, f"its tensor names do not survive {target.name}'s names and back")
    build_checked_model(source, config, mapped_back)


def export(source: str | Path, output: str | Path, target_name: str, force: bool = False) -> WeightsMetadata:
    """Write `source`'s weights for `target_name`; returns the metadata of what was written."""
    target = TARGETS[target_name]
    source = Path(source)
    target.requires()
    if target.files:  # before Path(): a trailing "/" matters to a file output, not to a folder
        check_output_directory(output, force, [source], target.files)
    else:
        check_output(output, force, inputs=[source])
    state, metadata = read_native(source)
    if reason := target.refuse(metadata.config):
        raise InputError(source, f"{target.name} cannot express this RegNet: {reason}")
    preprocessing = metadata.preprocessing
    if target.channel_order and preprocessing.channel_order != target.channel_order:
        state, preprocessing = reverse_channels(state, preprocessing)
    metadata = replace(metadata, preprocessing=preprocessing)
    check_names_round_trip(source, target, state, metadata.config)
    if target.files:
        writing = atomic_directory(output, force, [source], target.files)
    else:
        writing = atomic_output(Path(output), force, [source])
    with writing as tmp:
        try:
            target.write(tmp, state, metadata)
        except SafetensorError as exc:
            raise InputError(output, f"writing failed ({exc}); nothing was written") from None
    return metadata
