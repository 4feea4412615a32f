"""Hostile `--fast` package caches: a package is a shared library that loading runs, so a cache folder that is
not the user's own is never read, an entry is loaded only when it is a regular file of the user's matching its
record, and a loaded package is used only when it computes this model (a probe). No case hangs, reads a record
whole, or leaves a build folder behind.

One tiny RegNetY package is compiled per run (package_store.py: test_fast_cache.py compiles the same); where a
case would compile again, `_compile` copies that package instead (or fails, leaving the model eager), so that each
case costs a load, not a compilation. One case runs `regnet-validate --fast` for real in a forked child.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch
from crafted import copy_val
from helpers import compiling_by_copy, one_torch_thread, relative_difference
from hostile import NOBODY, snapshot

from regnet import RegNet, fast_cache
from regnet.config import RegNetConfig, StageConfig
from regnet.fast import fast_model

pytestmark = [pytest.mark.hostile, pytest.mark.slow]

TINY = RegNetConfig((StageConfig(1, 16, 8), StageConfig(2, 32, 8)), se_ratio=0.25, num_classes=5)
SIZE = 32
PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("planted code ran\n", f); fclose(f); }
}
"""


def tiny_model(seed: int) -> RegNet:
    """A tiny RegNetY with random BN statistics."""
    torch.manual_seed(seed)
    model = RegNet(TINY).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def key_of(model: RegNet) -> dict[str, object]:
    return fast_cache.entry_key(fast_model(model, backend="eager"), TINY, (3, SIZE, SIZE))


@pytest.fixture(scope="session")
def genuine(tmp_path_factory, compile_once) -> Path:
    """A package of `tiny_model(0)` for SIZE inputs and one thread, compiled once per run (a copy)."""
    root = tmp_path_factory.mktemp("fast-genuine")
    with one_torch_thread(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGNET_CACHE", str(root))
        patch.setattr(fast_cache, "_compile", compile_once.compile)
        fast_model(tiny_model(0), resolution=SIZE)
    (package,) = (root / "aoti").glob("*.pt2")
    return Path(shutil.copy(package, tmp_path_factory.mktemp("fast-package") / "genuine.pt2"))


@pytest.fixture
def cache(tmp_path, monkeypatch, genuine) -> Path:
    """An empty $REGNET_CACHE of this user's (mode 0700); compilations copy the genuine package."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("REGNET_CACHE", str(root))
    monkeypatch.setattr(fast_cache, "_compile", compiling_by_copy(genuine))
    with one_torch_thread():
        yield root


def plant(root: Path, model: RegNet, package: bytes | Path) -> Path:
    """`package` stored as `model`'s entry under `root`, with a record that matches it (what anyone who can
    write the cache can do). Returns the package's path."""
    key = key_of(model)
    folder = root / "aoti"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{fast_cache.digest_of(key)}.pt2"
    data = package.read_bytes() if isinstance(package, Path) else package
    path.write_bytes(data)
    record = {"key": key, "size": len(data), "sha256": fast_cache._sha256(path)}
    path.with_suffix(".json").write_text(json.dumps(record))
    return path


def planted_package(genuine: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of the genuine package whose library runs a constructor on loading; and the file it writes."""
    marker, source, library = folder / "MARKER", folder / "planted.c", folder / "planted.so"
    source.write_text(PLANTED)
    subprocess.run(["cc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", library, source], check=True)
    planted = folder / "planted.pt2"
    with zipfile.ZipFile(genuine) as zin, zipfile.ZipFile(planted, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, library.read_bytes() if info.filename.endswith(".so") else zin.read(info))
    return planted, marker


def agrees(model: RegNet, fast: torch.nn.Module) -> None:
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert relative_difference(fast(x.contiguous(memory_format=torch.channels_last)), model(x)) <= 1e-4


def _world_writable(root: Path, package: Path) -> None:
    root.chmod(0o777)


def _group_writable_folder(root: Path, package: Path) -> None:
    package.parent.chmod(0o770)


def _foreign_cache(root: Path, package: Path) -> None:
    os.chown(root, NOBODY, NOBODY)


def _foreign_folder(root: Path, package: Path) -> None:
    os.chown(package.parent, NOBODY, NOBODY)


def _foreign_package(root: Path, package: Path) -> None:
    os.chown(package, NOBODY, NOBODY)


def _writable_package(root: Path, package: Path) -> None:
    package.chmod(0o666)


def _linked_folder(root: Path, package: Path) -> None:
    elsewhere = root.parent / "elsewhere"
    package.parent.rename(elsewhere)
    package.parent.symlink_to(elsewhere)


def _linked_package(root: Path, package: Path) -> None:
    elsewhere = root.parent / "elsewhere.pt2"
    package.rename(elsewhere)
    package.symlink_to(elsewhere)


UNTRUSTED = [_world_writable, _group_writable_folder, _foreign_cache, _foreign_folder, _linked_folder]
UNTRUSTED_ENTRY = [_foreign_package, _writable_package, _linked_package]


@pytest.mark.parametrize("make", UNTRUSTED + UNTRUSTED_ENTRY, ids=lambda f: f.__name__[1:].replace("_", "-"))
def test_planted_library_is_never_loaded(make, cache, genuine, tmp_path):
    """A package with a valid record is still never loaded from a cache folder that is not the user's own (or
    when the entry itself is not): the constructor of its library never runs, and the model is right."""
    model = tiny_model(0)
    package, marker = planted_package(genuine, tmp_path)
    entry = plant(cache, model, package)
    make(cache, entry)
    untrusted, before, stats = make in UNTRUSTED, snapshot(cache), dataclasses.replace(fast_cache.stats)
    fast = fast_model(model, resolution=SIZE)
    assert not marker.exists(), "the planted library was loaded"
    agrees(model, fast)
    assert fast.runners[(3, SIZE, SIZE)] is not fast.folded  # compiled (the copy), not eager
    if untrusted:  # compiled for this process only; nothing read or written in the cache
        assert fast_cache.stats == dataclasses.replace(stats, builds=stats.builds + 1, uncached=stats.uncached + 1)
        assert snapshot(cache) == before
    else:  # the entry was refused and replaced by a sound one of the user's
        assert fast_cache.stats == dataclasses.replace(stats, builds=stats.builds + 1, rejected=stats.rejected + 1)
        assert entry.is_file() and not entry.is_symlink() and entry.read_bytes() == genuine.read_bytes()
        assert entry.stat().st_uid == os.getuid() and entry.stat().st_mode & 0o077 == 0


def test_new_cache_folder_is_private(cache, tmp_path, monkeypatch):
    """Created with a permissive umask, the cache folders are still mode 0700 and the entry's files 0600."""
    root = tmp_path / "new" / "cache"
    monkeypatch.setenv("REGNET_CACHE", str(root))
    previous = os.umask(0)
    try:
        fast_model(tiny_model(0), resolution=SIZE)
    finally:
        os.umask(previous)
    assert (root.stat().st_mode & 0o777, (root / "aoti").stat().st_mode & 0o777) == (0o700, 0o700)
    assert sorted(path.stat().st_mode & 0o777 for path in (root / "aoti").iterdir()) == [0o600, 0o600]


def test_other_models_package_is_refused(cache, genuine):
    """Another model's genuine package, under this model's key with a matching record, is not used: the probe
    finds that it computes another model (here compilation then fails: the model runs eagerly)."""
    other = tiny_model(1)
    plant(cache, other, genuine)  # a package of tiny_model(0)
    stats = dataclasses.replace(fast_cache.stats)
    fast = fast_model(other, resolution=SIZE)
    agrees(other, fast)
    assert fast.runners[(3, SIZE, SIZE)] is fast.folded
    assert fast_cache.stats.rejected == stats.rejected + 1 and fast_cache.stats.hits == stats.hits


class Hung(BaseException):
    """Raised by the alarm in `within` (not an Exception: no handler of the code under test swallows it)."""


@contextlib.contextmanager
def within(seconds: float):
    def expire(*_):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("which", ["record", "package"])
def test_fifo_entry_does_not_hang(which, cache, genuine):
    model = tiny_model(0)
    package = plant(cache, model, genuine)
    record = package.with_suffix(".json")
    if which == "package":  # the record names a file of size 0: a FIFO's size
        record.write_text(json.dumps({"key": key_of(model), "size": 0, "sha256": "0" * 64}))
    path = record if which == "record" else package
    path.unlink()
    os.mkfifo(path, 0o600)
    with within(30):
        fast = fast_model(model, resolution=SIZE)
    agrees(model, fast)
    assert package.is_file() and record.is_file()  # rebuilt over the FIFO
    assert json.loads(record.read_text())["sha256"] == fast_cache._sha256(package)


def test_huge_record_is_not_read(cache, genuine):
    model = tiny_model(0)
    record = plant(cache, model, genuine).with_suffix(".json")
    with open(record, "r+b") as f:
        f.truncate(512 << 20)  # sparse: no disk used
    tracemalloc.start()
    try:
        with within(30):
            fast = fast_model(model, resolution=SIZE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated"
    agrees(model, fast)
    assert record.stat().st_size < 4096  # rebuilt


KILLED = """
import os, sys, torch
sys.path[:0] = [sys.argv[1]]
from test_hostile_fast_cache import tiny_model, SIZE
from regnet.fast import fast_model
torch.set_num_threads(1)
fast_model(tiny_model(5), resolution=SIZE)
"""


def test_killed_compilation_leaves_no_build_folder(cache, genuine):
    """A process killed while compiling leaves its build folder; the next preparation removes it (and keeps
    the build folder of a process that is alive)."""
    folder = cache / "aoti"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(Path(__file__).parent)],
        env={**os.environ, "REGNET_CACHE": str(cache)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob(".build-*/**/*")) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    (left,) = folder.glob(".build-*")  # what a killed compilation leaves
    alive = folder / left.name.replace(f"-{child.pid}-", f"-{os.getpid()}-")  # this process's name for it
    if alive != left:
        alive.mkdir()
    fast_model(tiny_model(0), resolution=SIZE)
    assert not left.exists()
    assert alive.is_dir()


# ---- `regnet-validate --fast` as a new process, as run from a terminal ---------------------------------------


def test_validate_without_a_compiler_runs_eagerly_and_says_so(fixtures, tmp_path):
    """No working C++ compiler (inductor reads $CXX when it is imported: a fresh process): `--fast` still
    validates, with the reference counts and exit 0, and one warning says the fast path fell back to eager."""
    case = tmp_path / "case"
    case.mkdir()
    copy_val(fixtures, case)
    shutil.copy(fixtures.tiny_safetensors, case / "tiny.safetensors")
    argv = ["--weights", "tiny.safetensors", "--data", "val", "--workers", "0", "--quiet", "--json"]
    env = {**os.environ, "REGNET_CACHE": str(case / "cache"), "CXX": str(tmp_path / "no-such-compiler")}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "regnet_convert.cli.validate", *argv, f"{name}.json", *extra],
            cwd=case,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for name, extra in (("reference", []), ("fast", ["--fast"]))
    ]
    reference, fast = runs
    assert (reference.returncode, reference.stderr) == (0, "")
    assert fast.returncode == 0, fast.stderr
    (line,) = fast.stderr.splitlines()
    assert line.startswith("warning: fast path: compiling for 3x224x224 inputs failed (") and "compiler" in line
    assert line.endswith("); those run eagerly")
    counts = [{k: json.loads((case / f"{n}.json").read_text())[k] for k in ("images", "top1", "top5")}
              for n in ("reference", "fast")]  # fmt: skip
    assert counts[0] == counts[1] and counts[0]["images"] == 6
    assert not list((case / "cache" / "aoti").iterdir())  # no package, no build folder left


# ---- last in this file: its second input size is test_fast_cache.py's package of that size (compile_once),
# which the other pytest-xdist worker has usually compiled by now (run earlier, this waited ~20 s for it) ----------


def test_untrusted_cache_is_reported_once(cache, genuine, compile_once, monkeypatch):
    """A cache that is not the user's own is named in one warning (whatever the number of input sizes; the second
    size is compiled for real, once per run: the genuine package is for SIZE only, and a failed compilation warns
    too)."""
    os.chown(cache, NOBODY, NOBODY)
    monkeypatch.setattr(fast_cache, "_warned", set())
    copy = fast_cache._compile

    def compile_for_real_beyond_size(folded: RegNet, example: torch.Tensor, path: Path) -> None:
        (copy if example.shape[-1] == SIZE else compile_once.compile)(folded, example, path)

    monkeypatch.setattr(fast_cache, "_compile", compile_for_real_beyond_size)
    lines: list[str] = []
    fast = fast_model(tiny_model(0), resolution=SIZE, warn=lines.append)
    fast.prepare((3, SIZE + 8, SIZE + 8))
    assert lines == [
        f"warning: fast-path cache {cache}: is owned by another user (uid {NOBODY}); not used, compiling for this "
        "run only"
    ]
    assert not (cache / "aoti").exists()
