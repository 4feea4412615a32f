"""The native RegNet modules: simple stem, residual bottleneck stages, pooling head."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from regnet.complexity import Complexity
from regnet.config import RegNetConfig, StageConfig
from regnet.metadata import WeightsMetadata


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
            if not isinstance(block, Bottleneck):
                raise TypeError(f"a stage holds a {type(block).__name__}, not a Bottleneck")
            block.complexity(cx)


class Head(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, w_in: int, num_classes: int) -> None:
        super().__init__()
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        self.flatten: nn.Module = nn.Flatten(1)
        self.fc: nn.Module = nn.Linear(w_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(x)))

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


def feature_info(config: RegNetConfig) -> list[dict[str, Any]]:
    """timm's `feature_info` for `config`: the stem's and each stage's output channels, total stride and module."""
    info: list[dict[str, Any]] = [{"num_chs": config.stem_width, "reduction": 2, "module": "stem"}]
    for i, stage in enumerate(config.stages):
        reduction = info[-1]["reduction"] * stage.stride
        info.append({"num_chs": stage.width, "reduction": reduction, "module": f"stages.{i}"})
    return info


def take_indices(count: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's `feature_take_indices`: None is all `count` features, n the last n, a sequence those (negative from
    the end); ValueError for an index out of range."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {count})")
        return list(range(count - indices, count))
    taken = [i + count if i < 0 else i for i in indices]
    if not taken or not all(0 <= i < count for i in taken):
        raise ValueError(f"feature indices {list(indices)} are not all in range (0 to {count - 1}), or none")
    return taken


class RegNet(nn.Module):
    """A RegNet built from an explicit `RegNetConfig`.

    As a backbone it follows timm's RegNet: `feature_info` lists the stem's and each stage's output (channels,
    reduction, module name) and `forward_intermediates` returns those feature maps.
    """

    metadata: WeightsMetadata | None = None
    """The file's metadata when `regnet.load` built the model, else None."""

    def __init__(self, config: RegNetConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_info = feature_info(config)
        self.num_features: int = self.feature_info[-1]["num_chs"]
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
        pooled = self.head.flatten(self.head.pool(features))
        return pooled if pre_logits else self.head.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps `feature_info` lists, as timm's RegNet returns them: index 0 is the stem, i stage i.

        `indices`: None for all, n for the last n, or a sequence of indices (negative from the end). `stop_early`
        runs no stage past the last one taken. Returns the intermediates, or (final feature map, intermediates)
        where the final map is `forward_features`' output (the last stage run, with `stop_early`). `norm` is
        accepted for timm's signature: a RegNet has no final norm. Only `output_fmt="NCHW"`.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', not {output_fmt!r}")
        taken = take_indices(len(self.feature_info), indices)
        stages = list(self.stages)[: max(taken)] if stop_early else list(self.stages)
        x = self.stem(x)
        intermediates = [x] if 0 in taken else []
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            if i in taken:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages past the last of `indices` and, with `prune_head` or once a stage is dropped, the head
        (pooling included: `forward` then returns the last feature map kept), as timm does; returns the indices
        kept. `prune_norm` is accepted for timm's signature. `config` keeps describing the unpruned model."""
        taken = take_indices(len(self.feature_info), indices)
        last = max(taken)
        if last < len(self.stages):
            self.stages = nn.Sequential(*list(self.stages)[:last])
            self.num_features = self.feature_info[last]["num_chs"]
        if prune_head or last < len(self.feature_info) - 1:
            self.head.pool, self.head.flatten, self.head.fc = nn.Identity(), nn.Identity(), nn.Identity()
        return taken

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` (0: none, the model returns pooled features), pycls-initialised."""
        self.head.pool, self.head.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten(1)
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
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
            if not isinstance(stage, Stage):
                raise TypeError(f"the stages hold a {type(stage).__name__}, not a Stage")
            stage.complexity(cx)
        self.head.complexity(cx)
        return cx.totals()


def expected_shapes(config: RegNetConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the model for `config` (built on the meta device: no memory)."""
    return dict(_expected_shapes(config))


@functools.lru_cache(maxsize=32)
def _expected_shapes(config: RegNetConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """`expected_shapes`, remembered: a conversion or an export asks several times for the same architecture, and
    building a large one, even on the meta device, takes a tenth of a second."""
    with torch.device("meta"):
        model = RegNet(config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))


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
