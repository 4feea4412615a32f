"""Hugging Face transformers' RegNet key names (`regnet.encoder.stages.0.layers.0.layer.1.convolution.weight`,
`regnet.embedder.embedder`, `classifier.1`) <-> native names.

transformers numbers a block's modules: `layer.0` and `layer.1` are the 1x1 and grouped 3x3 convolutions, then
an X layer has its last 1x1 convolution at `layer.2`, while a Y layer has squeeze-excitation there
(`layer.2.attention.0` and `.2`) and the convolution at `layer.3`: native -> transformers depends on whether
the model has SE. Checked by `tests/test_export_hf.py` against transformers 5.24 itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOP = {
    "stem.conv.": "regnet.embedder.embedder.convolution.",
    "stem.bn.": "regnet.embedder.embedder.normalization.",
    "head.fc.": "classifier.1.",
}
_BLOCK = {
    "shortcut.conv.": "shortcut.convolution.",
    "shortcut.bn.": "shortcut.normalization.",
    "conv1.conv.": "layer.0.convolution.",
    "conv1.bn.": "layer.0.normalization.",
    "conv2.conv.": "layer.1.convolution.",
    "conv2.bn.": "layer.1.normalization.",
    "se.reduce.": "layer.2.attention.0.",
    "se.expand.": "layer.2.attention.2.",
}
_CONV3 = {"conv3.conv.": "convolution.", "conv3.bn.": "normalization."}  # under layer.2 (X) or layer.3 (Y)
_NATIVE_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^regnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)$")


def _renamed(key: str, names: dict[str, str]) -> str | None:
    for old, new in names.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return None


def to_hf(native_key: str, se: bool) -> str:
    """`stages.0.0.conv3.bn.weight` -> `regnet.encoder.stages.0.layers.0.layer.2.normalization.weight` (X)."""
    if match := _NATIVE_BLOCK.match(native_key):
        rest = match.group(3)
        last = f"layer.{3 if se else 2}."
        renamed = _renamed(rest, _BLOCK) or _renamed(rest, {k: last + v for k, v in _CONV3.items()}) or rest
        return f"regnet.encoder.stages.{match.group(1)}.layers.{match.group(2)}.{renamed}"
    return _renamed(native_key, _TOP) or native_key


def from_hf(key: str) -> str:
    """The inverse of `to_hf` for either kind of layer (a key of no RegNet comes back unchanged)."""
    if match := _HF_BLOCK.match(key):
        rest = match.group(3)
        conv3 = {f"layer.{i}.{v}": k for i in (2, 3) for k, v in _CONV3.items()}
        renamed = _renamed(rest, {v: k for k, v in _BLOCK.items()}) or _renamed(rest, conv3) or rest
        return f"stages.{match.group(1)}.{match.group(2)}.{renamed}"
    return _renamed(key, {v: k for k, v in _TOP.items()}) or key


def hf_names(se: bool) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """(native -> transformers, transformers -> native) for a RegNet with (Y) or without (X) squeeze-excitation."""
    return (lambda key: to_hf(key, se), from_hf)
