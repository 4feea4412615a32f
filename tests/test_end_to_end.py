"""End to end on real photographs: labels are what the reference predicts (pycls's model code on each reference
pipeline's input).

The pycls labels come from pycls 0.1.1's own test loader (its `ImageNet` dataset: float32 resize), the mmcls
ones from mmclassification 0.25's own test pipeline (uint8 resize; `mmcls_oracle`). A faithful pipeline scores
100% top-1; a wrong channel order, crop offset or resize arithmetic does not.
The reference is a pycls RegNetY-400MF with random weights whose BN statistics are calibrated on
the photographs and whose classifier is whitened, so that its predictions spread over many classes
and react to small input changes (a plain random network predicts one class for everything).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers import validation_record
from images import photo_set
from opencv_reference import pycls_val_set, reference_input
from pycls_oracle import build, randomize, save_genuine_checkpoint
from safetensors.torch import load_file, save_file

import regnet
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.validation import preprocess

pytestmark = [pytest.mark.slow, pytest.mark.oracle]


@torch.no_grad()
def calibrated_reference(inputs: torch.Tensor) -> torch.nn.Module:
    model = randomize(build("regnety_400mf"), seed=11)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batch
    model.train()(inputs)
    model.eval()
    features = []
    hook = model.head.fc.register_forward_hook(lambda _m, args, _out: features.append(args[0]))
    model(inputs)
    hook.remove()
    mean, std = features[0].mean(0), features[0].std(0) + 1e-6
    weight = torch.randn(model.head.fc.weight.shape, generator=torch.Generator().manual_seed(0)) / std
    model.head.fc.weight.copy_(weight)
    model.head.fc.bias.copy_(-(weight @ mean))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    photos = photo_set(root / "val", 60, short_256=True)  # half of them resized, half already 256
    pycls_loader, order = pycls_val_set(photos, root / "pycls")
    inputs = {
        "mmcls": torch.from_numpy(np.stack([reference_input(f, "mmcls") for f in photos])),
        "pycls": torch.from_numpy(np.stack([pycls_loader[i][0] for i in order])),
    }
    reference = calibrated_reference(inputs["mmcls"])
    with torch.inference_mode():
        ranked = {p: reference(x).argsort(1, descending=True)[:, :5] for p, x in inputs.items()}
    source = save_genuine_checkpoint(reference, root / "train")
    converted = root / "model.safetensors"
    assert convert_main(["pycls", str(source), str(converted), "--quiet"], standalone_mode=False) is None
    return root, photos, ranked, source, converted


def validate(runner, setup, labels_rank: int = 0, label_preset: str = "mmcls", *args) -> dict:
    root, photos, ranked, _, converted = setup
    labels = root / f"labels_{label_preset}_{labels_rank}.txt"
    classes = ranked[label_preset][:, labels_rank].tolist()
    labels.write_text("".join(f"{p.name} {c}\n" for p, c in zip(photos, classes, strict=True)))
    return validation_record(
        runner, root / "result.json", "--weights", converted, "--data", root / "val", "--labels", labels, *args
    )


def test_reference_predictions_are_diverse(setup):
    _, _, ranked, _, _ = setup
    assert len(set(ranked["mmcls"][:, 0].tolist())) >= 20


@pytest.mark.parametrize("preset", ["mmcls", "pycls"])
def test_faithful_pipeline_scores_100(runner, setup, preset):
    record = validate(runner, setup, 0, preset, "--preprocess", preset)
    assert record["images"] == 60 and record["top1"] == 100.0 and record["top5"] == 100.0
    assert record["preprocess_arithmetic"] == {"mmcls": "uint8 resize", "pycls": "float32 resize"}[preset]


def test_uint8_resize_misses_pycls_labels(runner, setup, monkeypatch):
    """The old pycls preset (OpenCV's uint8 resize, pycls's sizes and rounding) is not pycls's pipeline."""
    monkeypatch.setitem(preprocess.RESIZE_DTYPES, "pycls", np.dtype(np.uint8))
    record = validate(runner, setup, 0, "pycls", "--preprocess", "pycls")
    assert record["preprocess_arithmetic"] == "uint8 resize" and record["top1"] <= 90.0


def test_labels_planted_at_rank_5(runner, setup):
    record = validate(runner, setup, 4)
    assert record["top1"] == 0.0 and record["top5"] == 100.0


def test_pycls_file_validated_directly(runner, setup):
    root, photos, ranked, source, _ = setup
    converted_in_memory = validate(runner, (root, photos, ranked, source, source), 0)
    assert converted_in_memory["top1"] == 100.0


def test_wrong_crop_offset_is_detected(runner, setup):
    record = validate(runner, setup, 0, "mmcls", "--preprocess", "pycls")
    assert record["top1"] <= 90.0


def test_wrong_channel_order_is_detected(runner, setup):
    root, photos, ranked, source, converted = setup
    rgb_claim = root / "claims_rgb.safetensors"
    metadata = regnet.read_metadata(converted).to_strings() | {"channel_order": "RGB"}
    save_file(load_file(converted), rgb_claim, metadata)
    record = validate(runner, (root, photos, ranked, source, rgb_claim), 0)
    assert record["channel_order"] == "RGB" and record["top1"] <= 50.0


def test_float_resize_is_detected(runner, setup, monkeypatch):
    def float_bilinear(image, size, interpolation):
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        out = torch.nn.functional.interpolate(tensor, size=size[::-1], mode="bilinear", align_corners=False)
        return out.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()

    monkeypatch.setattr(preprocess.cv2, "resize", float_bilinear)
    record = validate(runner, setup, 0)
    monkeypatch.setattr(preprocess.cv2, "resize", cv2.resize)
    assert record["top1"] <= 90.0
