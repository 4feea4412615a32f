"""Hostile output paths of `regnet-convert pycls` (the input itself, links, folders, FIFOs, devices, long
names), odd but legal outputs that must work, and termination signals that must clean up like Ctrl-C.

Every case asserts the refusal contract (`hostile.refuse`, `hostile.check_refusal`): the documented exit status,
no traceback, one `error:` line naming the file or option, no leftover or temporary file, every file that existed
before byte-identical, all within the case's time and memory limits.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from crafted import (
    Fixtures,
    copy_val,
)
from hostile import Case, Zygote, refuse, snapshot
from hostile_setups import (
    CONVERT,
    OUT,
    Setup,
    fifo,
    then,
)

pytestmark = pytest.mark.hostile


# ---- 5. outputs ------------------------------------------------------------------------------------------


def _source(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.tiny_pyth, d / "src.pyth")


def output_cases() -> list[Case]:
    def case(id: str, output: str, setup: Setup, says: list[str], *options: str) -> Case:
        return Case(id, CONVERT, ["pycls", "src.pyth", output, *options], then(_source, setup), says)

    return [
        case("output-is-source", "src.pyth", lambda d, fx: None, ["src.pyth", "is the input file"], "--force"),
        case(
            "output-hardlink-to-source",
            "link.pyth",
            lambda d, fx: os.link(d / "src.pyth", d / "link.pyth"),
            ["link.pyth", "is the input file"],
            "--force",
        ),
        case(
            "output-symlink-to-source",
            "sym.safetensors",
            lambda d, fx: os.symlink("src.pyth", d / "sym.safetensors"),
            ["is the input file"],
            "--force",
        ),
        case(
            "output-is-directory",
            "outdir",
            lambda d, fx: (d / "outdir").mkdir(),
            ["outdir", "is a directory"],
            "--force",
        ),
        case("output-is-fifo", "pipe", lambda d, fx: fifo(d, "pipe"), ["pipe", "is a FIFO"], "--force"),
        case("output-is-device", "/dev/null", lambda d, fx: None, ["/dev/null", "character device"], "--force"),
        case("output-exists", OUT, lambda d, fx: (d / OUT).write_bytes(b"precious"), ["already exists", "--force"]),
        case("output-dir-missing", "missing/out.safetensors", lambda d, fx: None, ["does not exist"]),
        case(
            "output-dir-is-a-file",
            "afile/out.safetensors",
            lambda d, fx: (d / "afile").write_text("x"),
            ["afile/out.safetensors"],
        ),
        case("output-name-too-long", "x" * 300, lambda d, fx: None, ["x" * 50]),
        case("output-in-proc", "/proc/out.safetensors", lambda d, fx: None, ["/proc/out.safetensors"]),
        case("output-trailing-slash", "newdir/", lambda d, fx: None, ["newdir/", "not a file name"]),
        case("output-empty-name", "", lambda d, fx: None, ["not a file name"]),
        case("bad-dtype-option", OUT, lambda d, fx: None, ["--dtype"], "--dtype", "int8"),
        case("bad-layout-option", OUT, lambda d, fx: None, ["--layout"], "--layout", "keras"),
    ]


CASES = output_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


# ---- accepted outputs that used to fail: odd but legal names, permissions, links, stale temporaries ---------


def test_long_output_name_and_umask(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    name = "m" * 236 + ".safetensors"  # 248 characters: legal, so it must work
    assert len(name) == 248
    os.umask(old := os.umask(0o022))
    try:
        outcome = zygote.run(CONVERT, ["pycls", "src.pyth", name, "-q"], folder)
    finally:
        os.umask(old)
    assert outcome.code == 0, outcome.stderr
    assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~old
    assert sorted(p.name for p in folder.iterdir()) == sorted(["src.pyth", name])


def test_force_keeps_the_permissions_of_the_replaced_file(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    (folder / OUT).write_bytes(b"old")
    (folder / OUT).chmod(0o640)
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "--force", "-q"], folder).code == 0
    assert stat.S_IMODE((folder / OUT).stat().st_mode) == 0o640 and (folder / OUT).read_bytes() != b"old"


def test_symlink_output_is_written_through(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    (folder / "real").mkdir(parents=True)
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    (folder / "real" / "target.safetensors").write_bytes(b"old")
    os.symlink("real/target.safetensors", folder / OUT)
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "--force", "-q"], folder).code == 0
    assert (folder / OUT).is_symlink() and os.readlink(folder / OUT) == "real/target.safetensors"
    import regnet

    assert regnet.read_metadata(folder / "real" / "target.safetensors").model == "custom"
    assert sorted(p.name for p in (folder / "real").iterdir()) == ["target.safetensors"]


def test_stale_temporary_of_a_killed_process_is_removed(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    stale = folder / f".{OUT}.999999999-0123456789ab.part"  # no such PID
    alive = folder / f".{OUT}.{os.getpid()}-0123456789ab.part"  # a running process's: left alone
    other = folder / ".other.safetensors.999999999-0123456789ab.part"  # another output's: left alone
    for path in (stale, alive, other):
        path.write_bytes(b"x" * 100)
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "-q"], folder).code == 0
    assert not stale.exists() and alive.exists() and other.exists()


# ---- interruptions: termination signals clean up like Ctrl-C ----------------------------------------------

_SLOW_WRITE = """
import sys, time
import regnet.weights as weights
def slow_save(path, tensors, metadata):
    open(path, "wb").write(b"partial" * 1000)
    print("writing", flush=True)
    time.sleep(60)
weights.write_safetensors = slow_save
from regnet_convert.cli.convert import main
main(sys.argv[1:], prog_name="regnet-convert")
"""

_SLOW_EVALUATION = """
import sys, time
import regnet_convert.validation.evaluate as evaluate
def slow_run(self, *args, **kwargs):
    print("evaluating", flush=True)
    time.sleep(60)
evaluate.Evaluation.run = slow_run
from regnet_convert.cli.validate import main
main(sys.argv[1:], prog_name="regnet-validate")
"""


def _interrupt(script: str, argv: list[str], cwd: Path, signum: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() in ("writing", "evaluating")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.slow
def test_signal_during_write_leaves_nothing(signum, fixtures, tmp_path):
    shutil.copy(fixtures.tiny_pyth, tmp_path / "src.pyth")
    (tmp_path / OUT).write_bytes(b"previous version")
    before = snapshot(tmp_path)
    result = _interrupt(_SLOW_WRITE, ["pycls", "src.pyth", OUT, "--force"], tmp_path, signum)
    assert result.returncode == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(tmp_path) == before  # no .part left, the previous output untouched


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.slow
def test_interrupted_validation_is_not_a_fail(signum, fixtures, tmp_path):
    copy_val(fixtures, tmp_path)
    shutil.copy(fixtures.tiny_safetensors, tmp_path / "w.safetensors")
    argv = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--json", "r.json"]
    result = _interrupt(_SLOW_EVALUATION, argv, tmp_path, signum)
    assert result.returncode == 128 + signum != 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()
