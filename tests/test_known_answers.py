"""Known answers: every preprocessing step, ours and the live oracles', against digests recorded once from the
reference arithmetic (mmcls 0.25 on mmcv 1.7.2 and OpenCV 4.x; pycls 0.1.1). A release that moves a step fails here
with the step's name; `make test-latest` runs this file against the newest versions the pyproject allows."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import known_answers
import numpy as np
import pytest
import torch
from helpers import convert_file, native_model_with_random_bn
from images import synthetic, write_image
from opencv_reference import PYCLS_MEAN, PYCLS_STD
from parity_images import parity_images

import regnet
from regnet_convert.errors import InputError
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation import selfcheck
from regnet_convert.validation.preprocess import (
    PRESETS,
    crop_center,
    decode_bgr,
    in_resize_dtype,
    normalize,
    resize_short,
    to_chw_tensor,
)
from regnet_convert.validation.selfcheck import STEPS, digest

RECORDS = known_answers.load_records()


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> dict[str, Path]:
    return parity_images(tmp_path_factory.mktemp("parity"))


def our_step_digests(path: Path) -> dict:
    """Our pipeline step by step, shaped like the records."""
    decoded = decode_bgr(path)
    steps: dict = {"decode": digest(decoded)}
    for preset in PRESETS:
        resized = in_resize_dtype(resize_short(decoded, 256, preset), preset)
        crop = crop_center(resized, 224, preset)
        network_input = normalize(to_chw_tensor(crop)[None], PYCLS_MEAN, PYCLS_STD)[0]
        steps[preset] = {"resize": digest(resized), "crop": digest(crop), "normalize": digest(network_input)}
    return steps


def differing_steps(computed: dict, recorded: dict) -> list[str]:
    """`preset/step` (or `decode`) names where two step records differ."""
    names = ["decode"] if computed["decode"] != recorded["decode"] else []
    for preset in PRESETS:
        names += [
            f"{preset}/{s}" for s in ("resize", "crop", "normalize") if computed[preset][s] != recorded[preset][s]
        ]
    return names


def drift(compute, named: dict[str, Path]) -> dict[str, list[str]]:
    """For each image whose steps differ from the records: which steps."""
    found = {}
    for name, path in named.items():
        steps = differing_steps(compute(path), RECORDS["images"][name])
        if steps:
            found[name] = steps
    return found


def summary(found: dict[str, list[str]]) -> str:
    steps = sorted({s for names in found.values() for s in names})
    return f"{len(found)} of {len(RECORDS['images'])} images differ in step(s) {steps}: {sorted(found)[:5]} ..."


def test_the_records_cover_every_parity_image(named):
    assert sorted(RECORDS["images"]) == sorted(named) and len(named) > 100


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def test_the_test_images_are_the_recorded_ones(named):
    """Pillow and scikit-image make the parity images: a release that changes their bytes is named here, apart from
    the pipeline's steps."""
    changed = [n for n, p in named.items() if file_digest(p) != RECORDS["images"][n]["file"]]
    assert changed == [], f"the image generator (Pillow, scikit-image) changed {len(changed)} files: {changed[:5]}"


def test_our_pipeline_reproduces_every_recorded_step(named):
    found = drift(our_step_digests, named)
    assert found == {}, summary(found)


@pytest.mark.oracle
@pytest.mark.slow
def test_the_oracles_reproduce_every_recorded_step(named):
    """mmcls's and pycls's own code, on the installed OpenCV, numpy and torch: are they still the reference?"""
    found = drift(known_answers.step_digests, named)
    assert found == {}, f"the live oracles on {known_answers.versions()}: " + summary(found)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_selfcheck_answers_are_the_recorded_ones(preset):
    assert selfcheck.KNOWN_ANSWERS[preset] == RECORDS["selfcheck"][preset]
    assert list(selfcheck.KNOWN_ANSWERS[preset]) == list(STEPS)


@pytest.mark.oracle
@pytest.mark.parametrize("preset", PRESETS)
def test_the_oracles_reproduce_the_selfcheck_answers(preset):
    computed = known_answers.selfcheck_digests(preset)
    differs = [step for step in STEPS if computed[step] != selfcheck.KNOWN_ANSWERS[preset][step]]
    assert differs == [], f"{preset} reference code on {known_answers.versions()}: {differs} differ"


@pytest.mark.parametrize("preset", PRESETS)
def test_this_installation_passes_its_selfcheck(preset):
    outcome = selfcheck.check(preset)
    assert outcome.exact and outcome.to_json() == {"exact": True, "differs": []}


@pytest.mark.parametrize(
    "step, target, sabotage",
    [
        ("decode", "decode_bytes", lambda f: lambda raw, name: f(raw, name) ^ 1),
        ("resize", "resize_short", lambda f: lambda image, size, preset: np.nextafter(f(image, size, preset), 300)),
        ("crop", "crop_center", lambda f: lambda image, size, preset: f(image, size, preset)[::-1]),
        ("normalize", "normalize", lambda f: lambda batch, mean, std: f(batch, mean, std) * 1.0000001),
    ],
)
@pytest.mark.parametrize("preset", PRESETS)
def test_a_step_that_moves_is_named_alone(monkeypatch, preset, step, target, sabotage):
    monkeypatch.setattr(selfcheck, target, sabotage(getattr(selfcheck, target)))
    outcome = selfcheck.check(preset)
    assert outcome.differs == (step,) and not outcome.exact


def test_a_damaged_selfcheck_image_is_refused(monkeypatch):
    monkeypatch.setattr(selfcheck, "IMAGE_SHA256", "0" * 64)
    with pytest.raises(InputError, match=r"self-check image selfcheck\.jpg.*damaged"):
        selfcheck.check("mmcls")


def test_a_missing_selfcheck_image_is_refused(monkeypatch):
    monkeypatch.setattr(selfcheck, "IMAGE", "no-such-image.jpg")
    with pytest.raises(InputError, match=r"self-check image no-such-image\.jpg.*cannot be read"):
        selfcheck.check("pycls")


SABOTAGE = """
import cv2, numpy
_resize = cv2.resize
def resize(*args, **kwargs):
    out = _resize(*args, **kwargs)
    if out.dtype == numpy.uint8:
        out[0, 0, 0] = out[0, 0, 0] ^ 1  # one level on one pixel
    else:
        out[0, 0, 0] += 1
    return out
cv2.resize = resize
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, Path]:
    """A converted random RegNetX-200MF and a class folder of 4 generated JPEGs."""
    folder = tmp_path_factory.mktemp("sabotage")
    original = native_model_with_random_bn("regnetx_200mf", seed=3)
    source = write_pycls_checkpoint(original, folder / "RegNetX-200MF.pyth", regnet.ZOO["regnetx_200mf"])
    weights = convert_file(source, folder / "regnetx_200mf.safetensors")
    for i in range(4):
        write_image(folder / "val" / "n01440764" / f"{i}.JPEG", synthetic(300, 240, seed=i))
    return weights, folder / "val"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.slow
def test_a_sabotaged_opencv_makes_the_run_not_comparable(tmp_path, demo_run, preset):
    """A `sitecustomize` that moves `cv2.resize` by one level on one pixel: the JSON names the step, no verdict."""
    weights, data = demo_run
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SABOTAGE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    out = tmp_path / "out.json"
    command = [sys.executable, "-m", "regnet_convert.cli.validate", "--weights", str(weights), "--data", str(data)]
    command += ["--preprocess", preset, "--workers", "0", "--json", str(out), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["pipeline"] == {"exact": False, "differs": ["resize"]}
    assert record["passed"] is None and record["verdict"].startswith("NOT COMPARABLE")
    assert "PASS" not in done.stdout and "FAIL" not in done.stdout
    assert "resize differs" in done.stdout and done.stderr.count("\n") == 1 and "resize" in done.stderr


@pytest.mark.slow
def test_an_unsabotaged_run_says_it_is_exact(tmp_path, demo_run):
    weights, data = demo_run
    out = tmp_path / "out.json"
    command = [sys.executable, "-m", "regnet_convert.cli.validate", "--weights", str(weights), "--data", str(data)]
    done = subprocess.run([*command, "--workers", "0", "--json", str(out), "--quiet"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads(out.read_text())["pipeline"] == {"exact": True, "differs": []}
    assert "bit-exact with the reference arithmetic" in done.stdout


def test_normalize_known_answer_depends_on_device_independent_bits():
    """The self-check runs `normalize` on the evaluation's device; on the CPU its bits are the recorded ones."""
    crops = torch.stack([to_chw_tensor(selfcheck.pattern((224, 224, 3), np.uint8, s)) for s in (4, 5)])
    assert digest(normalize(crops, selfcheck.MEAN, selfcheck.STD)) == selfcheck.KNOWN_ANSWERS["mmcls"]["normalize"]
