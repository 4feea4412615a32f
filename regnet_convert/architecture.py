"""Work out which RegNet a state dict holds: from its pycls cfg, the zoo, or its tensor shapes."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from regnet import ZOO, RegNet, RegNetConfig, RegNetParams, StageConfig, canonical_name, zoo_config
from regnet_convert.errors import ConvertError

_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.")
SUPPORTED_STEM, SUPPORTED_BLOCK = "simple_stem_in", "res_bottleneck_block"


def expected_shapes(config: RegNetConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the native model for `config` (built without memory)."""
    with torch.device("meta"):
        model = RegNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def shape_mismatches(state: Mapping[str, torch.Tensor], config: RegNetConfig, limit: int = 3) -> list[str]:
    """Differences between a native-named state dict and `config`, first `limit` of them, as readable lines."""
    expected = expected_shapes(config)
    problems = []
    for key, shape in expected.items():
        if key not in state:
            problems.append(f"{key} missing (expected {list(shape)})")
        elif tuple(state[key].shape) != shape:
            problems.append(f"{key} is {list(state[key].shape)}, expected {list(shape)}")
    problems += [f"{key} is not part of this model" for key in state if key not in expected]
    return problems[:limit] + ([f"and {len(problems) - limit} more"] if len(problems) > limit else [])


def zoo_name_of(config: RegNetConfig) -> str | None:
    """The zoo model with exactly this structure (any number of classes), if one exists."""
    for name in ZOO:
        if zoo_config(name, config.num_classes) == config:
            return name
    return None


def check_cfg_model_type(path: str, cfg: dict) -> None:
    """Fail early, naming the model type, when a pycls cfg describes something other than a RegNet."""
    model_type = str(cfg.get("MODEL", {}).get("TYPE", "")).lower()
    if model_type not in ("regnet", "anynet"):
        raise ConvertError(path, f"not a RegNet: its cfg says MODEL.TYPE {model_type or 'empty'!r}")


def config_from_cfg(cfg: dict, num_classes: int | None) -> RegNetConfig:
    """The network a pycls training config describes; ValueError for non-RegNet models."""
    model = cfg.get("MODEL", {})
    model_type = str(model.get("TYPE", "")).lower()
    eps = float(cfg.get("BN", {}).get("EPS", 1e-5))
    classes = num_classes or int(model.get("NUM_CLASSES", 1000))
    if model_type == "regnet":
        section = cfg.get("REGNET", {})
        params = RegNetParams(
            depth=int(section["DEPTH"]),
            w0=int(section["W0"]),
            wa=float(section["WA"]),
            wm=float(section["WM"]),
            group_width=int(section["GROUP_W"]),
            bottleneck_multiplier=float(section.get("BOT_MUL", 1.0)),
            se_ratio=float(section["SE_R"]) if section.get("SE_ON") else None,
            stem_width=int(section.get("STEM_W", 32)),
            stride=int(section.get("STRIDE", 2)),
        )
        stages = params.stages()
    elif model_type == "anynet":
        section = cfg.get("ANYNET", {})
        columns = [section[k] for k in ("DEPTHS", "WIDTHS", "GROUP_WS", "BOT_MULS", "STRIDES")]
        stages = tuple(
            StageConfig(int(d), int(w), int(g), float(b), int(s)) for d, w, g, b, s in zip(*columns, strict=True)
        )
    else:
        raise ValueError(f"not a RegNet: its cfg says MODEL.TYPE {model_type or 'empty'!r}")
    if section.get("STEM_TYPE", SUPPORTED_STEM) != SUPPORTED_STEM:
        raise ValueError(f"not a RegNet: stem type {section['STEM_TYPE']!r} (RegNets use {SUPPORTED_STEM!r})")
    if section.get("BLOCK_TYPE", SUPPORTED_BLOCK) != SUPPORTED_BLOCK:
        raise ValueError(f"not a RegNet: block type {section['BLOCK_TYPE']!r} (RegNets use {SUPPORTED_BLOCK!r})")
    se_ratio = float(section.get("SE_R", 0.25)) if section.get("SE_ON") else None
    return RegNetConfig(stages, se_ratio, int(section.get("STEM_W", 32)), classes, bn_eps=eps)


def _se_ratio(se_widths: list[tuple[int, int]]) -> float | None:
    """One ratio r with round(r * w_in) == w_se for every block, preferring the usual 0.25."""
    if not se_widths:
        return None
    for ratio in [0.25] + [w_se / w_in for w_in, w_se in se_widths]:
        if all(round(w_in * ratio) == w_se for w_in, w_se in se_widths):
            return ratio
    raise ValueError("no single squeeze-excitation ratio explains the SE widths of all blocks")


def config_from_shapes(state: Mapping[str, torch.Tensor]) -> RegNetConfig:
    """The per-stage structure implied by a native-named state dict's tensor shapes.

    Strides cannot be seen in weights: a stage whose first block projects its shortcut
    although its width is unchanged must downsample (stride 2); one without a projection
    keeps stride 1; all others are taken to be 2, as in every RegNet.
    """
    for key in ("stem.conv.weight", "head.fc.weight"):
        if key not in state:
            raise ValueError(f"not a RegNet: no {key!r}")
    stem = state["stem.conv.weight"]
    if tuple(stem.shape[2:]) != (3, 3):
        kind = " (a pycls ResNet stem)" if tuple(stem.shape[2:]) == (7, 7) else ""
        raise ValueError(f"not a RegNet: its stem is a {stem.shape[2]}x{stem.shape[3]} convolution{kind}, not 3x3")
    depths: dict[int, int] = {}
    for key in state:
        if match := _BLOCK_KEY.match(key):
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if sorted(depths) != list(range(len(depths))) or not depths:
        raise ValueError("not a RegNet: its stages are not numbered s1, s2, ... without gaps")
    stages, se_widths, w_in = [], [], int(stem.shape[0])
    for s in range(len(depths)):
        first = f"stages.{s}.0."
        try:
            width = int(state[first + "conv3.conv.weight"].shape[0])
            bottleneck = int(state[first + "conv1.conv.weight"].shape[0])
            group_width = int(state[first + "conv2.conv.weight"].shape[1])
        except KeyError as exc:
            raise ValueError(f"not a RegNet: stage {s + 1} has no {exc.args[0]!r}") from None
        projects = first + "shortcut.conv.weight" in state
        stride = 2 if projects or w_in != width else 1
        stages.append(StageConfig(depths[s], width, group_width, bottleneck / width, stride))
        for b in range(depths[s]):
            se_key = f"stages.{s}.{b}.se.reduce.weight"
            if se_key in state:
                se_widths.append((w_in if b == 0 else width, int(state[se_key].shape[0])))
        w_in = width
    return RegNetConfig(
        stages=tuple(stages),
        se_ratio=_se_ratio(se_widths),
        stem_width=int(stem.shape[0]),
        num_classes=int(state["head.fc.weight"].shape[0]),
        in_channels=int(stem.shape[1]),
    )


def find_config(
    path: str, state: Mapping[str, torch.Tensor], cfg: dict | None, model: str | None
) -> tuple[RegNetConfig, str]:
    """The architecture of a native-named state dict, and how it was found.

    `model` (a zoo name) overrides everything; otherwise the checkpoint's cfg; otherwise shapes.
    The result always agrees with every tensor shape, or ConvertError lists the first mismatches.
    """
    num_classes = int(state["head.fc.weight"].shape[0]) if "head.fc.weight" in state else None
    try:
        if model:
            config, how = zoo_config(canonical_name(model), num_classes or 1000), f"--model {model}"
        elif cfg is not None:
            config, how = config_from_cfg(cfg, num_classes), "the checkpoint's cfg"
        else:
            config, how = config_from_shapes(state), "tensor shapes"
    except KeyError as exc:
        raise ConvertError(path, str(exc.args[0])) from None
    except ValueError as exc:
        raise ConvertError(path, str(exc)) from None
    mismatches = shape_mismatches(state, config)
    if mismatches:
        raise ConvertError(path, f"tensor shapes contradict {how}: " + "; ".join(mismatches))
    name = zoo_name_of(config)
    if model or name:
        how += f", matches zoo model {name}" if name else ""
    return config.with_name(name), how
