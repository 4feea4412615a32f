"""Explicit per-stage description of a RegNet: everything needed to build one."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# Far beyond any RegNet (pycls's largest has 27 blocks, widths up to 3712), and small enough that a crafted
# architecture can never cost more than seconds: a plausibility bound, checked before anything is built.
MAX_BLOCKS, MAX_STAGES, MAX_WIDTH, MAX_CLASSES, MAX_STRIDE, MAX_RATIO = 256, 32, 1 << 16, 1 << 20, 8, 16.0


@dataclass(frozen=True)
class StageConfig:
    """One stage: `depth` bottleneck blocks of output width `width`."""

    depth: int
    width: int
    group_width: int
    bottleneck_multiplier: float = 1.0
    stride: int = 2

    @property
    def bottleneck_width(self) -> int:
        """Width of the grouped 3x3 convolution inside each block."""
        return round(self.width * self.bottleneck_multiplier)

    @property
    def groups(self) -> int:
        """Number of groups of the 3x3 convolution."""
        return self.bottleneck_width // self.group_width


@dataclass(frozen=True)
class RegNetConfig:
    """A RegNet (any number of stages and classes), as pycls's AnyNet with bottleneck blocks."""

    stages: tuple[StageConfig, ...]
    se_ratio: float | None = None
    stem_width: int = 32
    num_classes: int = 1000
    in_channels: int = 3
    bn_eps: float = 1e-5
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a RegNet needs at least one stage")
        self._check_plausible()
        for i, stage in enumerate(self.stages, start=1):
            if min(stage.depth, stage.width, stage.group_width, stage.stride) < 1:
                raise ValueError(f"stage {i}: depth, width, group width and stride must be positive")
            if not (math.isfinite(stage.bottleneck_multiplier) and stage.bottleneck_width >= 1):
                raise ValueError(f"stage {i}: bottleneck multiplier {stage.bottleneck_multiplier} gives no channels")
            if stage.bottleneck_width % stage.group_width:
                raise ValueError(
                    f"stage {i}: bottleneck width {stage.bottleneck_width} is not a multiple "
                    f"of the group width {stage.group_width}"
                )
        if min(self.stem_width, self.num_classes, self.in_channels) < 1:
            raise ValueError("stem width, classes and input channels must be positive")
        if self.se_ratio is not None and not (math.isfinite(self.se_ratio) and self.se_ratio > 0):
            raise ValueError("se_ratio must be positive (or None for no squeeze-excitation)")
        if self.se_ratio is not None and round((narrowest := self._narrowest_block_input()) * self.se_ratio) < 1:
            raise ValueError(f"se_ratio {self.se_ratio:g} leaves a block of {narrowest} input channels no SE channel")
        if not (math.isfinite(self.bn_eps) and self.bn_eps > 0):
            raise ValueError(f"BN eps must be a positive number, not {self.bn_eps}")

    def _narrowest_block_input(self) -> int:
        """The fewest channels any block takes in (its SE width is that times se_ratio, rounded, as in pycls)."""
        firsts = [self.stem_width] + [stage.width for stage in self.stages[:-1]]
        return min(firsts + [stage.width for stage in self.stages if stage.depth > 1])

    def _check_plausible(self) -> None:
        """Refuse sizes no RegNet has (they would only cost time and memory), before any arithmetic on them."""
        blocks = sum(stage.depth for stage in self.stages)
        widths = [w for stage in self.stages for w in (stage.width, stage.group_width)] + [self.stem_width]
        ratios = [stage.bottleneck_multiplier for stage in self.stages] + [self.se_ratio or 1.0]
        problems = [
            (len(self.stages) > MAX_STAGES, f"{len(self.stages)} stages (at most {MAX_STAGES})"),
            (blocks > MAX_BLOCKS, f"{blocks} blocks (at most {MAX_BLOCKS})"),
            (max(widths) > MAX_WIDTH, f"a width of {max(widths)} (at most {MAX_WIDTH})"),
            (self.num_classes > MAX_CLASSES, f"{self.num_classes} classes (at most {MAX_CLASSES})"),
            (self.in_channels > 64, f"{self.in_channels} input channels (at most 64)"),
            (max(stage.stride for stage in self.stages) > MAX_STRIDE, f"a stride over {MAX_STRIDE}"),
            (not all(0 <= r <= MAX_RATIO for r in ratios), f"a bottleneck or SE ratio outside 0 to {MAX_RATIO:g}"),
            (not 0 < self.bn_eps <= 1, f"BN eps {self.bn_eps} (a positive number up to 1)"),
        ]
        if found := [text for bad, text in problems if bad]:
            raise ValueError("implausible RegNet: " + "; ".join(found))

    def tensor_count(self) -> int:
        """How many tensors the model's state dict holds (BN counters excluded), computed without building it."""
        per_block = 15 + (4 if self.se_ratio else 0)  # three conv+BN pairs (+ the SE convs' weights and biases)
        count, w_in = 5 + 2, self.stem_width  # stem conv+BN, classifier
        for stage in self.stages:
            projects = w_in != stage.width or stage.stride != 1
            count += stage.depth * per_block + (5 if projects else 0)
            w_in = stage.width
        return count

    def with_name(self, name: str | None) -> RegNetConfig:
        """The same network under another name."""
        return RegNetConfig(**{**self._fields(), "name": name})

    def _fields(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def to_dict(self) -> dict:
        """A JSON-ready description, the inverse of `from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RegNetConfig:
        """Rebuild a config from `to_dict`'s output; TypeError or ValueError for anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise TypeError("an architecture is a mapping with a list of stages")
        fields: dict[str, Any] = {k: _typed(k, v, _FIELD_TYPES.get(k)) for k, v in data.items() if k != "stages"}
        stages = []
        for stage in data["stages"]:
            if not isinstance(stage, dict):
                raise TypeError("each stage is a mapping")
            typed: dict[str, Any] = {k: _typed(k, v, _STAGE_TYPES.get(k)) for k, v in stage.items()}
            stages.append(StageConfig(**typed))
        return cls(stages=tuple(stages), **fields)


_STAGE_TYPES = {"depth": int, "width": int, "group_width": int, "bottleneck_multiplier": float, "stride": int}
_FIELD_TYPES = {"se_ratio": float, "stem_width": int, "num_classes": int, "in_channels": int, "bn_eps": float}


def _typed(name: str, value: object, kind: type | None) -> object:
    """`value` if it is of the field's type (ints for int fields, numbers for float fields, null allowed for SE)."""
    if kind is None:
        if name == "name" and (value is None or isinstance(value, str)):
            return value
        raise TypeError(f"unknown architecture field {name[:40]!r}")
    if value is None and name == "se_ratio":
        return None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int and numeric and isinstance(value, int):
        return value
    if kind is float and isinstance(value, int | float) and numeric:
        return float(value)
    raise TypeError(
        f"architecture field {name!r} is {str(value)[:20]!r}, not {'an integer' if kind is int else 'a number'}"
    )
