"""The native RegNet modules: simple stem, residual bottleneck stages, pooling head."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

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
        self.fc: nn.Module = nn.Linear(w_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def complexity(self, cx: Complexity) -> None:
        if isinstance(self.fc, nn.Linear):
            cx.linear(self.fc)


@torch.no_grad()
def init_pycls_weights(module: nn.Module) -> None:
    """pycls 0.1.1's `init_weights` for one module (SE convolution biases keep PyTorch's default)."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        module.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
    elif isinstance(module, nn.BatchNorm2d):
        module.weight.fill_(1.0)
        module.bias.zero_()
    elif isinstance(module, nn.Linear):
        module.weight.normal_(0.0, 0.01)
        module.bias.zero_()


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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, width, H/32, W/32): the backbone's output."""
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify `forward_features`' output; `pre_logits` stops after pooling."""
        pooled = torch.flatten(self.head.pool(features), 1)
        return pooled if pre_logits else self.head.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` (0: none, the model returns pooled features), pycls-initialised."""
        width = self.head.fc.in_features
        self.head.fc = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        if num_classes:
            init_pycls_weights(self.head.fc)
            self.config = replace(self.config, num_classes=num_classes)

    def init_weights(self) -> RegNet:
        """pycls's initialisation: He-normal (fan-out) convolutions, unit BN, N(0, 0.01) classifier."""
        self.apply(init_pycls_weights)
        return self

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
    if implied > 4 * len(shapes) + 100:  # far off: say so without building the model
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
