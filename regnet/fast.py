"""A fast inference path: batch norm folded into the convolutions, channels-last, compiled ahead of time on CPU."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal, cast, get_args

import torch
from torch import nn

from regnet import fast_cache
from regnet.model import ConvBN, RegNet


@torch.no_grad()
def fold_batchnorm(model: RegNet, memory_format: torch.memory_format = torch.contiguous_format) -> RegNet:
    """A copy of `model` in which every conv+BN pair is one convolution with a bias (eval semantics).

    The fused weights are written once, in `memory_format`: the tensors they replace are not copied first.
    """
    pairs = [m for m in model.modules() if isinstance(m, ConvBN) and isinstance(m.bn, nn.BatchNorm2d)]
    replaced = [t for m in pairs for t in (*m.conv.parameters(), *m.bn.parameters(), *m.bn.buffers())]
    folded = copy.deepcopy(model, memo={id(t): t for t in replaced}).eval()
    for module in folded.modules():
        if isinstance(module, ConvBN) and isinstance(module.bn, nn.BatchNorm2d):
            conv, bn = module.conv, module.bn
            assert bn.running_var is not None and bn.running_mean is not None  # eval-mode BN keeps statistics
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]  # torch types them as tuple[int, ...]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                groups=conv.groups,
                bias=True,
                device="meta",  # no initialisation: both tensors are set below
            )
            weight = torch.empty_like(conv.weight, memory_format=memory_format)
            fused.weight = nn.Parameter(torch.mul(conv.weight, scale.view(-1, 1, 1, 1), out=weight))
            fused.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
            module.conv, module.bn = fused, nn.Identity()  # type: ignore[assignment]  # folded: BN becomes identity
    return folded


Backend = Literal["aoti", "compile", "eager"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


class PackagedModel(nn.Module):
    """The folded model, run through AOTInductor packages (one per input size, batch dynamic) on fp32 CPU input.

    Input of another size gets its own package on first use; anything else (another dtype or device, autocast,
    an empty batch, or a size whose compilation failed) runs the folded module eagerly.
    """

    def __init__(
        self,
        folded: RegNet,
        notice: Callable[[str], None] = lambda _: None,
        warn: Callable[[str], None] = lambda _: None,
    ) -> None:
        super().__init__()
        self.folded = folded
        self.notice, self.warn = notice, warn
        self.runners: dict[tuple[int, ...], Callable[[torch.Tensor], torch.Tensor]] = {}

    def prepare(self, size: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The compiled runner for inputs of `size` (channels, height, width): cached, built, or the eager module."""
        if size not in self.runners:
            example = torch.zeros(2, *size).contiguous(memory_format=torch.channels_last)
            try:
                key = fast_cache.entry_key(self.folded, self.folded.config, size)
                self.runners[size] = fast_cache.compiled(self.folded, example, key, self.notice, self.warn)
            except Exception as exc:  # no C++ compiler, or an export/compile failure: stay eager, and say so
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                reason = "".join(c if c.isprintable() else "?" for c in first)
                self.warn(f"warning: fast path: compiling for {'x'.join(map(str, size))} inputs failed ({reason}); "
                          "those run eagerly")  # fmt: skip
                self.runners[size] = self.folded
        return self.runners[size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4 or not len(x):
            return self.folded(x)
        if torch.is_autocast_enabled("cpu"):
            return self.folded(x)
        return self.prepare(tuple(x.shape[1:]))(x.contiguous(memory_format=torch.channels_last))


def fast_model(
    model: RegNet,
    device: str | torch.device = "cpu",
    backend: Backend | None = None,
    resolution: int = 224,
    notice: Callable[[str], None] = lambda _: None,
    warn: Callable[[str], None] = lambda _: None,
) -> nn.Module:
    """`model` prepared for fast fp32 inference on `device`; feed it channels-last inputs.

    Batch norm is folded into the convolutions and weights are stored channels-last. Backends:
    `aoti` (CPU default) exports the folded model with a dynamic batch and compiles it ahead of time with
    AOTInductor for `resolution`x`resolution` inputs; the package is cached per user (`regnet.fast_cache`), so
    later runs load it in a second or two and check it on one probe input (the first compilation takes tens of
    seconds);
    `compile` wraps it in torch.compile (compiles on first call, in every process); `eager` (GPU default)
    runs the folded channels-last module, with cudnn autotuning on CUDA. `notice` hears when a compilation starts,
    `warn` why the package cache is not used (a folder that is not the user's own, or cannot be written) or why a
    compilation failed (that input size then runs eagerly).
    """
    device = torch.device(device)
    backend = backend or ("aoti" if device.type == "cpu" else "eager")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    folded = fold_batchnorm(model, torch.channels_last).to(device).to(memory_format=torch.channels_last).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if backend == "compile":
        return cast(nn.Module, torch.compile(folded, dynamic=False))  # an OptimizedModule
    if backend == "aoti" and device.type == "cpu":
        packaged = PackagedModel(folded, notice, warn).eval()
        packaged.prepare((model.config.in_channels, resolution, resolution))
        return packaged
    return folded
