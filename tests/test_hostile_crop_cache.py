"""The crop cache never serves stale crops (issue 19): an image replaced by other bytes of the same size, its
modification time set back, in place or renamed over, makes the entry stale; the run decodes it again and counts
what the new bytes give (runs in limited child processes, `hostile.Zygote`). Hashing the images for the key never
blocks on a FIFO nor reads a file over the decoder's size limit."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from crafted import Fixtures, copy_val
from hostile import Zygote

from regnet_convert.validation.crop_cache import CropCache, Stale, file_key
from regnet_convert.validation.dataset import find_samples
from regnet_convert.validation.loader import CropSettings
from regnet_convert.validation.preprocess import MAX_FILE_BYTES, load_crop

pytestmark = pytest.mark.hostile

VALIDATE = "regnet-validate"
W = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--quiet"]


def _cache(folder: Path) -> CropCache:
    return CropCache(folder / "cache", find_samples(folder / "val"), CropSettings())


def _same_size_other_bytes(target: Path, donor: Path) -> bytes:
    """`donor`'s JPEG padded with zeros to `target`'s size (decoders stop at the end-of-image marker)."""
    data, size = donor.read_bytes(), target.stat().st_size
    assert len(data) < size
    return data + bytes(size - len(data))


def _in_place(target: Path, data: bytes) -> None:
    with open(target, "r+b") as f:
        f.write(data)


def _renamed_over(target: Path, data: bytes) -> None:
    new = target.with_name("new.tmp")
    new.write_bytes(data)
    os.replace(new, target)


def _times_set_back(target: Path, info: os.stat_result) -> None:
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


REPLACEMENTS: dict[str, Callable[[Path, bytes], None]] = {"in-place": _in_place, "renamed-over": _renamed_over}


@pytest.mark.parametrize("how", list(REPLACEMENTS))
def test_same_size_same_mtime_replacement_is_not_served_from_the_cache(
    how: str, fixtures: Fixtures, zygote: Zygote, tmp_path: Path
):
    folder = tmp_path / "case"
    folder.mkdir()
    copy_val(fixtures, folder)
    shutil.copy(fixtures.tiny_safetensors, folder / "w.safetensors")
    argv = [*W, "--cache", "cache", "--json", "r.json"]
    assert (first := zygote.run(VALIDATE, argv, folder)).code == 0, first.stderr
    _cache(folder).open()  # a current entry

    paths = [path for path, _ in find_samples(folder / "val")]
    by_size = sorted(range(len(paths)), key=lambda i: paths[i].stat().st_size)
    target, donor = paths[by_size[-1]], paths[by_size[0]]
    info, old = target.stat(), load_crop(target)
    REPLACEMENTS[how](target, _same_size_other_bytes(target, donor))
    _times_set_back(target, info)
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (info.st_size, info.st_mtime_ns)

    with pytest.raises(Stale):
        _cache(folder).open()
    assert (cached := zygote.run(VALIDATE, argv, folder)).code == 0, cached.stderr
    with_cache = json.loads((folder / "r.json").read_text())
    crops = _cache(folder).open().crops  # rebuilt from the new bytes
    index = paths.index(target)
    assert np.array_equal(crops[index], load_crop(target).transpose(2, 0, 1))
    assert not np.array_equal(crops[index], old.transpose(2, 0, 1))
    plain = zygote.run(VALIDATE, [*W, "--json", "p.json"], folder)
    assert plain.code == 0, plain.stderr
    without = json.loads((folder / "p.json").read_text())
    assert (with_cache["top1"], with_cache["top5"]) == (without["top1"], without["top5"])


@pytest.mark.parametrize("kind", ["fifo", "device", "gone", "over-the-size-limit"])
def test_hashing_an_image_for_the_key_never_blocks_nor_reads_without_bound(kind: str, tmp_path: Path):
    """A guard of the content key: special files are not read (a FIFO would block), a huge file not hashed."""
    path = {"fifo": tmp_path / "pipe.JPEG", "device": Path("/dev/zero"), "gone": tmp_path / "gone.JPEG"}.get(
        kind, tmp_path / "huge.JPEG"
    )
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "over-the-size-limit":
        with open(path, "wb") as f:
            f.truncate(MAX_FILE_BYTES + 1)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(file_key(path)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and len(result) == 1
    assert result[0][0] == os.path.abspath(path) and result[0][3] == ""
