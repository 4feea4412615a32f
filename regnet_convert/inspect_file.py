"""Describe what a `.pyth` checkpoint or a converted safetensors file holds."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

import regnet
from regnet import RegNet, RegNetConfig, read_metadata
from regnet_convert.architecture import find_config
from regnet_convert.checkpoint import read_pycls_checkpoint
from regnet_convert.convert import map_pycls_keys
from regnet_convert.errors import ConvertError


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
    """Readable lines about the file; ConvertError when it is neither kind of file."""
    path = Path(path)
    if not path.exists():
        raise ConvertError(path, "no such file")
    if regnet.is_safetensors(path):
        try:
            metadata = read_metadata(path)
        except ValueError as exc:
            raise ConvertError(path, str(exc)) from None
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in keys})
        pre = metadata.preprocessing
        return [
            f"file:         {path} (converted safetensors)",
            *_architecture_lines(metadata.config),
            f"tensors:      {len(keys)} ({', '.join(dtypes)})",
            f"input:        {pre.channel_order}, mean {list(pre.mean)}, std {list(pre.std)}, "
            f"resize {pre.resize}, crop {pre.crop}",
            f"source:       {metadata.source_format} {metadata.source_file} (sha256 {metadata.source_sha256})",
            f"converter:    regnet-convert {metadata.converter_version}",
        ]
    checkpoint = read_pycls_checkpoint(path)
    state, dropped = map_pycls_keys(path, checkpoint.state)
    config, found_by = find_config(str(path), state, checkpoint.cfg, None)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in checkpoint.state.values()})
    kind = "pycls training checkpoint" if checkpoint.cfg is not None or checkpoint.has_optimizer_state else "state dict"
    return [
        f"file:         {path} ({kind})",
        *_architecture_lines(config),
        f"found from:   {found_by}",
        f"tensors:      {len(checkpoint.state)} ({', '.join(dtypes)}); {len(dropped)} counters to drop",
        f"has cfg:      {'yes' if checkpoint.cfg is not None else 'no'}; optimizer state: "
        f"{'yes' if checkpoint.has_optimizer_state else 'no'}",
    ]
