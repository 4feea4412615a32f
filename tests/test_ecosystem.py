"""mmclassification checkpoints and RGB weights (timm's layout: test_timm.py, against timm itself)."""

from __future__ import annotations

import pytest
import torch
from helpers import generated_val_set, probe_input, relative_difference, run_convert_cli, validation_record
from pycls_oracle import build, randomize, save_genuine_checkpoint
from safetensors.torch import load_file

import regnet
from regnet_convert.cli.convert import main


def pycls_to_mmcls(key: str, prefix: str, head: str) -> str:
    """mmclassification's ResNet-style names for a pycls RegNet key (established from mmpretrain's RegNet)."""
    parts = {"stem.conv": "conv1", "stem.bn": "bn1", "head.fc": head}
    module, _, tensor = key.rpartition(".")
    if module in parts:
        return prefix + f"{parts[module]}.{tensor}" if module != "head.fc" else f"{head}.{tensor}"
    stage, block, rest = module.split(".", 2)
    renamed = {"proj": "downsample.0", "bn": "downsample.1", "f.a": "conv1", "f.a_bn": "bn1", "f.b": "conv2",
               "f.b_bn": "bn2", "f.c": "conv3", "f.c_bn": "bn3"}[rest]  # fmt: skip
    return f"{prefix}layer{stage[1:]}.{int(block[1:]) - 1}.{renamed}.{tensor}"


@pytest.mark.parametrize("prefix, head", [("backbone.", "head.fc"), ("", "fc")])
@pytest.mark.oracle
@pytest.mark.slow
def test_mmcls_checkpoint_converts_to_the_same_tensors_and_logits(tmp_path, runner, prefix, head):
    reference = randomize(build("regnetx_800mf"), seed=4)
    pycls_file = save_genuine_checkpoint(reference, tmp_path / "train")
    state = {pycls_to_mmcls(k, prefix, head): v for k, v in reference.state_dict().items()}
    mmcls_file = tmp_path / "RegNetX-800MF-mmcls.pth"
    torch.save({"meta": {"CLASSES": ["tench"] * 1000, "epoch": 100}, "state_dict": state}, mmcls_file)
    run_convert_cli(runner, "pycls", pycls_file, tmp_path / "from_pycls.safetensors", "--quiet")
    run_convert_cli(runner, "mmcls", mmcls_file, tmp_path / "from_mmcls.safetensors", "--quiet")

    a, b = load_file(tmp_path / "from_pycls.safetensors"), load_file(tmp_path / "from_mmcls.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    converted = regnet.load(tmp_path / "from_mmcls.safetensors")
    assert converted.metadata.model == "regnetx_800mf" and converted.metadata.source_format == "mmcls"
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(converted(x), reference(x))


@pytest.mark.oracle
def test_mmcls_unknown_keys_are_an_error(tmp_path, runner):
    reference = randomize(build("regnety_200mf"))  # mmcls has no squeeze-excitation: SE keys are unknown there
    state = {k.replace("s1.", "layer1.").replace("stem.conv", "conv1"): v for k, v in reference.state_dict().items()}
    source = tmp_path / "weird.pth"
    torch.save({"state_dict": state}, source)
    result = runner.invoke(main, ["mmcls", str(source), str(tmp_path / "out.safetensors")])
    assert result.exit_code == 2 and "weird.pth: not a RegNet" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


@pytest.fixture
def bgr_and_rgb(tmp_path, runner):
    reference = randomize(build("regnety_200mf"), seed=2)
    source = save_genuine_checkpoint(reference, tmp_path / "train")
    run_convert_cli(runner, "pycls", source, tmp_path / "bgr.safetensors", "--quiet")
    run_convert_cli(runner, "pycls", source, tmp_path / "rgb.safetensors", "--rgb", "--quiet")
    return reference, tmp_path / "bgr.safetensors", tmp_path / "rgb.safetensors"


def test_rgb_flips_the_stem_and_records_the_channel_order(bgr_and_rgb):
    reference, bgr_file, rgb_file = bgr_and_rgb
    bgr, rgb = regnet.load(bgr_file), regnet.load(rgb_file)
    assert torch.equal(rgb.stem.conv.weight, reference.stem.conv.weight[:, [2, 1, 0]])
    pre = rgb.metadata.preprocessing
    assert bgr.metadata.preprocessing.channel_order == "BGR" and pre.channel_order == "RGB"
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    x = probe_input()
    with torch.inference_mode():
        assert relative_difference(rgb(x.flip(1)), bgr(x)) <= 1e-5  # only the summation order differs


def test_rgb_file_validates_exactly_like_the_bgr_file(tmp_path, runner, bgr_and_rgb):
    _, bgr_file, rgb_file = bgr_and_rgb
    val = generated_val_set(tmp_path, 10, seed=2)
    records = [
        validation_record(runner, tmp_path / f"{file.stem}.json", "--weights", file, "--data", val)
        for file in (bgr_file, rgb_file)
    ]
    assert [r["channel_order"] for r in records] == ["BGR", "RGB"]
    assert (records[0]["top1"], records[0]["top5"]) == (records[1]["top1"], records[1]["top5"])
