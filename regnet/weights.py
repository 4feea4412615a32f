"""Rebuild a native RegNet from a converted safetensors file alone, trusting nothing in the file.

The header is parsed and checked here (size, JSON, dtypes, shapes, offsets that tile the data exactly)
and the tensors are checked against the architecture the metadata states, tensor count first, before
any tensor is read or any module built.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from regnet.metadata import WeightsFileError, WeightsMetadata
from regnet.model import RegNet, shape_problems
from regnet.timm_layout import from_timm, to_timm
from regnet.torchvision_layout import from_torchvision, to_torchvision
from regnet.zoo import ZOO, zoo_config

# layout -> (native name -> its name, its name -> native name)
LAYOUT_NAMES = {
    "native": (lambda key: key, lambda key: key),
    "timm": (to_timm, from_timm),
    "torchvision": (to_torchvision, from_torchvision),
}

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
DTYPE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # the floating dtypes a converted file may hold
_OTHER_DTYPES = {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: the tensors (in file order) and the string metadata."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]


def _check_regular_file(path: Path) -> int:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise WeightsFileError("no such file") from None
    except OSError as exc:
        raise WeightsFileError(f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise WeightsFileError("is not a regular file")
    return info.st_size


def read_header(path: str | Path, counters: bool = False) -> Header:
    """The header of a safetensors file, checked to describe exactly the bytes that follow it.

    `counters` also admits BN `num_batches_tracked` counters (0-d int64), as other libraries' files hold them.
    """
    path = Path(path)
    size = _check_regular_file(path)
    if size < 8:
        raise WeightsFileError(f"not a safetensors file ({size} bytes)")
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise WeightsFileError(f"not a safetensors file (its header claims {length:,} bytes)")
            raw = f.read(length)
    except OSError as exc:
        raise WeightsFileError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise WeightsFileError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsFileError("not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsFileError("damaged safetensors header (__metadata__ is not a map of strings)")
    tensors, spans = {}, []
    for name, entry in header.items():
        tensors[name], span = _tensor_entry(name, entry, counters)
        spans.append(span)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise WeightsFileError("damaged safetensors header (tensor data overlaps or leaves gaps)")
        end = stop
    if end != size - 8 - length:
        raise WeightsFileError(
            f"truncated or damaged safetensors file ({size - 8 - length:,} data bytes, {end:,} described)"
        )
    return Header(tensors, metadata)


def _tensor_entry(name: str, entry: object, counters: bool = False) -> tuple[TensorEntry, tuple[int, int]]:
    problem = f"damaged safetensors header (tensor {name[:80]!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise WeightsFileError(f"{problem} is not dtype/shape/data_offsets)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    is_counter = counters and name.endswith(".num_batches_tracked") and dtype == "I64" and shape == []
    if dtype not in DTYPE_SIZES and not is_counter:
        kind = "is an integer or boolean tensor" if dtype in _OTHER_DTYPES else f"has unknown dtype {str(dtype)[:20]!r}"
        raise WeightsFileError(f"tensor {name[:80]!r} {kind}; RegNet weights are floating point")
    ints = [*shape, *offsets] if isinstance(shape, list) and isinstance(offsets, list) else None
    if ints is None or len(offsets) != 2 or not all(type(v) is int and v >= 0 for v in ints):
        raise WeightsFileError(f"{problem} has a malformed shape or offsets)")
    numel = 1
    for dim in shape:
        numel *= dim
    if offsets[1] - offsets[0] != numel * (8 if is_counter else DTYPE_SIZES[dtype]):
        raise WeightsFileError(f"{problem}: its offsets do not match its shape)")
    return TensorEntry(dtype, tuple(shape)), (offsets[0], offsets[1])


def read_metadata(path: str | Path) -> WeightsMetadata:
    """The metadata of a converted file; WeightsFileError if it is not one."""
    return WeightsMetadata.from_strings(read_header(path).metadata)


def is_safetensors(path: str | Path) -> bool:
    """Whether `path` is a well-formed safetensors file (converted by us or not)."""
    try:
        read_header(path)
    except (WeightsFileError, ValueError):
        return False
    return True


def check_against_architecture(header: Header, metadata: WeightsMetadata) -> dict[str, str]:
    """Native name -> file name of every tensor, after checking names, shapes and dtype against the metadata."""
    config = metadata.config
    if metadata.model != "custom" and (
        metadata.model not in ZOO or zoo_config(metadata.model, config.num_classes) != config
    ):
        raise WeightsFileError(f"its metadata names {metadata.model[:40]!r}, but its architecture is not that model")
    to_native = LAYOUT_NAMES[metadata.layout][1]
    names = {to_native(k): k for k in header.tensors}
    if len(names) != len(header.tensors):
        raise WeightsFileError("two tensors map to one native name")
    problems = shape_problems({native: header.tensors[k].shape for native, k in names.items()}, config)
    if problems:
        raise WeightsFileError("its tensors contradict its architecture: " + "; ".join(problems))
    labels = [len(x) for x in (metadata.categories, metadata.category_names) if x is not None]
    if any(count != config.num_classes for count in labels):
        raise WeightsFileError(f"its categories or class names are not one per class ({config.num_classes})")
    dtypes = {entry.dtype for entry in header.tensors.values()}
    if len(dtypes) > 1:
        raise WeightsFileError(f"its tensors mix dtypes ({', '.join(sorted(dtypes))})")
    return names


def load(path: str | Path, device: str | torch.device = "cpu") -> RegNet:
    """The model stored in a converted file, weights loaded strictly (in the file's dtype), in eval mode.

    The returned module carries the file's `WeightsMetadata` as `model.metadata`. Raises WeightsFileError
    for anything that is not a well-formed converted RegNet.
    """
    header = read_header(path)
    metadata = WeightsMetadata.from_strings(header.metadata)
    names = check_against_architecture(header, metadata)
    try:
        stored = load_file(os.fspath(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise WeightsFileError(f"cannot be read ({' '.join(str(exc).split())[:120]})") from None
    state = {native: stored[name] for native, name in names.items()}
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise WeightsFileError("its tensors hold infinite or NaN values")
    model = RegNet.from_state_dict(metadata.config, state)
    model.metadata = metadata
    return model


def save(path: str | Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """Write native-named tensors (e.g. a RegNet's `state_dict()`) and their metadata as a converted file.

    Tensors are named in `metadata.layout`; BN `num_batches_tracked` counters are left out.

    Tensors that share memory are stored as copies (safetensors refuses shared storage). Not atomic:
    `regnet-convert` writes through a temporary file.
    """
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # training counters
    renamed = LAYOUT_NAMES[metadata.layout][0]
    state = {renamed(k): v for k, v in state.items()}
    save_file(_unshared(state), os.fspath(path), metadata.to_strings())


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with storage of its own."""
    seen: set[int] = set()
    result = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        shared = pointer in seen
        result[key] = tensor.clone(memory_format=torch.contiguous_format) if shared else tensor.contiguous()
        seen.add(pointer)
    return result
