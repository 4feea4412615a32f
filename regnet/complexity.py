"""Model complexity in pycls's convention: flops are multiply-adds, acts are output elements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn


@dataclass
class Complexity:
    """Running totals while walking a network, with the current feature-map size."""

    h: int
    w: int
    flops: int = 0
    params: int = 0
    acts: int = 0

    def conv(self, conv: nn.Conv2d) -> None:
        """Add a 2-D convolution (bias included when it has one)."""
        (k, _), (stride, _) = conv.kernel_size, conv.stride
        pad = conv.padding[0] if isinstance(conv.padding, tuple) else 0  # RegNet's convolutions pad with numbers
        self.h = (self.h + 2 * pad - k) // stride + 1
        self.w = (self.w + 2 * pad - k) // stride + 1
        weights = k * k * conv.in_channels * conv.out_channels // conv.groups
        bias = conv.out_channels if conv.bias is not None else 0
        self.flops += weights * self.h * self.w + bias
        self.params += weights + bias
        self.acts += conv.out_channels * self.h * self.w

    def batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """Add a batch norm: its affine parameters only (pycls counts no flops or acts)."""
        self.params += 2 * bn.num_features

    def linear(self, fc: nn.Linear) -> None:
        """Add a fully connected layer on a 1x1 map (pycls counts it as a 1x1 conv with bias)."""
        self.h = self.w = 1
        self.flops += fc.in_features * fc.out_features + fc.out_features
        self.params += fc.in_features * fc.out_features + fc.out_features
        self.acts += fc.out_features

    @contextmanager
    def at_size(self, h: int, w: int) -> Iterator[None]:
        """Count a side branch at another spatial size, then restore the current one."""
        saved = self.h, self.w
        self.h, self.w = h, w
        try:
            yield
        finally:
            self.h, self.w = saved

    def totals(self) -> dict[str, int]:
        """The three published numbers."""
        return {"params": self.params, "flops": self.flops, "acts": self.acts}
