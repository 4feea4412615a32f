"""Hostile output streams and names: a closed stdout, terminal escapes in a file's metadata or name, names that
are not UTF-8, a full disk, and the weights `--model all` finds in the checkpoints folder.

A closed stdout is no error: `--json`, `--table` and OUT are written and the exit status is the run's own, with
nothing on stderr. Text from files reaches the terminal escaped (`\\x1b`, `\\u202e`). A write that fails for want
of space is exit 2 with one line naming the output; a crop cache that cannot be written costs a notice, not the
evaluation.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from crafted import Fixtures, copy_val, edit_metadata
from hostile import Case, Zygote, refuse

pytestmark = pytest.mark.hostile

VALIDATE = [sys.executable, "-m", "regnet_convert.cli.validate"]
CONVERT = [sys.executable, "-m", "regnet_convert.cli.convert"]
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31m\u202edevil\x9b\u200b"  # title, clear screen, colour, bidi, CSI, ZWSP
RAW = ("\x1b", "\x07", "\u202e", "\x9b", "\u200b")


def run(argv: list, cwd: Path, **options) -> subprocess.CompletedProcess:
    return subprocess.run([*map(os.fsencode, map(str, argv))], cwd=cwd, timeout=300, **options)


# ---- a closed stdout -----------------------------------------------------------------------------------------


def run_with_stdout(kind: str, argv: list, cwd: Path) -> subprocess.CompletedProcess:
    """Run with a stdout whose reader is gone ("reader gone"), or with no descriptor 1 at all ("closed")."""
    if kind == "closed":
        return run(argv, cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    read, write = os.pipe()
    os.close(read)
    try:
        return run(argv, cwd, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)


def test_validate_with_a_closed_stdout_still_writes_its_results(tmp_path, fixtures: Fixtures):
    val = copy_val(fixtures, tmp_path)
    argv = [*VALIDATE, "--weights", fixtures.tiny_safetensors, "--data", val, "--workers", "0", "-q"]
    done = run_with_stdout("reader gone", [*argv, "--json", "r.json", "--table", "t.md"], tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 6
    assert "| Model" in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("stdout", ["reader gone", "closed"])
def test_convert_with_a_closed_stdout_writes_out_without_a_word(tmp_path, fixtures: Fixtures, stdout):
    done = run_with_stdout(stdout, [*CONVERT, "pycls", fixtures.tiny_pyth, "out.safetensors"], tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert (tmp_path / "out.safetensors").stat().st_size > 0


# ---- text from files on the terminal ---------------------------------------------------------------------------


def test_inspect_escapes_terminal_controls_in_metadata(tmp_path, fixtures: Fixtures):
    hostile = edit_metadata(
        fixtures.tiny_safetensors, tmp_path / "w.safetensors", source_file=HOSTILE, converter_version="1" + HOSTILE
    )
    done = run([*CONVERT, "inspect", hostile], tmp_path, capture_output=True)
    out = done.stdout.decode()
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert not any(char in out for char in RAW), out
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31m\\u202edevil\\x9b\\u200b" in out


def test_error_lines_escape_file_names(tmp_path, fixtures: Fixtures):
    name = "a" + HOSTILE + ".safetensors"
    (tmp_path / name).write_bytes(b"\x00" * 64)
    done = run([*CONVERT, "inspect", name], tmp_path, capture_output=True)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and err.startswith("error: a\\x1b]0;owned"), err
    assert not any(char in err for char in RAW), err


# ---- names that are not UTF-8 ----------------------------------------------------------------------------------


def test_checkpoint_and_weights_with_names_that_are_not_utf8(tmp_path, fixtures: Fixtures):
    pyth, weights = os.fsdecode(b"\xff.pyth"), os.fsdecode(b"w\xfe.safetensors")
    shutil.copy(fixtures.zoo_pyth, tmp_path / pyth)
    shutil.copy(fixtures.zoo_safetensors, tmp_path / weights)
    done = run([*CONVERT, "pycls", pyth, "out.safetensors"], tmp_path, capture_output=True)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert done.stdout.startswith(b"\\xff.pyth -> out.safetensors: regnetx_200mf")
    shown = run([*CONVERT, "inspect", "out.safetensors"], tmp_path, capture_output=True).stdout
    assert b"source:       pycls \\xff.pyth (sha256" in shown
    assert run([*CONVERT, "inspect", pyth], tmp_path, capture_output=True).stdout.startswith(
        b"file:         \\xff.pyth"
    )
    val = copy_val(fixtures, tmp_path)
    for model in (pyth, weights):
        argv = [*VALIDATE, "--weights", model, "--data", val, "--workers", "0", "-q", "--json", "r.json"]
        done = run([*argv, "--model", "regnetx_200mf"], tmp_path, capture_output=True)
        assert done.returncode == 0 and done.stderr == b"", done.stderr
        assert json.loads((tmp_path / "r.json").read_text())["images"] == 6
        (tmp_path / "r.json").unlink()


# ---- a full disk -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[tuple[Path, dict]]:
    """A folder whose writes fail past 1 MB: a 1 MB tmpfs (ENOSPC) where this process may mount one, else the same
    folder under a 1 MB file size limit (EFBIG); the second item is what `subprocess.run` needs for it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None
    if mounted:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder]).returncode == 0
    if mounted:
        try:
            yield folder, {}
        finally:
            subprocess.run(["umount", "-l", folder], check=True)
        return

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    yield folder, {"preexec_fn": limit}


def test_mmcls_export_onto_a_full_disk(tmp_path, fixtures: Fixtures, small_disk):
    disk, limits = small_disk
    out = disk / "model.pth"
    done = run(
        [*CONVERT, "export", "--to", "mmcls", fixtures.zoo_safetensors, out], tmp_path, capture_output=True, **limits
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and err.startswith(f"error: {out}: writing failed ("), err
    assert os.strerror(errno.ENOSPC) in err or os.strerror(errno.EFBIG) in err, err
    assert list(disk.iterdir()) == []


def test_crop_cache_that_cannot_be_written_runs_uncached(tmp_path, fixtures: Fixtures, small_disk):
    disk, limits = small_disk
    val = copy_val(fixtures, tmp_path)
    argv = [*VALIDATE, "--weights", fixtures.zoo_safetensors, "--data", val, "--workers", "0", "-q", "--json", "r.json"]
    argv += ["--preprocess", "pycls", "--cache", disk / "cache"]  # 6 float32 crops: 3.6 MB
    done = run(argv, tmp_path, capture_output=True, **limits)
    err = done.stderr.decode()
    assert done.returncode == 0 and err.count("\n") == 1 and err.startswith(f"notice: --cache {disk / 'cache'}"), err
    assert "running without the cache" in err
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 6 and b"SUBSET" in done.stdout
    assert list(disk.iterdir()) == []


# ---- the weights --model all finds -------------------------------------------------------------------------------


def _checkpoints(make) -> object:
    def setup(d: Path, fx: Fixtures) -> None:
        copy_val(fx, d)
        (d / "ck").mkdir()
        shutil.copy(fx.zoo_safetensors, d / "ck" / "regnetx_200mf.safetensors")
        make(d / "ck" / "regnetx_400mf.safetensors", fx)

    return setup


MODEL_ALL = [
    Case("foreign file", "regnet-validate", ["--model", "all", "--data", "val"],
         _checkpoints(lambda p, fx: shutil.copy(next((fx.val).rglob("*.JPEG")), p)),
         ["ck/regnetx_400mf.safetensors (the weights of --model regnetx_400mf)", "neither a PyTorch checkpoint"],
         env={"REGNET_CHECKPOINTS": "ck"}),
    Case("fifo", "regnet-validate", ["--model", "all", "--data", "val"],
         _checkpoints(lambda p, fx: os.mkfifo(p)),
         ["ck/regnetx_400mf.safetensors (the weights of --model regnetx_400mf)", "is a FIFO"],
         env={"REGNET_CHECKPOINTS": "ck"}),
    Case("empty", "regnet-validate", ["--model", "regnetx_400mf", "--data", "val"],
         _checkpoints(lambda p, fx: p.write_bytes(b"")),
         ["ck/regnetx_400mf.safetensors (the weights of --model regnetx_400mf)", "empty file"],
         env={"REGNET_CHECKPOINTS": "ck"}),
]  # fmt: skip


@pytest.mark.parametrize("case", MODEL_ALL, ids=[c.id for c in MODEL_ALL])
def test_model_weights_errors_name_the_file_and_model(tmp_path, fixtures: Fixtures, zygote: Zygote, case: Case):
    outcome = refuse(case, fixtures, zygote, tmp_path)
    assert "--weights" not in outcome.stderr
