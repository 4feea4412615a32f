"""Work out which RegNet a state dict holds: from its pycls cfg, the zoo, or its tensor shapes."""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from regnet import ZOO, RegNetConfig, RegNetParams, StageConfig, canonical_name, zoo_config
from regnet.model import shape_problems
from regnet_convert.errors import InputError

_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.")
_SE_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.se\.reduce\.weight$")
SUPPORTED_STEM, SUPPORTED_BLOCK = "simple_stem_in", "res_bottleneck_block"
_T = TypeVar("_T")


def shape_mismatches(state: Mapping[str, torch.Tensor], config: RegNetConfig, limit: int = 3) -> list[str]:
    """Differences between a native-named state dict and `config`, first `limit` of them, as readable lines."""
    return shape_problems({k: tuple(v.shape) for k, v in state.items()}, config, limit)


def zoo_name_of(config: RegNetConfig) -> str | None:
    """The zoo model with exactly this structure (any number of classes), if one exists."""
    for name in ZOO:
        if zoo_config(name, config.num_classes) == config:
            return name
    return None


class _Cfg:
    """Typed access to a pycls cfg (a YAML dump): every wrong type or missing key is one clear message.

    Each getter reads SECTION.KEY, returning `default` when it is absent (no default: it is required)."""

    def __init__(self, cfg: object) -> None:
        if not isinstance(cfg, dict):
            raise ValueError(f"its cfg is a {type(cfg).__name__}, not a mapping")
        self.cfg: dict[Any, Any] = cfg

    def section(self, name: str) -> dict[Any, Any]:
        value = self.cfg.get(name, {})
        if not isinstance(value, dict):
            raise ValueError(f"its cfg's {name} is {_shown(value)}, not a section")
        return value

    def integer(self, section: str, key: str, default: int | None = None) -> int:
        return self._get(section, key, _as_int, default)

    def number(self, section: str, key: str, default: float | None = None) -> float:
        return self._get(section, key, _as_float, default)

    def flag(self, section: str, key: str, default: bool | None = None) -> bool:
        return self._get(section, key, _as_bool, default)

    def text(self, section: str, key: str, default: str | None = None) -> str:
        return self._get(section, key, _as_str, default)

    def integers(self, section: str, key: str) -> list[int]:
        """A required list of integers."""
        return self._column(section, key, _as_int)

    def numbers(self, section: str, key: str) -> list[float]:
        """A required list of numbers."""
        return self._column(section, key, _as_float)

    def _get(self, section: str, key: str, convert: Callable[[str, object], _T], default: _T | None) -> _T:
        values = self.section(section)
        if key not in values:
            if default is None:
                raise ValueError(f"its cfg has no {section}.{key}")
            return default
        return convert(f"{section}.{key}", values[key])

    def _column(self, section: str, key: str, convert: Callable[[str, object], _T]) -> list[_T]:
        items = self._get(section, key, _as_list, None)
        return [convert(f"{section}.{key}[{i}]", item) for i, item in enumerate(items)]


def _bounded_repr() -> reprlib.Repr:
    """A repr that looks at no more than a few levels and items: a cfg's list may share itself 2**60 times."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, 40, 40
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 6
    return shown


_REPR = _bounded_repr()


def _shown(value: object) -> str:
    text = "null" if value is None else _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(name: str, value: object, wanted: str) -> ValueError:
    return ValueError(f"its cfg's {name} is {_shown(value)}, expected {wanted}")


def _as_int(name: str, value: object) -> int:
    """An integer (a float holding one too; no bool), or ValueError naming the cfg key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _wrong(name, value, "an integer")


def _as_float(name: str, value: object) -> float:
    """A finite number (no bool) as a float, or ValueError naming the cfg key."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"its cfg's {name} is {_shown(value)}, not a finite number")
        return float(value)
    raise _wrong(name, value, "a number")


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _wrong(name, value, "true or false")


def _as_str(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    raise _wrong(name, value, "a string")


def _as_list(name: str, value: object) -> list[object]:
    if isinstance(value, list):
        return value
    raise _wrong(name, value, "a list")


def cfg_model_type(cfg: dict) -> str:
    """MODEL.TYPE, lower-cased."""
    return _Cfg(cfg).text("MODEL", "TYPE", "").lower()


def check_cfg_model_type(path: str, cfg: dict) -> None:
    """Fail early, naming the model type, when a pycls cfg describes something other than a RegNet."""
    try:
        model_type = cfg_model_type(cfg)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    if model_type not in ("regnet", "anynet"):
        raise InputError(path, f"not a RegNet: its cfg says MODEL.TYPE {model_type or 'empty'!r}")


def config_from_cfg(cfg: dict, num_classes: int | None, max_blocks: int | None = None) -> RegNetConfig:
    """The network a pycls training config describes; ValueError for non-RegNet or implausible models.

    `max_blocks` bounds the total depth before anything is built (a checkpoint's tensor count implies it).
    """
    c = _Cfg(cfg)
    model_type = cfg_model_type(cfg)
    eps = c.number("BN", "EPS", 1e-5)
    classes = c.integer("MODEL", "NUM_CLASSES", num_classes or 1000)  # stated: must agree with the tensors
    if model_type == "regnet":
        section = "REGNET"
        depth = c.integer(section, "DEPTH")
        if max_blocks is not None and depth > max_blocks:
            raise ValueError(f"its cfg says REGNET.DEPTH {depth}, but its tensors hold at most {max_blocks} blocks")
        params = RegNetParams(
            depth=depth,
            w0=c.integer(section, "W0"),
            wa=c.number(section, "WA"),
            wm=c.number(section, "WM"),
            group_width=c.integer(section, "GROUP_W"),
            bottleneck_multiplier=c.number(section, "BOT_MUL", 1.0),
            se_ratio=c.number(section, "SE_R", 0.25) if c.flag(section, "SE_ON", False) else None,
            stem_width=c.integer(section, "STEM_W", 32),
            stride=c.integer(section, "STRIDE", 2),
        )
        stages = params.stages()
    elif model_type == "anynet":
        section = "ANYNET"
        depths = c.integers(section, "DEPTHS")
        if max_blocks is not None and sum(max(d, 0) for d in depths) > max_blocks:
            raise ValueError(
                f"its cfg says ANYNET.DEPTHS {_shown(depths)}, but its tensors hold at most {max_blocks} blocks"
            )
        widths, group_widths = c.integers(section, "WIDTHS"), c.integers(section, "GROUP_WS")
        multipliers, strides = c.numbers(section, "BOT_MULS"), c.integers(section, "STRIDES")
        if len({len(depths), len(widths), len(group_widths), len(multipliers), len(strides)}) != 1:
            raise ValueError("its cfg's ANYNET DEPTHS, WIDTHS, GROUP_WS, BOT_MULS and STRIDES differ in length")
        columns = zip(depths, widths, group_widths, multipliers, strides, strict=True)
        stages = tuple(StageConfig(d, w, g, b, s) for d, w, g, b, s in columns)
    else:
        raise ValueError(f"not a RegNet: its cfg says MODEL.TYPE {model_type or 'empty'!r}")
    stem_type = c.text(section, "STEM_TYPE", SUPPORTED_STEM)
    if stem_type != SUPPORTED_STEM:
        raise ValueError(f"not a RegNet: stem type {stem_type!r} (RegNets use {SUPPORTED_STEM!r})")
    block_type = c.text(section, "BLOCK_TYPE", SUPPORTED_BLOCK)
    if block_type != SUPPORTED_BLOCK:
        raise ValueError(f"not a RegNet: block type {block_type!r} (RegNets use {SUPPORTED_BLOCK!r})")
    se_ratio = c.number(section, "SE_R", 0.25) if c.flag(section, "SE_ON", False) else None
    return RegNetConfig(stages, se_ratio, c.integer(section, "STEM_W", 32), classes, bn_eps=eps)


def config_differences(a: RegNetConfig, b: RegNetConfig) -> list[str]:
    """Readable differences between two architectures (`a`'s value vs `b`'s)."""
    facts = [
        ("classes", a.num_classes, b.num_classes),
        ("BN eps", a.bn_eps, b.bn_eps),
        ("SE ratio", a.se_ratio, b.se_ratio),
        ("stem width", a.stem_width, b.stem_width),
        ("input channels", a.in_channels, b.in_channels),
        ("stages", _stages_text(a), _stages_text(b)),
    ]
    return [f"{name} {x} vs {y}" for name, x, y in facts if x != y]


def _stages_text(config: RegNetConfig) -> str:
    return " ".join(
        f"{s.depth}x{s.width}/g{s.group_width}/b{s.bottleneck_multiplier:g}/s{s.stride}" for s in config.stages
    )


def _se_ratio(se_widths: list[tuple[int, int]]) -> float | None:
    """One ratio r with round(r * w_in) == w_se for every block, preferring the usual 0.25."""
    if not se_widths:
        return None
    widest = max(se_widths)  # its ratio is the most precise; a few candidates keep this linear
    for ratio in (0.25, widest[1] / widest[0], se_widths[0][1] / se_widths[0][0]):
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
        w_in = width
    for key, tensor in state.items():
        if (match := _SE_KEY.match(key)) and int(match.group(1)) < len(stages):
            s, b = int(match.group(1)), int(match.group(2))
            block_in = (stages[s - 1].width if s else int(stem.shape[0])) if b == 0 else stages[s].width
            se_widths.append((block_in, int(tensor.shape[0])))
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

    `model` (a zoo name) must agree with every fact the checkpoint's cfg states; without it the cfg
    decides; without a cfg, the tensor shapes. The result always agrees with every tensor shape, or
    InputError lists the first mismatches. The tensor count bounds any depth before anything is built.
    """
    num_classes = int(state["head.fc.weight"].shape[0]) if "head.fc.weight" in state else None
    max_blocks = len(state) // 15
    try:
        from_cfg = config_from_cfg(cfg, num_classes, max_blocks) if cfg is not None else None
        if model:
            config, how = zoo_config(canonical_name(model), num_classes or 1000), f"--model {model}"
            if from_cfg is not None:
                if differences := config_differences(config, from_cfg):
                    raise InputError(path, f"--model {model} contradicts its cfg: " + "; ".join(differences))
                how += ", agrees with the checkpoint's cfg"
        elif from_cfg is not None:
            config, how = from_cfg, "the checkpoint's cfg"
        else:
            config, how = config_from_shapes(state), "tensor shapes"
    except KeyError as exc:
        raise InputError(path, str(exc.args[0])) from None
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    mismatches = shape_mismatches(state, config)
    if mismatches:
        raise InputError(path, f"tensor shapes contradict {how}: " + "; ".join(mismatches))
    name = zoo_name_of(config)
    if not model and name:
        how += f", matches zoo model {name}"
    return config.with_name(name), how
