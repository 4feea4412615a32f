"""`regnet-convert export --to mmcls`, checked by mmclassification 0.25.0 itself (on mmcv 1.7.2 lite).

Every RegNetX zoo model goes pycls 0.1.1 (a genuine checkpoint with random weights and BN statistics) -> conversion
(once per run: zoo_sources.py) -> export -> mmcv's `load_checkpoint(strict=True)` into mmcls's `ImageClassifier`
built from mmcls's bundled config (the 8 it has; the other 4 with that config and the model's arch dict), which must
compute pycls's logits bit for bit.

The mmcls preset's oracle is mmcls: on real photographs, mmcls's own `init_model` (the exported file) and
`inference_model` (the bundled config's test pipeline) plant each image's label; `regnet-validate --preprocess
mmcls` must then score 100% top-1 from the pycls original and from the export read back by `regnet-convert mmcls`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import class_folder, probe_input, validation_record
from images import photo_set
from mmcls_oracle import (
    VERSIONS,
    bundled_config_file,
    classifier,
    config,
    load_model,
    load_strictly,
    logits,
    mmcls_input,
    mmcv,
    predict,
)
from pycls_oracle import build, configure_anynet, randomize, save_genuine_checkpoint
from safetensors.torch import load_file

import regnet
from regnet_convert.cli.convert import main

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("one_thread")]

REGNETX = [name for name, design in regnet.ZOO.items() if design.se_ratio is None]
WITH_BUNDLED_CONFIG = ["regnetx_400mf", "regnetx_800mf", "regnetx_1.6gf", "regnetx_3.2gf", "regnetx_4.0gf",
                       "regnetx_6.4gf", "regnetx_8.0gf", "regnetx_12gf"]  # fmt: skip


def export(source, output, *options: str) -> None:
    result = CliRunner().invoke(main, ["export", str(source), str(output), "--to", "mmcls", "--quiet", *options])
    assert result.exit_code == 0 and not result.output, result.output


def plain_data(obj: object) -> bool:
    """Only what `torch.load(weights_only=True)` and any reader accept: tensors, str, int, float, lists, dicts."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain_data(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(plain_data(v) for v in obj)
    return isinstance(obj, torch.Tensor | str | int | float) and not isinstance(obj, bool)


def test_the_bundled_configs_are_the_eight_expected():
    assert [n for n in REGNETX if bundled_config_file(n)] == WITH_BUNDLED_CONFIG and len(REGNETX) == 12


@pytest.mark.parametrize("name", REGNETX)
@pytest.mark.slow
def test_mmcls_loads_every_exported_regnetx_strictly_and_computes_pycls_logits(tmp_path, zoo_sources, name):
    """pycls's checkpoint, converted (zoo_sources.py), exported to mmcls: mmcls computes pycls's logits."""
    source = zoo_sources(name)
    output = tmp_path / f"{name}.pth"
    export(source.native, output)
    checkpoint = torch.load(output, weights_only=True)
    assert checkpoint.keys() == {"state_dict", "meta"} and plain_data(checkpoint)
    assert all(k.startswith(("backbone.", "head.fc.")) for k in checkpoint["state_dict"])
    meta = checkpoint["meta"]
    assert meta["mmcls_version"] == VERSIONS[0] == "0.25.0" and VERSIONS[1] == "1.7.2" and meta["model"] == name
    assert len(meta["CLASSES"]) == 1000 and meta["CLASSES"][:2] == ["tench", "goldfish"]
    arch = mmcv.Config.fromstring(meta["config"], ".py").model.backbone.arch
    if name in WITH_BUNDLED_CONFIG:  # the arch dict mmcls's own table has for it
        assert arch == type(classifier(config(name)).backbone).arch_settings[name]
    model = classifier(config(name))
    load_strictly(model, output)  # mmcv's own loader, as init_model uses it
    assert model.state_dict().keys() - checkpoint["state_dict"].keys() == {
        k for k in model.state_dict() if k.endswith("num_batches_tracked")
    }
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(logits(model, x), source.logits)  # max difference 0: the same float32 arithmetic


def test_regnety_is_refused_with_the_reason(tmp_path):
    source = save_genuine_checkpoint(randomize(build("regnety_200mf"), seed=1), tmp_path / "train")
    result = CliRunner().invoke(main, ["export", str(source), str(tmp_path / "y.pth"), "--to", "mmcls"])
    assert result.exit_code == 2 and "no squeeze-excitation" in result.output and "RegNetX only" in result.output
    assert not (tmp_path / "y.pth").exists()


def test_per_stage_custom_regnet_is_refused_with_the_reason(tmp_path):
    """mmcls builds only from design parameters (w0, wa, wm, depth, group_w, bot_mul): per-stage widths have none."""
    configure_anynet([1, 2, 3], [24, 56, 152], [8, 8, 8], [1.0, 1.0, 1.0], num_classes=10)
    source = save_genuine_checkpoint(randomize(build(), seed=3), tmp_path / "train")
    result = CliRunner().invoke(main, ["export", str(source), str(tmp_path / "c.pth"), "--to", "mmcls"])
    assert result.exit_code == 2 and "only from design parameters" in result.output, result.output
    assert not (tmp_path / "c.pth").exists()


def test_ten_classes_and_an_rgb_source_build_from_the_files_own_config(tmp_path):
    """A RegNetX-200MF with 10 classes, converted with --rgb: the export is BGR again, and `meta['config']` alone
    (mmcls's `init_model` on it) builds a classifier that loads it and computes pycls's logits."""
    reference = randomize(build("regnetx_200mf", num_classes=10), seed=7)
    source = save_genuine_checkpoint(reference, tmp_path / "train")
    rgb = tmp_path / "rgb.safetensors"
    assert CliRunner().invoke(main, ["pycls", str(source), str(rgb), "--rgb", "--quiet"]).exit_code == 0
    export(rgb, tmp_path / "ten.pth")
    meta = torch.load(tmp_path / "ten.pth", weights_only=True)["meta"]
    assert meta["CLASSES"] == [str(i) for i in range(10)]
    model = load_model(mmcv.Config.fromstring(meta["config"], ".py"), tmp_path / "ten.pth")
    strict = classifier(mmcv.Config.fromstring(meta["config"], ".py"))
    load_strictly(strict, tmp_path / "ten.pth")
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(logits(model, x), reference(x)) and torch.equal(logits(strict, x), reference(x))


def test_native_to_mmcls_to_native_is_bit_identical(tmp_path, converted_200mf):
    native, _ = converted_200mf
    export(native, tmp_path / "x.pth")
    back = tmp_path / "back.safetensors"
    assert CliRunner().invoke(main, ["mmcls", str(tmp_path / "x.pth"), str(back), "--quiet"]).exit_code == 0
    original, again = load_file(native), load_file(back)
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in original)
    assert regnet.read_metadata(back).model == "regnetx_200mf"


# ---- the mmcls preset's oracle: mmcls's own pipeline and model label real photographs ----------------------


@torch.no_grad()
def calibrated(model: torch.nn.Module, inputs: torch.Tensor) -> torch.nn.Module:
    """BN statistics from the photographs and a whitened classifier: predictions spread over many classes and
    react to small input changes (a plain random network predicts one class for everything)."""
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None
    model.train()(inputs)
    features = []
    hook = model.head.fc.register_forward_hook(lambda _m, args, _out: features.append(args[0]))
    model.eval()(inputs)
    hook.remove()
    mean, std = features[0].mean(0), features[0].std(0) + 1e-6
    weight = torch.randn(model.head.fc.weight.shape, generator=torch.Generator().manual_seed(0)) / std
    model.head.fc.weight.copy_(weight)
    model.head.fc.bias.copy_(-(weight @ mean))
    return model


@pytest.fixture(scope="module")
def labelled_by_mmcls(tmp_path_factory):
    """Photos filed into ImageNet class folders under mmcls 0.25's own top-1 (bundled RegNetX-400MF config)."""
    root = tmp_path_factory.mktemp("mmcls-oracle")
    photos = photo_set(root / "photos", 48, short_256=True)  # half resized by the pipeline, half already 256
    inputs = torch.from_numpy(np.stack([mmcls_input(p) for p in photos]))
    reference = calibrated(randomize(build("regnetx_400mf"), seed=11), inputs)
    source = save_genuine_checkpoint(reference, root / "train")
    exported = root / "regnetx_400mf.pth"
    export(source, exported)
    model = load_model(config("regnetx_400mf"), exported)
    assert model.CLASSES[:2] == ["tench", "goldfish"]  # init_model read the file's meta
    labels = []
    for path in photos:
        labels.append(predict(model, path))
        path.rename(class_folder(root / "val", labels[-1]) / path.name)
    with torch.inference_mode():
        assert logits(model, inputs).argmax(1).tolist() == labels  # mmcls's batch = its one-by-one pipeline
    return root, source, exported, labels


@pytest.mark.slow
def test_mmcls_labels_are_diverse(labelled_by_mmcls):
    _, _, _, labels = labelled_by_mmcls
    assert len(labels) == 48 and len(set(labels)) >= 20


@pytest.mark.parametrize("weights", ["pycls", "exported"])
@pytest.mark.slow
def test_mmcls_preset_scores_100_on_mmcls_own_labels(tmp_path, labelled_by_mmcls, weights):
    root, source, exported, _ = labelled_by_mmcls
    if weights == "exported":  # the mmcls file read back
        source = tmp_path / "back.safetensors"
        result = CliRunner().invoke(main, ["mmcls", str(exported), str(source), "--quiet"])
        assert result.exit_code == 0, result.output
    record = validation_record(
        CliRunner(), tmp_path / "r.json", "--weights", source, "--data", root / "val", "--preprocess", "mmcls"
    )
    assert record["images"] == 48 and record["top1"] == 100.0


@pytest.mark.slow
def test_pycls_preset_misses_mmcls_labels(tmp_path, labelled_by_mmcls):
    """The labels are sharp enough to tell the presets apart (crop origin, resize arithmetic)."""
    root, source, _, _ = labelled_by_mmcls
    record = validation_record(
        CliRunner(), tmp_path / "r.json", "--weights", source, "--data", root / "val", "--preprocess", "pycls"
    )
    assert record["top1"] <= 50.0  # 14.6%
