"""torchvision's RegNet key names (`trunk_output.block1.block1-0.f.a.0.weight`, `stem.0`, `fc`) <-> native names.

Checked by `tests/test_export.py` against torchvision 0.29.1 itself: files in this layout load strictly into
`torchvision.models.RegNet` built from the file's architecture, and give pycls's logits.
"""

from __future__ import annotations

import re

_TOP = {"stem.conv.": "stem.0.", "stem.bn.": "stem.1.", "head.fc.": "fc."}
_BLOCK = {
    "shortcut.conv.": "proj.0.",
    "shortcut.bn.": "proj.1.",
    "conv1.conv.": "f.a.0.",
    "conv1.bn.": "f.a.1.",
    "conv2.conv.": "f.b.0.",
    "conv2.bn.": "f.b.1.",
    "se.reduce.": "f.se.fc1.",
    "se.expand.": "f.se.fc2.",
    "conv3.conv.": "f.c.0.",
    "conv3.bn.": "f.c.1.",
}
_NATIVE_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_TORCHVISION_BLOCK = re.compile(r"^trunk_output\.block(\d+)\.block(\d+)-(\d+)\.(.+)$")


def _renamed(key: str, names: dict[str, str]) -> str | None:
    for old, new in names.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return None


def to_torchvision(native_key: str) -> str:
    """`stages.0.0.conv1.conv.weight` -> `trunk_output.block1.block1-0.f.a.0.weight`."""
    if match := _NATIVE_BLOCK.match(native_key):
        stage, block, rest = int(match.group(1)) + 1, int(match.group(2)), match.group(3)
        return f"trunk_output.block{stage}.block{stage}-{block}.{_renamed(rest, _BLOCK) or rest}"
    return _renamed(native_key, _TOP) or native_key


def from_torchvision(key: str) -> str:
    """The inverse of `to_torchvision` (a key of no RegNet comes back unchanged, and is refused later)."""
    if (match := _TORCHVISION_BLOCK.match(key)) and match.group(1) == match.group(2):
        rest = match.group(4)
        inverse = {new: old for old, new in _BLOCK.items()}
        return f"stages.{int(match.group(1)) - 1}.{match.group(3)}.{_renamed(rest, inverse) or rest}"
    return _renamed(key, {new: old for old, new in _TOP.items()}) or key
