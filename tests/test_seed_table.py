"""Issue 17: the whole seed table. Every file known by its hash, each model compared with its own row.

mmclassification 0.25 itself stands in for the trained rows' files: it builds a RegNetX-400MF classifier (random
weights, BN statistics from photographs, a whitened classifier), mmcv's `save_checkpoint` writes it in mmcls's format
and mmcls's own `inference_model` plants each photograph's label. The hash path runs against a local HTTP mirror:
the real file names (whose hashes a random file cannot have) are refused; a manifest override (tests only) gives a
file name carrying the test file's own hash prefix, which is then accepted and identifies the file.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import class_folder, convert_file, generated_val_set, native_model_with_random_bn
from images import photo_set
from mmcls_oracle import CONFIGS, classifier, config, load_model, mmcls_input, predict
from test_zoo_fetch import ZooServer
from zoo_manifest import overridden

import regnet
from regnet.zoo import HASH_IN_NAME, seed_base_url, seed_rows, weights_key, zoo_files, zoo_model, zoo_weights
from regnet_convert.cli import validate as cli_validate
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.cli.validate import main as validate_main
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation import loader, plot, report
from regnet_convert.validation.preprocess import load_crop

TRAINED_400MF = "regnetx-400mf_8xb128_in1k_20211213-89bfc226.pth"
PHOTOS = 16


# ---- the table itself -----------------------------------------------------------------------------------------


def test_the_zoo_knows_every_file_of_the_table():
    rows = seed_rows()
    assert len(rows) == 16 and [r.name for r in rows[:2]] == ["RegNetX-400MF", "RegNetX-800MF"]
    assert [r.name for r in rows[8:]] == [r.name + "*" for r in rows[:8]]  # the same 8 models, starred
    assert all(r.weights.endswith(".mmcls_in1k") for r in rows[:8])
    assert all(r.weights.endswith(".pycls_in1k") for r in rows[8:])
    assert {r.family for r in rows} == {"mmcls-trained", "pycls-trained"}
    files = zoo_files()
    assert len(files) == 40 and len({f.name for f in files}) == 40
    assert sum(f.format == "pycls" and f.hash_prefix is None and f.name.endswith(".pyth") for f in files) == 24
    hashed = [f for f in files if f.hash_prefix is not None]
    assert len(hashed) == 16 and all(f.format == "mmcls" for f in hashed)
    for file in hashed:  # the prefix is the one the name carries, as torch.hub's check_hash reads it
        assert HASH_IN_NAME.search(file.name).group(1) == file.hash_prefix
        assert file.url.startswith(seed_base_url())
    for row in rows:  # each row's file holds the row's weights
        (file,) = [f for f in files if f.url == seed_base_url() + row.file]
        assert file.weights == row.weights and zoo_weights()[row.weights].row == row
    assert len(zoo_weights()) == 32
    assert zoo_model("regnetx_4.0gf").seed_table == rows[12].accuracy  # RegNetX-4.0GF*: 78.72 / 94.22
    assert (rows[0].accuracy.top1, rows[0].accuracy.top5) == (72.56, 90.78)
    assert (rows[8].accuracy.top1, rows[8].accuracy.top5) == (72.55, 90.91)


def test_weights_are_named_like_timm():
    assert weights_key("regnetx_400mf") == "regnetx_400mf.pycls_in1k"  # the default tag
    assert weights_key("RegNetX-1.6GF.mmcls_in1k") == "regnetx_1.6gf.mmcls_in1k"
    assert zoo_weights()["regnetx_400mf.mmcls_in1k"].converted_name == "regnetx_400mf.mmcls_in1k.safetensors"
    assert zoo_weights()["regnetx_400mf.pycls_in1k"].converted_name == "regnetx_400mf.safetensors"
    for bad, says in [("regnetx_400mf.foo", "regnetx_400mf has: regnetx_400mf.pycls_in1k, regnetx_400mf.mmcls_in1k"),
                      ("regnetx_200mf.mmcls_in1k", "regnetx_200mf has: regnetx_200mf.pycls_in1k"),
                      ("regnetq_1gf", "unknown model")]:  # fmt: skip
        with pytest.raises(KeyError, match=says):
            weights_key(bad)


@pytest.mark.oracle
def test_the_trained_rows_are_mmcls_metafiles():
    """The 8 trained rows as mmclassification 0.25's own metafile.yml lists them (its config, weights URL, numbers;
    its RegNetX-3.2GF complexity is wrong there, the README's is kept)."""
    models = yaml.safe_load((CONFIGS / "metafile.yml").read_text())["Models"]
    assert len(models) == 8
    for model, row in zip(models, seed_rows()[:8], strict=True):
        metrics = model["Results"][0]["Metrics"]
        assert model["Weights"] == seed_base_url() + row.file
        assert model["Config"] == f"configs/regnet/{row.config}" and (CONFIGS / row.config).is_file()
        assert (metrics["Top 1 Accuracy"], metrics["Top 5 Accuracy"]) == (row.accuracy.top1, row.accuracy.top5)
        if row.name != "RegNetX-3.2GF":
            assert (model["Metadata"]["FLOPs"], model["Metadata"]["Parameters"]) == (
                round(row.gflops * 1e9),
                round(row.params_m * 1e6),
            )


# ---- an mmcls-trained file, made by mmcls -------------------------------------------------------------------


def calibrate(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """BN statistics from the photographs and a whitened classifier, so mmcls's predictions spread over classes."""
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        model.train().extract_feat(inputs)
        model.eval()
        features = model.neck(model.backbone(inputs))[-1]
        mean, std = features.mean(0), features.std(0) + 1e-6
        weight = torch.randn(model.head.fc.weight.shape, generator=torch.Generator().manual_seed(0)) / std
        model.head.fc.weight.copy_(weight)
        model.head.fc.bias.copy_(-(weight @ mean))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An mmcls-format RegNetX-400MF written by mmcv, and photographs filed under mmcls 0.25's own top-1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mmcls.datasets import ImageNet
        from mmcv.runner import save_checkpoint
    root = tmp_path_factory.mktemp("seed")
    photos = photo_set(root / "photos", PHOTOS, short_256=True)
    torch.manual_seed(3)
    model = classifier(config("regnetx_400mf"))
    model.init_weights()
    calibrate(model, torch.from_numpy(np.stack([mmcls_input(p) for p in photos])))
    checkpoint = root / "trained-elsewhere.pth"
    save_checkpoint(model, str(checkpoint), meta={"CLASSES": list(ImageNet.CLASSES)})
    oracle = load_model(config("regnetx_400mf"), checkpoint)
    labels = []
    for path in photos:
        labels.append(predict(oracle, path))
        path.rename(class_folder(root / "val", labels[-1]) / path.name)
    assert len(set(labels)) >= 4
    return root, checkpoint


def validate(runner: CliRunner, out: Path, *args: object, code: int = 0) -> dict:
    argv = [*map(str, args), "--json", str(out), "--quiet", "--workers", "0", "--preprocess", "mmcls"]
    result = runner.invoke(validate_main, argv)
    assert result.exit_code == code, result.output
    return json.loads(out.read_text())


@pytest.mark.oracle
@pytest.mark.slow
def test_a_declared_mmcls_file_is_compared_with_its_own_row(runner, trained, tmp_path, monkeypatch):
    root, checkpoint = trained
    converted = tmp_path / "mine.safetensors"
    result = runner.invoke(
        convert_main, ["mmcls", str(checkpoint), str(converted), "--declare-weights", "RegNetX-400MF.mmcls_in1k"]
    )
    assert result.exit_code == 0 and "weights regnetx_400mf.mmcls_in1k (declared)" in result.output, result.output
    metadata = regnet.read_metadata(converted)
    assert (metadata.zoo_weights, metadata.identified_by) == ("regnetx_400mf.mmcls_in1k", "declared")
    record = validate(runner, tmp_path / "r.json", "--weights", converted, "--data", root / "val")
    assert record["top1"] == 100.0  # mmcls's own labels: the conversion computes what mmcls computes
    assert record["reference"] == {
        "weights": "regnetx_400mf.mmcls_in1k", "row": "RegNetX-400MF", "top1": 72.56, "top5": 90.78,
        "identified_by": "declared", "evidence": metadata.identity_evidence, "pycls": None,
        "compared_with": "seed_table",
    }  # fmt: skip  # the trained row, never pycls's numbers (other weights)
    monkeypatch.setattr(report, "FULL_VALIDATION_SET", PHOTOS)  # the photographs count as a full run
    judged = validate(runner, tmp_path / "j.json", "--weights", converted, "--data", root / "val", code=1)
    assert judged["verdict"] == "FAIL (within ±0.1 pp of the seed table's RegNetX-400MF row)"


@pytest.mark.oracle
@pytest.mark.slow
def test_weights_nothing_identifies_are_compared_with_nothing(runner, trained, tmp_path, monkeypatch):
    root, checkpoint = trained
    converted = convert_file(checkpoint, tmp_path / "mine.safetensors", source_format="mmcls")
    assert regnet.read_metadata(converted).identified_by == "none"
    monkeypatch.setattr(report, "FULL_VALIDATION_SET", PHOTOS)
    record = validate(runner, tmp_path / "r.json", "--weights", converted, "--data", root / "val")
    assert record["verdict"].startswith("NO REFERENCE (weights not identified") and record["passed"] is None
    assert record["reference"]["row"] is None and record["reference"]["compared_with"] is None
    assert record["reference"]["identified_by"] == "none" and record["reference"]["pycls"] is None


@pytest.mark.oracle
@pytest.mark.slow
def test_a_pycls_file_of_400mf_is_compared_with_the_starred_row_and_pycls(runner, trained, tmp_path):
    root, _ = trained
    source = write_pycls_checkpoint(
        native_model_with_random_bn("regnetx_400mf", seed=4), tmp_path / "x.pyth", regnet.ZOO["regnetx_400mf"]
    )
    record = validate(runner, tmp_path / "r.json", "--weights", source, "--data", root / "val")
    reference = record["reference"]
    assert (reference["row"], reference["top1"], reference["top5"]) == ("RegNetX-400MF*", 72.55, 90.91)
    assert reference["pycls"] == {"top1": 72.618, "top5": 90.924} and reference["identified_by"] == "pycls-format"


def hashed_name(path: Path) -> str:
    """OpenMMLab's name of the trained RegNetX-400MF, carrying `path`'s own hash prefix."""
    return TRAINED_400MF.replace("89bfc226", hashlib.sha256(path.read_bytes()).hexdigest()[:8])


@pytest.mark.oracle
@pytest.mark.slow
def test_a_published_hash_identifies_the_file(runner, trained, tmp_path):
    root, checkpoint = trained
    named = tmp_path / hashed_name(checkpoint)
    shutil.copy(checkpoint, named)
    with overridden({TRAINED_400MF: {"name": named.name, "hash_prefix": named.name[-12:-4]}}):
        converted = convert_file(named, tmp_path / "x.safetensors", source_format="mmcls")
        metadata = regnet.read_metadata(converted)
        assert (metadata.zoo_weights, metadata.identified_by) == ("regnetx_400mf.mmcls_in1k", "sha256")
        assert metadata.identity_evidence == f"sha256 {named.name[-12:-4]}... is that of {named.name}"
        record = validate(runner, tmp_path / "r.json", "--weights", converted, "--data", root / "val")
        assert (record["reference"]["row"], record["reference"]["identified_by"]) == ("RegNetX-400MF", "sha256")
        renamed = shutil.copy(checkpoint, tmp_path / "any-name.pth")  # the content, not the name, identifies it
        assert (
            regnet.read_metadata(convert_file(renamed, tmp_path / "y.safetensors", source_format="mmcls")).identified_by
            == "sha256"
        )
    # the packaged table knows no such hash: the file's claim is refused, never trusted
    result = runner.invoke(validate_main, ["--weights", str(converted), "--data", str(root / "val"), "--quiet"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "no published file has that sha256" in lines[0], lines


# ---- zoo fetch verifies ---------------------------------------------------------------------------------------


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/www, empty checkpoints and cache folders."""
    (tmp_path / "www").mkdir()
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    monkeypatch.setenv("REGNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("REGNET_CACHE", str(tmp_path / "cache"))
    handler = type("Handler", (ZooServer,), {"root": tmp_path / "www", "ranges": [], "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path / "www", checkpoints, tmp_path / "cache", f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.oracle
@pytest.mark.slow
def test_zoo_fetch_refuses_a_wrong_hash_and_accepts_a_matching_one(runner, trained, mirror):
    _, checkpoint = trained
    www, checkpoints, cache, url = mirror
    shutil.copy(checkpoint, www / TRAINED_400MF)  # the real name, another file's bytes
    result = runner.invoke(convert_main, ["zoo", "fetch", "regnetx_400mf.mmcls_in1k", "--mirror", url, "-q"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert f"not the expected file: sha256 {digest[:16]}..., its name says 89bfc226; removed" in lines[0]
    assert TRAINED_400MF in lines[0] and not list(cache.iterdir()) and not list(checkpoints.iterdir())

    name = hashed_name(checkpoint)
    shutil.copy(checkpoint, www / name)
    with overridden({TRAINED_400MF: {"name": name, "hash_prefix": name[-12:-4]}}):
        result = runner.invoke(convert_main, ["zoo", "fetch", name, "--mirror", url, "-q"])  # by the file's name
        output = checkpoints / "regnetx_400mf.mmcls_in1k.safetensors"
        assert result.exit_code == 0 and result.stdout == f"regnetx_400mf.mmcls_in1k: {output}\n", result.output
        metadata = regnet.read_metadata(output)
        assert (metadata.zoo_weights, metadata.identified_by, metadata.source_format) == (
            "regnetx_400mf.mmcls_in1k", "sha256", "mmcls"
        )  # fmt: skip
        assert sorted(p.name for p in checkpoints.iterdir()) == [output.name]  # no first-download record
        listing = runner.invoke(convert_main, ["zoo", "list"]).stdout
        row = next(line for line in listing.splitlines() if line.startswith("RegNetX-400MF "))
        assert row.split()[-2:] == [name, "yes"]
        again = runner.invoke(convert_main, ["zoo", "fetch", "regnetx_400mf.mmcls_in1k", "--mirror", url, "-q"])
        assert again.exit_code == 0 and "already converted" in again.stdout


# ---- the whole table in one run -------------------------------------------------------------------------------


def test_seed_with_nothing_converted_lists_the_16_missing_files(runner, tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "val").mkdir()
    result = runner.invoke(
        validate_main,
        ["--model", "seed", "--data", str(tmp_path / "val"), "--quiet"],
        env={"REGNET_CHECKPOINTS": str(tmp_path / "ck")},
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 17, result.stderr
    names = [zoo_weights()[row.weights].short for row in seed_rows()]
    assert names[0] == "regnetx_400mf.mmcls_in1k" and names[8] == "regnetx_400mf"
    for line, name in zip(lines, names, strict=False):
        file = zoo_weights()[weights_key(name)].converted_name
        assert line == f"{name}: no converted weights at {tmp_path / 'ck' / file} (regnet-convert zoo fetch {name})"
    assert lines[-1].startswith("error: ") and "16 of 16 models" in lines[-1]
    assert lines[-1].endswith("get them with: regnet-convert zoo fetch " + " ".join(names))
    assert sum("zoo fetch regnetx_400mf.mmcls_in1k regnetx_800mf" in line for line in lines) == 1


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory):
    """All 16 rows converted (random weights: each architecture's pycls-format file, once as pycls's weights and once
    declared as mmclassification's) and one generated image."""
    root = tmp_path_factory.mktemp("seed-run")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    for row in seed_rows()[8:]:
        weights = zoo_weights()[row.weights]
        source = write_pycls_checkpoint(
            native_model_with_random_bn(weights.model, seed=5), root / "source.pyth", regnet.ZOO[weights.model]
        )
        convert_file(source, checkpoints / weights.converted_name)
        trained = zoo_weights()[f"{weights.model}.mmcls_in1k"]
        convert_file(source, checkpoints / trained.converted_name, declare=trained.key)
        source.unlink()
    return checkpoints, generated_val_set(root, 1, seed=9)


@pytest.mark.slow
def test_seed_runs_the_16_rows_in_one_pass_with_table_and_plots(runner, seed_folder, tmp_path, monkeypatch):
    checkpoints, val = seed_folder
    decodes = []
    monkeypatch.setattr(loader, "load_crop", lambda path, *a, **k: decodes.append(path) or load_crop(path, *a, **k))
    figures = []
    monkeypatch.setattr(cli_validate, "write_plot", lambda *a: figures.append(plot.write_plot(*a)) or figures[-1])
    table, png, svg, out = tmp_path / "seed.md", tmp_path / "seed.png", tmp_path / "seed.svg", tmp_path / "r.json"
    argv = ["--model", "seed", "--data", str(val), "--workers", "0", "--quiet", "--json", str(out)]
    for picture in (png, svg):
        result = runner.invoke(
            validate_main,
            [*argv, "--table", str(table), "--plot", str(picture)],
            env={"REGNET_CHECKPOINTS": str(checkpoints)},
        )
        assert result.exit_code == 0, result.output
    assert len(decodes) == 2  # two runs, the image decoded once in each for all 16 models
    records = json.loads(out.read_text())
    assert [r["reference"]["row"] for r in records] == [row.name for row in seed_rows()]
    for record, row in zip(records, seed_rows(), strict=True):
        assert (record["reference"]["top1"], record["reference"]["top5"]) == (row.accuracy.top1, row.accuracy.top5)
        assert record["reference"]["identified_by"] == ("declared" if row.weights.endswith("mmcls_in1k") else
                                                        "pycls-format")  # fmt: skip
        assert (record["reference"]["pycls"] is None) == row.weights.endswith("mmcls_in1k")
    lines = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [c.strip() for c in lines[0].split("|")[1:6]] == ["Model", "Params(M)", "Flops(G)", "Top-1 (%)",
                                                              "Measured top-1"]  # fmt: skip
    for cell, row, record in zip(cells, seed_rows(), records, strict=True):  # the seed's rows, cells and order
        assert cell[:4] == [row.name, str(row.params_m), str(row.gflops), f"{row.accuracy.top1:.2f}"]
        assert cell[4:7] == [f"{record['top1']:.2f}", f"{record['top1'] - row.accuracy.top1:+.2f}",
                             f"{row.accuracy.top5:.2f}"]  # fmt: skip
        assert cell[9:11] == [row.config, row.file]
    assert png.read_bytes().startswith(b"\x89PNG") and svg.read_text().lstrip().startswith("<?xml")
    for fig in figures:  # the plotted points are the run's results and the table's numbers
        series = {line.get_gid(): line.get_xydata().tolist() for line in fig.axes[0].lines}
        for family, tag in (("mmcls-trained", "mmcls_in1k"), ("pycls-trained", "pycls_in1k")):
            rows = sorted((r for r in seed_rows() if r.weights.endswith(tag)), key=lambda r: r.gflops)
            by_row = {rec["reference"]["row"]: rec for rec in records}
            assert series[f"published:{family}"] == [[r.gflops, r.accuracy.top1] for r in rows]
            assert series[f"measured:{family}"] == [[r.gflops, by_row[r.name]["top1"]] for r in rows]
