"""regnet-validate end to end: report, JSON, exit codes, --limit, distributed = single process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import generated_val_set, unused_port, validation_record

from regnet.imagenet import wnids
from regnet_convert.cli.validate import main


@pytest.fixture(scope="module")
def small_val(tmp_path_factory):
    """21 generated JPEGs in three class folders (an odd count, so shards are uneven)."""
    return generated_val_set(tmp_path_factory.mktemp("val"), 21, seed=5, class_of=lambda i: i % 3 * 100)


def run_validate(runner, *args):
    return runner.invoke(main, [*map(str, args), "--quiet", "--workers", "0"])


def test_report_and_json(runner, tmp_path, small_val, converted_200mf):
    weights, _ = converted_200mf
    out = tmp_path / "result.json"
    result = run_validate(runner, "--weights", weights, "--data", small_val, "--json", out, "--batch-size", "8")
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["model"] == "regnetx_200mf" and record["images"] == 21 and record["subset"] is True
    assert record["passed"] is None and record["preprocess"] == "mmcls"
    assert record["reference"]["pycls"] == {"top1": 68.912, "top5": 88.658}
    assert record["reference"]["row"] is None and record["reference"]["top1"] is None  # no seed row for 200MF
    assert record["reference"]["weights"] == "regnetx_200mf.pycls_in1k"
    assert record["reference"]["identified_by"] == "pycls-format" and record["reference"]["compared_with"] == "pycls"
    assert 0 <= record["top1"] <= record["top5"] <= 100 and record["images_per_second"] > 0
    assert "SUBSET (21 of 50,000 images)" in result.output
    assert f"{record['top1']:8.2f}" in result.output


def test_limit_takes_a_deterministic_subset(runner, tmp_path, small_val, converted_200mf):
    weights, _ = converted_200mf
    records = [
        validation_record(runner, tmp_path / name, "--weights", weights, "--data", small_val, "--limit", 5)
        for name in ("a.json", "b.json")
    ]
    assert records[0]["images"] == 5
    assert (records[0]["top1"], records[0]["top5"]) == (records[1]["top1"], records[1]["top5"])


def test_bad_usage_and_data_exit_2(runner, tmp_path, small_val, converted_200mf):
    weights, _ = converted_200mf
    cases = [
        (["--weights", weights, "--data", tmp_path / "nope"], "no such data directory"),
        (["--weights", weights, "--data", tmp_path], "has no class folders"),
        (["--model", "regnetz_9gf", "--data", small_val], "unknown model"),
        (
            ["--weights", small_val / wnids()[0] / "demo_00000.JPEG", "--data", small_val],
            "neither a PyTorch checkpoint nor",
        ),
        (["--weights", weights, "--model", "regnetx_400mf", "--data", small_val], "not the --model regnetx_400mf"),
    ]
    for args, message in cases:
        result = run_validate(runner, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(tmp_path.iterdir())


def test_model_without_converted_weights_says_how_to_get_them(runner, tmp_path, small_val, monkeypatch):
    monkeypatch.setenv("REGNET_CHECKPOINTS", str(tmp_path))
    result = run_validate(runner, "--model", "RegNetX-4.0GF", "--data", small_val)
    assert result.exit_code == 2
    assert f"{tmp_path / 'regnetx_4.0gf.safetensors'}: no converted weights" in result.stderr
    assert "get them with: regnet-convert zoo fetch regnetx_4.0gf" in result.stderr


@pytest.mark.slow
def test_two_processes_give_the_single_process_result(tmp_path, small_val, converted_200mf):
    weights, _ = converted_200mf
    common = ["--weights", str(weights), "--data", str(small_val), "--quiet", "--workers", "0", "--batch-size", "4"]
    single = tmp_path / "single.json"
    subprocess.run([sys.executable, "-m", "regnet_convert.cli.validate", *common, "--json", str(single)], check=True)
    double = tmp_path / "double.json"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(unused_port()),
    ]
    launcher_tmp = tmp_path / "launcher-tmp"  # torchrun leaves its torchelastic_* folders in $TMPDIR: here, not /tmp
    launcher_tmp.mkdir()
    subprocess.run(
        [*torchrun, "-m", "regnet_convert.cli.validate", *common, "--json", str(double)],
        check=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(launcher_tmp)},
    )
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert (
        (two["images"], two["top1"], two["top5"])
        == (one["images"], one["top1"], one["top5"])
        == (21, one["top1"], one["top5"])
    )


def test_corrupt_image_stops_the_run_unless_skipped(runner, tmp_path, small_val, converted_200mf):
    weights, _ = converted_200mf
    data = tmp_path / "val"
    shutil.copytree(small_val, data)
    good = next((data / wnids()[0]).iterdir())
    (data / wnids()[0] / "broken.JPEG").write_bytes(good.read_bytes()[:3000])
    result = run_validate(runner, "--weights", weights, "--data", data)
    assert result.exit_code == 2
    assert "broken.JPEG: truncated JPEG" in result.stderr and "--skip-bad-images" in result.stderr
    out = tmp_path / "r.json"
    result = run_validate(runner, "--weights", weights, "--data", data, "--skip-bad-images", "--json", out)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["images"] == 21 and record["skipped_images"] == 1 and record["passed"] is None
    assert "NOT COMPARABLE (1 undecodable image(s) skipped)" in result.output


def test_safetensors_without_our_metadata_is_not_a_converted_regnet(runner, tmp_path, small_val):
    import torch
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, other)
    result = run_validate(runner, "--weights", other, "--data", small_val)
    assert result.exit_code == 2 and "other.safetensors: not a converted RegNet" in result.stderr


def full_run(top1_correct: int, top5_correct: int, preprocess: str = "mmcls"):
    from regnet.zoo import zoo_model
    from regnet_convert.conversion.identity import Identity
    from regnet_convert.validation.evaluate import Counts
    from regnet_convert.validation.report import ValidationResult

    return ValidationResult(
        model="regnetx_4.0gf", weights="w", counts=Counts(50_000, top1_correct, top5_correct),
        expected_images=50_000, preprocess=preprocess, channel_order="BGR", amp="off", fast=False, device="cpu",
        world_size=1, tolerance=0.1, wall_seconds=100.0, zoo=zoo_model("regnetx_4.0gf"),
        identity=Identity("regnetx_4.0gf.pycls_in1k", "pycls-format", "a pycls checkpoint"),
    )  # fmt: skip


def test_full_runs_pass_or_fail_against_the_presets_reference():
    exact = full_run(39_360, 47_110)  # 78.72 / 94.22: the seed table's numbers
    assert exact.passed is True and exact.compared_with == "seed_table"
    assert "PASS (within ±0.1 pp of the seed table's RegNetX-4.0GF* row)" in exact.table()
    assert "+0.00" in exact.table()
    off = full_run(39_360 - 100, 47_110)  # 0.2 pp lower top-1
    assert off.passed is False and "FAIL" in off.verdict() and "-0.20" in off.table()
    pycls_preset = full_run(39_360, 47_110, "pycls")
    assert pycls_preset.compared_with == "pycls"
    record = exact.to_json()
    assert record["top1"] == pytest.approx(78.72) and record["images_per_second"] == 500.0
    reference = record["reference"]
    assert (reference["row"], reference["top1"], reference["top5"]) == ("RegNetX-4.0GF*", 78.72, 94.22)
    assert reference["pycls"] == {"top1": 78.644, "top5": 94.264} and reference["identified_by"] == "pycls-format"
