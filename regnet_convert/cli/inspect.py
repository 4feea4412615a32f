"""Describe what a `.pyth` checkpoint or a converted safetensors file holds."""

from __future__ import annotations

from pathlib import Path

import torch

import regnet
from regnet import RegNet, RegNetConfig
from regnet.metadata import WeightsMetadata
from regnet.weights import check_against_architecture
from regnet_convert.conversion.architecture import check_cfg_model_type, find_config
from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import check_input_file, weights_kind
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


def describe(path: str | Path) -> list[str]:
    """Readable lines about the file; InputError when it is neither kind of file."""
    path = Path(path)
    check_input_file(path)
    if weights_kind(path) == "checkpoint":
        return _describe_checkpoint(path)
    try:
        header = regnet.read_header(path)
        metadata = WeightsMetadata.from_strings(header.metadata)
        check_against_architecture(header, metadata)
    except regnet.WeightsFileError as exc:
        raise InputError(path, str(exc)) from None
    dtypes = sorted({entry.dtype for entry in header.tensors.values()})
    pre = metadata.preprocessing
    return [
        f"file:         {path} (converted safetensors, {metadata.layout} layout)",
        *_architecture_lines(metadata.config),
        f"tensors:      {len(header.tensors)} ({', '.join(dtypes)})",
        f"input:        {pre.channel_order}, mean {list(pre.mean)}, std {list(pre.std)}, "
        f"resize {pre.resize}, crop {pre.crop}",
        f"source:       {metadata.source_format} {metadata.source_file[:200]} (sha256 {metadata.source_sha256[:64]})",
        f"converter:    regnet-convert {metadata.converter_version[:40]}",
        f"categories:   {_categories(metadata.categories)}",
        f"class names:  {_categories(metadata.category_names)}",
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
        *_architecture_lines(config),
        f"found from:   {found_by}",
        f"tensors:      {len(checkpoint.state)} ({', '.join(dtypes)}); {len(dropped)} counters to drop",
        f"has cfg:      {'yes' if checkpoint.cfg is not None else 'no'}; optimizer state: "
        f"{'yes' if checkpoint.has_optimizer_state else 'no'}",
    ]
