"""Read a pycls checkpoint without ever running pickled code."""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from regnet_convert.errors import ConvertError

_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@dataclass
class SourceCheckpoint:
    """The parts of a checkpoint file conversion uses (pycls `.pyth`, or mmcls with no cfg)."""

    state: dict[str, torch.Tensor]
    cfg: dict | None  # the training config (pycls's `cfg.dump()`), when the file has one
    has_optimizer_state: bool = False


def _describe_load_failure(exc: Exception) -> str:
    message = " ".join(str(exc).split())
    detail = message.split(" Check the documentation")[0]
    detail = detail.split("WeightsUnpickler error:")[-1].split("from a trusted source.")[-1].strip()
    if found := _UNSAFE_GLOBAL.search(detail):
        return (
            f"refused to unpickle: the file references {found.group(1)!r}, code or objects that a checkpoint "
            "of tensors never needs (nothing was executed)"
        )
    if "central directory" in message or "zip archive" in message or isinstance(exc, EOFError):
        return f"truncated or damaged checkpoint ({detail[:120]})"
    return f"not a PyTorch checkpoint ({type(exc).__name__}: {detail[:120]})"


def load_tensors_safely(path: Path) -> object:
    """`torch.load` restricted to tensors and plain containers; memory-mapped when the format allows."""
    if not path.exists():
        raise ConvertError(path, "no such file")
    if path.is_dir():
        raise ConvertError(path, "is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise ConvertError(path, "empty file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise ConvertError(path, _describe_load_failure(exc)) from None


def _parse_cfg(path: Path, cfg: object) -> dict | None:
    if cfg is None or isinstance(cfg, dict):
        return cfg
    if isinstance(cfg, str):
        try:
            parsed = yaml.safe_load(cfg)
        except yaml.YAMLError as exc:
            raise ConvertError(path, f"its 'cfg' is not valid YAML ({str(exc).splitlines()[0]})") from None
        if isinstance(parsed, dict):
            return parsed
    raise ConvertError(path, f"its 'cfg' is a {type(cfg).__name__}, not a pycls config")


def _tensor_dict(path: Path, state: object, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise ConvertError(path, f"{what} is not a non-empty dict of tensors")
    not_tensors = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not_tensors:
        raise ConvertError(path, f"{what} holds entries that are not named tensors, e.g. {not_tensors[0]!r}")
    return state


def read_mmcls_checkpoint(path: str | Path) -> SourceCheckpoint:
    """An mmclassification checkpoint (`state_dict`, `meta`, ...) or a bare state dict."""
    path = Path(path)
    obj = load_tensors_safely(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        return SourceCheckpoint(_tensor_dict(path, obj["state_dict"], "its 'state_dict'"), None, "optimizer" in obj)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return SourceCheckpoint(_tensor_dict(path, obj, "the state dict"), None)
    raise ConvertError(path, "not an mmclassification checkpoint: no 'state_dict' and not a state dict")


def read_pycls_checkpoint(path: str | Path) -> SourceCheckpoint:
    """A pycls training checkpoint (`model_state`, `cfg`, ...) or a bare state dict."""
    path = Path(path)
    obj = load_tensors_safely(path)
    if isinstance(obj, dict) and "model_state" in obj:
        state = _tensor_dict(path, obj["model_state"], "its 'model_state'")
        cfg = _parse_cfg(path, obj.get("cfg"))
        return SourceCheckpoint(state, cfg, has_optimizer_state="optimizer_state" in obj)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return SourceCheckpoint(_tensor_dict(path, obj, "the state dict"), None)
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        raise ConvertError(path, f"not a pycls checkpoint: no 'model_state' and not a state dict (keys: {keys})")
    raise ConvertError(path, f"not a pycls checkpoint: holds a {type(obj).__name__}, not a dict")
