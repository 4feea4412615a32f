"""What a weights path holds, from its content (first bytes, header, pickle keys, a folder's config.json), never from
its extension alone: a converted file, a pycls, mmcls, timm or torchvision checkpoint, a Hugging Face or timm-hub
folder, or an ONNX export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import regnet
from regnet.layouts import is_counter
from regnet.metadata import FORMAT
from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import check_input_file
from regnet_convert.sources.checkpoint import load_tensors_safely
from regnet_convert.sources.formats import FORMATS
from regnet_convert.sources.hf_folder import _check_folder, _read_config

Kind = Literal["native", "pycls", "mmcls", "timm", "torchvision", "hf", "timm-hub", "onnx"]
KIND_NAMES: dict[str, str] = {
    "native": "converted safetensors",
    "pycls": "pycls checkpoint",
    "mmcls": "mmclassification checkpoint",
    "timm": "timm weights",
    "torchvision": "torchvision weights",
    "hf": "Hugging Face transformers folder",
    "timm-hub": "timm hub folder",
    "onnx": "ONNX graph",
}
NAMED_BY_KEYS: tuple[Kind, ...] = ("pycls", "mmcls", "timm", "torchvision")  # formats told apart by their tensor names


def _names_format(path: Path, keys: list[str]) -> Kind:
    """The one format whose names every key has (BN counters aside); InputError when none or several do."""
    if keys and all(k.startswith("module.") for k in keys):
        keys = [k.removeprefix("module.") for k in keys]
    keys = [k for k in keys if not is_counter(k)]
    fits = [name for name in NAMED_BY_KEYS if keys and all(FORMATS[name].to_native(k) is not None for k in keys)]
    if len(fits) != 1:
        example = repr(keys[0])[:60] if keys else "none"
        raise InputError(
            path,
            f"not a converted RegNet (not a regnet-convert file), and its tensors are in no known RegNet layout "
            f"(e.g. {example})",
        )
    return fits[0]


def _folder_kind(folder: Path) -> Kind:
    _check_folder(folder)
    config_path = folder / "config.json"
    if not os.path.lexists(config_path):
        raise InputError(folder, "is a directory without config.json, not a Hugging Face or timm-hub model folder")
    config = _read_config(config_path)
    hf, timm = "model_type" in config, "architecture" in config
    if hf == timm:
        raise InputError(
            config_path,
            "names both a model_type (transformers) and an architecture (timm)"
            if hf
            else "names neither a model_type (transformers) nor an architecture (timm)",
        )
    return "hf" if hf else "timm-hub"


def detect(path: Path, label: str | None = None, what: str = "weights file") -> Kind:
    """The kind of weights at `path` (see KIND_NAMES); InputError naming `label`/`path` (a missing or special file
    as `what`) when it is none of them."""
    try:
        is_dir = path.is_dir()
    except OSError:
        is_dir = False
    if is_dir:
        return _folder_kind(path)
    check_input_file(path, what, label=label)
    with open(path, "rb") as f:
        start = f.read(9)
    if start.startswith(b"PK\x03\x04") or (start[:1] == b"\x80" and start[8:9] != b"{"):
        return _checkpoint_kind(path)
    if start[8:9] == b"{":
        try:
            header = regnet.read_header(path, counters=True)
        except regnet.WeightsFileError as exc:
            raise InputError(path, f"not a converted RegNet: {exc}") from None
        if header.metadata.get("format") == FORMAT:
            return "native"
        return _names_format(path, list(header.tensors))
    if start[:1] == b"\x08":
        return "onnx"
    raise InputError(path, "neither a PyTorch checkpoint nor a safetensors file (nor an ONNX file)")


def _checkpoint_kind(path: Path) -> Kind:
    """pycls (model_state), mmcls (state_dict in mmcls's names), or by the names of a bare state dict."""
    obj = load_tensors_safely(path)  # safe: tensors and plain data only, nothing executed
    if isinstance(obj, dict) and "model_state" in obj:
        return "pycls"
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return _names_format(path, [k for k in obj[key] if isinstance(k, str)])
    if isinstance(obj, dict):
        return _names_format(path, [k for k in obj if isinstance(k, str)])
    raise InputError(path, f"holds a {type(obj).__name__}, not a checkpoint of named tensors")
