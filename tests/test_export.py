"""`regnet-convert export --to torchvision|timm` and the imports back, checked by torchvision and timm themselves.

Every zoo model goes pycls 0.1.1 (a genuine checkpoint with random weights and BN statistics) -> `regnet-convert
pycls` (once per run: zoo_sources.py) -> `export --to torchvision` -> strict load into `torchvision.models.RegNet`
built from the file's architecture (and into the zoo builder where its widths are pycls's), and torchvision must
compute pycls's logits.
"""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
import torchvision.models
from click.testing import CliRunner
from helpers import aligned_copies, assert_imports_back_bit_identical, probe_input, without_random_init
from pycls_oracle import build, configure_anynet, randomize, save_genuine_checkpoint
from safetensors.torch import load_file
from torch import nn
from torchvision.models.regnet import BlockParams
from zoo_sources import pycls_logits

import regnet
from regnet.layouts import LAYOUTS
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.cli.convert import main

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("one_thread")]


def torchvision_regnet(config: regnet.RegNetConfig) -> nn.Module:
    """torchvision's RegNet with the per-stage architecture of a converted file's metadata."""
    stages = config.stages
    params = BlockParams(
        depths=[s.depth for s in stages],
        widths=[s.width for s in stages],
        group_widths=[s.group_width for s in stages],
        bottleneck_multipliers=[s.bottleneck_multiplier for s in stages],
        strides=[s.stride for s in stages],
        se_ratio=config.se_ratio,
    )
    norm = partial(nn.BatchNorm2d, eps=config.bn_eps)
    return torchvision.models.RegNet(
        params, num_classes=config.num_classes, stem_width=config.stem_width, norm_layer=norm
    )


def export(source, output, target: str) -> None:
    result = CliRunner().invoke(main, ["export", str(source), str(output), "--to", target, "--quiet"])
    assert result.exit_code == 0 and not result.output, result.output


def assert_computes_pycls_logits(model: nn.Module, state: dict, expected: torch.Tensor) -> None:
    """Strict load; with the stem turned back to BGR, every tensor reproduces pycls's logits `expected` on
    `probe_input()` bit for bit."""
    model.eval()
    x = probe_input()
    stem = "stem.0.weight" if "stem.0.weight" in state else "stem.conv.weight"  # torchvision's or timm's name
    copies = aligned_copies(state)
    model.load_state_dict({**copies, stem: copies[stem].flip(1)}, strict=True, assign=True)
    with torch.inference_mode():
        assert torch.equal(model(x), expected)
    model.load_state_dict(state, strict=True)  # the file as written: it takes RGB


@pytest.mark.parametrize("name", list(regnet.ZOO))
@pytest.mark.slow
def test_torchvision_loads_every_exported_zoo_model_and_computes_pycls_logits(tmp_path, zoo_sources, name):
    """pycls's checkpoint, converted (zoo_sources.py), exported to torchvision's layout."""
    source = zoo_sources(name)
    output = tmp_path / "tv.safetensors"
    export(source.native, output, "torchvision")
    state, ours = load_file(output), regnet.load(output)
    assert ours.metadata.layout == "torchvision" and ours.metadata.preprocessing.channel_order == "RGB"
    with torch.device("meta"):  # no random initialisation: the file's tensors are assigned
        model = torchvision_regnet(ours.metadata.config)
    assert_computes_pycls_logits(model, state, source.logits)
    builder = regnet.zoo_model(name).torchvision_builder
    if builder:
        with without_random_init():  # (the builder computes its widths with tensors: not on the meta device)
            model = getattr(torchvision.models, builder)()
        assert_computes_pycls_logits(model, state, source.logits)
    with torch.inference_mode():  # regnet.load reads the file back: RGB in, pycls's logits
        x = probe_input()
        assert torch.allclose(ours.double()(x.flip(1).double()), source.logits64, rtol=1e-5, atol=1e-9)
    assert_imports_back_bit_identical("torchvision", output, source.native, tmp_path / "back.safetensors")


def test_custom_regnet_exports_to_torchvision(tmp_path):
    configure_anynet(
        [1, 2, 3], [24, 56, 56], [4, 7, 14], [1.0, 0.5, 1.0], se_ratio=0.5, num_classes=10, strides=[2, 2, 1]
    )
    reference = randomize(build(), seed=3)
    source = save_genuine_checkpoint(reference, tmp_path / "train")
    export(source, tmp_path / "custom.safetensors", "torchvision")
    ours = regnet.load(tmp_path / "custom.safetensors")
    assert ours.metadata.model == "custom"
    assert_computes_pycls_logits(
        torchvision_regnet(ours.metadata.config), load_file(tmp_path / "custom.safetensors"), pycls_logits(reference)[0]
    )


def test_native_to_torchvision_to_timm_and_back_is_bit_identical(tmp_path, converted_200mf):
    native, reference = converted_200mf
    export(native, tmp_path / "tv.safetensors", "torchvision")
    export(tmp_path / "tv.safetensors", tmp_path / "timm.safetensors", "timm")  # from one export to another
    timm_model = timm.create_model("regnetx_002", pretrained=False)
    assert_computes_pycls_logits(timm_model, load_file(tmp_path / "timm.safetensors"), pycls_logits(reference)[0])
    original = regnet.load(native).state_dict()
    for path in (tmp_path / "tv.safetensors", tmp_path / "timm.safetensors"):
        again = regnet.load(path).state_dict()
        again["stem.conv.weight"] = again["stem.conv.weight"].flip(1)  # the one tensor an RGB export changes
        assert all(torch.equal(again[k], original[k]) for k in original)


def test_torchvision_key_mapping_inverts_on_torchvisions_own_names():
    names = [k for k in torchvision.models.regnet_y_400mf().state_dict() if "num_batches" not in k]
    layout = LAYOUTS["torchvision"]
    assert all(layout.from_native(layout.to_native(k)) == k for k in names)
    assert layout.to_native("trunk_output.block2.block2-0.f.se.fc1.bias") == "stages.1.0.se.reduce.bias"


@pytest.mark.parametrize("target", ["timm", "torchvision"])
def test_custom_regnet_to_target_to_native_is_bit_identical(tmp_path, target):
    """Export to a library's layout, import it back: every tensor as it was (the stem reversed twice). The zoo
    models make this round trip in their own tests (torchvision's above, timm's in test_timm.py)."""
    params = regnet.RegNetParams(depth=6, w0=16, wa=12.0, wm=2.2, group_width=8, bottleneck_multiplier=0.5,
                                 se_ratio=0.5, stem_width=24)  # fmt: skip
    model = regnet.RegNet(params.config(num_classes=7)).init_weights()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    native = tmp_path / "native.safetensors"
    regnet.save(
        native, model.state_dict(), WeightsMetadata(model.config, Preprocessing(), "test", "x", "0" * 64, "test")
    )
    export(native, tmp_path / "exported.safetensors", target)
    assert_imports_back_bit_identical(target, tmp_path / "exported.safetensors", native, tmp_path / "back.safetensors")
