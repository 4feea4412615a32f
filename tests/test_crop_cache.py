"""regnet-validate --cache: crops decoded once and memory-mapped; a second run decodes nothing and counts the same;
stale or damaged entries are rebuilt, never used; a crash mid-build leaves no entry that looks valid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import class_folder, convert_file, native_model_with_random_bn

import regnet
import regnet_convert.validation.loader as loader
from regnet_convert.cli.validate import main
from regnet_convert.demo import make_images
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.validation.crop_cache import DATA, INDEX, CropCache, Stale
from regnet_convert.validation.dataset import find_samples
from regnet_convert.validation.loader import CropSettings
from regnet_convert.validation.preprocess import load_crop, normalize, to_chw_tensor

IMAGES = 6

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An RGB regnetx_200mf (random weights) and JPEGs filed under its own predictions (every top-1 right)."""
    root = tmp_path_factory.mktemp("cache")
    original = native_model_with_random_bn("regnetx_200mf", seed=3)
    source = write_pycls_checkpoint(original, root / "x.pyth", regnet.ZOO["regnetx_200mf"])
    weights = convert_file(source, root / "x.safetensors", rgb=True)
    model = regnet.load(weights).eval()
    pre = model.metadata.preprocessing
    paths = make_images(root / "staging", IMAGES, seed=11)
    batch = torch.stack([to_chw_tensor(load_crop(p), "RGB") for p in paths])
    with torch.inference_mode():
        labels = model(normalize(batch, pre.mean, pre.std)).argmax(1).tolist()
    val = root / "val"
    for path, label in zip(paths, labels, strict=True):
        path.rename(class_folder(val, label) / path.name)
    return weights, val


@pytest.fixture
def decodes(monkeypatch):
    """The loader's decodes (workers 0: in this process)."""
    calls = []

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return load_crop(path, *args, **kwargs)

    monkeypatch.setattr(loader, "load_crop", counting)
    return calls


def validate(runner, setup, tmp_path, *args, data=None, code=0) -> dict | None:
    weights, val = setup
    out = tmp_path / "r.json"
    out.unlink(missing_ok=True)
    argv = ["--weights", weights, "--data", data or val, "--workers", "0", "--quiet", "--batch-size", "4"]
    result = runner.invoke(main, [*map(str, argv), *map(str, args), "--json", str(out)])
    assert result.exit_code == code, result.output
    return json.loads(out.read_text()) if code == 0 else None


def counts(record: dict) -> tuple:
    return record["images"], record["top1"], record["top5"], record["skipped_images"]


def entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir())


def cache_of(cache: Path, data: Path, preset: str = "mmcls") -> CropCache:
    return CropCache(cache, find_samples(data), CropSettings(preset))


@pytest.mark.parametrize("preset", ["mmcls", "pycls"])
def test_second_run_decodes_nothing_and_counts_the_same(preset, runner, setup, tmp_path, decodes):
    _, val = setup
    cache = tmp_path / "cache"
    plain = validate(runner, setup, tmp_path, "--preprocess", preset)
    assert len(decodes) == IMAGES
    first = validate(runner, setup, tmp_path, "--preprocess", preset, "--cache", cache)
    assert len(decodes) == 2 * IMAGES
    decodes.clear()
    second = validate(runner, setup, tmp_path, "--preprocess", preset, "--cache", cache)
    assert decodes == []  # served from the memory-mapped crops
    assert counts(plain) == counts(first) == counts(second)
    if preset == "mmcls":
        assert counts(second) == (IMAGES, 100.0, 100.0, 0)  # filed under the model's own predictions
    [entry] = entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == [DATA, INDEX]
    dtype = np.dtype(np.uint8 if preset == "mmcls" else np.float32)
    assert (entry / DATA).stat().st_size == IMAGES * 3 * 224 * 224 * dtype.itemsize
    index = json.loads((entry / INDEX).read_text())
    assert index["dtype"] == dtype.name and index["key"]["preset"] == preset
    crops = cache_of(cache, val, preset).open().crops
    for i, (path, _) in enumerate(find_samples(val)):  # the stored crop is the decoder's, BGR, CHW
        assert np.array_equal(crops[i], load_crop(path, preset=preset).transpose(2, 0, 1))


def _damage_index(edit):
    def damage(entry: Path) -> None:
        record = json.loads((entry / INDEX).read_text())
        edit(record)
        (entry / INDEX).write_text(json.dumps(record))

    return damage


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


DAMAGE = {
    "data-truncated": lambda e: _truncate(e / DATA, (e / DATA).stat().st_size - 1),
    "data-empty": lambda e: _truncate(e / DATA, 0),
    "data-one-byte-more": lambda e: _truncate(e / DATA, (e / DATA).stat().st_size + 1),
    "data-missing": lambda e: (e / DATA).unlink(),
    "data-a-directory": lambda e: ((e / DATA).unlink(), (e / DATA).mkdir()),
    "data-a-fifo": lambda e: _fifo(e / DATA),
    "data-symlink-to-dev-zero": lambda e: ((e / DATA).unlink(), (e / DATA).symlink_to("/dev/zero")),
    "index-missing": lambda e: (e / INDEX).unlink(),
    "index-garbage": lambda e: (e / INDEX).write_bytes(os.urandom(3000)),
    "index-empty": lambda e: (e / INDEX).write_bytes(b""),
    "index-a-list": lambda e: (e / INDEX).write_text("[]"),
    "index-nested-200000": lambda e: (e / INDEX).write_text("[" * 200_000 + "]" * 200_000),
    "index-a-fifo": lambda e: _fifo(e / INDEX),
    "index-a-directory": lambda e: ((e / INDEX).unlink(), (e / INDEX).mkdir()),
    "index-sparse-300-megabytes": lambda e: _truncate(e / INDEX, 300 << 20),
    "wrong-shape": _damage_index(lambda r: r.update(shape=[IMAGES, 3, 224, 225])),
    "wrong-count": _damage_index(lambda r: r.update(shape=[IMAGES - 1, 3, 224, 224])),
    "wrong-dtype": _damage_index(lambda r: r.update(dtype="float32")),
    "other-opencv": _damage_index(lambda r: r["key"].update(opencv="4.5.0")),
    "other-file-size": _damage_index(lambda r: r["key"]["files"][0].__setitem__(1, 1)),
    "other-mtime": _damage_index(lambda r: r["key"]["files"][0].__setitem__(2, 0)),
    "file-list-shorter": _damage_index(lambda r: r["key"]["files"].pop()),
    "other-version": _damage_index(lambda r: r.update(version=2)),
    "errors-out-of-range": _damage_index(lambda r: r.update(errors={str(IMAGES): "x"})),
    "errors-not-a-dict": _damage_index(lambda r: r.update(errors=["x"])),
}


@pytest.fixture(scope="module")
def built(setup, tmp_path_factory):
    """A valid cache entry for the module's images, built once."""
    folder = tmp_path_factory.mktemp("built")
    validate(CliRunner(), setup, folder, "--cache", folder / "cache")
    return folder / "cache"


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.slow
def test_damaged_or_stale_entry_is_rebuilt_not_used(damage, runner, setup, built, tmp_path, decodes):
    cache = Path(shutil.copytree(built, tmp_path / "cache", symlinks=True))
    [entry] = entries(cache)
    DAMAGE[damage](entry)
    with pytest.raises(Stale):
        cache_of(cache, setup[1]).open()
    record = validate(runner, setup, tmp_path, "--cache", cache)
    assert len(decodes) == IMAGES  # rebuilt from the images
    assert counts(record) == (IMAGES, 100.0, 100.0, 0)
    assert entries(cache) == [entry] and sorted(p.name for p in entry.iterdir()) == [DATA, INDEX]
    cache_of(cache, setup[1]).open()  # valid again
    decodes.clear()
    validate(runner, setup, tmp_path, "--cache", cache)
    assert decodes == []


def test_changed_image_makes_the_entry_stale(runner, setup, tmp_path, decodes):
    data = Path(shutil.copytree(setup[1], tmp_path / "val"))
    cache = tmp_path / "cache"
    validate(runner, setup, tmp_path, "--cache", cache, data=data)
    image = sorted(data.rglob("*.JPEG"))[0]
    info = image.stat()
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # same bytes, touched
    decodes.clear()
    record = validate(runner, setup, tmp_path, "--cache", cache, data=data)
    assert len(decodes) == IMAGES and counts(record)[0] == IMAGES
    assert len(entries(cache)) == 1  # rebuilt in place


def test_subsets_and_presets_get_their_own_entries(runner, setup, tmp_path, decodes):
    cache = tmp_path / "cache"
    validate(runner, setup, tmp_path, "--cache", cache, "--limit", 3)
    validate(runner, setup, tmp_path, "--cache", cache)
    validate(runner, setup, tmp_path, "--cache", cache, "--preprocess", "pycls")
    assert len(decodes) == 3 + 2 * IMAGES
    names = [p.name for p in entries(cache)]
    assert len(names) == 3 and sum(n.startswith("pycls-256-224-") for n in names) == 1


def test_undecodable_images_are_cached_with_their_errors(runner, setup, tmp_path, decodes):
    data = Path(shutil.copytree(setup[1], tmp_path / "val"))
    good = sorted(data.rglob("*.JPEG"))[0]
    (good.parent / "broken.JPEG").write_bytes(good.read_bytes()[:2000])
    cache = tmp_path / "cache"
    validate(runner, setup, tmp_path, "--cache", cache, data=data, code=2)  # no entry from a refused run
    assert not cache.exists()
    first = validate(runner, setup, tmp_path, "--cache", cache, "--skip-bad-images", data=data)
    decodes.clear()
    second = validate(runner, setup, tmp_path, "--cache", cache, "--skip-bad-images", data=data)
    assert decodes == [] and counts(first) == counts(second) == (IMAGES, 100.0, 100.0, 1)
    result = CliRunner().invoke(main, ["--weights", str(setup[0]), "--data", str(data), "--workers", "0", "--quiet",
                                       "--cache", str(cache)])  # fmt: skip
    assert result.exit_code == 2 and decodes == []
    assert "broken.JPEG: truncated JPEG" in result.stderr and "--skip-bad-images" in result.stderr


_DIE_MID_BUILD = """
import os, signal, sys
import regnet_convert.validation.evaluate as evaluate
hits, calls = evaluate.Evaluation.hits, []
def dying(self, *args):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return hits(self, *args)
evaluate.Evaluation.hits = dying
from regnet_convert.cli.validate import main
main(sys.argv[1:], prog_name="regnet-validate")
"""


@pytest.mark.slow
def test_crash_mid_build_leaves_no_entry_that_looks_valid(runner, setup, tmp_path, decodes):
    weights, val = setup
    cache = tmp_path / "cache"
    argv = ["--weights", weights, "--data", val, "--workers", "0", "--quiet", "--batch-size", "2", "--cache", cache]
    died = subprocess.run([sys.executable, "-c", _DIE_MID_BUILD, *map(str, argv)], timeout=300)
    assert died.returncode == -signal.SIGKILL
    [left] = entries(cache)  # the dead run's temporary folder, with its partial crops
    assert left.name.startswith(".") and left.name.endswith(".part") and (left / DATA).stat().st_size > 0
    with pytest.raises(Stale, match="no entry"):
        cache_of(cache, val).open()
    record = validate(runner, setup, tmp_path, "--cache", cache)
    assert len(decodes) == IMAGES and counts(record) == (IMAGES, 100.0, 100.0, 0)
    [entry] = entries(cache)  # the dead process's folder removed
    assert not entry.name.startswith(".")
    cache_of(cache, val).open()
