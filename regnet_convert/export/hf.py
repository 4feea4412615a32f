"""`--to hf`: a folder for transformers' `RegNetForImageClassification.from_pretrained`, RGB input.

transformers' RegNet (checked against 5.24's `modeling_regnet.py`) has one `groups_width` for all stages (a
stage has `max(1, width // groups_width)` groups), no bottleneck multiplier (the 3x3 convolution is as wide as
the block), squeeze-excitation at a quarter of the block's input width (`layer_type` "y") or none ("x"), BN eps
1e-5 (torch's default), ReLU, a 3x3 stride-2 stem and stride 2 in every stage but possibly the first
(`downsample_in_first_stage`). Anything else is refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from regnet import RegNetConfig
from regnet.layouts import LAYOUTS
from regnet.metadata import WeightsMetadata
from regnet.weights import write_safetensors
from regnet_convert.conversion.pipeline import HF_PROVENANCE, PROVENANCE_PREFIX
from regnet_convert.export.model_card import card
from regnet_convert.export.target import Target, input_channels

HF_BN_EPS = 1e-5  # nn.BatchNorm2d's default: transformers' RegNet sets no other
HF_SE_RATIO = 0.25  # RegNetSELayer(reduced_channels=round(in_channels / 4))
IMAGE_PROCESSOR = "BitImageProcessor"  # states shortest-edge resize and centre crop as such
BILINEAR = 2  # PIL's code, as transformers stores `resample`


def groups_width(config: RegNetConfig) -> int | None:
    """One `groups_width` that gives every stage its number of groups in transformers, or None."""
    for candidate in sorted({stage.group_width for stage in config.stages}):
        if all(max(1, stage.width // candidate) == stage.groups for stage in config.stages):
            return candidate
    return None


def refuse(config: RegNetConfig) -> str | None:
    """Why transformers' RegNetConfig cannot describe `config`, or None."""
    reasons = []
    if multipliers := sorted({s.bottleneck_multiplier for s in config.stages if s.bottleneck_multiplier != 1}):
        reasons.append(f"bottleneck multiplier {', '.join(f'{m:g}' for m in multipliers)} (transformers has only 1)")
    if config.se_ratio not in (None, HF_SE_RATIO):
        reasons.append(f"SE ratio {config.se_ratio:g} (transformers has only {HF_SE_RATIO:g} or none)")
    if groups_width(config) is None:
        widths = ", ".join(str(s.group_width) for s in config.stages)
        reasons.append(f"group widths {widths} per stage (transformers has one groups_width for all stages)")
    if config.stages[0].stride not in (1, 2) or any(s.stride != 2 for s in config.stages[1:]):
        strides = ", ".join(str(s.stride) for s in config.stages)
        reasons.append(f"stage strides {strides} (transformers has 2, or 1 for the first stage only)")
    if config.bn_eps != HF_BN_EPS:
        reasons.append(f"BN eps {config.bn_eps:g} (transformers uses {HF_BN_EPS:g})")
    if config.in_channels != 3:
        reasons.append(f"{input_channels(config.in_channels)} (an image processor normalises 3: RGB)")
    return "; ".join(reasons) or None


def labels(metadata: WeightsMetadata) -> list[str]:
    """One readable label per class: the class names, else the category ids, else transformers' LABEL_i."""
    return list(
        metadata.category_names or metadata.categories or (f"LABEL_{i}" for i in range(metadata.config.num_classes))
    )


def hf_config(metadata: WeightsMetadata, dtype: torch.dtype) -> dict:
    """config.json: what `transformers.RegNetConfig` needs to build this very network."""
    config = metadata.config
    id2label = dict(enumerate(labels(metadata)))
    return {
        "architectures": ["RegNetForImageClassification"],
        "model_type": "regnet",
        "num_channels": config.in_channels,
        "embedding_size": config.stem_width,
        "hidden_sizes": [s.width for s in config.stages],
        "depths": [s.depth for s in config.stages],
        "groups_width": groups_width(config),
        "layer_type": "y" if config.se_ratio else "x",
        "hidden_act": "relu",
        "downsample_in_first_stage": config.stages[0].stride == 2,
        "id2label": {str(i): name for i, name in id2label.items()},
        "label2id": {
            name: i for i, name in id2label.items()
        },  # a name given twice keeps its last id, as in transformers
        "dtype": str(dtype).removeprefix("torch."),
    }


def preprocessor_config(metadata: WeightsMetadata) -> dict:
    """preprocessor_config.json: the evaluation's resize (shortest side), crop, mean and std, RGB."""
    pre = metadata.preprocessing
    return {
        "image_processor_type": IMAGE_PROCESSOR,
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": pre.resize},
        "resample": BILINEAR,
        "do_center_crop": True,
        "crop_size": {"height": pre.crop, "width": pre.crop},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
    }


def hf_state(state: dict[str, torch.Tensor], se: bool) -> dict[str, torch.Tensor]:
    """The tensors under transformers' names, with the BN counters transformers' RegNet expects (zero)."""
    tensors, hf = {}, LAYOUTS["hf"]
    for key, tensor in state.items():
        tensors[hf.from_native(key, se)] = tensor.contiguous()
        if key.endswith(".running_var"):
            counter = key.removesuffix("running_var") + "num_batches_tracked"
            tensors[hf.from_native(counter, se)] = torch.zeros((), dtype=torch.long)
    return tensors


def provenance(metadata: WeightsMetadata) -> dict[str, str]:
    """model.safetensors' metadata: transformers' `format` and where the weights came from (`regnet-convert.*`,
    read back by `conversion.pipeline.load_weights`)."""
    recorded = {key: getattr(metadata, key) for key in HF_PROVENANCE}
    return {"format": "pt", **{PROVENANCE_PREFIX + key: value for key, value in recorded.items()}}


def loading_lines(metadata: WeightsMetadata) -> list[str]:
    """How the card says to load the folder (transformers' own way)."""
    return [
        "from transformers import AutoImageProcessor, AutoModelForImageClassification",
        "",
        'processor = AutoImageProcessor.from_pretrained("FOLDER")',
        'model = AutoModelForImageClassification.from_pretrained("FOLDER").eval()',
        'logits = model(**processor(images=image, return_tensors="pt")).logits',
        "",
        "# or validate it: regnet-validate --weights FOLDER --data imagenet/val",
    ]


def write(folder: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """config.json, model.safetensors (with its provenance), preprocessor_config.json and README.md into `folder`."""
    dtype = state["stem.conv.weight"].dtype
    write_safetensors(
        folder / "model.safetensors", hf_state(state, bool(metadata.config.se_ratio)), provenance(metadata)
    )
    for name, content in (
        ("config.json", hf_config(metadata, dtype)),
        ("preprocessor_config.json", preprocessor_config(metadata)),
    ):
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tags = ["image-classification", "regnet", "pycls", "regnet-convert"]
    (folder / "README.md").write_text(card(metadata, "transformers", tags, loading_lines(metadata)), encoding="utf-8")


TARGET = Target(
    "hf",
    "a folder for transformers' RegNetForImageClassification.from_pretrained(OUTPUT)\n"
    "and AutoImageProcessor, with a README.md model card (RegNets transformers cannot express are refused)",
    "RGB",
    write,
    files=("config.json", "model.safetensors", "preprocessor_config.json", "README.md"),
    refuse=refuse,
    layout="hf",
)
