"""`regnet-convert export --to hf` and `regnet-convert hf`, checked by transformers itself.

Every zoo model goes pycls 0.1.1 (a genuine checkpoint, random weights and BN statistics) -> `regnet-convert pycls`
(once per run: zoo_sources.py) -> `export --to hf` -> `RegNetForImageClassification.from_pretrained` (no missing,
unexpected or mismatched key) -> pycls's logits, bit for bit once the stem is turned back to BGR. The import reads
folders transformers itself wrote.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
import transformers
from click.testing import CliRunner
from helpers import aligned_copies, assert_imports_back_bit_identical, probe_input
from images import PHOTOS, photograph
from PIL import Image
from pycls_oracle import build, configure_anynet, randomize, save_genuine_checkpoint
from torch import nn
from transformers import AutoImageProcessor, RegNetForImageClassification
from zoo_sources import pycls_logits

import regnet
from regnet.imagenet import class_names
from regnet.layouts import LAYOUTS
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.cli.convert import main
from regnet_convert.export.hf import groups_width, refuse

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("one_thread")]

STEM = "regnet.embedder.embedder.convolution.weight"
HF = LAYOUTS["hf"]


def cli(*args: object) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--quiet"])
    assert result.exit_code == 0 and not result.output, result.output


def from_pretrained(folder) -> RegNetForImageClassification:
    """transformers' own loader, which must find every key in place."""
    model, info = RegNetForImageClassification.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == info["unexpected_keys"] == info["mismatched_keys"] == set(), info
    assert not info["error_msgs"]
    return model.eval()


def assert_computes_pycls_logits(model: nn.Module, pycls: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With the stem turned back to BGR, transformers computes pycls's logits (float32, float64 on `probe_input()`:
    zoo_sources.py) bit for bit."""
    expected, expected64 = pycls
    x = probe_input()
    # Copies, assigned as the parameters: transformers leaves them in the file's memory map, at offsets only
    # 8-byte aligned, and the CPU kernels take other summation paths on unaligned weights (SE's 1x1 convolutions
    # then differ from pycls by ~1e-5 with every weight equal).
    state = aligned_copies(model.state_dict())
    model.load_state_dict({**state, STEM: state[STEM].flip(1)}, strict=True, assign=True)
    with torch.inference_mode():
        assert torch.equal(model(x).logits, expected)
    model.load_state_dict(state, strict=True)
    with torch.inference_mode():  # as written: RGB in, the same logits up to summation order (float64: random
        # weights amplify float32 rounding through deep stacks), last: .double() converts the model in place
        assert torch.allclose(model.double()(x.flip(1).double()).logits, expected64, rtol=1e-5, atol=1e-9)


def test_no_zoo_model_is_refused_and_regnetx_8gf_needs_the_wider_group_width():
    """All 24 fit transformers: regnetx_8.0gf's first stage (width 80) has group width 80, the others 120, and
    transformers' one groups_width 120 gives that stage max(1, 80 // 120) = 1 group, as pycls's capping does."""
    refused = {name: refuse(regnet.zoo_config(name)) for name in regnet.ZOO}
    assert {name: reason for name, reason in refused.items() if reason} == {}
    config = regnet.zoo_config("regnetx_8.0gf")
    assert [s.group_width for s in config.stages] == [80, 120, 120, 120] and groups_width(config) == 120


@pytest.mark.parametrize("name", list(regnet.ZOO))
@pytest.mark.slow
def test_transformers_loads_every_exported_zoo_model_and_computes_pycls_logits(tmp_path, zoo_sources, name):
    """pycls's checkpoint, converted (zoo_sources.py), exported to a transformers folder, and imported back."""
    source = zoo_sources(name)
    cli("export", source.native, tmp_path / "hf", "--to", "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    model = from_pretrained(tmp_path / "hf")
    assert model.config.id2label == dict(enumerate(class_names()))  # readable ImageNet names, class order
    assert model.config.layer_type == ("y" if regnet.zoo_config(name).se_ratio else "x")
    assert_computes_pycls_logits(model, (source.logits, source.logits64))
    assert_imports_back_bit_identical("hf", tmp_path / "hf", source.native, tmp_path / "back.safetensors")


def test_custom_regnet_exports_to_hf(tmp_path):
    """A RegNet outside the zoo: first stage not downsampling, capped group width, SE, 10 classes."""
    configure_anynet(
        [1, 2, 2], [24, 96, 192], [24, 48, 48], [1.0] * 3, se_ratio=0.25, num_classes=10, strides=[1, 2, 2]
    )
    reference = randomize(build(), seed=3)
    source = save_genuine_checkpoint(reference, tmp_path / "train")
    cli("export", source, tmp_path / "hf", "--to", "hf")
    model = from_pretrained(tmp_path / "hf")
    config = model.config
    assert (config.downsample_in_first_stage, config.groups_width, config.hidden_sizes) == (False, 48, [24, 96, 192])
    assert config.id2label == {i: f"LABEL_{i}" for i in range(10)}
    assert_computes_pycls_logits(model, pycls_logits(reference))


def test_image_processor_states_pycls_evaluation_and_does_it(tmp_path, converted_200mf):
    """AutoImageProcessor (both backends) resizes the shortest side to 256, crops 224, normalises RGB with the
    file's mean/std: its output on real photographs is that, computed here with Pillow and torchvision."""
    native, _ = converted_200mf
    cli("export", native, tmp_path / "hf", "--to", "hf")
    stated = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # pycls's BGR mean/std reversed
    assert regnet.read_metadata(native).preprocessing.mean == mean[::-1]
    for backend in ("torchvision", "pil"):
        processor = AutoImageProcessor.from_pretrained(tmp_path / "hf", backend=backend)
        assert processor.size == {"shortest_edge": 256} and processor.crop_size == {"height": 224, "width": 224}
        assert tuple(processor.image_mean) == mean and tuple(processor.image_std) == std
        assert processor.resample == stated["resample"] == Image.Resampling.BILINEAR
        assert processor.do_center_crop and processor.do_normalize and processor.rescale_factor == 1 / 255
        for photo in PHOTOS[:3]:
            image = Image.fromarray(photograph(photo))
            got = processor(image, return_tensors="pt").pixel_values[0]
            w, h = image.size
            size = (int(w * 256 / h), 256) if h < w else (256, int(h * 256 / w))
            if backend == "pil":
                resized = torch.from_numpy(np.array(image.resize(size, Image.Resampling.BILINEAR))).permute(2, 0, 1)
            else:
                pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
                resized = F.resize(pixels, [size[1], size[0]], F.InterpolationMode.BILINEAR, antialias=True)
            crop = F.center_crop(resized, [224, 224]).float() / 255
            expected = (crop - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
            assert got.shape == (3, 224, 224)
            assert torch.allclose(got, expected, rtol=0, atol=1e-6), (backend, photo, (got - expected).abs().max())


def test_processor_output_through_transformers_equals_the_native_model(tmp_path, converted_200mf):
    """The folder works end to end: processed photograph -> transformers = the native file's model on RGB."""
    native, _ = converted_200mf
    cli("export", native, tmp_path / "hf", "--to", "hf")
    pixels = AutoImageProcessor.from_pretrained(tmp_path / "hf")(
        Image.fromarray(photograph("coffee")), return_tensors="pt"
    )
    ours = regnet.load(native)
    with torch.inference_mode():
        logits = from_pretrained(tmp_path / "hf")(**pixels).logits
        assert torch.allclose(logits, ours(pixels.pixel_values.flip(1)), rtol=1e-4, atol=1e-5)


def test_hf_key_mapping_inverts_on_transformers_own_names():
    for layer_type in ("x", "y"):
        config = transformers.RegNetConfig(hidden_sizes=[16, 32], depths=[1, 2], groups_width=8, layer_type=layer_type)
        names = [k for k in RegNetForImageClassification(config).state_dict() if "num_batches" not in k]
        assert all(HF.from_native(HF.to_native(k), se=layer_type == "y") == k for k in names)
    assert HF.to_native("regnet.encoder.stages.1.layers.0.layer.3.normalization.bias") == "stages.1.0.conv3.bn.bias"
    assert (
        HF.from_native("stages.1.0.conv3.bn.bias", se=False)
        == "regnet.encoder.stages.1.layers.0.layer.2.normalization.bias"
    )


@pytest.mark.parametrize("layer_type", ["x", "y"])
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_import_reads_what_transformers_wrote(tmp_path, layer_type, weights):
    """A folder written by transformers' save_pretrained (or its state dict as pytorch_model.bin) becomes a native
    file computing transformers' logits, RGB recorded."""
    config = transformers.RegNetConfig(
        hidden_sizes=[24, 48, 80], depths=[1, 2, 1], groups_width=16, layer_type=layer_type, embedding_size=16,
        downsample_in_first_stage=layer_type == "x", num_labels=5,
    )  # fmt: skip
    torch.manual_seed(0)
    model = RegNetForImageClassification(config).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path / "hf")
    if weights == "pytorch_model.bin":
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_path / "hf" / weights)
    cli("hf", tmp_path / "hf", tmp_path / "native.safetensors")
    ours = regnet.load(tmp_path / "native.safetensors")
    assert ours.metadata.preprocessing.channel_order == "RGB" and ours.metadata.source_format == "hf"
    assert ours.metadata.source_file == f"hf/{weights}" and ours.config.num_classes == 5
    assert [s.group_width for s in ours.config.stages] == [24, 16, 16]  # max(1, width // 16) groups
    x = probe_input()
    with torch.inference_mode():
        assert torch.allclose(ours(x), model(x).logits, rtol=1e-5, atol=1e-6)


def test_custom_regnet_to_hf_to_native_is_bit_identical(tmp_path):
    """Export to a transformers folder, import it back: every tensor as it was (the stem reversed twice). The zoo
    models make this round trip in their own test above."""
    params = regnet.RegNetParams(depth=6, w0=16, wa=12.0, wm=2.2, group_width=8, se_ratio=0.25, stem_width=24)
    model = regnet.RegNet(params.config(num_classes=7)).init_weights()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    native = tmp_path / "native.safetensors"
    regnet.save(
        native, model.state_dict(), WeightsMetadata(model.config, Preprocessing(), "test", "x", "0" * 64, "test")
    )
    cli("export", native, tmp_path / "hf", "--to", "hf")
    assert_imports_back_bit_identical("hf", tmp_path / "hf", native, tmp_path / "back.safetensors")
