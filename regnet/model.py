"""The native RegNet modules: simple stem, residual bottleneck stages, pooling head."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from regnet.complexity import Complexity
from regnet.config import RegNetConfig, StageConfig


class ConvBN(nn.Module):
    """Convolution without bias, batch norm, optional ReLU."""

    def __init__(
        self, w_in: int, w_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(w_in, w_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(w_out, eps=eps)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))

    def complexity(self, cx: Complexity) -> None:
        cx.conv(self.conv)
        cx.batchnorm(self.bn)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid gate."""

    def __init__(self, width: int, se_width: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(width, se_width, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(se_width, width, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))

    def complexity(self, cx: Complexity) -> None:
        with cx.at_size(1, 1):
            cx.conv(self.reduce)
            cx.conv(self.expand)


class Bottleneck(nn.Module):
    """Residual bottleneck block: 1x1, grouped 3x3 (strided), [SE], 1x1, plus a shortcut."""

    def __init__(self, w_in: int, stage: StageConfig, stride: int, se_ratio: float | None, eps: float) -> None:
        super().__init__()
        w_b, w_out = stage.bottleneck_width, stage.width
        needs_projection = w_in != w_out or stride != 1
        self.shortcut = ConvBN(w_in, w_out, 1, stride, relu=False, eps=eps) if needs_projection else None
        self.conv1 = ConvBN(w_in, w_b, 1, eps=eps)
        self.conv2 = ConvBN(w_b, w_b, 3, stride, groups=stage.groups, eps=eps)
        self.se = SqueezeExcite(w_b, round(w_in * se_ratio)) if se_ratio else None
        self.conv3 = ConvBN(w_b, w_out, 1, relu=False, eps=eps)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        x = self.conv2(self.conv1(x))
        if self.se is not None:
            x = self.se(x)
        return self.relu(shortcut + self.conv3(x))

    def complexity(self, cx: Complexity) -> None:
        if self.shortcut is not None:
            with cx.at_size(cx.h, cx.w):
                self.shortcut.complexity(cx)
        self.conv1.complexity(cx)
        self.conv2.complexity(cx)
        if self.se is not None:
            self.se.complexity(cx)
        self.conv3.complexity(cx)


class Stage(nn.Sequential):
    """A sequence of bottleneck blocks; only the first one changes width and resolution."""

    def __init__(self, w_in: int, stage: StageConfig, se_ratio: float | None, eps: float) -> None:
        super().__init__(
            *(
                Bottleneck(w_in if i == 0 else stage.width, stage, stage.stride if i == 0 else 1, se_ratio, eps)
                for i in range(stage.depth)
            )
        )

    def complexity(self, cx: Complexity) -> None:
        for block in self:
            block.complexity(cx)


class Head(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, w_in: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def complexity(self, cx: Complexity) -> None:
        cx.linear(self.fc)


class RegNet(nn.Module):
    """A RegNet built from an explicit `RegNetConfig`."""

    def __init__(self, config: RegNetConfig) -> None:
        super().__init__()
        self.config = config
        eps = config.bn_eps
        self.stem = ConvBN(config.in_channels, config.stem_width, 3, stride=2, eps=eps)
        stages, w_in = [], config.stem_width
        for stage in config.stages:
            stages.append(Stage(w_in, stage, config.se_ratio, eps))
            w_in = stage.width
        self.stages = nn.Sequential(*stages)
        self.head = Head(w_in, config.num_classes)

    @classmethod
    def from_state_dict(cls, config: RegNetConfig, state: dict[str, torch.Tensor]) -> RegNet:
        """The model for `config` holding `state`'s very tensors (strict, no copy, no throwaway init), in eval mode."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def complexity(self, resolution: int = 224) -> dict[str, int]:
        """Params, flops (multiply-adds) and activations for a square input, as pycls counts them."""
        cx = Complexity(resolution, resolution)
        self.stem.complexity(cx)
        for stage in self.stages:
            stage.complexity(cx)
        self.head.complexity(cx)
        return cx.totals()


def expected_shapes(config: RegNetConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the model for `config` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = RegNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def shape_problems(shapes: Mapping[str, tuple[int, ...]], config: RegNetConfig, limit: int = 3) -> list[str]:
    """How native-named tensor shapes differ from `config`: the first `limit` differences, as readable lines.

    The tensor count is compared first, so an architecture far larger than the tensors (a crafted depth
    of 10^8) is refused without building it.
    """
    implied = config.tensor_count()
    if implied > 4 * len(shapes) + 100:
        return [f"the architecture implies {implied:,} tensors, the file holds {len(shapes):,}"]
    expected = expected_shapes(config)
    problems = []
    for key, shape in expected.items():
        if key not in shapes:
            problems.append(f"{key} missing (expected {list(shape)})")
        elif tuple(shapes[key]) != shape:
            problems.append(f"{key} is {list(shapes[key])}, expected {list(shape)}")
    problems += [f"{key} is not part of this model" for key in shapes if key not in expected]
    return problems[:limit] + ([f"and {len(problems) - limit} more"] if len(problems) > limit else [])
