"""Every output is forced to the disk (fsync) with its final bytes before it appears under its name.

The suite's own processes skip the fsync (conftest.outputs_not_forced_to_disk); here the real one runs, watched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from regnet_convert.cli.convert import main
from regnet_convert.fs import outputs

REAL_FSYNC = outputs._fsync  # imported before the session fixture replaces it


@dataclass
class Forced:
    """A watch on os.fsync through the writers' real `_fsync`: each call's file, its bytes then, and whether the
    output `target` was in place then."""

    target: Path | None = None
    calls: list[tuple[str, bytes, bool]] = field(default_factory=list)


@pytest.fixture
def forced(monkeypatch) -> Forced:
    watch, real_os_fsync = Forced(), os.fsync

    def watched_fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        in_place = watch.target is not None and watch.target.exists()
        watch.calls.append((path.name, path.read_bytes(), in_place))
        real_os_fsync(fd)

    monkeypatch.setattr(outputs, "_fsync", REAL_FSYNC)
    monkeypatch.setattr(outputs.os, "fsync", watched_fsync)
    return watch


def test_a_file_output_is_forced_to_disk_before_it_appears(tmp_path, forced):
    forced.target = target = tmp_path / "out.bin"
    with outputs.atomic_output(target, force=False) as tmp:
        tmp.write_bytes(b"final bytes")
        assert forced.calls == []  # not while it is being written
    ((name, data, in_place),) = forced.calls
    assert name.endswith(".part") and data == b"final bytes" and not in_place
    assert target.read_bytes() == b"final bytes"


def test_every_file_of_a_folder_output_is_forced_to_disk_before_the_folder_appears(tmp_path, forced):
    forced.target = target = tmp_path / "export"
    with outputs.atomic_directory(target, force=False) as tmp:
        (tmp / "a.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"weights")
    assert sorted(forced.calls) == [("a.json", b"{}", False), ("model.safetensors", b"weights", False)]
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "model.safetensors"]


def test_a_conversion_forces_its_file_to_disk(tmp_path, forced, converted_200mf):
    """Through the command: `export` of a converted file; the bytes forced are the bytes that appear."""
    native, _ = converted_200mf
    forced.target = tmp_path / "t.pth"
    result = CliRunner().invoke(main, ["export", str(native), str(forced.target), "--to", "torchvision", "--quiet"])
    assert result.exit_code == 0 and not result.output, result.output
    assert [(data, in_place) for _, data, in_place in forced.calls] == [(forced.target.read_bytes(), False)]
