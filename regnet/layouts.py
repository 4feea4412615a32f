"""Every library's RegNet tensor names in one table, and the one mapper between them and the native names.

A tensor name is a module path and a leaf (`weight`, `bias`, BN's `running_mean`, `running_var` and
`num_batches_tracked`). A library names the modules outside the stages (`top`: stem and head) and those inside a
block (`block`), and numbers its blocks with a prefix (`blocks`, where `{stage}` and `{block}` count from
`first_stage` and `first_block`). Native names are one more row of the table. The mapper is strict both ways
(a name no RegNet has raises `LayoutError` naming it) and invertible: a library's name is read back only as it is
written, except where `loose_numbers`, `optional_prefix` or `also_read` say which other spellings a library's files
hold. Each row is checked against the library itself by tests/test_layouts.py (all layouts, all 24 zoo models).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
COUNTER = "num_batches_tracked"  # BN's training counter: no effect on inference
MAX_INDEX_DIGITS = 12  # a stage or block number longer than this is no RegNet's (and int() stays cheap)
_INDEX = f"[0-9]{{1,{MAX_INDEX_DIGITS}}}"


def is_counter(key: str) -> bool:
    """Whether `key` names a BN counter, which conversion knowingly leaves out (no effect on inference)."""
    return key.rpartition(".")[2] == COUNTER


class LayoutError(ValueError):
    """A tensor name that has no counterpart in the other layout; `key` is that name."""

    def __init__(self, key: str, layout: str) -> None:
        self.key, self.layout = key, layout
        super().__init__(f"{key[:80]!r} is no RegNet tensor in {layout}'s names")


@dataclass(frozen=True)
class Layout:
    """One library's tensor names, as a table (see the module docstring)."""

    name: str
    top: Mapping[str, str]  # native module -> library module, outside the stages (stem, head)
    block: Mapping[str, str]  # native module inside a block -> library module inside a block
    blocks: str  # a block's library prefix: `{stage}` and `{block}` are its numbers
    first_stage: int = 0  # the library's number for the first stage (0 or 1)
    first_block: int = 0  # ... and for a stage's first block
    se_block: Mapping[str, str] = field(default_factory=dict)  # block names that differ when the RegNet has SE
    also_read: Mapping[str, str] = field(default_factory=dict)  # library module -> native: read, never written
    optional_prefix: str = ""  # read with or without it (written where the table has it)
    loose_numbers: bool = False  # read `s01` as `s1` (two spellings of one tensor are then caught as duplicates)
    in_files: bool = False  # a converted safetensors file may carry these names (its metadata's `layout`)

    def to_native(self, key: str, se: bool | None = None) -> str:
        """The native name of one of this layout's names (`se`: whether the RegNet has SE; None: either)."""
        where, part, leaf = self._parse(key, se)
        return NATIVE._render(key, where, part, leaf, se)

    def from_native(self, key: str, se: bool | None = None) -> str:
        """This layout's name of a native name (`se` is needed where the names depend on it: transformers')."""
        where, part, leaf = NATIVE._parse(key, se)
        return self._render(key, where, part, leaf, se)

    def native_name(self, key: str, se: bool | None = None) -> str | None:
        """`to_native`, or None for a name no RegNet has in this layout."""
        try:
            return self.to_native(key, se)
        except LayoutError:
            return None

    def _block_names(self, se: bool) -> dict[str, str]:
        return {**self.block, **self.se_block} if se else dict(self.block)

    @cached_property
    def _reading(self) -> tuple[dict[str, str], dict[tuple[bool, ...], dict[str, str]], re.Pattern[str]]:
        """The inverse tables (optional prefix removed): top modules, block modules per SE variant, block regex."""
        strip = self._strip
        top = {strip(lib): native for native, lib in self.top.items()}
        top |= {strip(lib): native for lib, native in self.also_read.items()}
        x, y = ({lib: native for native, lib in self._block_names(se).items()} for se in (False, True))
        both = x | y
        if (
            len(top) != len(self.top) + len(self.also_read)
            or len(x) != len(self.block)
            or len(both) != len(x) + len(self.se_block)
        ):
            raise AssertionError(f"{self.name}'s table gives two modules one name")
        blocks = {(False,): x, (True,): y, (): both}
        pattern, seen = "", set()
        for literal, name, _, _ in string.Formatter().parse(strip(self.blocks)):
            pattern += re.escape(literal)
            if name:
                pattern += f"(?P={name})" if name in seen else f"(?P<{name}>{_INDEX})"
                seen.add(name)
        return top, blocks, re.compile(pattern + r"\.(?P<part>.+)")

    def _strip(self, module: str) -> str:
        return module.removeprefix(self.optional_prefix) if self.optional_prefix else module

    def _parse(self, key: str, se: bool | None) -> tuple[tuple[int, int] | None, str, str]:
        """(stage, block) from 0, or None outside the stages; the native module; the leaf. LayoutError if none."""
        module, _, leaf = key.rpartition(".")
        top, blocks, regex = self._reading
        module = self._strip(module)
        if leaf in LEAVES and module in top:
            return None, top[module], leaf
        match = regex.fullmatch(module) if leaf in LEAVES else None
        if match and (part := blocks[() if se is None else (se,)].get(match["part"])):
            stage, block = int(match["stage"]) - self.first_stage, int(match["block"]) - self.first_block
            exact = self.loose_numbers or all(str(int(match[n])) == match[n] for n in ("stage", "block"))
            if stage >= 0 and block >= 0 and exact:
                return (stage, block), part, leaf
        raise LayoutError(key, self.name)

    def _render(self, key: str, where: tuple[int, int] | None, part: str, leaf: str, se: bool | None) -> str:
        """The name of native module `part` at `where` in this layout; LayoutError (for `key`) if it has none."""
        if where is None:
            module = self.top.get(part)
        else:
            if self.se_block and se is None:
                raise ValueError(f"{self.name}'s names depend on squeeze-excitation: say whether the RegNet has it")
            names = self._block_names(bool(se))
            blocks = self.blocks.format(stage=where[0] + self.first_stage, block=where[1] + self.first_block)
            module = f"{blocks}.{names[part]}" if part in names else None
        if module is None:
            raise LayoutError(key, self.name)
        return f"{module}.{leaf}"


NATIVE = Layout(
    "native",
    top={m: m for m in ("stem.conv", "stem.bn", "head.fc")},
    block={
        m: m
        for m in (
            "shortcut.conv",
            "shortcut.bn",
            "conv1.conv",
            "conv1.bn",
            "conv2.conv",
            "conv2.bn",
            "se.reduce",
            "se.expand",
            "conv3.conv",
            "conv3.bn",
        )
    },
    blocks="stages.{stage}.{block}",
    in_files=True,
)

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        NATIVE,
        Layout(  # pycls 0.1.1's AnyNet: `s1.b1.f.a.weight`
            "pycls",
            top=NATIVE.top,
            block={
                "shortcut.conv": "proj",
                "shortcut.bn": "bn",
                "conv1.conv": "f.a",
                "conv1.bn": "f.a_bn",
                "conv2.conv": "f.b",
                "conv2.bn": "f.b_bn",
                "se.reduce": "f.se.f_ex.0",
                "se.expand": "f.se.f_ex.2",
                "conv3.conv": "f.c",
                "conv3.bn": "f.c_bn",
            },
            blocks="s{stage}.b{block}",
            first_stage=1,
            first_block=1,
            loose_numbers=True,
        ),
        Layout(  # mmclassification 0.25 (its ResNet bottleneck, no SE): `backbone.layer1.0.conv1.weight`, `head.fc`;
            # backbone checkpoints have no `backbone.`, converted ones call the classifier `fc`
            "mmcls",
            top={"stem.conv": "backbone.conv1", "stem.bn": "backbone.bn1", "head.fc": "head.fc"},
            block={
                "shortcut.conv": "downsample.0",
                "shortcut.bn": "downsample.1",
                "conv1.conv": "conv1",
                "conv1.bn": "bn1",
                "conv2.conv": "conv2",
                "conv2.bn": "bn2",
                "conv3.conv": "conv3",
                "conv3.bn": "bn3",
            },
            blocks="backbone.layer{stage}.{block}",
            first_stage=1,
            also_read={"fc": "head.fc"},
            optional_prefix="backbone.",
            loose_numbers=True,
        ),
        Layout(  # timm 1.0's RegNet: `s1.b1.downsample.conv.weight`, `se.fc1`
            "timm",
            top=NATIVE.top,
            block={
                **NATIVE.block,
                "shortcut.conv": "downsample.conv",
                "shortcut.bn": "downsample.bn",
                "se.reduce": "se.fc1",
                "se.expand": "se.fc2",
            },
            blocks="s{stage}.b{block}",
            first_stage=1,
            first_block=1,
            in_files=True,
        ),
        Layout(  # torchvision 0.29's RegNet: `trunk_output.block1.block1-0.f.a.0.weight`, `stem.0`, `fc`
            "torchvision",
            top={"stem.conv": "stem.0", "stem.bn": "stem.1", "head.fc": "fc"},
            block={
                "shortcut.conv": "proj.0",
                "shortcut.bn": "proj.1",
                "conv1.conv": "f.a.0",
                "conv1.bn": "f.a.1",
                "conv2.conv": "f.b.0",
                "conv2.bn": "f.b.1",
                "se.reduce": "f.se.fc1",
                "se.expand": "f.se.fc2",
                "conv3.conv": "f.c.0",
                "conv3.bn": "f.c.1",
            },
            blocks="trunk_output.block{stage}.block{stage}-{block}",
            first_stage=1,
            in_files=True,
        ),
        Layout(  # transformers 5's RegNet: a block's modules are numbered, so the last 1x1 convolution is
            # `layer.2` in an X layer and `layer.3` in a Y layer (SE at `layer.2`)
            "hf",
            top={
                "stem.conv": "regnet.embedder.embedder.convolution",
                "stem.bn": "regnet.embedder.embedder.normalization",
                "head.fc": "classifier.1",
            },
            block={
                "shortcut.conv": "shortcut.convolution",
                "shortcut.bn": "shortcut.normalization",
                "conv1.conv": "layer.0.convolution",
                "conv1.bn": "layer.0.normalization",
                "conv2.conv": "layer.1.convolution",
                "conv2.bn": "layer.1.normalization",
                "se.reduce": "layer.2.attention.0",
                "se.expand": "layer.2.attention.2",
                "conv3.conv": "layer.2.convolution",
                "conv3.bn": "layer.2.normalization",
            },
            se_block={"conv3.conv": "layer.3.convolution", "conv3.bn": "layer.3.normalization"},
            blocks="regnet.encoder.stages.{stage}.layers.{block}",
        ),
    )
}
FILE_LAYOUTS: tuple[str, ...] = tuple(name for name, layout in LAYOUTS.items() if layout.in_files)
