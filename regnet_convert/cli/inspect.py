"""Describe what any weights the tool reads or writes hold: a converted file, a pycls, mmcls, timm or torchvision
checkpoint, a Hugging Face or timm-hub folder, an ONNX export."""

from __future__ import annotations

from pathlib import Path

import torch

import regnet
from regnet import RegNet, RegNetConfig
from regnet.metadata import WeightsMetadata
from regnet.weights import check_against_architecture
from regnet_convert.conversion.architecture import check_cfg_model_type, find_config
from regnet_convert.conversion.detect import KIND_NAMES, detect
from regnet_convert.conversion.pipeline import load_weights
from regnet_convert.errors import InputError
from regnet_convert.process import printable
from regnet_convert.sources.checkpoint import read_pycls_checkpoint
from regnet_convert.sources.formats import map_keys


def _architecture_lines(config: RegNetConfig) -> list[str]:
    with torch.device("meta"):
        cx = RegNet(config).complexity(224)
    lines = [
        f"model:        {config.name or 'custom RegNet'}",
        f"classes:      {config.num_classes}",
        f"stem width:   {config.stem_width}",
        f"SE ratio:     {config.se_ratio if config.se_ratio else 'none'}",
        "stages:       " + "  ".join(f"{s.depth}x{s.width}(g{s.group_width},s{s.stride})" for s in config.stages),
        f"params:       {cx['params']:,}",
        f"flops @224:   {cx['flops']:,} multiply-adds",
        f"acts @224:    {cx['acts']:,}",
    ]
    if any(s.bottleneck_multiplier != 1.0 for s in config.stages):
        lines.append("bottleneck:   " + " ".join(str(s.bottleneck_multiplier) for s in config.stages))
    return lines


# how each kind names its tensors
LAYOUT_OF = {"pycls": "pycls", "mmcls": "mmcls", "timm": "timm", "torchvision": "torchvision", "hf": "transformers",
             "timm-hub": "timm", "onnx": "ONNX graph (BN folded into the convolutions)"}  # fmt: skip


def describe(path: str | Path) -> list[str]:
    """Readable lines about the file or folder; InputError when it is none of the kinds the tool reads."""
    path = Path(path)
    kind = detect(path, what="file")
    if kind == "pycls":
        return _describe_checkpoint(path)
    if kind != "native":
        return _describe_loaded(path)
    try:
        header = regnet.read_header(path)
        metadata = WeightsMetadata.from_strings(header.metadata)
        check_against_architecture(header, metadata)
    except regnet.WeightsFileError as exc:
        raise InputError(path, str(exc)) from None
    dtypes = sorted({entry.dtype for entry in header.tensors.values()})
    return [
        f"file:         {path} (converted safetensors, {metadata.layout} layout)",
        f"layout:       {metadata.layout}",
        *_architecture_lines(metadata.config),
        f"tensors:      {len(header.tensors)} ({', '.join(dtypes)})",
        *_metadata_lines(metadata),
    ]


def _metadata_lines(metadata: WeightsMetadata) -> list[str]:
    pre = metadata.preprocessing
    return [
        f"input:        {pre.channel_order}, mean {list(pre.mean)}, std {list(pre.std)}, "
        f"resize {pre.resize}, crop {pre.crop}",
        # file-borne text, escaped field by field (a newline in it would otherwise forge a line of this listing)
        f"source:       {printable(metadata.source_format[:40])} {printable(metadata.source_file[:200])} "
        f"(sha256 {printable(metadata.source_sha256[:64])})",
        f"converter:    regnet-convert {printable(metadata.converter_version[:40])}",
        f"categories:   {_categories(metadata.categories)}",
        f"class names:  {_categories(metadata.category_names)}",
    ]


def _describe_loaded(path: Path) -> list[str]:
    """Any other kind, read (and checked) as validation reads it."""
    loaded = load_weights(path)
    params = list(loaded.model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params}) or ["float32"]
    return [
        f"file:         {path} ({KIND_NAMES[loaded.kind]})",
        f"layout:       {LAYOUT_OF[loaded.kind]}",
        *_architecture_lines(loaded.metadata.config),
        f"tensors:      {len(params) or 'in the graph'} ({', '.join(dtypes)})",
        *_metadata_lines(loaded.metadata),
    ]


def _categories(categories: tuple[str, ...] | None) -> str:
    if not categories:
        return "none recorded"
    return f"{len(categories)} ({', '.join(categories[:3])}, ..., {categories[-1]})"


def _describe_checkpoint(path: Path) -> list[str]:
    checkpoint = read_pycls_checkpoint(path)
    if checkpoint.cfg is not None:
        check_cfg_model_type(str(path), checkpoint.cfg)
    state, dropped = map_keys(path, checkpoint.state)
    config, found_by = find_config(str(path), state, checkpoint.cfg, None)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    kind = "pycls training checkpoint" if checkpoint.cfg is not None or checkpoint.has_optimizer_state else "state dict"
    return [
        f"file:         {path} ({kind})",
        "layout:       pycls",
        *_architecture_lines(config),
        f"found from:   {found_by}",
        f"tensors:      {len(checkpoint.state)} ({', '.join(dtypes)}); {len(dropped)} counters to drop",
        f"has cfg:      {'yes' if checkpoint.cfg is not None else 'no'}; optimizer state: "
        f"{'yes' if checkpoint.has_optimizer_state else 'no'}",
        "input:        BGR (pycls's channel order)",
        "source:       pycls (this file)",
    ]
