"""Export for timm's hub format: a folder that `timm.create_model("local-dir:" + OUTPUT, pretrained=True)` loads.

timm 1.0.31 reads `config.json` (`architecture`: a registered model name, `num_classes`, `pretrained_cfg`: the
data configuration `timm.data.resolve_data_config` hands to its transforms) and the weights in timm's tensor names
from `model.safetensors`. The data configuration states pycls's evaluation as far as timm's transforms can: short
side resized to `crop / crop_pct`, bilinear, centre crop, RGB mean and std on a 0..1 scale (timm resizes with PIL
where pycls uses OpenCV, so the pixels differ slightly; the network does not).

Only zoo architectures: timm builds a RegNet from design parameters alone (w0, wa, wm, depth, one group width, one
bottleneck ratio, stride 2 per stage), and `config.json` can only name a registered model and override those
parameters, so a RegNet given stage by stage outside the zoo has no timm equivalent to name.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch

import regnet
from regnet import RegNetConfig
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.export.model_card import card
from regnet_convert.export.target import Target

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"


def refuse(config: RegNetConfig) -> str | None:
    """Why timm cannot build this RegNet by name (None: it can)."""
    if config.name not in regnet.ZOO:
        return (
            "it is not a zoo model, and timm builds RegNets only by model name from design parameters "
            "(w0, wa, wm, depth), not stage by stage"
        )
    return None


def crop_pct(crop: int, resize: int) -> float:
    """The fraction timm turns back into the resize as floor(crop / crop_pct), rounded so that it does."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:  # crop / (crop / resize) can land just below resize
        pct = math.nextafter(pct, 0.0)
    return pct


def data_config(pre: Preprocessing, num_classes: int, total_stride: int) -> dict:
    """timm's `pretrained_cfg` for a network evaluated with `pre` (RGB, as timm's transforms feed it)."""
    pool = math.ceil(pre.crop / total_stride)
    return {
        "custom_load": False,
        "input_size": [3, pre.crop, pre.crop],
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": crop_pct(pre.crop, pre.resize),
        "crop_mode": "center",
        "mean": list(pre.mean),
        "std": list(pre.std),
        "num_classes": num_classes,
        "pool_size": [pool, pool],
        "first_conv": "stem.conv",
        "classifier": "head.fc",
    }


def hub_config(metadata: WeightsMetadata) -> dict:
    """The contents of `config.json`."""
    config = metadata.config
    if config.name is None:  # `refuse` keeps architectures outside the zoo from getting here
        raise ValueError("a timm hub export needs a zoo architecture")
    total_stride = 2 * math.prod(stage.stride for stage in config.stages)
    result: dict = {
        "architecture": regnet.zoo_model(config.name).timm_name,
        "num_classes": config.num_classes,
        "num_features": config.stages[-1].width,
        "global_pool": "avg",
    }
    if metadata.categories:
        result["label_names"] = list(metadata.categories)
        if metadata.category_names:
            result["label_descriptions"] = dict(zip(metadata.categories, metadata.category_names, strict=True))
    result["pretrained_cfg"] = data_config(metadata.preprocessing, config.num_classes, total_stride)
    return result


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """Fill the temporary folder `path`: timm-named weights (our metadata kept in their header) and the config."""
    regnet.save(path / WEIGHTS, state, replace(metadata, layout="timm"))
    with open(path / CONFIG, "w", encoding="utf-8") as f:
        json.dump(hub_config(metadata), f, indent=2)
        f.write("\n")
    tags = ["image-classification", "timm", "regnet", "pycls", "regnet-convert"]
    (path / CARD).write_text(card(metadata, "timm", tags, loading_lines(metadata)), encoding="utf-8")


def loading_lines(metadata: WeightsMetadata) -> list[str]:
    """How the card says to load the folder (timm's own way)."""
    return [
        "import timm",
        "",
        'model = timm.create_model("local-dir:FOLDER", pretrained=True).eval()',
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        "logits = model(transform(image).unsqueeze(0))",
        "",
        "# or validate it: regnet-validate --weights FOLDER --data imagenet/val",
    ]


TARGET = Target(
    "timm-hub",
    'a folder for timm.create_model("local-dir:" + OUTPUT, pretrained=True): config.json\n'
    "(timm name, classes, pycls's evaluation as timm's data config), model.safetensors and a README.md\n"
    "model card; zoo models only",
    "RGB",
    write,
    "timm",
    files=(CONFIG, WEIGHTS, CARD),
    refuse=refuse,
)
