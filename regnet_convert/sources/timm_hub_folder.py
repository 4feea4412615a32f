"""Read a timm hub folder (what `timm.create_model("local-dir:" + FOLDER)` and `export --to timm-hub` use), safely.

config.json (size-bounded, checked like an hf config) names a registered timm model (`architecture`), which must
be a zoo RegNet: it becomes that model's pycls REGNET cfg, so the tensors are checked against it exactly as
against a pycls checkpoint's cfg. `label_names` (and `label_descriptions`) are the class names; the weights are
`model.safetensors`, read by the same safe reader as a timm file.
"""

from __future__ import annotations

import os
from pathlib import Path

from regnet.config import MAX_CLASSES
from regnet.zoo import zoo_models
from regnet_convert.errors import InputError
from regnet_convert.sources.checkpoint import SourceCheckpoint, read_state_dict_file, source_class_names
from regnet_convert.sources.hf_folder import _check_folder, _read_config

CONFIG, WEIGHTS = "config.json", "model.safetensors"


def zoo_name_of_timm(path: Path, architecture: object) -> str:
    """The zoo model timm registers as `architecture`; InputError for any other name."""
    by_timm = {model.timm_name: name for name, model in zoo_models().items()}
    if not isinstance(architecture, str) or architecture.split(".")[0] not in by_timm:
        shown = repr(architecture)[:40] if isinstance(architecture, str) else f"a {type(architecture).__name__}"
        raise InputError(path, f"its architecture {shown} is not a timm RegNet of the pycls zoo")
    return by_timm[architecture.split(".")[0]]


def regnet_cfg(name: str, num_classes: int) -> dict:
    """The pycls REGNET cfg of a zoo model."""
    d = zoo_models()[name].design
    return {
        "MODEL": {"TYPE": "regnet", "NUM_CLASSES": num_classes},
        "REGNET": {"DEPTH": d.depth, "W0": d.w0, "WA": d.wa, "WM": d.wm, "GROUP_W": d.group_width,
                   "BOT_MUL": d.bottleneck_multiplier, "SE_ON": d.se_ratio is not None, "SE_R": d.se_ratio or 0.25,
                   "STEM_W": d.stem_width, "STRIDE": d.stride},
    }  # fmt: skip


def _class_names(path: Path, config: dict, num_classes: int) -> tuple[str, ...] | None:
    names = source_class_names(path, config.get("label_names"), "label_names")
    if names is not None and len(names) != num_classes:
        raise InputError(path, f"its label_names has {len(names)} names for {num_classes} classes")
    return names


def read_timm_hub_config(folder: Path) -> tuple[str, int, tuple[str, ...] | None]:
    """config.json's zoo model, number of classes and class names (label_names), checked."""
    _check_folder(folder)
    config_path = folder / CONFIG
    config = _read_config(config_path)
    name = zoo_name_of_timm(config_path, config.get("architecture"))
    num_classes = config.get("num_classes", 1000)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        raise InputError(config_path, f"its num_classes is not an integer from 1 to {MAX_CLASSES:,}")
    return name, num_classes, _class_names(config_path, config, num_classes)


def read_timm_hub_folder(path: str | Path) -> SourceCheckpoint:
    """The tensors of a timm hub folder, its zoo architecture as a pycls cfg, and its class names."""
    folder = Path(path)
    name, num_classes, names = read_timm_hub_config(folder)
    weights = folder / WEIGHTS
    if not os.path.lexists(weights):
        raise InputError(folder, f"holds no {WEIGHTS}")
    checkpoint = read_state_dict_file(weights)
    return SourceCheckpoint(checkpoint.state, regnet_cfg(name, num_classes), weights_file=weights, class_names=names)


def read_timm_source(path: str | Path) -> SourceCheckpoint:
    """timm weights: a timm hub folder, or one file (safetensors or a torch file)."""
    return read_timm_hub_folder(path) if Path(path).is_dir() else read_state_dict_file(path)
