"""Rebuild a native RegNet from a converted safetensors file alone, trusting nothing in the file.

The header is parsed and checked here (size, JSON, dtypes, shapes, offsets that tile the data exactly)
and the tensors are checked against the architecture the metadata states, tensor count first, before
any tensor is read or any module built. `load` then reads every tensor into memory of its own, through
the very file handle the header came from: nothing stays memory-mapped, so a file rewritten in place
during a run changes nothing in the model (and cannot end the process with SIGBUS).
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import safetensors.torch
import torch

from regnet.layouts import LAYOUTS, LayoutError
from regnet.metadata import WeightsFileError, WeightsMetadata
from regnet.model import RegNet, shape_problems
from regnet.zoo import ZOO, zoo_config

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
DTYPE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # the floating dtypes a converted file may hold
TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
TORCH_DTYPES["I64"] = torch.int64  # BN counters, where admitted
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
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # each tensor's bytes in the data section
    data_start: int = 0  # where the data section begins in the file


def _check_regular_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise WeightsFileError("no such file") from None
    except OSError as exc:
        raise WeightsFileError(f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise WeightsFileError("is not a regular file")


def read_header(path: str | Path, counters: bool = False) -> Header:
    """The header of a safetensors file, checked to describe exactly the bytes that follow it.

    `counters` also admits BN `num_batches_tracked` counters (0-d int64), as other libraries' files hold them.
    """
    path = Path(path)
    _check_regular_file(path)
    try:
        with _open(path) as f:
            return _header_of(f, counters)
    except OSError as exc:
        raise WeightsFileError(f"cannot be read ({exc.strerror or exc})") from None


def _open(path: Path) -> io.BufferedReader:
    """`path` opened for reading without blocking on a FIFO swapped in after the check."""
    return open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK))


def _header_of(f: BinaryIO, counters: bool) -> Header:
    """The checked header of the open file `f` (its size taken from the handle, not the name)."""
    info = os.fstat(f.fileno())
    if not stat.S_ISREG(info.st_mode):
        raise WeightsFileError("is not a regular file")
    size = info.st_size
    if size < 8:
        raise WeightsFileError(f"not a safetensors file ({size} bytes)")
    prefix = f.read(8)
    if len(prefix) != 8:
        raise WeightsFileError("truncated while being read")
    (length,) = struct.unpack("<Q", prefix)
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise WeightsFileError(f"not a safetensors file (its header claims {length:,} bytes)")
    raw = f.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, an integer over Python's 4300 digits, deep nesting
        raise WeightsFileError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsFileError("not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsFileError("damaged safetensors header (__metadata__ is not a map of strings)")
    tensors, offsets = {}, {}
    for name, entry in header.items():
        tensors[name], offsets[name] = _tensor_entry(name, entry, counters)
    end = 0
    for begin, stop in sorted(offsets.values()):
        if begin != end:
            raise WeightsFileError("damaged safetensors header (tensor data overlaps or leaves gaps)")
        end = stop
    if end != size - 8 - length:
        raise WeightsFileError(
            f"truncated or damaged safetensors file ({size - 8 - length:,} data bytes, {end:,} described)"
        )
    return Header(tensors, metadata, offsets, 8 + length)


def _read_tensors(f: io.BufferedReader, header: Header) -> dict[str, torch.Tensor]:
    """Every tensor of a checked header, read from `f` into memory of its own (no memory map)."""
    tensors = {}
    for name in sorted(header.tensors, key=header.offsets.__getitem__):
        entry, (begin, end) = header.tensors[name], header.offsets[name]
        tensor = torch.empty(entry.shape, dtype=TORCH_DTYPES[entry.dtype])
        if end > begin:
            f.seek(header.data_start + begin)
            # numpy's stubs give ndarray the buffer protocol (__buffer__) only for Python >= 3.12
            buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
            if f.readinto(buffer) != end - begin:
                raise WeightsFileError("truncated while being read")
        tensors[name] = tensor
    return tensors


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
    layout, se = LAYOUTS[metadata.layout], bool(config.se_ratio)
    try:
        names = {layout.to_native(k, se): k for k in header.tensors}
    except LayoutError as exc:
        problem = f"{exc.key[:80]} is not part of this model"
        raise WeightsFileError(f"its tensors contradict its architecture: {problem}") from None
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
    path = Path(path)
    _check_regular_file(path)
    try:
        with _open(path) as f:
            header = _header_of(f, counters=False)
            metadata = WeightsMetadata.from_strings(header.metadata)
            names = check_against_architecture(header, metadata)
            stored = _read_tensors(f, header)
    except (OSError, RuntimeError) as exc:
        raise WeightsFileError(f"cannot be read ({' '.join(str(exc).split())[:120]})") from None
    if torch.device(device).type != "cpu":
        stored = {name: tensor.to(device) for name, tensor in stored.items()}
    state = {native: stored[name] for native, name in names.items()}
    if not all(all_finite(t) for t in state.values()):
        raise WeightsFileError("its tensors hold infinite or NaN values")
    model = RegNet.from_state_dict(metadata.config, state)
    model.metadata = metadata
    return model


def save(path: str | Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """Write native-named tensors (e.g. a RegNet's `state_dict()`) and their metadata as a converted file.

    Tensors are named in `metadata.layout` (LayoutError, a ValueError, for a name no RegNet has); BN
    `num_batches_tracked` counters are left out.

    Tensors that share memory are stored as copies (safetensors refuses shared storage). Not atomic:
    `regnet-convert` writes through a temporary file.
    """
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # training counters
    layout, se = LAYOUTS[metadata.layout], bool(metadata.config.se_ratio)
    state = {layout.from_native(k, se): v for k, v in state.items()}
    write_safetensors(path, state, metadata.to_strings())


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or infinity in `tensor`. A finite sum proves it (a NaN or an infinity makes any sum NaN or infinite),
    at a fraction of an element-wise check's cost; only a sum that overflows needs that check."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return True
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    """safetensors' own writer, made byte-for-byte reproducible: the same tensors and metadata always give the same
    file. safetensors writes its metadata in hash-map order, which changes from run to run; the header is then
    rewritten in place with the metadata sorted (the same JSON in another order, so the same length)."""
    safetensors.torch.save_file(_unshared(tensors), path, metadata)
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        if "__metadata__" not in header:  # no metadata (None): nothing to sort
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # not the same JSON text: safetensors' escaping would differ from json's
            raise RuntimeError(f"{path}: safetensors wrote a header of an unexpected form")
        f.seek(8)
        f.write(text + b" " * (length - len(text)))  # safetensors pads the header with spaces too


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
