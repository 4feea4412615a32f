"""Write a native RegNet as a pycls training checkpoint (for demos, benchmarks and round trips)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from regnet import RegNet, RegNetParams
from regnet.layouts import LAYOUTS


def pycls_cfg(model: RegNet, params: RegNetParams | None) -> dict:
    """The parts of a pycls config that describe `model` (REGNET when its design point is known, else ANYNET)."""
    config = model.config
    cfg: dict = {"MODEL": {"TYPE": "regnet" if params else "anynet", "NUM_CLASSES": config.num_classes}}
    cfg["BN"] = {"EPS": config.bn_eps}
    if params:
        cfg["REGNET"] = {
            "DEPTH": params.depth,
            "W0": params.w0,
            "WA": params.wa,
            "WM": params.wm,
            "GROUP_W": params.group_width,
            "BOT_MUL": params.bottleneck_multiplier,
            "SE_ON": params.se_ratio is not None,
            "SE_R": params.se_ratio or 0.25,
            "STEM_W": params.stem_width,
            "STRIDE": params.stride,
        }
    else:
        stages = config.stages
        cfg["ANYNET"] = {
            "DEPTHS": [s.depth for s in stages],
            "WIDTHS": [s.width for s in stages],
            "GROUP_WS": [s.group_width for s in stages],
            "BOT_MULS": [s.bottleneck_multiplier for s in stages],
            "STRIDES": [s.stride for s in stages],
            "SE_ON": config.se_ratio is not None,
            "SE_R": config.se_ratio or 0.25,
            "STEM_W": config.stem_width,
        }
    return cfg


def write_pycls_checkpoint(model: RegNet, path: str | Path, params: RegNetParams | None = None) -> Path:
    """Save `model` as pycls's `save_checkpoint` does: epoch, model_state, optimizer_state, cfg (YAML)."""
    state = {LAYOUTS["pycls"].from_native(k): v for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {
        "epoch": 0,
        "model_state": state,
        "optimizer_state": optimizer.state_dict(),
        "cfg": yaml.safe_dump(pycls_cfg(model, params)),
    }
    path = Path(path)
    torch.save(checkpoint, path)
    return path
