"""timm itself, not a capture of its key names: `export --to timm` files load strictly into timm's RegNet.

Every zoo model goes pycls 0.1.1 (a genuine checkpoint with random weights and BN statistics) -> `regnet-convert pycls`
-> `regnet-convert export --to timm` (timm's names, RGB) -> `timm.create_model(...).load_state_dict(strict=True)`, and
timm must compute pycls's logits. Each file is deleted as soon as it is read: the largest is ~600 MB.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import timm
import torch
from helpers import aligned_copies, assert_imports_back_bit_identical, probe_input, relative_difference
from pycls_oracle import build, configure_regnet, randomize, save_genuine_checkpoint
from safetensors.torch import load_file
from timm.models.regnet import RegNet as TimmRegNet
from timm.models.regnet import RegNetCfg
from zoo_sources import pycls_logits

import regnet
from regnet.layouts import LAYOUTS

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("one_thread")]

TIMM = LAYOUTS["timm"]
TIMM_NAMES = {name: model.timm_name for name, model in regnet.zoo_models().items()}  # zoo name -> timm model name

# The `regnet-convert` console script: its installed entry point in-process, its executable in a subprocess.
CONSOLE_SCRIPT = Path(sys.executable).with_name("regnet-convert")
(CLI,) = entry_points(group="console_scripts", name="regnet-convert")
COMMAND = import_module(CLI.module).main  # the click command behind the console script's entry function

# Four stages (timm's RegNet has exactly four), a bottleneck multiplier, SE and a stem width that no zoo model has.
CUSTOM = regnet.RegNetParams(
    depth=10, w0=16, wa=16.0, wm=2.0, group_width=8, bottleneck_multiplier=0.5, se_ratio=0.25, stem_width=24
)


def read_and_delete(file: Path) -> tuple[dict[str, torch.Tensor], regnet.RegNet]:
    """The file's tensors as timm would get them, and `regnet.load`'s model of it."""
    try:
        return load_file(file), regnet.load(file)
    finally:
        file.unlink()


def check_against_pycls(timm_model: torch.nn.Module, state: dict, ours: regnet.RegNet, pycls: tuple) -> None:
    """timm, given the file's tensors strictly, computes pycls's logits `pycls` (float32, float64: zoo_sources.py)
    on the probe batch; so does our loader reading the file back."""
    expected, expected64 = pycls
    assert ours.metadata.layout == "timm" and ours.metadata.preprocessing.channel_order == "RGB"
    bgr = probe_input()
    rgb = bgr.flip(1)
    timm_model.eval()
    # The stem turned back to BGR: every other tensor must then reproduce pycls bit for bit.
    copies = aligned_copies(state)
    timm_model.load_state_dict(
        {**copies, "stem.conv.weight": copies["stem.conv.weight"].flip(1)}, strict=True, assign=True
    )
    with torch.inference_mode():
        assert torch.equal(timm_model(bgr), expected)
        timm_model.load_state_dict(state, strict=True)  # the file as written: it takes RGB
        assert torch.equal(ours(rgb), timm_model(rgb))
        # RGB through timm = BGR through pycls, up to the stem's summation order. Random weights amplify that
        # reordering up to ~1e-3 relative in float32 through a deep net, so compare in float64.
        assert relative_difference(timm_model.double()(rgb.double()), expected64) <= 1e-5


@pytest.mark.parametrize("name", list(regnet.ZOO))
@pytest.mark.slow
def test_timm_loads_the_converted_zoo_model_and_computes_pycls_logits(tmp_path, runner, zoo_sources, name):
    """pycls's checkpoint converted with `--model NAME` (zoo_sources.py), exported to timm by the console script's
    command in-process (a fresh interpreter per model costs more than the check); imported back, bit for bit."""
    source = zoo_sources(name)
    output = tmp_path / f"{name}-timm.safetensors"
    result = runner.invoke(COMMAND, ["export", str(source.native), str(output), "--to", "timm", "--quiet"])
    assert result.exit_code == 0 and not result.output, result.output
    assert_imports_back_bit_identical("timm", output, source.native, tmp_path / "back.safetensors")
    (tmp_path / "back.safetensors").unlink()
    state, ours = read_and_delete(output)
    with torch.device("meta"):  # no random initialisation: the file's tensors are assigned
        timm_model = timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=1000)
    check_against_pycls(timm_model, state, ours, (source.logits, source.logits64))
    assert ours.metadata.model == name
    pre, timm_cfg = ours.metadata.preprocessing, timm_model.pretrained_cfg  # what timm tells users of these weights
    assert (pre.mean, pre.std) == (tuple(timm_cfg["mean"]), tuple(timm_cfg["std"]))


@pytest.mark.slow
def test_custom_regnet_round_trips_through_timms_regnetcfg(tmp_path):
    assert len(CUSTOM.stages()) == 4
    configure_regnet(CUSTOM, num_classes=10)
    reference = randomize(build(), seed=8)
    source = save_genuine_checkpoint(reference, tmp_path / "train")
    native, output = tmp_path / "custom.safetensors", tmp_path / "custom-timm.safetensors"
    for command in (
        [CONSOLE_SCRIPT, "pycls", source, native, "--quiet"],
        [CONSOLE_SCRIPT, "export", native, output, "--to", "timm", "--quiet"],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0 and not result.stdout and not result.stderr, result.stderr
    state, ours = read_and_delete(output)
    cfg = RegNetCfg(
        depth=CUSTOM.depth,
        w0=CUSTOM.w0,
        wa=CUSTOM.wa,
        wm=CUSTOM.wm,
        group_size=CUSTOM.group_width,
        bottle_ratio=CUSTOM.bottleneck_multiplier,
        se_ratio=CUSTOM.se_ratio,
        stem_width=CUSTOM.stem_width,
    )
    check_against_pycls(TimmRegNet(cfg, num_classes=10), state, ours, pycls_logits(reference))
    assert ours.metadata.model == "custom" and ours.metadata.config.stages == CUSTOM.stages()


def test_timm_names_cover_the_zoo_and_name_timms_models():
    assert set(TIMM_NAMES) == set(regnet.ZOO)
    assert set(TIMM_NAMES.values()) <= set(timm.list_models("regnet*"))
    assert TIMM_NAMES["regnetx_4.0gf"] == "regnetx_040" and TIMM_NAMES["regnety_32gf"] == "regnety_320"


def test_timm_key_mapping_inverts_on_timms_own_names():
    names = list(timm.create_model("regnety_002", pretrained=False).state_dict())
    assert all(TIMM.from_native(TIMM.to_native(k)) == k for k in names)
    assert (
        "s1.b1.downsample.conv.weight" in names and TIMM.to_native("s1.b1.se.fc1.bias") == "stages.0.0.se.reduce.bias"
    )
