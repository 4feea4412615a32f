"""Read a Hugging Face transformers RegNet folder (config.json + model.safetensors or pytorch_model.bin), safely.

config.json is hostile like any input: size-bounded, every field type-checked, values bounded before anything is
built. It becomes a pycls AnyNet cfg (the architecture transformers' `RegNetConfig` describes, see
`regnet_convert/export/hf.py`), so conversion checks the tensors against it exactly as against a pycls cfg.
The tensors are read by the same safe readers as timm's and torchvision's files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from regnet.config import MAX_BLOCKS, MAX_CLASSES, MAX_STAGES, MAX_WIDTH
from regnet.layouts import LAYOUTS, is_counter
from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import check_input_file
from regnet_convert.sources.checkpoint import SourceCheckpoint, read_state_dict_file, source_class_names

MAX_CONFIG_BYTES = 1 << 20  # a RegNet's config.json with 1000 labels is about 60 KB
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # transformers' order of preference
SHARDED = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# transformers 5.24's RegNetConfig defaults, for fields a config.json leaves out
DEFAULTS: dict[str, object] = {"num_channels": 3, "embedding_size": 32, "groups_width": 64, "layer_type": "y",
                               "hidden_act": "relu", "downsample_in_first_stage": True}  # fmt: skip


def read_hf_folder(path: str | Path) -> SourceCheckpoint:
    """The tensors of a transformers RegNet folder and the architecture its config.json states (as a pycls cfg)."""
    folder = Path(path)
    _check_folder(folder)
    config = _read_config(folder / "config.json")
    cfg, se = config_to_cfg(folder / "config.json", config)
    weights = _weights_file(folder)
    checkpoint = read_state_dict_file(weights)
    hf = LAYOUTS["hf"]
    for key in checkpoint.state:
        if not is_counter(key) and hf.native_name(key, not se) and not hf.native_name(key, se):
            said = f"layer_type {'y' if se else 'x'}"
            raise InputError(weights, f"tensor {key[:80]!r} does not fit a RegNet of config.json's {said}")
    names = _class_names(folder / "config.json", config)
    return SourceCheckpoint(checkpoint.state, cfg, weights_file=weights, class_names=names)


def _check_folder(folder: Path) -> None:
    try:
        is_dir = folder.is_dir()
        exists = is_dir or folder.exists()
    except OSError as exc:
        raise InputError(folder, f"cannot be read ({exc.strerror or exc})") from None
    if not exists:
        raise InputError(folder, "no such folder (a Hugging Face model folder: config.json + model.safetensors)")
    if not is_dir:
        raise InputError(folder, "is not a folder; give a Hugging Face model folder (config.json + model.safetensors)")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise InputError(folder, "cannot be read (permission denied)")


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if os.path.lexists(folder / name):
            return folder / name
    if sharded := [name for name in SHARDED if os.path.lexists(folder / name)]:
        raise InputError(folder / sharded[0], "sharded weights are not supported (a RegNet fits one file)")
    raise InputError(folder, f"holds neither {WEIGHT_FILES[0]} nor {WEIGHT_FILES[1]}")


def _read_config(path: Path) -> dict:
    info = check_input_file(path, "config.json")
    if info.st_size > MAX_CONFIG_BYTES:
        raise InputError(path, f"is {info.st_size:,} bytes, not a RegNet's config (at most {MAX_CONFIG_BYTES:,})")
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read(MAX_CONFIG_BYTES + 1).decode("utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or JSON, an integer over 4300 digits
        detail = "nests too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())[:80]
        raise InputError(path, f"is not valid JSON ({detail})") from None
    if not isinstance(config, dict):
        raise InputError(path, f"is a JSON {type(config).__name__}, not an object")
    return config


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _field(path: Path, config: dict, name: str) -> object:
    """config[name], or transformers' default for it; InputError when it has neither."""
    if name not in config and name in DEFAULTS:
        return DEFAULTS[name]
    if name not in config:
        raise InputError(path, f"has no {name!r}")
    return config[name]


def _wrong_type(path: Path, name: str, value: object, wanted: str) -> InputError:
    return InputError(path, f"its {name!r} is {_shown(value)}, expected {wanted}")


def _integer(path: Path, config: dict, name: str) -> int:
    """config[name] (or its default): an integer, not true or false."""
    value = _field(path, config, name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _wrong_type(path, name, value, "an integer")


def _text(path: Path, config: dict, name: str) -> str:
    """config[name] (or its default): a string."""
    value = _field(path, config, name)
    if isinstance(value, str):
        return value
    raise _wrong_type(path, name, value, "a string")


def _flag(path: Path, config: dict, name: str) -> bool:
    """config[name] (or its default): true or false."""
    value = _field(path, config, name)
    if isinstance(value, bool):
        return value
    raise _wrong_type(path, name, value, "true or false")


def _list(path: Path, config: dict, name: str) -> list[object]:
    """config[name]: a list."""
    value = _field(path, config, name)
    if isinstance(value, list):
        return value
    raise _wrong_type(path, name, value, "a list")


def _sizes(path: Path, config: dict, name: str, limit: int) -> list[int]:
    """A list of 1 to MAX_STAGES positive integers, each at most `limit`."""
    values = _list(path, config, name)
    if not 1 <= len(values) <= MAX_STAGES:
        raise InputError(path, f"its {name!r} has {len(values)} entries (1 to {MAX_STAGES} stages)")
    sizes = []
    for i, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise InputError(path, f"its {name}[{i}] is {_shown(value)}, expected an integer from 1 to {limit}")
        sizes.append(value)
    return sizes


def _bounded(path: Path, config: dict, name: str, low: int, high: int) -> int:
    value = _integer(path, config, name)
    if not low <= value <= high:
        raise InputError(path, f"its {name!r} is {value}, expected {low} to {high}")
    return value


def _num_labels(path: Path, config: dict) -> int:
    """The number of classes: id2label's size (keys "0".."N-1"), which num_labels must agree with."""
    stated = _bounded(path, config, "num_labels", 1, MAX_CLASSES) if "num_labels" in config else None
    if "id2label" not in config:
        return stated or 2  # transformers' default
    id2label = config["id2label"]
    if not isinstance(id2label, dict) or not 1 <= len(id2label) <= MAX_CLASSES:
        raise InputError(path, f"its 'id2label' is not a mapping of 1 to {MAX_CLASSES:,} class labels")
    if sorted(id2label) != sorted(str(i) for i in range(len(id2label))):
        raise InputError(path, f"its 'id2label' keys are not the class ids 0 to {len(id2label) - 1}")
    if not all(isinstance(label, str) for label in id2label.values()):
        raise InputError(path, "its 'id2label' holds labels that are not strings")
    if stated is not None and stated != len(id2label):
        raise InputError(path, f"its 'num_labels' {stated} contradicts its {len(id2label)} 'id2label' entries")
    return len(id2label)


def _class_names(path: Path, config: dict) -> tuple[str, ...] | None:
    """id2label's names in class order (checked by `_num_labels`), or None without real names."""
    id2label = config.get("id2label")
    if id2label is None:
        return None
    return source_class_names(path, [id2label[str(i)] for i in range(len(id2label))], "id2label")


def config_to_cfg(path: Path, config: dict) -> tuple[dict, bool]:
    """The pycls AnyNet cfg of a transformers RegNet config, and whether it has squeeze-excitation."""
    model_type = _text(path, config, "model_type")
    if model_type != "regnet":
        raise InputError(path, f"not a RegNet: its model_type is {_shown(model_type)}")
    layer_type = _text(path, config, "layer_type")
    if layer_type not in ("x", "y"):
        raise InputError(path, f"its layer_type {_shown(layer_type)} is neither 'x' nor 'y'")
    hidden_act = _text(path, config, "hidden_act")
    if hidden_act != "relu":
        raise InputError(path, f"its hidden_act is {_shown(hidden_act)}; only ReLU RegNets convert")
    channels = _bounded(path, config, "num_channels", 1, 64)
    if channels != 3:
        raise InputError(path, f"its num_channels is {channels}; only 3-channel (RGB) RegNets convert")
    stem = _bounded(path, config, "embedding_size", 1, MAX_WIDTH)
    widths = _sizes(path, config, "hidden_sizes", MAX_WIDTH)
    depths = _sizes(path, config, "depths", MAX_BLOCKS)
    if len(widths) != len(depths):
        raise InputError(path, f"its hidden_sizes ({len(widths)}) and depths ({len(depths)}) differ in length")
    if sum(depths) > MAX_BLOCKS:
        raise InputError(path, f"its depths sum to {sum(depths)} blocks (at most {MAX_BLOCKS})")
    group = _bounded(path, config, "groups_width", 1, MAX_WIDTH)
    group_widths = []
    for i, width in enumerate(widths):
        groups = max(1, width // group)  # as transformers' RegNetXLayer/RegNetYLayer
        if width % groups:
            raise InputError(path, f"its hidden_sizes[{i}] {width} is not divisible into {groups} groups")
        group_widths.append(width // groups)
    first_stride = 2 if _flag(path, config, "downsample_in_first_stage") else 1
    cfg = {
        "MODEL": {"TYPE": "anynet", "NUM_CLASSES": _num_labels(path, config)},
        "BN": {"EPS": 1e-5},  # torch's default, the only one transformers' RegNet has
        "ANYNET": {
            "STEM_W": stem,
            "DEPTHS": depths,
            "WIDTHS": widths,
            "GROUP_WS": group_widths,
            "BOT_MULS": [1.0] * len(widths),
            "STRIDES": [first_stride] + [2] * (len(widths) - 1),
            "SE_ON": layer_type == "y",
            "SE_R": 0.25,
        },
    }
    return cfg, layer_type == "y"
