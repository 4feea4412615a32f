"""`regnet-convert export --to timm-hub`, judged by timm's own `local-dir:` loader.

Every zoo model goes pycls 0.1.1 (a genuine checkpoint with random weights and BN statistics) -> `regnet-convert
pycls` (once per run: zoo_sources.py) -> `export --to timm-hub` -> `timm.create_model("local-dir:" + OUT,
pretrained=True)`, which must compute pycls's logits (bit for bit once its stem is turned back to BGR) and hand
`resolve_data_config` pycls's evaluation.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import timm
import timm.data
import torch
from click.testing import CliRunner
from helpers import probe_input, relative_difference
from pycls_oracle import build, configure_anynet, randomize, save_genuine_checkpoint
from torchvision import transforms

import regnet
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.cli.convert import main
from regnet_convert.export.timm_hub import crop_pct

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("one_thread")]

PYCLS_RGB_MEAN, PYCLS_RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def export(source, output, *options: str):
    return CliRunner().invoke(main, ["export", str(source), str(output), "--to", "timm-hub", *options])


def load_hub(folder) -> torch.nn.Module:
    return timm.create_model("local-dir:" + str(folder), pretrained=True).eval()


@pytest.mark.parametrize("name", list(regnet.ZOO))
@pytest.mark.slow
def test_timm_loads_every_zoo_export_and_computes_pycls_logits(tmp_path, zoo_sources, name):
    """pycls's checkpoint, converted (zoo_sources.py), exported to a timm hub folder."""
    source = zoo_sources(name)
    hub = tmp_path / "hub"
    result = export(source.native, hub, "--quiet")
    assert result.exit_code == 0 and not result.output, result.output
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((hub / "config.json").read_text())
    assert config["architecture"] == regnet.zoo_model(name).timm_name and config["num_classes"] == 1000
    model = load_hub(hub)
    assert type(model) is timm.models.regnet.RegNet and model.num_classes == 1000
    bgr = probe_input()
    with torch.inference_mode():
        # RGB through timm (the folder as written) = BGR through pycls, up to the stem's summation order, which
        # random weights amplify to ~1e-3 in float32: compared in float64
        assert relative_difference(model.double()(bgr.flip(1).double()), source.logits64) < 1e-5
        model.float()
        stem = model.stem.conv.weight
        stem.copy_(stem.flip(1))  # back to BGR: then every tensor reproduces pycls bit for bit
        assert torch.equal(model(bgr), source.logits)


def test_data_config_states_pycls_evaluation(tmp_path, converted_200mf):
    """pycls evaluates with short side 256 (bilinear), centre crop 224, ImageNet's mean and std: timm says so."""
    native, reference = converted_200mf
    assert export(native, tmp_path / "hub", "--quiet").exit_code == 0
    model = load_hub(tmp_path / "hub")
    data = timm.data.resolve_data_config(model=model)
    assert tuple(data["input_size"]) == (3, 224, 224)
    assert data["interpolation"] == "bilinear" and data["crop_mode"] == "center"
    assert data["crop_pct"] == 0.875
    assert tuple(data["mean"]) == PYCLS_RGB_MEAN and tuple(data["std"]) == PYCLS_RGB_STD
    steps = timm.data.create_transform(**data).transforms
    resize, crop, normalize = steps[0], steps[1], steps[-1]
    assert isinstance(resize, transforms.Resize) and resize.size == 256
    assert resize.interpolation == transforms.InterpolationMode.BILINEAR
    assert isinstance(crop, transforms.CenterCrop) and tuple(crop.size) == (224, 224)
    assert torch.allclose(normalize.mean, torch.tensor(PYCLS_RGB_MEAN)) and torch.equal(
        normalize.std, torch.tensor(PYCLS_RGB_STD)
    )
    x = probe_input()
    with torch.inference_mode():  # the BGR converted file, exported RGB: the same network
        assert relative_difference(model(x.flip(1)), reference(x)) < 1e-4


def test_other_class_counts_and_labels_reach_timm(tmp_path):
    """A zoo architecture with 10 classes is still timm's model: num_classes comes from config.json."""
    torch.manual_seed(4)
    model = regnet.create_model("regnety_400mf", num_classes=10).eval()
    labels = tuple(f"n{i:08d}" for i in range(10))
    names = tuple(f"class {i}" for i in range(10))
    rgb = Preprocessing("RGB", PYCLS_RGB_MEAN, PYCLS_RGB_STD, 320, 288)
    metadata = WeightsMetadata(
        model.config, rgb, "test", "x", "0" * 64, "test", categories=labels, category_names=names
    )
    regnet.save(tmp_path / "ten.safetensors", model.state_dict(), metadata)
    assert export(tmp_path / "ten.safetensors", tmp_path / "hub", "--quiet").exit_code == 0
    timm_model = load_hub(tmp_path / "hub")
    assert timm_model.num_classes == 10
    assert timm_model.pretrained_cfg["label_names"] == list(labels)
    assert timm_model.pretrained_cfg["label_descriptions"] == dict(zip(labels, names, strict=True))
    data = timm.data.resolve_data_config(model=timm_model)
    assert tuple(data["input_size"]) == (3, 288, 288)
    assert timm.data.create_transform(**data).transforms[0].size == 320  # an RGB source stays RGB
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(timm_model(x), model(x))


def test_crop_pct_gives_back_the_resize():
    """timm resizes to floor(crop / crop_pct): every resize a file may state must come back exactly."""
    for resize in range(1, 1025):
        for crop in {1, resize // 3, resize // 2, (resize * 7) // 8, resize - 1, resize} - {0}:
            assert math.floor(crop / crop_pct(crop, resize)) == resize, (crop, resize)


def test_custom_regnet_is_refused_with_the_reason(tmp_path):
    """timm builds a RegNet from (w0, wa, wm, depth) by registered name; a per-stage architecture has none."""
    configure_anynet([1, 2, 3], [24, 56, 56], [4, 7, 14], [1.0, 0.5, 1.0], se_ratio=0.5, num_classes=10)
    source = save_genuine_checkpoint(randomize(build(), seed=3), tmp_path / "train")
    shutil.copy(source, tmp_path / "custom.pyth")
    result = export(tmp_path / "custom.pyth", tmp_path / "hub")
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "timm-hub cannot express this RegNet" in result.output and "not a zoo model" in result.output
    assert not (tmp_path / "hub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.pyth", "train"]
