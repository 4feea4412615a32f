"""regnet-validate sweeps: several zoo models in one run, each image decoded once, each model's counts those of
its own single-model run and of an independent per-image oracle; `starred` and `all`; the table and JSON list."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import class_folder, convert_file, native_model_with_random_bn

import regnet
import regnet_convert.validation.evaluate as evaluate
import regnet_convert.validation.loader as loader
from regnet import fast_cache
from regnet.zoo import zoo_model
from regnet_convert.cli.validate import main
from regnet_convert.conversion.identity import Identity
from regnet_convert.demo import make_images
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation.evaluate import Counts
from regnet_convert.validation.preprocess import load_crop, normalize, to_chw_tensor
from regnet_convert.validation.report import ValidationResult, sweep_table
from regnet_convert.validation.selection import starred

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (conftest)
MODELS = {"regnetx_200mf": "BGR", "regnety_200mf": "RGB"}  # name: channel order
IMAGES = 12


def predictions(model: torch.nn.Module, paths: list[Path], order: str, mean, std) -> torch.Tensor:
    """The oracle: each image decoded alone, in the model's channel order, the whole set one batch (eager)."""
    batch = torch.stack([to_chw_tensor(load_crop(p), order) for p in paths])
    with torch.inference_mode():
        return model(normalize(batch, mean, std))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, converted_200mf):
    """A checkpoints folder with a BGR regnetx_200mf and an RGB regnety_200mf (random weights), JPEGs filed under
    the two models' own predictions in turn (so both score), and each model's expected counts. The regnetx_200mf is
    conftest's converted_200mf, whose fast-path package test_fast.py compiles too (once per run: compile_once)."""
    root = tmp_path_factory.mktemp("zoo")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    paths = make_images(root / "staging", IMAGES, seed=7)
    regnety = native_model_with_random_bn("regnety_200mf", seed=2)
    source = write_pycls_checkpoint(regnety, root / "regnety_200mf.pyth", regnet.ZOO["regnety_200mf"])
    files = {
        "regnetx_200mf": shutil.copy(converted_200mf[0], checkpoints / "regnetx_200mf.safetensors"),
        "regnety_200mf": convert_file(source, checkpoints / "regnety_200mf.safetensors", rgb=True),
    }
    logits = {}
    for name, order in MODELS.items():
        model = regnet.load(files[name]).eval()
        pre = model.metadata.preprocessing
        assert pre.channel_order == order
        logits[name] = predictions(model, paths, order, pre.mean, pre.std)
    names = list(MODELS)
    labels = [int(logits[names[i % 2]][i].argmax()) for i in range(IMAGES)]
    val = root / "val"
    moved = []
    for path, label in zip(paths, labels, strict=True):
        moved.append(class_folder(val, label) / path.name)
        path.rename(moved[-1])
    expected = {}
    for name, scores in logits.items():
        ranked = scores.topk(5, dim=1).indices
        correct = ranked.eq(torch.tensor(labels)[:, None])
        expected[name] = (IMAGES, int(correct[:, 0].sum()), int(correct.any(dim=1).sum()))
    assert expected[names[0]][1] >= IMAGES // 2 and expected[names[1]][1] >= IMAGES // 2
    return checkpoints, val, expected


@pytest.fixture
def decodes(monkeypatch):
    """Counts the loader's decodes (workers 0: in this process)."""
    calls = []

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return load_crop(path, *args, **kwargs)

    monkeypatch.setattr(loader, "load_crop", counting)
    return calls


def run(runner, zoo, tmp_path, *args, json_name="r.json", quiet=True):
    checkpoints, val, _ = zoo
    out = tmp_path / json_name
    argv = [*map(str, args), "--data", str(val), "--workers", "0", "--batch-size", "5", "--json", str(out)]
    result = runner.invoke(main, [*argv, *(["--quiet"] if quiet else [])], env={"REGNET_CHECKPOINTS": str(checkpoints)})
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result


def triple(record: dict) -> tuple[int, int, int]:
    return (
        record["images"],
        round(record["top1"] * record["images"] / 100),
        round(record["top5"] * record["images"] / 100),
    )


def test_sweep_counts_equal_single_runs_and_oracle_and_decode_once(runner, zoo, tmp_path, decodes):
    _, val, expected = zoo
    sweep, _ = run(runner, zoo, tmp_path, "--model", "regnetx_200mf", "--model", "RegNetY-200MF")
    assert len(decodes) == IMAGES  # each image decoded once for both models
    assert sorted(decodes) == sorted(val.rglob("*.JPEG"))
    assert isinstance(sweep, list) and [r["model"] for r in sweep] == list(MODELS)
    assert [r["channel_order"] for r in sweep] == ["BGR", "RGB"]
    for record in sweep:
        single, _ = run(runner, zoo, tmp_path, "--model", record["model"], json_name=f"{record['model']}.json")
        assert isinstance(single, dict) and single["model"] == record["model"]
        assert triple(single) == triple(record) == expected[record["model"]]
        assert (single["top1"], single["top5"]) == (record["top1"], record["top5"])
        assert set(single) == set(record)  # a sweep's records have the single-model shape


@pytest.mark.slow
def test_fast_sweep_equals_fast_single_runs(runner, zoo, tmp_path, compile_once, monkeypatch):
    monkeypatch.setattr(fast_cache, "_compile", compile_once.compile)
    sweep, _ = run(runner, zoo, tmp_path, "--model", "all", "--fast")
    assert [r["model"] for r in sweep] == list(MODELS) and all(r["fast"] for r in sweep)
    for record in sweep:
        single, _ = run(runner, zoo, tmp_path, "--model", record["model"], "--fast", json_name="s.json")
        assert triple(single) == triple(record)


def test_all_duplicates_and_table(runner, zoo, tmp_path):
    table = tmp_path / "results.md"
    records, result = run(
        runner, zoo, tmp_path, "--model", "all", "--model", "regnety_200mf", "--model", "RegNetX-200MF",
        "--table", table,
    )  # fmt: skip
    assert [r["model"] for r in records] == list(MODELS)  # each once, in the order asked
    text = table.read_text()
    assert text.rstrip("\n") in result.output  # printed and written alike
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(MODELS) and len({row.count("|") for row in rows}) == 1
    assert [c.strip() for c in rows[0].strip("|").split("|")] == [
        "Model", "Params(M)", "Flops(G)", "Top-1 (%)", "Measured top-1", "Δ top-1", "Top-5 (%)", "Measured top-5",
        "Δ top-5", "Config", "Download", "pycls top-1 / top-5", "Δ pycls", "Result",
    ]  # fmt: skip
    for row, record in zip(rows[2:], records, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        entry = zoo_model(record["model"])
        assert cells[:11] == [
            f"{record['model']}.pycls_in1k", f"{entry.params / 1e6:.2f}", f"{entry.flops / 1e9:.2f}",
            "-", f"{record['top1']:.2f}", "-", "-", f"{record['top5']:.2f}", "-", "-", entry.file_name,
        ]  # fmt: skip  # the seed table has no 200MF rows: nothing published beside the measured numbers
        assert cells[11] == f"{entry.pycls.top1:.2f} / {entry.pycls.top5:.2f}"
        assert cells[12] == f"{record['top1'] - entry.pycls.top1:+.2f} / {record['top5'] - entry.pycls.top5:+.2f}"
        assert cells[13] == "SUBSET"


def test_single_model_table_and_json_shape(runner, zoo, tmp_path):
    table = tmp_path / "one.md"
    record, result = run(runner, zoo, tmp_path, "--model", "regnetx_200mf", "--table", table)
    assert isinstance(record, dict) and "measured" in result.output  # the single-model report, unchanged
    assert sum(line.startswith("| regnetx_200mf.pycls_in1k") for line in table.read_text().splitlines()) == 1


def test_progress_names_each_model(runner, zoo, tmp_path, monkeypatch):
    # draw every update: the test's few images take under tqdm's 0.1 s between redraws
    monkeypatch.setattr(evaluate, "tqdm", functools.partial(evaluate.tqdm, mininterval=0, miniters=1))
    _, result = run(runner, zoo, tmp_path, "--model", "all", quiet=False)
    assert "regnetx_200mf (1/2)" in result.stderr and "regnety_200mf (2/2)" in result.stderr
    assert f"image {IMAGES}/{IMAGES}" in result.stderr


def test_starred_is_the_seed_tables_models():
    names = starred()
    assert len(names) == 8 and all(n.startswith("regnetx_") for n in names)
    assert names == [n for n in names if zoo_model(n).seed_table is not None]
    assert names[0] == "regnetx_400mf" and names[-1] == "regnetx_12gf"


def full(name: str, top1: int, top5: int) -> ValidationResult:
    return ValidationResult(
        model=name, weights="w", counts=Counts(50_000, top1, top5), expected_images=50_000, preprocess="mmcls",
        channel_order="BGR", amp="off", fast=False, device="cpu", world_size=1, tolerance=0.1, wall_seconds=100.0,
        zoo=zoo_model(name), identity=Identity(f"{name}.pycls_in1k", "pycls-format", "a pycls checkpoint"),
    )  # fmt: skip


def test_sweep_table_passes_and_fails_per_model_against_the_seed_table():
    exact = full("regnetx_4.0gf", 39_360, 47_110)  # 78.72 / 94.22: the seed table's numbers
    low = full("regnetx_400mf", 36_275 - 100, 45_455)  # 72.55 - 0.2 / 90.91
    rows = [line for line in sweep_table([exact, low]).splitlines() if line.startswith("| RegNetX")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells[0] == [
        "RegNetX-4.0GF*", "22.12", "4.0", "78.72", "78.72", "+0.00", "94.22", "94.22", "+0.00",
        "regnetx-4.0gf_8xb64_in1k.py", "convert/RegNetX-4.0GF-ef8bb32c.pth", "78.64 / 94.26", "+0.08 / -0.04", "PASS",
    ]  # fmt: skip  # the seed table's own cells, measured numbers and differences beside the published
    assert cells[1][:6] == ["RegNetX-400MF*", "5.16", "0.41", "72.55", "72.35", "-0.20"] and cells[1][-1] == "FAIL"
    assert "1 PASS, 1 FAIL of 2" in sweep_table([exact, low])


def test_sweep_with_any_fail_exits_1(runner, zoo, tmp_path, monkeypatch):
    from regnet_convert.validation import report

    monkeypatch.setattr(report, "FULL_VALIDATION_SET", IMAGES)  # the 12 images count as a full run
    checkpoints, val, _ = zoo
    result = runner.invoke(
        main,
        ["--model", "all", "--data", str(val), "--workers", "0", "--quiet"],
        env={"REGNET_CHECKPOINTS": str(checkpoints)},
    )
    assert result.exit_code == 1 and result.output.count("FAIL |") == 2, result.output


def test_weights_with_a_sweep_is_refused(runner, zoo, tmp_path):
    checkpoints, val, _ = zoo
    weights = checkpoints / "regnetx_200mf.safetensors"
    for models in (["starred"], ["regnetx_200mf", "regnety_200mf"]):
        argv = ["--weights", str(weights), *[a for m in models for a in ("--model", m)], "--data", str(val)]
        result = runner.invoke(main, [*argv, "--quiet", "--workers", "0"])
        assert result.exit_code == 2 and "--weights: goes with one --model" in result.stderr


def test_missing_weights_name_every_model(runner, zoo, tmp_path, decodes):
    checkpoints, val, _ = zoo
    folder = tmp_path / "ck"
    folder.mkdir()
    shutil.copy(checkpoints / "regnetx_200mf.safetensors", folder)
    argv = ["--model", "regnetx_200mf", "--model", "starred", "--data", str(val), "--workers", "0", "--quiet"]
    result = runner.invoke(main, argv, env={"REGNET_CHECKPOINTS": str(folder)})
    assert result.exit_code == 2 and not decodes
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 9 and lines[-1].startswith("error: ")
    for line, name in zip(lines, starred(), strict=False):
        assert line == f"{name}: no converted weights at {folder / name}.safetensors (regnet-convert zoo fetch {name})"
    assert lines[-1].endswith("get them with: regnet-convert zoo fetch " + " ".join(starred()))
    assert "8 of 9 models" in lines[-1]
