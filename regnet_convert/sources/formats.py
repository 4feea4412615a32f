"""The source formats (pycls, mmcls, timm, torchvision, hf) and the one place their tensors get native names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from regnet.layouts import LAYOUTS, is_counter
from regnet.metadata import ChannelOrder
from regnet_convert.errors import InputError
from regnet_convert.sources.checkpoint import (
    SourceCheckpoint,
    read_mmcls_checkpoint,
    read_pycls_checkpoint,
    read_state_dict_file,
    tensor_problem,
)
from regnet_convert.sources.hf_folder import read_hf_folder
from regnet_convert.sources.timm_hub_folder import read_timm_source


@dataclass(frozen=True)
class SourceFormat:
    """How to read one kind of checkpoint, name its tensors natively, and which channel order its stem takes."""

    name: str
    read: Callable[[str | Path], SourceCheckpoint]
    to_native: Callable[[str], str | None]
    channel_order: ChannelOrder = "BGR"


FORMATS = {
    "pycls": SourceFormat("pycls", read_pycls_checkpoint, LAYOUTS["pycls"].native_name),
    "mmcls": SourceFormat("mmcls", read_mmcls_checkpoint, LAYOUTS["mmcls"].native_name),
    "timm": SourceFormat("timm", read_timm_source, LAYOUTS["timm"].native_name, "RGB"),
    "torchvision": SourceFormat("torchvision", read_state_dict_file, LAYOUTS["torchvision"].native_name, "RGB"),
    "hf": SourceFormat("hf", read_hf_folder, LAYOUTS["hf"].native_name, "RGB"),  # X or Y layers alike
}


def rank_problem(key: str, tensor: torch.Tensor) -> str | None:
    """Why a native-named tensor has the wrong number of dimensions for its name, or None."""
    is_conv = key.endswith(".conv.weight") or key.endswith(("se.reduce.weight", "se.expand.weight"))
    rank = 4 if is_conv else 2 if key == "head.fc.weight" else 1
    if tensor.dim() != rank:
        return f"is {tensor.dim()}-d (shape {list(tensor.shape)}), expected {rank}-d for its name"
    return None


def map_keys(
    path: Path, state: dict[str, torch.Tensor], to_native: Callable[[str], str | None] = LAYOUTS["pycls"].native_name
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every tensor under its native name, checked; unknown keys, or two keys for one name, are an error.

    Returns the native state and the BN counters left out (`num_batches_tracked`).
    """
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    native: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}  # native name -> the source's key
    dropped: list[str] = []
    unknown: list[str] = []
    for key, tensor in state.items():
        if is_counter(key):
            dropped.append(key)
        elif (name := to_native(key)) is None:
            unknown.append(key)
        elif name in native:
            raise InputError(path, f"two tensors, {source_of[name]!r} and {key!r}, are both {name!r}")
        else:
            native[name], source_of[name] = tensor, key
    if unknown:
        examples = ", ".join(repr(k)[:60] for k in unknown[:3])
        raise InputError(path, f"not a RegNet: {len(unknown)} tensor(s) no RegNet has, e.g. {examples}")
    for name, tensor in native.items():
        if problem := tensor_problem(tensor) or rank_problem(name, tensor):
            raise InputError(path, f"tensor {source_of[name]!r} {problem}")
    return native, dropped
