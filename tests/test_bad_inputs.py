"""Every bad input: one clear line on stderr naming the file, non-zero exit, nothing left behind."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from crafted import code_running_checkpoint
from helpers import run_convert_cli
from pycls.core.config import cfg, reset_cfg
from pycls_oracle import build, randomize, save_genuine_checkpoint

from regnet_convert.cli.convert import main

pytestmark = pytest.mark.hostile


def run_failing(runner, *args) -> str:
    """Run the CLI, expect failure, return its single stderr line."""
    result = runner.invoke(main, ["pycls", *map(str, args)])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def assert_nothing_written(directory: Path, *keep: Path) -> None:
    leftovers = [p for p in directory.iterdir() if p not in keep]
    assert leftovers == [], leftovers


@pytest.fixture
def zoo_checkpoint(tmp_path) -> Path:
    path = save_genuine_checkpoint(randomize(build("regnetx_200mf")), tmp_path / "train")
    return path


def test_missing_file(tmp_path, runner):
    line = run_failing(runner, tmp_path / "nope.pyth", tmp_path / "out.safetensors")
    assert "nope.pyth: no such checkpoint file" in line
    assert_nothing_written(tmp_path)


def test_random_bytes(tmp_path, runner):
    source = tmp_path / "random.pyth"
    source.write_bytes(os.urandom(4096))
    line = run_failing(runner, source, tmp_path / "out.safetensors")
    assert "random.pyth: not a PyTorch checkpoint" in line
    assert_nothing_written(tmp_path, source)


def test_truncated_checkpoint(tmp_path, runner, zoo_checkpoint):
    source = tmp_path / "truncated.pyth"
    source.write_bytes(zoo_checkpoint.read_bytes()[: zoo_checkpoint.stat().st_size // 2])
    line = run_failing(runner, source, tmp_path / "out.safetensors")
    assert "truncated.pyth: truncated or damaged checkpoint" in line
    assert not (tmp_path / "out.safetensors").exists()


def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path, runner):
    marker = tmp_path / "pwned"
    source = code_running_checkpoint(tmp_path / "evil.pyth", str(marker))
    line = run_failing(runner, source, tmp_path / "out.safetensors")
    assert "evil.pyth: refused to unpickle" in line and "system" in line
    assert not marker.exists()
    assert_nothing_written(tmp_path, source)


def test_pycls_resnet_is_not_a_regnet(tmp_path, runner):
    reset_cfg()
    cfg.MODEL.TYPE, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DEPTH = "resnet", 10, 50
    cfg.RESNET.TRANS_FUN = "bottleneck_transform"
    cfg.TRAIN.DATASET = cfg.TEST.DATASET = "imagenet"  # pycls builds its ImageNet ResNet only for this dataset
    model = build()
    source = save_genuine_checkpoint(model, tmp_path / "train")
    line = run_failing(runner, source, tmp_path / "out.safetensors")
    assert "not a RegNet" in line and "resnet" in line and source.name in line
    bare = tmp_path / "resnet_state.pth"
    torch.save(model.state_dict(), bare)
    line = run_failing(runner, bare, tmp_path / "out.safetensors")
    assert "resnet_state.pth: not a RegNet: its stem is a 7x7 convolution" in line
    assert not (tmp_path / "out.safetensors").exists()


def test_pycls_efficientnet_is_not_a_regnet(tmp_path, runner):
    reset_cfg()
    cfg.MODEL.TYPE, cfg.MODEL.NUM_CLASSES = "effnet", 10
    cfg.EN.STEM_W, cfg.EN.HEAD_W = 32, 1280
    cfg.EN.DEPTHS, cfg.EN.WIDTHS = [1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320]
    cfg.EN.EXP_RATIOS, cfg.EN.KERNELS = [1, 6, 6, 6, 6, 6, 6], [3, 3, 5, 3, 5, 5, 3]
    cfg.EN.STRIDES, cfg.EN.SE_R = [1, 2, 2, 2, 1, 2, 1], 0.25
    model = build()
    bare = tmp_path / "effnet.pth"
    torch.save(model.state_dict(), bare)
    line = run_failing(runner, bare, tmp_path / "out.safetensors")
    assert "effnet.pth: not a RegNet" in line
    source = save_genuine_checkpoint(model, tmp_path / "train")
    assert "not a RegNet: its cfg says MODEL.TYPE 'effnet'" in run_failing(runner, source, tmp_path / "o.safetensors")


def test_shapes_contradicting_model_option(tmp_path, runner, zoo_checkpoint):
    line = run_failing(runner, zoo_checkpoint, tmp_path / "out.safetensors", "--model", "regnetx_400mf")
    assert "--model regnetx_400mf contradicts its cfg: stages" in line  # the cfg is checked first
    bare = tmp_path / "bare.pth"
    torch.save(torch.load(zoo_checkpoint, weights_only=True)["model_state"], bare)
    line = run_failing(runner, bare, tmp_path / "out.safetensors", "--model", "regnetx_400mf")
    assert "tensor shapes contradict --model regnetx_400mf" in line
    assert "expected" in line and "more" in line  # lists the first mismatches, counts the rest
    assert not (tmp_path / "out.safetensors").exists()


def test_unknown_model_option(tmp_path, runner, zoo_checkpoint):
    assert "unknown model 'regnetx_1tf'" in run_failing(
        runner, zoo_checkpoint, tmp_path / "o", "--model", "regnetx_1tf"
    )


def test_existing_output_is_kept_without_force(tmp_path, runner, zoo_checkpoint):
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"precious")
    line = run_failing(runner, zoo_checkpoint, output)
    assert "out.safetensors: already exists (use --force" in line
    assert output.read_bytes() == b"precious"
    run_convert_cli(runner, "pycls", zoo_checkpoint, output, "--force")
    assert output.read_bytes() != b"precious"
    assert_nothing_written(tmp_path, output, zoo_checkpoint.parents[1])


@pytest.mark.parametrize("output", ["/proc/out.safetensors", "missing-dir/out.safetensors"])
def test_unwritable_output_directory(tmp_path, runner, zoo_checkpoint, output):
    target = Path(output) if output.startswith("/") else tmp_path / output
    line = run_failing(runner, zoo_checkpoint, target)
    assert str(target) in line and ("cannot write" in line or "does not exist" in line)
    assert not target.exists()


@pytest.mark.slow
def test_failure_mid_write_leaves_no_partial_file(tmp_path, zoo_checkpoint):
    """The process may write at most 64 KiB: writing the ~11 MB output fails half way."""
    output = tmp_path / "out" / "model.safetensors"
    output.parent.mkdir()

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    code = "from regnet_convert.cli.convert import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "pycls", str(zoo_checkpoint), str(output)],
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.safetensors: writing failed" in lines[0], result.stderr
    assert list(output.parent.iterdir()) == []
