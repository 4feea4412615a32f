"""The RegNet design space: from (w0, wa, wm, depth, ...) to per-stage widths and depths.

The arithmetic follows pycls exactly (numpy float64 rounding included), so that every zoo
model gets the very widths its published weights have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from regnet.config import MAX_BLOCKS, MAX_RATIO, MAX_STRIDE, MAX_WIDTH, RegNetConfig, StageConfig


def quantized_linear_widths(w0: int, wa: float, wm: float, depth: int, quantum: int = 8) -> list[int]:
    """Per-block widths: the linear rule w0 + wa*j snapped to powers of wm, then to multiples of `quantum`."""
    if not (wa >= 0 and w0 > 0 and wm > 1 and w0 % quantum == 0):
        raise ValueError(f"invalid RegNet parameters w0={w0} wa={wa} wm={wm} (quantum {quantum})")
    with np.errstate(all="ignore"):
        continuous = np.arange(depth) * wa + w0
        exponents = np.round(np.log(continuous / w0) / np.log(wm))
        widths = np.round(w0 * np.power(wm, exponents) / quantum) * quantum
    if not (np.isfinite(widths).all() and widths.min() >= quantum and widths.max() < 2**31):
        raise ValueError(f"RegNet parameters w0={w0} wa={wa} wm={wm} give block widths out of range")
    return widths.astype(int).tolist()


def compatible_width_and_group(width: int, bottleneck_multiplier: float, group_width: int) -> tuple[int, int]:
    """Adjust a stage's width so its bottleneck width is a multiple of its (capped) group width."""
    bottleneck = int(width * bottleneck_multiplier)
    group_width = min(group_width, bottleneck)
    bottleneck = int(round(bottleneck / group_width) * group_width)
    return int(bottleneck / bottleneck_multiplier), group_width


@dataclass(frozen=True)
class RegNetParams:
    """A point of the RegNet design space (the REGNET section of a pycls config)."""

    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    bottleneck_multiplier: float = 1.0
    se_ratio: float | None = None
    stem_width: int = 32
    stride: int = 2
    quantum: int = 8

    def __post_init__(self) -> None:
        numbers = (self.wa, self.wm, self.bottleneck_multiplier, self.se_ratio or 1.0)
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"RegNet parameters must be finite numbers: {self}")
        if min(self.depth, self.group_width, self.stem_width, self.stride, self.quantum) < 1:
            raise ValueError("RegNet depth, group width, stem width and stride must be positive")
        if self.bottleneck_multiplier <= 0 or (self.se_ratio is not None and self.se_ratio <= 0):
            raise ValueError("the bottleneck multiplier and SE ratio must be positive")
        if max(self.bottleneck_multiplier, self.se_ratio or 1.0) > MAX_RATIO or self.depth > MAX_BLOCKS:
            raise ValueError(f"implausible RegNet: depth over {MAX_BLOCKS} or a ratio over {MAX_RATIO:g}")
        if max(self.w0, self.group_width, self.stem_width) > MAX_WIDTH or self.stride > MAX_STRIDE:
            raise ValueError(f"implausible RegNet: a width over {MAX_WIDTH} or a stride over {MAX_STRIDE}")
        if not (self.wa >= 0 and self.w0 > 0 and self.wm > 1 and self.w0 % self.quantum == 0):
            raise ValueError(
                f"invalid RegNet parameters w0={self.w0} wa={self.wa} wm={self.wm} (quantum {self.quantum})"
            )

    def stages(self) -> tuple[StageConfig, ...]:
        """Per-stage depths, widths and group widths, as pycls derives them."""
        block_widths = quantized_linear_widths(self.w0, self.wa, self.wm, self.depth, self.quantum)
        stages = []
        for width, run in groupby(block_widths):
            width, group_width = compatible_width_and_group(width, self.bottleneck_multiplier, self.group_width)
            stages.append(StageConfig(len(list(run)), width, group_width, self.bottleneck_multiplier, self.stride))
        return tuple(stages)

    def config(self, num_classes: int = 1000, name: str | None = None) -> RegNetConfig:
        """The buildable per-stage config of this design point."""
        return RegNetConfig(
            stages=self.stages(),
            se_ratio=self.se_ratio,
            stem_width=self.stem_width,
            num_classes=num_classes,
            name=name,
        )
