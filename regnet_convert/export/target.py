"""What an export target is: the input it expects, its tensor names and how its files are written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from regnet import RegNetConfig
from regnet.layouts import LAYOUTS
from regnet.metadata import ChannelOrder, WeightsMetadata

Writer = Callable[[Path, dict[str, torch.Tensor], WeightsMetadata], None]
NameMap = tuple[Callable[[str], str], Callable[[str], str]]  # native -> target, target -> native


def input_channels(count: int) -> str:
    """'1 input channel', '4 input channels': the phrase a refusal names an architecture's input with."""
    return f"{count} input channel{'' if count == 1 else 's'}"


def _anything(config: RegNetConfig) -> str | None:
    return None


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Target:
    """One `--to` choice.

    `write` gets native-named tensors already in `channel_order` (None: the source's order is kept) and the
    metadata describing them, and writes into a temporary file, or folder when `files` names what a folder
    export holds. `layout` names its tensor names in `regnet.layouts.LAYOUTS`: the export is checked through
    them, to the target's and back.
    `refuse` says why the target cannot express an architecture (None: it can); `requires` raises InputError
    when a package the target needs is missing, before any work is done.
    """

    name: str
    summary: str
    channel_order: ChannelOrder | None
    write: Writer
    layout: str = "native"
    files: tuple[str, ...] = ()
    refuse: Callable[[RegNetConfig], str | None] = _anything
    requires: Callable[[], object] = _nothing  # what it returns (a module it imported) is not used

    def name_map(self, config: RegNetConfig) -> NameMap:
        """The tensor names (native -> target, target -> native) for this architecture."""
        layout, se = LAYOUTS[self.layout], bool(config.se_ratio)
        return (lambda key: layout.from_native(key, se), lambda key: layout.to_native(key, se))
