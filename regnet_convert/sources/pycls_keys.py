"""Key names: pycls's `s1.b1.f.a.weight` <-> native `stages.0.0.conv1.conv.weight`."""

from __future__ import annotations

import re

# pycls module path inside a block -> native module path inside a block
BLOCK_MODULES = {
    "proj": "shortcut.conv",
    "bn": "shortcut.bn",
    "f.a": "conv1.conv",
    "f.a_bn": "conv1.bn",
    "f.b": "conv2.conv",
    "f.b_bn": "conv2.bn",
    "f.se.f_ex.0": "se.reduce",
    "f.se.f_ex.2": "se.expand",
    "f.c": "conv3.conv",
    "f.c_bn": "conv3.bn",
}
TOP_MODULES = {"stem.conv": "stem.conv", "stem.bn": "stem.bn", "head.fc": "head.fc"}
TENSORS = ("weight", "bias", "running_mean", "running_var")
DROPPED_TENSORS = ("num_batches_tracked",)  # a training counter: no effect on inference

_PYCLS_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.(.+)$")
_NATIVE_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_NATIVE_TO_PYCLS = {native: pycls for pycls, native in BLOCK_MODULES.items()}


def _split(key: str) -> tuple[str, str]:
    module, _, tensor = key.rpartition(".")
    return module, tensor


def is_dropped(pycls_key: str) -> bool:
    """A key that conversion knowingly leaves out."""
    return _split(pycls_key)[1] in DROPPED_TENSORS


def to_native(pycls_key: str) -> str | None:
    """The native name of a pycls RegNet key, or None if no RegNet has such a key."""
    module, tensor = _split(pycls_key)
    if tensor not in TENSORS:
        return None
    if module in TOP_MODULES:
        return f"{TOP_MODULES[module]}.{tensor}"
    match = _PYCLS_BLOCK.match(module)
    if match and match.group(3) in BLOCK_MODULES and int(match.group(1)) > 0 and int(match.group(2)) > 0:
        stage, block = int(match.group(1)) - 1, int(match.group(2)) - 1
        return f"stages.{stage}.{block}.{BLOCK_MODULES[match.group(3)]}.{tensor}"
    return None


def to_pycls(native_key: str) -> str:
    """The pycls name of a native key (the inverse of `to_native`)."""
    module, tensor = _split(native_key)
    if module in TOP_MODULES.values():
        return f"{module}.{tensor}"
    match = _NATIVE_BLOCK.match(module)
    if not match or match.group(3) not in _NATIVE_TO_PYCLS:
        raise KeyError(f"not a native RegNet key: {native_key}")
    stage, block = int(match.group(1)) + 1, int(match.group(2)) + 1
    return f"s{stage}.b{block}.{_NATIVE_TO_PYCLS[match.group(3)]}.{tensor}"
