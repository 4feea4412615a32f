"""Inputs are never destroyed and never change under a run (issue 19, "inputs destroyed" and the weights' mmap).

Every path a command reads is an input no output may replace, even with --force: a source file or every file of an
hf folder (through a symlink, a hard link, or a link into a download cache), a validation image, the data folder
(no output inside it), the labels file, the --cache folder. A source named like a stale temporary of the output is
not removed by the write. The demo deletes no folder it did not create. Weights are read into memory the process
owns: a weights file rewritten or truncated in place mid-run changes nothing (no memory map, no SIGBUS).
Refusals run in limited child processes (`hostile.Zygote`) and keep `hostile.check_refusal`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted import Fixtures, copy_val
from hostile import Case, Zygote, check_refusal, snapshot

import regnet
from regnet import RegNetConfig, StageConfig
from regnet.imagenet import wnids
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.demo import run as run_demo
from regnet_convert.export.pipeline import export
from regnet_convert.validation.runner import load_candidate

pytestmark = pytest.mark.hostile

Setup = Callable[[Path, Fixtures], object]
CONVERT, VALIDATE = "regnet-convert", "regnet-validate"
W = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--quiet"]
IMAGE = f"val/{wnids()[0]}/img_0_0.JPEG"  # one of the fixtures' validation images
HF_TINY = RegNetConfig((StageConfig(1, 16, 8), StageConfig(2, 32, 8)), se_ratio=0.25, num_classes=5)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny RegNetY exported for Hugging Face transformers (config.json, model.safetensors, ...)."""
    folder = tmp_path_factory.mktemp("hf-kept")
    model = regnet.RegNet(HF_TINY).init_weights()
    native = folder / "tiny.safetensors"
    regnet.save(native, model.state_dict(), WeightsMetadata(HF_TINY, Preprocessing(), "test", "x", "0" * 64, "test"))
    export(native, folder / "hf", "hf")
    return folder / "hf"


def _weights(d: Path, fx: Fixtures) -> None:
    copy_val(fx, d)
    shutil.copy(fx.tiny_safetensors, d / "w.safetensors")


def _then(*steps: Setup) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        _weights(d, fx)
        for step in steps:
            step(d, fx)

    return setup


def _image_linked_from_outside(d: Path, fx: Fixtures) -> None:
    """The first image moved to raw/ and symlinked back (how prepared ImageNet folders often look)."""
    (d / "raw").mkdir()
    os.replace(d / IMAGE, d / "raw" / "img.JPEG")
    os.symlink(os.path.relpath(d / "raw" / "img.JPEG", (d / IMAGE).parent), d / IMAGE)


def _cache_with_data(d: Path, fx: Fixtures) -> None:
    (d / "cache" / "entry").mkdir(parents=True)
    (d / "cache" / "entry" / "crops.bin").write_bytes(b"\x01" * 4096)


VALIDATE_CASES = [
    Case("json-onto-an-image", VALIDATE, [*W, "--json", IMAGE], _weights, ["--json", "input"]),
    Case("table-onto-an-image", VALIDATE, [*W, "--table", IMAGE], _weights, ["--table", "input"]),
    Case("json-new-file-in-the-data-folder", VALIDATE, [*W, "--json", "val/r.json"], _weights, ["inside the input"]),
    Case(
        "json-onto-an-image-the-data-links-to",
        VALIDATE,
        [*W, "--json", "raw/img.JPEG"],
        _then(_image_linked_from_outside),
        ["--json raw/img.JPEG", "is the input file"],
    ),
    Case(
        "json-onto-a-hard-link-of-an-image",
        VALIDATE,
        [*W, "--json", "h.JPEG"],
        _then(lambda d, fx: os.link(d / IMAGE, d / "h.JPEG")),
        ["--json h.JPEG", "is the input file"],
    ),
    Case(
        "json-symlink-into-the-data-folder",
        VALIDATE,
        [*W, "--json", "r.json"],
        _then(lambda d, fx: os.symlink("val/r.json", d / "r.json")),
        ["--json r.json", "inside the input folder val"],
    ),
    Case(
        "json-into-the-cache-folder",
        VALIDATE,
        [*W, "--cache", "cache", "--json", "cache/r.json"],
        _weights,
        ["--json cache/r.json", "inside the input folder cache"],
    ),
    Case(
        "json-onto-the-cache-data",
        VALIDATE,
        [*W, "--cache", "cache", "--json", "cache/entry/crops.bin"],
        _then(_cache_with_data),
        ["--json cache/entry/crops.bin", "inside the input folder cache"],
    ),
]


def _hf(d: Path, hf: Path) -> None:
    shutil.copytree(hf, d / "src")


def _hf_in_download_cache(d: Path, hf: Path) -> None:
    """src/ as a Hugging Face hub snapshot: each file a symlink to a blob."""
    (d / "blobs").mkdir()
    (d / "src").mkdir()
    for file in sorted(hf.iterdir()):
        shutil.copy(file, d / "blobs" / f"blob-{file.name}")
        os.symlink(f"../blobs/blob-{file.name}", d / "src" / file.name)


HF_CASES = {
    "hf-output-is-its-weights": (["src/model.safetensors"], _hf, "inside the input folder src"),
    "hf-output-is-its-config": (["src/config.json"], _hf, "inside the input folder src"),
    "hf-output-is-its-preprocessor-config": (["src/preprocessor_config.json"], _hf, "inside the input folder src"),
    "hf-output-symlink-to-its-weights": (
        ["link.safetensors"],
        lambda d, hf: (_hf(d, hf), os.symlink("src/model.safetensors", d / "link.safetensors")),
        "inside the input folder src",
    ),
    "hf-output-hard-link-of-its-weights": (
        ["hard.safetensors"],
        lambda d, hf: (_hf(d, hf), os.link(d / "src" / "model.safetensors", d / "hard.safetensors")),
        "is the input file src/model.safetensors",
    ),
    "hf-output-is-the-blob-its-weights-link-to": (
        ["blobs/blob-model.safetensors"],
        _hf_in_download_cache,
        "is the input file src/model.safetensors",
    ),
    "hf-output-is-the-blob-its-config-links-to": (
        ["blobs/blob-config.json"],
        _hf_in_download_cache,
        "is the input file src/config.json",
    ),
}


def _run(zygote: Zygote, tmp_path: Path, setup: Callable[[Path], object], tool: str, argv: list[str]) -> tuple:
    folder = tmp_path / "case"
    folder.mkdir()
    setup(folder)
    before = snapshot(folder)
    return folder, before, zygote.run(tool, argv, folder)


@pytest.mark.parametrize("case", VALIDATE_CASES, ids=lambda c: c.id)
def test_validate_outputs_never_replace_inputs(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    folder, before, outcome = _run(zygote, tmp_path, lambda d: case.setup(d, fixtures), case.tool, case.argv)
    check_refusal(outcome, before, snapshot(folder), case.code, case.says)


@pytest.mark.parametrize("name", list(HF_CASES))
def test_hf_folder_files_are_inputs_even_with_force(name: str, hf_folder: Path, zygote: Zygote, tmp_path: Path):
    output, setup, says = HF_CASES[name]
    argv = ["hf", "src", *output, "--force"]
    folder, before, outcome = _run(zygote, tmp_path, lambda d: setup(d, hf_folder), CONVERT, argv)
    check_refusal(outcome, before, snapshot(folder), 2, [output[0], says])


def test_an_output_beside_the_hf_folder_is_written(hf_folder: Path, zygote: Zygote, tmp_path: Path):
    folder, before, outcome = _run(zygote, tmp_path, lambda d: _hf(d, hf_folder), CONVERT, ["hf", "src", "out.st"])
    assert outcome.code == 0, outcome.stderr
    assert regnet.load(folder / "out.st").config.num_classes == 5
    assert {k: v for k, v in snapshot(folder).items() if k.startswith("src")} == before


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_source_named_like_a_stale_temporary_of_the_output_is_kept(fixtures, zygote, tmp_path):
    source = f".out.safetensors.{dead_pid()}-0123456789ab.part"

    def setup(d: Path) -> None:
        shutil.copy(fixtures.tiny_pyth, d / source)

    folder, before, outcome = _run(zygote, tmp_path, setup, CONVERT, ["pycls", source, "out.safetensors"])
    assert outcome.code == 0, outcome.stderr
    assert snapshot(folder)[source] == before[source]
    assert regnet.load(folder / "out.safetensors").config.num_classes == 1000


def test_a_source_inside_a_folder_named_like_a_stale_export_is_kept(hf_folder, zygote, tmp_path):
    stale = f".hf-out.{dead_pid()}-0123456789ab.part"

    def setup(d: Path) -> None:
        (d / stale).mkdir()
        shutil.copy(hf_folder.parent / "tiny.safetensors", d / stale / "w.safetensors")

    argv = ["export", f"{stale}/w.safetensors", "hf-out", "--to", "hf"]
    folder, before, outcome = _run(zygote, tmp_path, setup, CONVERT, argv)
    assert outcome.code == 0, outcome.stderr
    assert snapshot(folder)[f"{stale}/w.safetensors"] == before[f"{stale}/w.safetensors"]
    assert (folder / "hf-out" / "config.json").is_file()


def test_real_stale_temporaries_are_still_removed(fixtures, zygote, tmp_path):
    stale = f".out.safetensors.{dead_pid()}-0123456789ab.part"

    def setup(d: Path) -> None:
        shutil.copy(fixtures.tiny_pyth, d / "tiny.pyth")
        (d / stale).write_bytes(b"left by a killed run")

    folder, _, outcome = _run(zygote, tmp_path, setup, CONVERT, ["pycls", "tiny.pyth", "out.safetensors"])
    assert outcome.code == 0, outcome.stderr
    assert not (folder / stale).exists() and (folder / "out.safetensors").is_file()


@pytest.mark.parametrize("kind", ["a-folder-with-a-file", "a-file"])
def test_demo_deletes_nothing_it_did_not_create(kind: str, tmp_path: Path, capsys):
    out = tmp_path / "mine"
    if kind == "a-file":
        out.write_text("my notes\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("my notes\n")
    before = snapshot(tmp_path)
    assert run_demo(out) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: "), captured.err
    assert captured.out == "" and snapshot(tmp_path) == before


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _overwrite_in_place(path: Path) -> None:
    """Same size, other bytes, same inode (what a copy onto the file or a download into it does)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(os.urandom(size))


@pytest.mark.parametrize("source", ["converted", "pycls-checkpoint"])
def test_weights_rewritten_in_place_mid_run_change_nothing(source: str, fixtures: Fixtures, tmp_path: Path):
    path = tmp_path / ("w.safetensors" if source == "converted" else "w.pyth")
    shutil.copy(fixtures.tiny_safetensors if source == "converted" else fixtures.tiny_pyth, path)
    candidate = load_candidate(path, None)  # the validation path
    loaded = _state(candidate.model)
    _overwrite_in_place(path)
    after = candidate.model.state_dict()
    assert after.keys() == loaded.keys()
    assert all(torch.equal(after[k], loaded[k]) for k in loaded)


_TRUNCATE_MID_RUN = """
import os, sys, torch
from regnet_convert.validation.runner import load_candidate
candidate = load_candidate(sys.argv[1], None)
os.truncate(sys.argv[1], 0)
print(sum(float(p.double().sum()) for p in candidate.model.state_dict().values()))
"""


@pytest.mark.parametrize("source", ["converted", "pycls-checkpoint"])
def test_weights_truncated_mid_run_do_not_kill_it(source: str, fixtures: Fixtures, tmp_path: Path):
    path = tmp_path / ("w.safetensors" if source == "converted" else "w.pyth")
    shutil.copy(fixtures.tiny_safetensors if source == "converted" else fixtures.tiny_pyth, path)
    expected = sum(float(p.double().sum()) for p in load_candidate(path, None).model.state_dict().values())
    done = subprocess.run([sys.executable, "-c", _TRUNCATE_MID_RUN, str(path)], capture_output=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # not -SIGBUS
    assert float(done.stdout) == expected
