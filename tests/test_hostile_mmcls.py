"""`regnet-convert export --to mmcls` on what it must refuse, each run in a limited child process.

Every case asserts the refusal contract (`hostile.check_refusal`): exit status 2, no traceback, one `error:` line
naming the file and the problem, no leftover or temporary file, every file that existed before byte-identical.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted import Fixtures, code_running_checkpoint
from hostile import Case, Zygote, refuse

import regnet
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.sources.pycls_format import write_pycls_checkpoint

pytestmark = pytest.mark.hostile

Setup = Callable[[Path, Fixtures], object]
OUT = "out.pth"


def _native(config: regnet.RegNetConfig, name: str) -> Setup:
    """Setup: a converted file of a fresh model with this architecture."""

    def setup(d: Path, fx: Fixtures) -> None:
        model = regnet.RegNet(config)
        metadata = WeightsMetadata(config, Preprocessing(), "test", "x", "0" * 64, "test")
        regnet.save(d / name, model.state_dict(), metadata)

    return setup


def _regnety_pycls(d: Path, fx: Fixtures) -> None:
    write_pycls_checkpoint(regnet.create_model("regnety_200mf"), d / "y.pyth", regnet.ZOO["regnety_200mf"])


def _zoo(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.zoo_safetensors, d / "w.safetensors")


def _then(*steps: Setup) -> Setup:
    return lambda d, fx: [step(d, fx) for step in steps]


STAGE = regnet.StageConfig(1, 16, 8)
FIVE_STAGES = regnet.RegNetConfig(stages=(STAGE,) * 5, num_classes=10)
MIXED_RATIOS = regnet.RegNetConfig(stages=(STAGE, regnet.StageConfig(1, 32, 8, 0.5)), num_classes=10)


def case(id: str, source: str, output: str, setup: Setup, says: list[str], *options: str) -> Case:
    return Case(f"mmcls-{id}", "regnet-convert", ["export", source, output, "--to", "mmcls", *options], setup, says)


CASES = [
    # architectures mmcls's RegNet cannot express
    case("regnety-converted", "y.safetensors", OUT, _native(regnet.zoo_config("regnety_200mf"), "y.safetensors"),
         ["y.safetensors", "no squeeze-excitation", "RegNetX only"]),
    case("regnety-pycls-checkpoint", "y.pyth", OUT, _regnety_pycls, ["y.pyth", "no squeeze-excitation"]),
    case("custom-per-stage", "t.safetensors", OUT, lambda d, fx: shutil.copy(fx.tiny_safetensors, d / "t.safetensors"),
         ["t.safetensors", "only from design parameters", "none of pycls's 12 RegNetX"]),
    case("five-stages", "f.safetensors", OUT, _native(FIVE_STAGES, "f.safetensors"), ["at most 4 stages, this one has 5"]),
    case("mixed-bottleneck-ratios", "m.safetensors", OUT, _native(MIXED_RATIOS, "m.safetensors"),
         ["one bottleneck ratio"]),
    # outputs
    case("output-exists", "w.safetensors", OUT, _then(_zoo, lambda d, fx: (d / OUT).write_bytes(b"keep")),
         [OUT, "already exists", "--force"]),
    case("output-is-directory", "w.safetensors", "out", _then(_zoo, lambda d, fx: (d / "out").mkdir()),
         ["out", "is a directory"], "--force"),
    case("output-is-source", "w.safetensors", "w.safetensors", _zoo, ["is the input file"], "--force"),
    case("output-symlink-to-source", "w.safetensors", "s.pth",
         _then(_zoo, lambda d, fx: os.symlink("w.safetensors", d / "s.pth")), ["is the input file"], "--force"),
    case("output-hardlink-to-source", "w.safetensors", "h.pth",
         _then(_zoo, lambda d, fx: os.link(d / "w.safetensors", d / "h.pth")), ["h.pth", "is the input file"],
         "--force"),
    case("output-fifo", "w.safetensors", "pipe", _then(_zoo, lambda d, fx: os.mkfifo(d / "pipe")),
         ["pipe", "is a FIFO"], "--force"),
    case("output-device", "w.safetensors", "/dev/null", _zoo, ["/dev/null", "character device"], "--force"),
    case("output-folder-missing", "w.safetensors", "missing/out.pth", _zoo, ["does not exist"]),
    case("output-trailing-slash", "w.safetensors", "newdir/", _zoo, ["newdir/", "not a file name"]),
    # sources
    case("source-missing", "nope.pth", OUT, _zoo, ["nope.pth", "no such"]),
    case("source-directory", "dir.pth", OUT, lambda d, fx: (d / "dir.pth").mkdir(), ["dir.pth", "is a directory"]),
    case("source-code-pickle", "bad.pyth", OUT, lambda d, fx: code_running_checkpoint(d / "bad.pyth", str(d / "pwned")),
         ["bad.pyth", "refused to unpickle"]),
    case("source-truncated", "bad.safetensors", OUT,
         lambda d, fx: (d / "bad.safetensors").write_bytes(fx.zoo_safetensors.read_bytes()[:-1000]),
         ["bad.safetensors", "truncated"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


def test_the_same_sources_export_where_mmcls_can_express_them(fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    """The control: a RegNetX zoo file exports in the same child, silently (no library warning on the terminal),
    and with --force replaces an existing output."""
    folder = tmp_path / "case"
    folder.mkdir()
    _then(_zoo, lambda d, fx: (d / OUT).write_bytes(b"old"))(folder, fixtures)
    argv = ["export", "w.safetensors", OUT, "--to", "mmcls", "--force", "--quiet"]
    outcome = zygote.run("regnet-convert", argv, folder)
    assert outcome.code == 0 and outcome.stdout == outcome.stderr == "", outcome.stderr
    assert sorted(p.name for p in folder.iterdir()) == [OUT, "w.safetensors"]
    checkpoint = torch.load(folder / OUT, weights_only=True)
    assert checkpoint["meta"]["model"] == "regnetx_200mf" and len(checkpoint["state_dict"]) == len(
        regnet.load(fixtures.zoo_safetensors).state_dict()
    ) - sum(k.endswith("num_batches_tracked") for k in regnet.load(fixtures.zoo_safetensors).state_dict())
