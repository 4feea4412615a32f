"""Hostile outputs of `regnet-convert export --to timm-hub|onnx`, and the atomic folder writer behind folder exports.

Every refusal runs in a limited child process and must satisfy the refusal contract (`hostile.check_refusal`):
exit status 2, no traceback, one `error:` line naming the output or option, every file as it was, nothing left
behind. `atomic_directory` is checked through the command line (replacing an earlier export, cleaning up after a
killed one) and directly (a swap interrupted halfway puts the earlier export back).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from crafted import Fixtures
from hostile import Case, Outcome, Zygote, check_refusal, refuse, snapshot

import regnet
from regnet_convert.errors import InputError
from regnet_convert.fs import outputs as atomic

pytestmark = pytest.mark.hostile

CONVERT = "regnet-convert"
HUB_FILES = ("config.json", "model.safetensors", "README.md")  # what export --to timm-hub writes


def zoo_weights(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.zoo_safetensors, d / "w.safetensors")


def tiny_weights(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.tiny_safetensors, d / "w.safetensors")


def earlier_export(folder: Path, *extra: str) -> None:
    """A folder shaped like a timm-hub export (plus `extra` files)."""
    folder.mkdir()
    for name in (*HUB_FILES, *extra):
        (folder / name).write_bytes(b"earlier " + name.encode())


def then(*steps):
    return lambda d, fx: [step(d, fx) for step in steps]


def hub(id: str, out: str, setup, says: list[str], *options: str, source: str = "w.safetensors") -> Case:
    return Case(f"timm-hub-{id}", CONVERT, ["export", source, out, "--to", "timm-hub", *options], setup, says)


def onnx_case(id: str, out: str, setup, says: list[str], *options: str) -> Case:
    return Case(f"onnx-{id}", CONVERT, ["export", "w.safetensors", out, "--to", "onnx", *options], setup, says)


def source_inside_hub(d: Path, fx: Fixtures) -> None:
    """An earlier export's own model.safetensors (a converted file in timm's names) as the source."""
    (d / "hub").mkdir()
    shutil.copy(fx.zoo_safetensors, d / "hub" / "model.safetensors")
    (d / "hub" / "config.json").write_text("{}")


CASES = [
    hub("exists", "hub", then(zoo_weights, lambda d, fx: earlier_export(d / "hub")), ["hub", "already exists", "--force"]),
    hub("exists-empty", "hub", then(zoo_weights, lambda d, fx: (d / "hub").mkdir()), ["hub", "already exists"]),
    hub("holds-other-files", "hub", then(zoo_weights, lambda d, fx: earlier_export(d / "hub", "notes.txt")),
        ["hub", "holds other files", "notes.txt", "even with --force"], "--force"),
    hub("holds-a-subfolder", "hub", then(zoo_weights, lambda d, fx: (d / "hub" / "runs").mkdir(parents=True)),
        ["hub", "holds other files", "runs"], "--force"),
    hub("is-the-working-folder", ".", zoo_weights, [".", "holds other files"], "--force"),
    hub("is-a-file", "hub", then(zoo_weights, lambda d, fx: (d / "hub").write_bytes(b"keep")),
        ["hub", "is a file", "folder"], "--force"),
    hub("is-a-symlink-to-a-file", "hub", then(zoo_weights, lambda d, fx: os.symlink("w.safetensors", d / "hub")),
        ["hub", "is a file"], "--force"),
    hub("is-a-fifo", "hub", then(zoo_weights, lambda d, fx: os.mkfifo(d / "hub")), ["hub", "is a FIFO"], "--force"),
    hub("parent-missing", "missing/hub", zoo_weights, ["missing/hub", "does not exist"]),
    hub("parent-is-a-file", "afile/hub", then(zoo_weights, lambda d, fx: (d / "afile").write_text("x")),
        ["afile/hub", "does not exist"]),
    hub("parent-unwritable", "/proc/hub", zoo_weights, ["/proc/hub", "'/proc'"]),  # as root too: /proc takes no folder
    hub("empty-name", "", zoo_weights, ["not a folder name"]),
    hub("contains-the-source", "hub", source_inside_hub, ["hub", "holds the input file", "hub/model.safetensors"],
        "--force", source="hub/model.safetensors"),
    hub("contains-the-source-without-force", "hub", source_inside_hub, ["hub", "already exists"],
        source="hub/model.safetensors"),
    hub("is-the-source-file", "w.safetensors", zoo_weights, ["w.safetensors", "is a file"], "--force"),
    hub("custom-regnet", "hub", tiny_weights, ["w.safetensors", "timm-hub cannot express this RegNet", "not a zoo model"]),
    onnx_case("output-exists", "o.onnx", then(tiny_weights, lambda d, fx: (d / "o.onnx").write_bytes(b"keep")),
              ["o.onnx", "already exists", "--force"]),
    onnx_case("output-is-a-directory", "o.onnx", then(tiny_weights, lambda d, fx: (d / "o.onnx").mkdir()),
              ["o.onnx", "is a directory"], "--force"),
    onnx_case("output-is-the-source", "w.safetensors", tiny_weights, ["w.safetensors", "is the input file"], "--force"),
    onnx_case("output-links-to-the-source", "o.onnx",
              then(tiny_weights, lambda d, fx: os.symlink("w.safetensors", d / "o.onnx")), ["is the input file"], "--force"),
    onnx_case("output-trailing-slash", "o.onnx/", tiny_weights, ["o.onnx/", "not a file name"]),
    onnx_case("output-parent-missing", "missing/o.onnx", tiny_weights, ["missing/o.onnx", "does not exist"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


_WITHOUT = """
import sys
sys.modules[sys.argv[1]] = None  # as if it were not installed: importing it raises ImportError
from regnet_convert.cli.convert import main
main(sys.argv[2:], prog_name="regnet-convert")
"""


def test_onnx_export_without_the_onnx_extra_says_what_to_install(fixtures, tmp_path):
    tiny_weights(tmp_path, fixtures)
    before = snapshot(tmp_path)
    argv = ["onnx", "export", "w.safetensors", "o.onnx", "--to", "onnx"]
    done = subprocess.run([sys.executable, "-c", _WITHOUT, *argv], cwd=tmp_path, capture_output=True, text=True)
    outcome = Outcome(done.returncode, done.stdout, done.stderr, 0.0, 0)
    check_refusal(outcome, before, snapshot(tmp_path), 2, ["--to onnx", "pip install 'regnet-convert[onnx]'"])


# ---- the atomic folder writer ---------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".hub."))


def test_force_replaces_an_earlier_export_whole(fixtures, zygote, tmp_path):
    """With --force an earlier export is replaced as a whole, with the umask's permissions, and nothing is left."""
    zoo_weights(tmp_path, fixtures)
    earlier_export(tmp_path / "hub")
    os.umask(old := os.umask(0o022))
    outcome = zygote.run(CONVERT, ["export", "w.safetensors", "hub", "--to", "timm-hub", "--force", "-q"], tmp_path)
    assert outcome.code == 0 and not outcome.stderr and not outcome.stdout, outcome.stderr
    assert sorted(os.listdir(tmp_path / "hub")) == sorted(HUB_FILES) and leftovers(tmp_path) == []
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["architecture"] == "regnetx_002"
    assert regnet.read_metadata(tmp_path / "hub" / "model.safetensors").layout == "timm"
    for name in HUB_FILES:  # safetensors writes 0600: a published folder must be readable as any new file is
        assert stat.S_IMODE((tmp_path / "hub" / name).stat().st_mode) == 0o666 & ~old, name


def test_stale_part_folder_of_a_killed_export_is_removed(fixtures, zygote, tmp_path):
    zoo_weights(tmp_path, fixtures)
    stale = tmp_path / ".hub.999999999-0123456789ab.part"  # no such PID
    alive = tmp_path / f".hub.{os.getpid()}-0123456789ab.part"  # a running export's: left alone
    other = tmp_path / ".other.999999999-0123456789ab.part"  # another output's: left alone
    for folder in (stale, alive, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half written")
    outcome = zygote.run(CONVERT, ["export", "w.safetensors", "hub", "--to", "timm-hub", "-q"], tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert not stale.exists() and alive.exists() and other.exists()
    assert sorted(os.listdir(tmp_path / "hub")) == sorted(HUB_FILES)


def test_stale_old_folder_is_put_back_before_anything_is_written(fixtures, zygote, tmp_path):
    """A swap killed halfway left the earlier export as `.old` and no output: it comes back, and counts as existing."""
    zoo_weights(tmp_path, fixtures)
    earlier_export(tmp_path / ".hub.999999999-0123456789ab.old")
    expected = snapshot(tmp_path / ".hub.999999999-0123456789ab.old")
    outcome = zygote.run(CONVERT, ["export", "w.safetensors", "hub", "--to", "timm-hub"], tmp_path)
    assert outcome.code == 2 and "hub: already exists" in outcome.stderr, outcome.stderr
    assert snapshot(tmp_path / "hub") == expected and leftovers(tmp_path) == []


def test_swap_interrupted_halfway_puts_the_earlier_export_back(tmp_path, monkeypatch):
    """Ctrl-C between moving the earlier export aside and moving the new one in must not lose the earlier one."""
    earlier_export(tmp_path / "hub")
    before = snapshot(tmp_path / "hub")
    renames = []

    def rename(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        if len(renames) == 2:  # the new folder into place
            raise KeyboardInterrupt
        os.replace(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_directory(tmp_path / "hub", True, [], HUB_FILES) as tmp:
        for name in HUB_FILES:
            (tmp / name).write_text("new")
    assert renames[0][1].endswith(".old") and renames[1][1] == "hub"
    assert snapshot(tmp_path / "hub") == before and leftovers(tmp_path) == []


def test_failed_write_leaves_the_earlier_export_alone(tmp_path):
    earlier_export(tmp_path / "hub")
    before = snapshot(tmp_path)
    with pytest.raises(InputError), atomic.atomic_directory(tmp_path / "hub", True, [], HUB_FILES) as tmp:
        (tmp / "config.json").write_text("half")
        raise InputError("x", "the writer failed")
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []
