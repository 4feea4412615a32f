"""README.md model cards for the hf and timm-hub export folders, with the metadata block the Hugging Face hub reads.

The YAML block states the licence, library, tags, dataset and a `model-index` with the published top-1/top-5 of
the zoo row the weights reproduce (`published_row`); the text says where the weights came from (file and sha256),
which converter wrote them, how they expect their input and how to load them. huggingface_hub's own parser
(`huggingface_hub.ModelCard`) is the oracle the tests hold these cards to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import regnet
from regnet.metadata import WeightsMetadata
from regnet_convert.process import printable

# the licence each source library publishes its RegNet weights under (Hugging Face's licence identifiers)
LICENSES = {"pycls": "mit", "mmcls": "apache-2.0", "timm": "apache-2.0", "torchvision": "bsd-3-clause",
            "hf": "apache-2.0"}  # fmt: skip
PYCLS_ZOO = "https://github.com/facebookresearch/pycls/blob/main/MODEL_ZOO.md"
SEED_TABLE = "https://github.com/open-mmlab/mmclassification/tree/master/configs/regnet"


@dataclass(frozen=True)
class PublishedRow:
    """The published numbers a card states: which table, which row, top-1 and top-5 in percent."""

    table: str
    url: str
    model: str
    top1: float
    top5: float


def published_row(metadata: WeightsMetadata) -> PublishedRow | None:
    """The zoo row these weights reproduce: the seed table's (mmcls's starred row) where it has the model, else
    pycls's; None for a model outside the zoo. (The zoo's weights identities, by the source's sha256, are to pick
    the row of the very weights once the zoo records them.)"""
    if metadata.model not in regnet.ZOO:
        return None
    entry = regnet.zoo_model(metadata.model)
    if entry.seed_table is not None:
        return PublishedRow(
            "mmclassification's RegNet table", SEED_TABLE, entry.pycls_name, *vars(entry.seed_table).values()
        )
    return PublishedRow("pycls's model zoo", PYCLS_ZOO, entry.pycls_name, entry.pycls.top1, entry.pycls.top5)


def _yaml(value: object) -> str:
    """A YAML scalar: JSON's quoting is valid YAML."""
    return json.dumps(value, ensure_ascii=False)


def _code(text: str) -> str:
    """File-borne text as one Markdown code span: controls and newlines escaped, fenced by more backticks than it
    holds (CommonMark), so a source name cannot add lines, links or HTML to the card."""
    text = printable(text)
    run = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence, pad = "`" * (run + 1), " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def front_matter(metadata: WeightsMetadata, library: str, tags: list[str]) -> list[str]:
    """The card's metadata block (between `---` lines)."""
    lines = [
        "---",
        f"license: {LICENSES.get(metadata.source_format, 'other')}",
        f"library_name: {library}",
        "pipeline_tag: image-classification",
        "tags:",
        *(f"- {_yaml(tag)}" for tag in tags),
        "datasets:",
        "- imagenet-1k",
    ]
    row = published_row(metadata)
    if row is not None:
        lines += [
            "model-index:",
            f"- name: {_yaml(metadata.model)}",
            "  results:",
            "  - task:",
            "      type: image-classification",
            "      name: Image Classification",
            "    dataset:",
            "      type: imagenet-1k",
            "      name: ImageNet-1k",
            "      split: validation",
            "    metrics:",
            "    - type: accuracy",
            "      name: Top-1 accuracy",
            f"      value: {row.top1}",
            "    - type: top-5-accuracy",
            "      name: Top-5 accuracy",
            f"      value: {row.top5}",
            "    source:",
            f"      name: {_yaml(f'{row.table}, {row.model}')}",
            f"      url: {_yaml(row.url)}",
        ]
    return [*lines, "---"]


def card(metadata: WeightsMetadata, library: str, tags: list[str], loading: list[str]) -> str:
    """The whole README.md: metadata block, provenance, input, published numbers, and `loading` (code lines)."""
    pre, row = metadata.preprocessing, published_row(metadata)
    name = regnet.zoo_model(metadata.model).pycls_name if metadata.model in regnet.ZOO else "a custom RegNet"
    published = (
        f"Published accuracy on ImageNet-1k validation ({row.table}, {row.model}): top-1 {row.top1}%, "
        f"top-5 {row.top5}%. `regnet-validate` reproduces it from the converted file."
        if row
        else "No published accuracy is stated: the architecture is not a pycls zoo model, or the weights are not "
        "the zoo's file."
    )
    return "\n".join(
        [
            *front_matter(metadata, library, tags),
            "",
            f"# {metadata.model}",
            "",
            f"{name} ({metadata.config.num_classes} classes), converted by regnet-convert.",
            "",
            "## Provenance",
            "",
            f"- source: {_code(metadata.source_format)} file {_code(metadata.source_file)}",
            f"- source sha256: {_code(metadata.source_sha256)}",
            f"- converter: regnet-convert {_code(metadata.converter_version)}",
            "",
            "## Input",
            "",
            f"{pre.channel_order} images, short side resized to {pre.resize}, centre crop {pre.crop}, "
            f"(pixel / 255 - mean) / std with mean {list(pre.mean)} and std {list(pre.std)}.",
            "",
            "## Accuracy",
            "",
            published,
            "",
            "## How to load",
            "",
            "```python",
            *loading,
            "```",
            "",
        ]
    )


def torchvision_lines(metadata: WeightsMetadata, output: str) -> list[str]:
    """The Python lines that build torchvision's RegNet for this architecture and load the exported file."""
    config, stages = metadata.config, metadata.config.stages
    se = f", se_ratio={config.se_ratio}" if config.se_ratio else ""
    return [
        "from functools import partial",
        "import torch, torchvision",
        "from safetensors.torch import load_file",
        "from torchvision.models.regnet import BlockParams",
        f"params = BlockParams(depths={[s.depth for s in stages]}, widths={[s.width for s in stages]},",
        f"    group_widths={[s.group_width for s in stages]},",
        f"    bottleneck_multipliers={[s.bottleneck_multiplier for s in stages]},",
        f"    strides={[s.stride for s in stages]}{se})",
        f"model = torchvision.models.RegNet(params, num_classes={config.num_classes}, stem_width={config.stem_width},",
        f"    norm_layer=partial(torch.nn.BatchNorm2d, eps={config.bn_eps}))",
        f"model.load_state_dict(load_file({output!r}), strict=True)",
        "model.eval()  # input: RGB, (pixel / 255 - mean) / std with "
        f"mean {list(metadata.preprocessing.mean)}, std {list(metadata.preprocessing.std)}",
    ]
