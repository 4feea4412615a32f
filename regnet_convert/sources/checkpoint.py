"""Read a pycls or mmcls checkpoint without ever running pickled code, and check what it holds."""

from __future__ import annotations

import itertools
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

import regnet
from regnet.config import MAX_CLASSES
from regnet.metadata import MAX_LABEL_CHARS
from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import check_input_file, weights_kind
from regnet_convert.sources.pickle_scan import SAFE_PROTOCOLS, PickleProblem, check_checkpoint

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNSUPPORTED_OPCODE = re.compile(r"Unsupported operand (\d+)")
MAX_CFG_CHARS = 256 << 10  # a pycls cfg dump is about 5 KB
MAX_VISITED = 10_000_000  # objects in a loaded checkpoint: a genuine one holds a few thousand
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class SourceCheckpoint:
    """The parts of a checkpoint file conversion uses (pycls `.pyth`, or mmcls with no cfg)."""

    state: dict[str, torch.Tensor]
    cfg: dict | None  # the training config (pycls's `cfg.dump()`), when the file has one
    has_optimizer_state: bool = False
    weights_file: Path | None = None  # the file read, when the source is a folder (a Hugging Face model)
    class_names: tuple[str, ...] | None = None  # the source's own, one per class (hf id2label, mmcls CLASSES)


def source_class_names(path: Path, names: object, what: str) -> tuple[str, ...] | None:
    """A source's class names, checked: None when it has none, or only placeholders (LABEL_0.., 0..)."""
    if names is None:
        return None
    if not isinstance(names, list | tuple) or not 1 <= len(names) <= MAX_CLASSES:
        raise InputError(path, f"its {what} is not a list of 1 to {MAX_CLASSES:,} class names")
    for i, name in enumerate(names):
        if not (isinstance(name, str) and 0 < len(name) <= MAX_LABEL_CHARS) or _CONTROL.search(name):
            shown = repr(name[:40]) if isinstance(name, str) else f"a {type(name).__name__}"
            raise InputError(
                path, f"its {what}[{i}] is {shown}, not a class name (1 to {MAX_LABEL_CHARS} printable characters)"
            )
    if all(name in (str(i), f"LABEL_{i}") for i, name in enumerate(names)):
        return None  # transformers' and mmcls's stand-ins for "no names"
    return tuple(names)


def _numpy_safe_globals() -> list:
    """numpy scalars and dtypes (mmcv writes them into `meta`): data only, never code."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar  # type: ignore[attr-defined]
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *((cls, f"numpy.dtypes.{cls.__name__}") for cls in dtype_classes),
    ]


def _describe_load_failure(exc: Exception) -> str:
    message = " ".join(str(exc).split())
    detail = message.split(" Check the documentation")[0]
    detail = detail.split("WeightsUnpickler error:")[-1].split("from a trusted source.")[-1].strip()
    if found := _UNSAFE_GLOBAL.search(detail):
        return (
            f"refused to unpickle: the file references {found.group(1)!r}, code or objects that a checkpoint "
            "of tensors never needs (nothing was executed)"
        )
    if found := _UNSUPPORTED_OPCODE.search(detail):
        opcode = chr(int(found.group(1)))
        return (
            f"uses pickle opcode {opcode!r}, which torch's safe loader (weights_only=True) cannot read; "
            "re-save it with torch.save's default protocol (2) where the file is trusted, then convert that"
        )
    damaged = ("central directory", "zip archive", "record size")
    if any(text in message for text in damaged) or isinstance(exc, EOFError):
        return f"truncated or damaged checkpoint ({detail[:120]})"
    return f"not a PyTorch checkpoint ({type(exc).__name__}{': ' + detail[:120] if detail else ''})"


def _utf8(path: Path) -> bool:
    """Whether the name is valid UTF-8 (os.fsdecode escapes other bytes as surrogates)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_tensors_safely(path: Path) -> object:
    """`torch.load` restricted to tensors, plain containers and numpy scalars, every record's size checked."""
    check_input_file(path, "checkpoint file")
    try:
        protocol = check_checkpoint(str(path))
    except PickleProblem as exc:
        raise InputError(path, f"refused: {exc}") from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, IndexError, KeyError) as exc:
        # only well-formed pickle streams reach torch's unpickler
        problem = " ".join(str(exc).split())[:100] or type(exc).__name__
        with open(path, "rb") as f:
            truncated_zip = f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)
        if truncated_zip:
            raise InputError(
                path, "truncated or damaged checkpoint (its zip archive has no central directory)"
            ) from None
        raise InputError(path, f"not a PyTorch checkpoint (no well-formed pickle: {problem})") from None
    if protocol not in SAFE_PROTOCOLS:
        raise InputError(
            path,
            f"saved with pickle protocol {protocol}, which torch's safe loader (weights_only=True) cannot read; "
            "re-save it with torch.save's default protocol (2) where the file is trusted, then convert that",
        )
    is_zip = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_safe_globals()):
            warnings.simplefilter("ignore")
            if path.suffix.lower() == ".safetensors":  # torch.load would hand such a name to safetensors
                with open(path, "rb") as f:
                    loaded = torch.load(f, map_location="cpu", weights_only=True)
            else:  # by descriptor where the name is not UTF-8 (torch's reader takes only UTF-8 names)
                with open(path, "rb") as f:
                    name = path if _utf8(path) else Path(f"/proc/self/fd/{f.fileno()}")
                    loaded = torch.load(name, map_location="cpu", weights_only=True, mmap=is_zip)
        if is_zip:
            _check_records(path, loaded)
        return loaded
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise InputError(path, _describe_load_failure(exc)) from None
    except MemoryError:
        raise InputError(path, "needs more memory than its size can explain (a damaged or crafted file)") from None
    except (RecursionError, OverflowError, IndexError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a PyTorch checkpoint ({type(exc).__name__})") from None


def _storages(obj: object, limit: int = MAX_VISITED) -> dict[int, int]:
    """Every tensor storage reachable in a loaded checkpoint: data pointer -> size in bytes.

    Each object is visited once (shared references and cycles are not followed again), at most `limit` of them.
    """
    found: dict[int, int] = {}
    seen: set[int] = set()
    pending = [obj]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(seen) > limit:
            raise ValueError(f"holds more than {limit:,} objects (a crafted file)")
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.is_quantized or obj.device.type != "cpu":
                # no checkpoint of weights holds one, anywhere
                raise ValueError(f"holds a tensor that {tensor_problem(obj)}")
            storage = obj.untyped_storage()
            found[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            pending.extend(obj.values())
        elif isinstance(obj, list | tuple):
            pending.extend(obj)
    return found


def _check_records(path: Path, loaded: object) -> None:
    """Each storage must have a zip record of exactly its size.

    torch's memory-mapped reader does not check this: a shortened record would silently lend its tensor the
    bytes of the next one. The sizes of the records and of the storages must match one to one.
    """
    with zipfile.ZipFile(path) as archive:
        names = [i for i in archive.infolist() if i.filename.rsplit("/data/", 1)[-1].isdigit()]
    records = sorted(i.file_size for i in names if i.file_size)  # empty storages share no address: left out
    try:
        storages = sorted(size for size in _storages(loaded).values() if size)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    if records != storages:
        raise InputError(path, "truncated or damaged checkpoint (its storage records do not match its tensors)")


class _YamlAliases(yaml.YAMLError):
    """A cfg with YAML anchors or aliases."""


class _PlainYamlLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing anchors and aliases: pycls's `cfg.dump()` never writes them, and a few
    hundred bytes of aliases unfold into billions of nodes (a "billion laughs" file)."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _YamlAliases(f"line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def _parse_cfg(path: Path, cfg: object) -> dict | None:
    if cfg is None or isinstance(cfg, dict):
        return cfg
    if isinstance(cfg, str):
        if len(cfg) > MAX_CFG_CHARS:
            raise InputError(path, f"its 'cfg' is {len(cfg):,} characters long, not a pycls config")
        try:
            parsed = yaml.load(cfg, Loader=_PlainYamlLoader)  # a SafeLoader that also refuses aliases
        except _YamlAliases as exc:
            raise InputError(
                path, f"its 'cfg' uses YAML anchors or aliases ({exc}), which a pycls config never does"
            ) from None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputError(path, f"its 'cfg' is not valid YAML ({' '.join(str(problem).split())[:100]})") from None
        except RecursionError:
            raise InputError(path, "its 'cfg' YAML nests too deeply to be a pycls config") from None
        if isinstance(parsed, dict):
            return parsed
    raise InputError(path, f"its 'cfg' is a {type(cfg).__name__}, not a pycls config")


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why a stored tensor cannot be a RegNet weight, or None (dense, in memory, floating point)."""
    if tensor.layout != torch.strided:
        return f"is a sparse tensor ({tensor.layout})"
    if tensor.is_quantized:
        return "is a quantized tensor"
    if tensor.device.type != "cpu":
        return f"holds no data ({tensor.device.type} tensor)"
    if tensor.dtype not in WEIGHT_DTYPES:
        return f"is {str(tensor.dtype).removeprefix('torch.')}, not a floating-point weight"
    return None


def _key_text(key: object) -> str:
    """A dict key for an error line: a string's start, else only its type (a key may be a huge tuple)."""
    return repr(key[:60]) if isinstance(key, str) else f"a {type(key).__name__} key"


def _tensor_dict(path: Path, state: object, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise InputError(path, f"{what} is not a non-empty dict of tensors")
    not_tensors = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not_tensors:
        raise InputError(path, f"{what} holds entries that are not named tensors, e.g. {_key_text(not_tensors[0])}")
    return state


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _mmcls_class_names(path: Path, obj: dict) -> tuple[str, ...] | None:
    """mmcls's `meta.CLASSES` (mmpretrain's `meta.dataset_meta.classes`), when the checkpoint has them."""
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        return None
    if meta.get("CLASSES") is not None:
        return source_class_names(path, meta["CLASSES"], "meta.CLASSES")
    dataset = meta.get("dataset_meta")
    if isinstance(dataset, dict) and dataset.get("classes") is not None:
        return source_class_names(path, dataset["classes"], "meta.dataset_meta.classes")
    return None


def read_mmcls_checkpoint(path: str | Path) -> SourceCheckpoint:
    """An mmclassification checkpoint (`state_dict`, `meta`, ...) or a bare state dict."""
    path = Path(path)
    obj = load_tensors_safely(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        state = _tensor_dict(path, obj["state_dict"], "its 'state_dict'")
        return SourceCheckpoint(state, None, "optimizer" in obj, class_names=_mmcls_class_names(path, obj))
    if _is_state_dict(obj):
        return SourceCheckpoint(_tensor_dict(path, obj, "the state dict"), None)
    raise InputError(path, "not an mmclassification checkpoint: no 'state_dict' and not a state dict")


def read_pycls_checkpoint(path: str | Path) -> SourceCheckpoint:
    """A pycls training checkpoint (`model_state`, `cfg`, ...) or a bare state dict."""
    path = Path(path)
    obj = load_tensors_safely(path)
    if isinstance(obj, dict) and "model_state" in obj:
        state = _tensor_dict(path, obj["model_state"], "its 'model_state'")
        cfg = _parse_cfg(path, obj.get("cfg"))
        return SourceCheckpoint(state, cfg, has_optimizer_state="optimizer_state" in obj)
    if _is_state_dict(obj):
        return SourceCheckpoint(_tensor_dict(path, obj, "the state dict"), None)
    if isinstance(obj, dict):
        keys = ", ".join(_key_text(k)[:40] for k in itertools.islice(obj, 5))
        raise InputError(path, f"not a pycls checkpoint: no 'model_state' and not a state dict (keys: {keys})")
    raise InputError(path, f"not a pycls checkpoint: holds a {type(obj).__name__}, not a dict")


def read_state_dict_file(path: str | Path) -> SourceCheckpoint:
    """A bare state dict in a safetensors file, or in a torch file (bare, or under `state_dict` or `model`).

    How timm, torchvision and Hugging Face ship weights; a safetensors header is checked before it is read.
    """
    path = Path(path)
    check_input_file(path, "weights file")
    if weights_kind(path) == "safetensors":
        try:
            regnet.read_header(path, counters=True)  # timm's, torchvision's and transformers' files hold them
            return SourceCheckpoint(_tensor_dict(path, load_file(str(path)), "the safetensors file"), None)
        except (regnet.WeightsFileError, SafetensorError, OSError) as exc:
            raise InputError(path, str(exc)) from None
    obj = load_tensors_safely(path)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj:
            return SourceCheckpoint(_tensor_dict(path, obj[key], f"its {key!r}"), None)
    if _is_state_dict(obj):
        return SourceCheckpoint(_tensor_dict(path, obj, "the state dict"), None)
    raise InputError(path, "not a state dict of tensors (nor one under 'state_dict' or 'model')")
