"""Hostile inputs for `regnet-convert predict`: images it cannot read, impossible --topk values, a folder of 10^5
empty files, a directory or FIFO given as an image, and a --json output that would replace an input.

Each case runs in a limited child process (`hostile.Zygote`); refusals keep the contract of `hostile.check_refusal`
(exit 2, one `error:` line naming the file or option, no traceback, nothing written or changed). With
--skip-bad-images each unreadable image gets one `warning:` line instead and the run goes on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from crafted import Fixtures
from hostile import Case, Zygote, check_refusal, snapshot
from PIL import Image

pytestmark = pytest.mark.hostile
Setup = Callable[[Path, Fixtures], object]
CONVERT = "regnet-convert"
PREDICT = ["predict", "w.safetensors"]
MANY = 100_000


def _weights(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.zoo_safetensors, d / "w.safetensors")


def _good(d: Path, fx: Fixtures) -> Path:
    """One decodable JPEG, good.JPEG."""
    _weights(d, fx)
    shutil.copy(sorted(fx.val.rglob("*.JPEG"))[0], d / "good.JPEG")
    return d / "good.JPEG"


def png_header(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header is rewritten to announce width x height pixels (its CRC fixed)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def file_with(name: str, data: bytes) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        _good(d, fx)
        (d / name).write_bytes(data)

    return setup


def empty_files(d: Path, fx: Fixtures, suffix: str = ".jpg") -> None:
    _weights(d, fx)
    (d / "many").mkdir()
    for i in range(MANY):
        os.close(os.open(d / "many" / f"{i:06d}{suffix}", os.O_CREAT | os.O_WRONLY, 0o644))


def fifo(d: Path, fx: Fixtures) -> None:
    _good(d, fx)
    os.mkfifo(d / "pipe.jpg")


def empty_folder(d: Path, fx: Fixtures) -> None:
    _good(d, fx)
    (d / "empty").mkdir()
    (d / "empty" / "notes.txt").write_text("no images here")


def case(id: str, argv: list[str], setup: Setup, says: list[str], seconds: float = 60) -> Case:
    return Case(f"predict-{id}", CONVERT, [*PREDICT, *argv], setup, says, seconds=seconds)


CASES = [
    case(
        "garbage-jpeg",
        ["good.JPEG", "bad.jpg"],
        file_with("bad.jpg", b"\xff\xd8\xff\xe0 garbage"),
        ["bad.jpg", "--skip-bad-images"],
    ),
    case(
        "truncated-jpeg",
        ["bad.jpg"],
        lambda d, fx: (_good(d, fx), (d / "bad.jpg").write_bytes((d / "good.JPEG").read_bytes()[:3000])),
        ["bad.jpg", "truncated"],
    ),
    case(
        "text-as-image", ["notes.png"], file_with("notes.png", b"hello, I am text\n"), ["notes.png", "not a JPEG, PNG"]
    ),
    case("empty-image", ["empty.jpg"], file_with("empty.jpg", b""), ["empty.jpg", "empty file"]),
    case("pixel-bomb", ["bomb.png"], file_with("bomb.png", png_header(100_000, 100_000)), ["bomb.png", "budget"]),
    case("missing-image", ["good.JPEG", "nowhere.jpg"], _good, ["nowhere.jpg", "no such file or folder"]),
    case("fifo-as-image", ["pipe.jpg"], fifo, ["pipe.jpg", "is a FIFO, not an image"], seconds=20),
    case("folder-without-images", ["empty"], empty_folder, ["empty", "holds no images"]),
    case("topk-0", ["good.JPEG", "--topk", "0"], _good, ["--topk", "0"]),
    case("topk-1001", ["good.JPEG", "--topk", "1001"], _good, ["--topk", "1001", "1000 classes"]),
    case("json-onto-image", ["good.JPEG", "--json", "good.JPEG"], _good, ["--json", "good.JPEG", "input"]),
    case("json-onto-weights", ["good.JPEG", "--json", "w.safetensors"], _good, ["--json", "w.safetensors", "input"]),
    case("json-is-a-folder", ["good.JPEG", "--json", "."], _good, ["--json", "directory"]),
    case(
        "missing-weights",
        ["good.JPEG"],
        lambda d, fx: (_good(d, fx), (d / "w.safetensors").unlink()),
        ["w.safetensors", "no such"],
    ),
    case(
        "image-as-weights",
        ["good.JPEG"],
        lambda d, fx: shutil.copy(_good(d, fx), d / "w.safetensors"),
        ["w.safetensors"],
    ),
    case("many-empty-files", ["many"], empty_files, ["many/000000.jpg", "empty file"], seconds=30),
    case(
        "many-files-no-images",
        ["many"],
        lambda d, fx: empty_files(d, fx, ".dat"),
        ["many", "holds no images"],
        seconds=30,
    ),
]


@pytest.fixture
def roomy_tmp(tmp_path: Path) -> Iterator[Path]:
    """A folder in memory (/dev/shm) where the machine has one, else `tmp_path`: creating, listing and removing
    100,000 files takes ~20 s on this disk (and more while other tests write gigabytes), ~5 s in memory."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="regnet-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_predict_input_is_refused(case: Case, zygote: Zygote, fixtures: Fixtures, roomy_tmp: Path):
    folder = roomy_tmp / "case"
    folder.mkdir()
    case.setup(folder, fixtures)  # type: ignore[operator]
    before = snapshot(folder)
    outcome = zygote.run(case.tool, case.argv, folder, seconds=case.seconds)
    check_refusal(outcome, before, snapshot(folder), case.code, case.says)
    assert "bad.jpg" not in outcome.stdout, outcome.stdout


def test_skip_bad_images_names_each_and_classifies_the_rest(zygote: Zygote, fixtures: Fixtures, tmp_path: Path):
    folder = tmp_path / "case"
    folder.mkdir()
    file_with("bad.jpg", b"\xff\xd8\xff\xe0 garbage")(folder, fixtures)
    fifo_path = folder / "pipe.jpg"
    os.mkfifo(fifo_path)
    argv = [*PREDICT, "bad.jpg", "pipe.jpg", "good.JPEG", "--skip-bad-images", "--topk", "2", "--json", "out.json"]
    outcome = zygote.run(CONVERT, argv, folder, seconds=30)
    assert outcome.code == 0 and "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") and line.endswith("; skipped") for line in lines)
    assert "pipe.jpg" in lines[0] and "bad.jpg" in lines[1]
    records = json.loads((folder / "out.json").read_text())["predictions"]
    assert [Path(r["image"]).name for r in records] == ["pipe.jpg", "bad.jpg", "good.JPEG"]
    assert "error" in records[0] and "error" in records[1] and len(records[2]["top"]) == 2


def test_a_folder_of_100000_empty_images_is_skipped_in_bounded_time(zygote: Zygote, fixtures: Fixtures, roomy_tmp):
    folder = roomy_tmp / "case"
    folder.mkdir()
    empty_files(folder, fixtures)
    outcome = zygote.run(CONVERT, [*PREDICT, "many", "--skip-bad-images"], folder, seconds=60)
    assert not outcome.timed_out and outcome.seconds < 30 and "Traceback" not in outcome.stderr
    lines = outcome.stderr.splitlines()
    assert outcome.code == 2 and len(lines) == MANY + 1 and outcome.stdout == ""
    assert lines[0] == "warning: many/000000.jpg: empty file; skipped"
    assert lines[-1] == f"error: no image could be read ({MANY} skipped)"
    assert not (folder / "out.json").exists()
