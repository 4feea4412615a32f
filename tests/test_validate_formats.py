"""Every format the tool writes validates, inspects and imports back: RegNetX-400MF and RegNetY-600MF exported to
every target give the native file's top-1/top-5 counts on planted labels in one mixed sweep; hf and timm-hub
cards parse with huggingface_hub and state the zoo's row; `inspect` names model, layout, channel order, source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import class_folder, convert_file, native_model_with_random_bn
from huggingface_hub import ModelCard
from safetensors import safe_open

import regnet
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.cli.validate import main as validate_main
from regnet_convert.demo import make_images
from regnet_convert.export.pipeline import export
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation.preprocess import load_crop, normalize, to_chw_tensor

pytestmark = [pytest.mark.slow, pytest.mark.oracle, pytest.mark.usefixtures("one_thread")]

MODELS = ("regnetx_400mf", "regnety_600mf")
TARGETS = {"timm": "timm.safetensors", "torchvision": "tv.safetensors", "hf": "hf", "timm-hub": "timm-hub",
           "onnx": "model.onnx", "mmcls": "mmcls.pth"}  # fmt: skip
IMAGES = 14
RANKS = 7  # image i is labelled with RegNetX-400MF's (i % 7)-th choice: top-1 hits i % 7 == 0, top-5 hits < 5


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """For each model: its pycls checkpoint, the native file and every export (mmcls: RegNetX only)."""
    files: dict[str, dict[str, Path]] = {}
    for seed, name in enumerate(MODELS):
        folder = tmp_path_factory.mktemp(name)
        model = native_model_with_random_bn(name, seed=10 + seed)
        pyth = write_pycls_checkpoint(model, folder / f"{regnet.pycls_name(name)}.pyth", regnet.ZOO[name])
        native = convert_file(pyth, folder / "native.safetensors")
        files[name] = {"pycls": pyth, "native": native}
        for target, output in TARGETS.items():
            if target == "mmcls" and regnet.zoo_config(name).se_ratio:
                continue  # mmclassification has no SE
            export(native, folder / output, target)
            files[name][target] = folder / output
    return files


@pytest.fixture(scope="module")
def planted(tmp_path_factory, exports) -> tuple[Path, int, int]:
    """A val folder labelled from RegNetX-400MF's own ranking (through the validator's crops), and the top-1
    and top-5 counts the native file must get on it."""
    root = tmp_path_factory.mktemp("planted")
    model = regnet.load(exports["regnetx_400mf"]["native"]).eval()
    pre = model.metadata.preprocessing
    val = root / "val"
    for i, path in enumerate(make_images(root / "staging", IMAGES, seed=5)):
        crop = to_chw_tensor(load_crop(path, pre.resize, pre.crop, "mmcls"), "BGR")
        with torch.inference_mode():
            ranking = model(normalize(crop[None], pre.mean, pre.std))[0].argsort(descending=True)
        path.rename(class_folder(val, int(ranking[i % RANKS])) / path.name)
    ranks = [i % RANKS for i in range(IMAGES)]
    return val, sum(r == 0 for r in ranks), sum(r < 5 for r in ranks)


def test_one_mixed_sweep_every_export_gives_the_native_counts(exports, planted, tmp_path):
    val, top1, top5 = planted
    weights = [path for name in MODELS for path in exports[name].values()]
    out = tmp_path / "sweep.json"
    args = ["--data", val, *(a for w in weights for a in ("--weights", w)), "--workers", "0", "--batch-size", "5"]
    result = CliRunner().invoke(validate_main, [*map(str, args), "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["weights"] for r in records] == [str(w) for w in weights]
    by_model: dict[str, list[dict]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    assert set(by_model) == set(MODELS)
    native_x = next(r for r in by_model["regnetx_400mf"] if r["weights_format"] == "native")
    assert native_x["images"] == IMAGES
    assert (round(native_x["top1"] * IMAGES / 100), round(native_x["top5"] * IMAGES / 100)) == (top1, top5)
    for name, group in by_model.items():
        native = next(r for r in group if r["weights_format"] == "native")
        formats = {r["weights_format"] for r in group}
        expected = {"native", "pycls", "timm-hub", "hf", "onnx"} | ({"mmcls"} if name == "regnetx_400mf" else set())
        assert expected <= formats, formats
        for record in group:
            assert (record["images"], record["top1"], record["top5"]) == (
                native["images"],
                native["top1"],
                native["top5"],
            ), (record["weights"], record["weights_format"])
    for marker in ("[hf]", "[timm-hub]", "[onnx]", "[mmcls]", "[pycls]"):
        assert marker in result.output


@pytest.mark.parametrize("name", MODELS)
def test_inspect_reads_every_export(exports, name):
    for kind, path in exports[name].items():
        result = CliRunner().invoke(convert_main, ["inspect", str(path)])
        assert result.exit_code == 0, (kind, result.output)
        lines = dict(line.split(":", 1) for line in result.output.splitlines() if ":" in line)
        assert lines["model"].strip() == name, kind
        assert lines["layout"].strip(), kind
        order = "BGR" if kind in ("native", "pycls", "mmcls", "onnx") else "RGB"
        assert lines["input"].strip().startswith(order), (kind, lines["input"])
        assert "pycls" in lines["source"] or kind == "mmcls", (kind, lines["source"])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("target, library", [("hf", "transformers"), ("timm-hub", "timm")])
def test_cards_parse_with_huggingface_hub_and_state_the_zoo_row(exports, name, target, library):
    folder = exports[name][target]
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.license == "mit" and data.library_name == library
    assert data.datasets == ["imagenet-1k"] and "image-classification" in data.tags
    zoo = regnet.zoo_model(name)
    row = zoo.seed_table or zoo.pycls
    metrics = {r.metric_type: r.metric_value for r in data.eval_results}
    assert metrics == {"accuracy": row.top1, "top-5-accuracy": row.top5}
    assert all(r.dataset_type == "imagenet-1k" and r.task_type == "image-classification" for r in data.eval_results)
    native = regnet.read_metadata(exports[name]["native"])
    assert native.source_sha256 in card.text and native.converter_version in card.text
    assert f"`{native.source_file}`" in card.text


@pytest.mark.parametrize("name", MODELS)
def test_hf_weights_carry_their_provenance(exports, name):
    native = regnet.read_metadata(exports[name]["native"])
    with safe_open(exports[name]["hf"] / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    assert meta["regnet-convert.source_sha256"] == native.source_sha256
    assert meta["regnet-convert.model"] == name


def test_torchvision_export_prints_the_lines_that_load_it(exports, tmp_path):
    output = tmp_path / "tv.safetensors"
    args = ["export", str(exports["regnety_600mf"]["native"]), str(output), "--to", "torchvision"]
    result = CliRunner().invoke(convert_main, args)
    assert result.exit_code == 0, result.output
    code = result.output.split("load it with:\n", 1)[1]
    scope: dict = {}
    exec(code, scope)  # the printed lines, as a user pastes them
    model = regnet.load(exports["regnety_600mf"]["native"]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(scope["model"](x.flip(1)), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_timm_hub_folder_imports_back_with_its_class_names(exports, name, tmp_path):
    output = tmp_path / "back.safetensors"
    result = CliRunner().invoke(convert_main, ["timm", str(exports[name]["timm-hub"]), str(output)])
    assert result.exit_code == 0, result.output
    back, native = regnet.load(output), regnet.load(exports[name]["native"])
    assert back.metadata.categories == native.metadata.categories
    assert back.metadata.category_names == native.metadata.category_names
    assert back.metadata.preprocessing.channel_order == "RGB"
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(back(x.flip(1)), native(x), atol=1e-5, rtol=1e-5)
