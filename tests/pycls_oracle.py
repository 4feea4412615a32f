"""Genuine pycls 0.1.1 models and checkpoints, the oracle the tests compare against."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from pycls.core import builders
from pycls.core import checkpoint as pycls_checkpoint
from pycls.core.config import cfg, reset_cfg

from regnet import ZOO, RegNetParams


def configure_regnet(params: RegNetParams, num_classes: int = 1000) -> None:
    """Set pycls's global cfg to a RegNet design point."""
    reset_cfg()
    cfg.MODEL.TYPE = "regnet"
    cfg.MODEL.NUM_CLASSES = num_classes
    cfg.REGNET.DEPTH = params.depth
    cfg.REGNET.W0 = params.w0
    cfg.REGNET.WA = params.wa
    cfg.REGNET.WM = params.wm
    cfg.REGNET.GROUP_W = params.group_width
    cfg.REGNET.BOT_MUL = params.bottleneck_multiplier
    cfg.REGNET.SE_ON = params.se_ratio is not None
    cfg.REGNET.SE_R = params.se_ratio or 0.25
    cfg.REGNET.STEM_W = params.stem_width


def configure_anynet(depths, widths, group_widths, bot_muls, se_ratio=None, num_classes=10, strides=None) -> None:
    """Set pycls's global cfg to an explicit AnyNet with RegNet blocks."""
    reset_cfg()
    cfg.MODEL.TYPE = "anynet"
    cfg.MODEL.NUM_CLASSES = num_classes
    cfg.ANYNET.DEPTHS = list(depths)
    cfg.ANYNET.WIDTHS = list(widths)
    cfg.ANYNET.GROUP_WS = list(group_widths)
    cfg.ANYNET.BOT_MULS = list(bot_muls)
    cfg.ANYNET.STRIDES = list(strides or [2] * len(depths))
    cfg.ANYNET.SE_ON = se_ratio is not None
    cfg.ANYNET.SE_R = se_ratio or 0.25


def build(name_or_type: str | None = None, num_classes: int = 1000) -> torch.nn.Module:
    """A pycls model: a zoo RegNet by name, or whatever the current cfg says."""
    if name_or_type in ZOO:
        configure_regnet(ZOO[name_or_type], num_classes)
    return builders.build_model()


def build_random(name: str, seed: int) -> torch.nn.Module:
    """`randomize(build(name), seed)` without pycls's own initialisation first (built on the meta device, then
    given memory that `randomize` fills whole): the same tensors, in about half the time for the large models."""
    configure_regnet(ZOO[name])
    with torch.device("meta"):
        model = builders.build_model()
    return randomize(model.to_empty(device="cpu"), seed)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights *and* BN running statistics, so a mis-mapped tensor changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.num_batches_tracked.fill_(1234)
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model.eval()


def save_genuine_checkpoint(model: torch.nn.Module, out_dir: Path, epoch: int = 0) -> Path:
    """Write the model with pycls's own `save_checkpoint` (epoch, model_state, optimizer_state, cfg)."""
    cfg.OUT_DIR = str(out_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = pycls_checkpoint.save_checkpoint(model, optimizer, epoch)
    assert path is not None and os.path.exists(path)
    return Path(path)
