"""Rebuild a native RegNet from a converted safetensors file alone."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from regnet.metadata import WeightsMetadata
from regnet.model import RegNet
from regnet.timm_layout import from_timm


def is_safetensors(path: str | Path) -> bool:
    """Whether `path` opens as a safetensors file (converted by us or not)."""
    try:
        with safe_open(str(path), framework="pt"):
            return True
    except (SafetensorError, OSError):
        return False


def read_metadata(path: str | Path) -> WeightsMetadata:
    """The metadata of a converted file; ValueError if it is not one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"not a readable safetensors file ({exc})") from None
    return WeightsMetadata.from_strings(raw)


def load(path: str | Path, device: str | torch.device = "cpu") -> RegNet:
    """The model stored in a converted file, weights loaded strictly, in eval mode.

    The returned module carries the file's `WeightsMetadata` as `model.metadata`.
    """
    metadata = read_metadata(path)
    state = load_file(str(path), device=str(device))
    if metadata.layout == "timm":
        state = {from_timm(k): v for k, v in state.items()}
    model = RegNet.from_state_dict(metadata.config, state)
    model.metadata = metadata
    return model
