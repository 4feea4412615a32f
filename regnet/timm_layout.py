"""timm's RegNet key names (`s1.b1.conv1.conv.weight`, `downsample`, `se.fc1`) <-> native names.

Checked by `tests/test_timm.py` against timm 1.0.31 itself: all 24 zoo models load strictly into
`timm.create_model(name)` and give pycls's logits.
"""

from __future__ import annotations

import re

from regnet.zoo import zoo_models

# zoo name -> timm model name
TIMM_NAMES = {name: model.timm_name for name, model in zoo_models().items()}
_RENAMED = {"shortcut.": "downsample.", "se.reduce.": "se.fc1.", "se.expand.": "se.fc2."}
_NATIVE_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_TIMM_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.(.+)$")


def to_timm(native_key: str) -> str:
    """`stages.0.0.shortcut.conv.weight` -> `s1.b1.downsample.conv.weight`."""
    match = _NATIVE_BLOCK.match(native_key)
    if not match:
        return native_key  # stem.* and head.fc.* are named alike
    rest = match.group(3)
    for native, timm in _RENAMED.items():
        if rest.startswith(native):
            rest = timm + rest.removeprefix(native)
    return f"s{int(match.group(1)) + 1}.b{int(match.group(2)) + 1}.{rest}"


def from_timm(timm_key: str) -> str:
    """The inverse of `to_timm`."""
    match = _TIMM_BLOCK.match(timm_key)
    if not match:
        return timm_key
    rest = match.group(3)
    for native, timm in _RENAMED.items():
        if rest.startswith(timm):
            rest = native + rest.removeprefix(timm)
    return f"stages.{int(match.group(1)) - 1}.{int(match.group(2)) - 1}.{rest}"
