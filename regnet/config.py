"""Explicit per-stage description of a RegNet: everything needed to build one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
        for i, stage in enumerate(self.stages, start=1):
            if min(stage.depth, stage.width, stage.group_width, stage.stride) < 1:
                raise ValueError(f"stage {i}: depth, width, group width and stride must be positive")
            if stage.bottleneck_width % stage.group_width:
                raise ValueError(
                    f"stage {i}: bottleneck width {stage.bottleneck_width} is not a multiple "
                    f"of the group width {stage.group_width}"
                )
        if self.se_ratio is not None and self.se_ratio <= 0:
            raise ValueError("se_ratio must be positive (or None for no squeeze-excitation)")

    def with_classes(self, num_classes: int) -> RegNetConfig:
        """The same network with another number of classes."""
        return RegNetConfig(**{**self._fields(), "num_classes": num_classes})

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
        """Rebuild a config from `to_dict`'s output."""
        fields = dict(data)
        fields["stages"] = tuple(StageConfig(**stage) for stage in fields["stages"])
        return cls(**fields)
