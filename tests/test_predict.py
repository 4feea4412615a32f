"""Public preprocessing (`regnet.transforms`) and prediction (`regnet-convert predict`, `regnet_convert.prediction`).

The transform is judged against the known answers (digests of the reference pipelines' network input, recorded
from mmcls 0.25 and pycls 0.1.1) without the validator; the predictor against `regnet-validate` itself: labels
planted from the predictor's own top-1 (and rank 2) must score 100% (and 0% top-1, 100% top-5) in the validator,
for both presets, a BGR and an RGB model, and the .pyth the converted file came from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import known_answers
import numpy as np
import pytest
import torch
from helpers import convert_file, native_model_with_random_bn, validation_record
from images import photo_set
from opencv_reference import PYCLS_MEAN, PYCLS_STD
from parity_images import parity_images
from PIL import Image

import regnet
from regnet.metadata import Preprocessing
from regnet.preprocess import PRESETS, ImageDecodeError
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.errors import InputError
from regnet_convert.prediction import Prediction, Predictor, predict
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation.selfcheck import digest

pytestmark = pytest.mark.slow
RECORDS = known_answers.load_records()
REFERENCE = Preprocessing("BGR", tuple(PYCLS_MEAN), tuple(PYCLS_STD))  # the known answers' mean and std


# ---- regnet.transforms --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> dict[str, Path]:
    return parity_images(tmp_path_factory.mktemp("parity"))


@pytest.mark.parametrize("preset", PRESETS)
def test_transform_of_a_file_is_the_recorded_network_input(named, preset):
    """Every parity image (115: sizes, colour modes, formats, EXIF orientations), bit for bit the reference's."""
    transform = regnet.transforms(REFERENCE, preset)
    differ = [n for n, p in named.items() if digest(transform(p)) != RECORDS["images"][n][preset]["normalize"]]
    assert differ == [] and len(named) > 100


@pytest.mark.parametrize("preset", PRESETS)
def test_bytes_and_arrays_give_the_files_input(named, preset):
    path = named["coffee_375x500.jpg"]
    transform = regnet.transforms(REFERENCE, preset)
    expected = transform(path)
    bgr = transform.decode(path)
    assert torch.equal(transform(path.read_bytes()), expected)
    assert torch.equal(transform(str(path)), expected)
    assert torch.equal(transform(bgr, order="BGR"), expected)
    assert torch.equal(transform(np.ascontiguousarray(bgr[..., ::-1]), order="RGB"), expected)
    assert torch.equal(transform.batch([path, path.read_bytes()]), torch.stack([expected, expected]))


def test_an_rgb_model_gets_the_channels_reversed(named):
    path = named["coffee_375x500.jpg"]
    bgr = regnet.transforms(REFERENCE)(path)
    rgb = regnet.transforms(Preprocessing("RGB", REFERENCE.mean[::-1], REFERENCE.std[::-1]))(path)
    assert torch.equal(rgb, bgr.flip(0))


def test_transforms_from_a_model_its_metadata_or_its_file(converted_200mf):
    path, _ = converted_200mf
    model = regnet.load(path)
    expected = regnet.transforms(model.metadata.preprocessing, "pycls")
    assert regnet.transforms(model, "pycls") == expected
    assert regnet.transforms(model.metadata, "pycls") == expected == regnet.transforms(str(path), "pycls")


@pytest.mark.parametrize(
    "call, error, says",
    [
        (lambda t: t(np.zeros((300, 300, 3), np.uint8)), ValueError, "order='RGB'"),
        (lambda t: t(np.zeros((300, 300), np.uint8), order="RGB"), ValueError, "uint8 HxWx3"),
        (lambda t: t(np.zeros((300, 300, 3), np.float32), order="RGB"), ValueError, "uint8 HxWx3"),
        (lambda t: t(np.zeros((10, 1000, 3), np.uint8), order="BGR"), ValueError, "aspect ratio"),
        (lambda t: t(b"not an image"), ImageDecodeError, "image bytes: not a JPEG"),
        (lambda t: t(b""), ImageDecodeError, "image bytes: empty file"),
        (lambda t: t(Path("/no/such/image.jpg")), ImageDecodeError, "image.jpg: no such file"),
        (lambda t: t(Path("/tmp")), ImageDecodeError, "not a regular file"),
        (lambda t: t(b"\xff\xd8", order="RGB"), ValueError, "for arrays"),
        (lambda t: t(3), TypeError, "not int"),
    ],
)
def test_what_the_transform_refuses(call, error, says):
    with pytest.raises(error, match=says):
        call(regnet.transforms(REFERENCE))


def test_unknown_preset_and_source_are_refused():
    with pytest.raises(ValueError, match="preset 'timm'"):
        regnet.transforms(REFERENCE, "timm")
    with pytest.raises(TypeError, match="not int"):
        regnet.transforms(3)
    with pytest.raises(ValueError, match="no metadata"):
        regnet.transforms(regnet.create_model("regnetx_200mf"))


def test_import_regnet_leaves_opencv_and_pillow_until_the_first_image(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((40, 50, 3), 7, np.uint8)).save(image)
    code = f"""
import sys, regnet
from regnet.metadata import Preprocessing
loaded = lambda: sorted({{n.split(".")[0] for n in sys.modules}} & {{"cv2", "PIL"}})
before = loaded()
transform = regnet.transforms(Preprocessing(resize=32, crop=24))
after_transform = loaded()
x = transform({str(image)!r})
print(before, after_transform, loaded(), tuple(x.shape))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] [] ['PIL', 'cv2'] (3, 24, 24)"


# ---- prediction = the validator's top-1 ---------------------------------------------------------------------


@torch.no_grad()
def spread_out(model: regnet.RegNet, inputs: torch.Tensor) -> regnet.RegNet:
    """Make a random model's predictions differ from image to image: BN statistics from the images themselves and
    a whitened classifier (a plain random network predicts one class for everything)."""
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None
    model.train()(inputs)
    model.eval()
    features = model.forward_features(inputs).mean((2, 3))
    mean, std = features.mean(0), features.std(0) + 1e-6
    fc = model.head.fc
    fc.weight.copy_(torch.randn(fc.weight.shape, generator=torch.Generator().manual_seed(0)) / std)
    fc.bias.copy_(-(fc.weight @ mean))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """24 photographs in a flat folder, a RegNetX-200MF whose predictions spread over many classes as a pycls
    checkpoint, converted (BGR) and converted with --rgb."""
    root = tmp_path_factory.mktemp("predict")
    photos = photo_set(root / "val", 24, short_256=True)
    model = native_model_with_random_bn("regnetx_200mf", seed=3)
    spread_out(model, regnet.transforms(Preprocessing()).batch(photos))
    source = write_pycls_checkpoint(model, root / "model.pyth", regnet.ZOO["regnetx_200mf"])
    bgr = convert_file(source, root / "bgr.safetensors")
    rgb = convert_file(source, root / "rgb.safetensors", rgb=True)
    return root, photos, source, bgr, rgb


def planted(root: Path, predictions: list[Prediction], rank: int) -> Path:
    labels = root / f"labels_{rank}.txt"
    labels.write_text("".join(f"{Path(p.image).name} {p.top[rank].index}\n" for p in predictions))
    return labels


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("weights", ["bgr", "rgb", "source"])
def test_top1_is_the_validators(runner, setup, preset, weights):
    root, photos, source, bgr, rgb = setup
    path = {"bgr": bgr, "rgb": rgb, "source": source}[weights]
    predictions = predict(path, root / "val", topk=5, preset=preset, device="cpu")
    assert [Path(p.image) for p in predictions] == sorted(photos)
    assert len({p.top[0].index for p in predictions}) >= 8, "the predictions must spread over classes"
    for rank, top1, top5 in ((0, 100.0, 100.0), (1, 0.0, 100.0)):
        labels = planted(root, predictions, rank)
        args = ["--weights", path, "--data", root / "val", "--labels", labels, "--preprocess", preset]
        record = validation_record(runner, root / "result.json", *args)
        assert (record["top1"], record["top5"]) == (top1, top5), (weights, preset, rank)


def test_probabilities_names_and_order(setup):
    _, photos, _, bgr, _ = setup
    predictor = Predictor(bgr, device="cpu")
    (scores,) = predictor([photos[0]], topk=1000)
    probabilities = [s.probability for s in scores]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-4)
    assert scores[0].name == regnet.load(bgr).metadata.category_names[scores[0].index]
    assert scores[0].label.startswith("n") and len({s.index for s in scores}) == 1000
    image = np.asarray(Image.open(photos[0]).convert("RGB"))  # Pillow's decoder: not bit-exact, the same answer
    assert predictor([image], topk=1, order="RGB")[0][0].index == scores[0].index


def test_cli_prints_the_python_predictions(runner, setup):
    root, photos, _, bgr, _ = setup
    expected = predict(bgr, photos[:3], topk=3, device="cpu")
    result = runner.invoke(convert_main, ["predict", str(bgr), *map(str, photos[:3]), "--topk", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * 4 and lines[0] == str(photos[0])
    assert lines[1].startswith("  1. ") and lines[1].endswith(f"{expected[0].top[0].name} ({expected[0].top[0].label})")
    out = root / "predictions.json"
    result = runner.invoke(
        convert_main, ["predict", str(bgr), *map(str, photos[:3]), "--topk", "3", "--json", str(out)]
    )
    assert result.exit_code == 0 and result.stdout == "", result.output
    document = json.loads(out.read_text())
    assert document["model"] == "regnetx_200mf" and document["topk"] == 3 and document["preprocess"] == "mmcls"
    assert document["predictions"] == [p.to_json() for p in expected]
    result = runner.invoke(convert_main, ["predict", str(bgr), str(photos[0]), "--topk", "3", "--json", "-"])
    (record,) = json.loads(result.stdout)["predictions"]  # a batch of one: the same classes, the last bits aside
    assert [s["index"] for s in record["top"]] == [s.index for s in expected[0].top]
    probabilities = [s.probability for s in expected[0].top]
    assert [s["probability"] for s in record["top"]] == pytest.approx(probabilities, rel=1e-3)


def test_python_predict_refuses_or_skips_a_bad_image(setup, tmp_path):
    _, photos, _, bgr, _ = setup
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(InputError, match=r"bad\.jpg"):
        predict(bgr, [photos[0], bad], device="cpu")
    first, second = predict(bgr, [photos[0], bad], device="cpu", skip_bad_images=True)
    assert first.top and second.error and "bad.jpg" in second.error and second.to_json()["error"] == second.error
    with pytest.raises(InputError, match="topk"):
        predict(bgr, photos[0], topk=1001, device="cpu")
