"""Key names of mmclassification RegNet checkpoints <-> native names (read by `regnet-convert mmcls`, written
by `export --to mmcls`).

mmclassification builds RegNets from its ResNet bottleneck: stem `conv1`/`bn1`, blocks
`layerN.M.conv1/bn1/conv2/bn2/conv3/bn3`, projection `downsample.0` (conv) / `downsample.1` (BN),
classifier `head.fc` (or `fc` in converted backbones); classifier checkpoints prefix the backbone
with `backbone.`. It has no squeeze-excitation, so RegNetY checkpoints do not exist there.
"""

from __future__ import annotations

import re

from regnet_convert.sources.pycls_keys import TENSORS

_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
BLOCK_MODULES = {
    "conv1": "conv1.conv",
    "bn1": "conv1.bn",
    "conv2": "conv2.conv",
    "bn2": "conv2.bn",
    "conv3": "conv3.conv",
    "bn3": "conv3.bn",
    "downsample.0": "shortcut.conv",
    "downsample.1": "shortcut.bn",
}
TOP_MODULES = {"conv1": "stem.conv", "bn1": "stem.bn", "head.fc": "head.fc", "fc": "head.fc"}
_NATIVE_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_NATIVE_TO_BLOCK = {native: mmcls for mmcls, native in BLOCK_MODULES.items()}
_NATIVE_TO_TOP = {"stem.conv": "backbone.conv1", "stem.bn": "backbone.bn1", "head.fc": "head.fc"}


def to_native(mmcls_key: str) -> str | None:
    """The native name of an mmcls RegNet key (with or without `backbone.`), or None."""
    key = mmcls_key.removeprefix("backbone.")
    module, _, tensor = key.rpartition(".")
    if tensor not in TENSORS:
        return None
    if module in TOP_MODULES:
        return f"{TOP_MODULES[module]}.{tensor}"
    match = _BLOCK.match(module)
    if match and match.group(3) in BLOCK_MODULES and int(match.group(1)) > 0:
        return f"stages.{int(match.group(1)) - 1}.{match.group(2)}.{BLOCK_MODULES[match.group(3)]}.{tensor}"
    return None


def to_mmcls(native_key: str) -> str:
    """The name of a native key in an mmcls classifier checkpoint (`backbone.`..., `head.fc`); KeyError if none.

    The inverse of `to_native` on classifier names; squeeze-excitation tensors have none (mmcls has no SE).
    """
    module, _, tensor = native_key.rpartition(".")
    if tensor in TENSORS and module in _NATIVE_TO_TOP:
        return f"{_NATIVE_TO_TOP[module]}.{tensor}"
    match = _NATIVE_BLOCK.match(module)
    if tensor in TENSORS and match and match.group(3) in _NATIVE_TO_BLOCK:
        stage, block, part = int(match.group(1)), int(match.group(2)), match.group(3)
        return f"backbone.layer{stage + 1}.{block}.{_NATIVE_TO_BLOCK[part]}.{tensor}"
    raise KeyError(f"mmcls has no tensor for {native_key!r}")
