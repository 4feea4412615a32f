"""The CPU fast path's package cache: hits, separate entries, damaged or stale entries rebuilt, unusable folders,
and a `--fast` validation that prints nothing, even with warnings turned into errors.

Compilation takes seconds per package on 2 cores, so a tiny RegNetY (SE included) is compiled a few times only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from crafted import copy_val
from helpers import compiling_by_copy, relative_difference
from hostile import NOBODY, snapshot

from regnet import RegNet, fast_cache
from regnet.config import RegNetConfig, StageConfig
from regnet.fast import fast_model

pytestmark = pytest.mark.slow

TINY = RegNetConfig((StageConfig(1, 16, 8), StageConfig(2, 32, 8)), se_ratio=0.25, num_classes=5)
SIZE = 32  # input height and width of the in-process cases
VALIDATE = "regnet-validate"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """$REGNET_CACHE for this module's in-process cases (one thread: the key holds the thread count)."""
    root, threads = tmp_path_factory.mktemp("regnet-cache"), torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGNET_CACHE", str(root))
        yield root / "aoti"
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(cache, compile_once) -> tuple[RegNet, torch.nn.Module]:
    """A tiny RegNetY with random BN statistics, and its fast path (built into `cache`; the package compiled once
    per run, test_hostile_fast_cache.py uses it too: package_store.py)."""
    torch.manual_seed(0)
    model = RegNet(TINY).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_cache, "_compile", compile_once.compile)
        return model, fast_model(model, resolution=SIZE)


def entries(folder: Path) -> dict[str, dict]:
    """Package name -> its record, for every entry in the cache folder."""
    return {p.name: json.loads(p.with_suffix(".json").read_text()) for p in sorted(folder.glob("*.pt2"))}


def agrees(model: RegNet, fast: torch.nn.Module, size: int = SIZE, batches: tuple[int, ...] = (1, 5, 9)) -> None:
    x = torch.randn(max(batches), 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(x)
        for batch in batches:
            assert relative_difference(fast(x[:batch]), expected[:batch]) <= 1e-4


def test_second_preparation_loads_the_cache(tiny, cache):
    model, first = tiny
    before, files = dataclasses.replace(fast_cache.stats), snapshot(cache)
    ((name, record),) = entries(cache).items()
    assert record["key"]["threads"] == 1 and record["key"]["input"] == [3, SIZE, SIZE]
    assert record["sha256"] == fast_cache._sha256(cache / name)
    again = fast_model(model, resolution=SIZE)
    assert fast_cache.stats == dataclasses.replace(before, hits=before.hits + 1)
    assert snapshot(cache) == files  # nothing rewritten
    agrees(model, first)  # one package for every batch size
    agrees(model, again)


def test_other_thread_count_and_input_size_are_other_entries(tiny, cache, pristine, compile_once, monkeypatch):
    """Each is an entry of its own. The two-thread package 'compiles' by copying the one-thread one (it runs on
    any thread count; the key is what is checked), the other size compiles for real (once per run)."""
    model, fast = tiny
    builds = fast_cache.stats.builds
    torch.set_num_threads(2)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(fast_cache, "_compile", compiling_by_copy(pristine))
            two = fast_model(model, resolution=SIZE)
    finally:
        torch.set_num_threads(1)
    monkeypatch.setattr(fast_cache, "_compile", compile_once.compile)
    agrees(model, fast, size=40)  # another size: a package built on first use
    agrees(model, two)
    assert fast_cache.stats.builds == builds + 2
    keys = sorted((r["key"]["threads"], *r["key"]["input"]) for r in entries(cache).values())
    assert keys == [(1, 3, SIZE, SIZE), (1, 3, 40, 40), (2, 3, SIZE, SIZE)]


def test_empty_batches_and_autocast_run_eagerly(tiny):
    model, fast = tiny
    builds, x = fast_cache.stats.builds, torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert fast(x[:0]).shape == model(x[:0]).shape == (0, 5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast(x).dtype == torch.bfloat16
    assert fast_cache.stats.builds == builds


def _truncate(package: Path, record: Path) -> None:
    package.write_bytes(package.read_bytes()[: package.stat().st_size // 2])


def _same_size_garbage(package: Path, record: Path) -> None:
    package.write_bytes(os.urandom(package.stat().st_size))


def _other_torch(package: Path, record: Path) -> None:
    meta = json.loads(record.read_text())
    meta["key"]["torch"] = "2.13.0"
    record.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def pristine(tiny, cache, tmp_path_factory) -> Path:
    """A copy of the tiny model's package as it was first compiled."""
    model, _ = tiny
    key = fast_cache.entry_key(fast_model(model, backend="eager"), TINY, (3, SIZE, SIZE))
    package = cache / f"{fast_cache.digest_of(key)}.pt2"
    return Path(shutil.copy(package, tmp_path_factory.mktemp("pristine") / package.name))


@pytest.mark.parametrize("damage", [_truncate, _same_size_garbage, _other_torch], ids=lambda f: f.__name__[1:])
def test_damaged_or_stale_entry_is_rebuilt(damage, tiny, cache, pristine, monkeypatch):
    """Detected, rebuilt and replaced with a new record. The rebuild copies the package first compiled (the cases
    above compile for real; a compilation costs seconds), so the rebuilt entry is the pristine one again."""
    model, _ = tiny
    key = fast_cache.entry_key(fast_model(model, backend="eager"), TINY, (3, SIZE, SIZE))
    package = cache / f"{fast_cache.digest_of(key)}.pt2"
    damage(package, package.with_suffix(".json"))
    monkeypatch.setattr(fast_cache, "_compile", compiling_by_copy(pristine))
    before = dataclasses.replace(fast_cache.stats)
    rebuilt = fast_model(model, resolution=SIZE)
    assert fast_cache.stats == dataclasses.replace(before, builds=before.builds + 1, rejected=before.rejected + 1)
    record = json.loads(package.with_suffix(".json").read_text())
    assert record["key"] == key and record["sha256"] == fast_cache._sha256(package)
    assert not list(cache.glob(".build-*"))  # the build folder is gone
    agrees(model, rebuilt)


# ---- whole `regnet-validate --fast` runs in child processes ----------------------------------------------------


def validate(folder: Path, *extra: str, warnings_are_errors: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    """`regnet-validate` on the tiny model in `folder` as a new process; its result and JSON record."""
    argv = ["--weights", "tiny.safetensors", "--data", "val", "--workers", "0", "--quiet", "--json", "r.json", *extra]
    flags = ["-W", "error"] if warnings_are_errors else []
    cmd = [sys.executable, *flags, "-m", "regnet_convert.cli.validate", *argv]
    # the temporary folder (torch's global cache, /tmp/torchinductor_$USER, included) in `folder`: a test sees what
    # a run leaves there
    (folder / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "REGNET_CACHE": str(folder / "cache"), "TMPDIR": str(folder / "tmp")}
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    return done, (json.loads((folder / "r.json").read_text()) if done.returncode == 0 else {})


@pytest.fixture(scope="module")
def primed(fixtures, tmp_path_factory):
    """A folder with the tiny model, its images, and a cache filled by one `--fast` run (warnings are errors)."""
    folder = tmp_path_factory.mktemp("primed")
    copy_val(fixtures, folder)
    shutil.copy(fixtures.tiny_safetensors, folder / "tiny.safetensors")
    reference = validate(folder)[1]
    cold = validate(folder, "--fast", warnings_are_errors=True)
    return folder, reference, cold


def counts(record: dict) -> tuple[int, int, int]:
    return record["images"], record["top1"], record["top5"]


def test_fast_validation_prints_nothing_cold_or_cached(primed, tmp_path):
    folder, reference, (cold, record) = primed
    assert (cold.returncode, cold.stderr) == (0, ""), cold.stderr
    assert counts(record) == counts(reference) and counts(reference)[0] == 6
    cache = folder / "cache"
    files = snapshot(cache)
    assert len([name for name in files if name.endswith(".pt2")]) == 1
    # no file left in the temporary folder: inductor's precompiled headers (two, ~300 MB, a set of compiler flags)
    # stayed in /tmp/torchinductor_$USER, outside the cache
    assert snapshot(folder / "tmp") == {}
    cached, again = validate(folder, "--fast", warnings_are_errors=True)
    assert (cached.returncode, cached.stderr) == (0, ""), cached.stderr
    assert counts(again) == counts(reference)
    assert snapshot(cache) == files  # the entry was used as it was


def _cache_is_a_file(case: Path) -> None:
    (case / "cache").write_text("not a folder\n")


def _cache_inside_a_file(case: Path) -> None:
    (case / "file").write_text("not a folder\n")


def _damaged(edit):
    def setup(case: Path) -> None:
        shutil.copytree(case.parent / "primed-cache", case / "cache")
        (package,) = (case / "cache" / "aoti").glob("*.pt2")
        edit(package)

    return setup


HOSTILE = {
    "cache-is-a-file": (_cache_is_a_file, "cache"),
    "cache-inside-a-file": (_cache_inside_a_file, "file/cache"),
    "truncated-package": (_damaged(lambda p: p.write_bytes(p.read_bytes()[:4096])), "cache"),
    "garbage-package": (_damaged(lambda p: p.write_bytes(os.urandom(p.stat().st_size))), "cache"),
}


@pytest.mark.parametrize("case_id", list(HOSTILE))
def test_hostile_cache_is_rebuilt_or_bypassed(case_id, primed, zygote, tmp_path):
    """An unusable cache folder means compiling for this run only, with one warning naming it; a damaged entry is
    rebuilt, never loaded, silently. Either way: the reference counts, exit 0 (no traceback, no library warning).
    The compilation copies the primed package (the one it would compile; `primed` compiled it for real)."""
    folder, reference, _ = primed
    setup, cache = HOSTILE[case_id]
    shutil.copytree(folder / "cache", tmp_path / "primed-cache")
    case = tmp_path / "case"
    case.mkdir()
    copy_val_from(folder, case)
    setup(case)
    before = snapshot(case)
    argv = ["--weights", "tiny.safetensors", "--data", "val", "--workers", "0", "--quiet", "--json", "r.json"]
    (genuine,) = (tmp_path / "primed-cache" / "aoti").glob("*.pt2")  # compiling again would give it: copied
    env = {"REGNET_CACHE": str(case / cache)}
    outcome = zygote.run(VALIDATE, [*argv, "--fast"], case, env=env, seconds=300, compiled=genuine)
    unusable = case_id.startswith("cache-")
    why = "is not a folder" if case_id == "cache-is-a-file" else "cannot be used (Not a directory)"
    warning = f"warning: fast-path cache {case / cache}: {why}; not used, compiling for this run only\n"
    assert (outcome.code, outcome.stderr) == (0, warning if unusable else ""), outcome.stderr
    assert counts(json.loads((case / "r.json").read_text())) == counts(reference)
    after = {name: digest for name, digest in snapshot(case).items() if name != "r.json"}
    if unusable:
        assert after == before  # nothing written, the file in the way untouched
    else:
        (package,) = (case / "cache" / "aoti").glob("*.pt2")
        record = json.loads(package.with_suffix(".json").read_text())
        assert record["sha256"] == fast_cache._sha256(package) != before[f"cache/aoti/{package.name}"]
        (primed_record,) = (tmp_path / "primed-cache" / "aoti").glob("*.json")
        assert record["key"] == json.loads(primed_record.read_text())["key"]  # rebuilt in place


@pytest.mark.hostile
def test_validate_with_foreign_cache(primed, zygote, tmp_path):
    """A world-writable cache owned by another user: exit 0 with the reference counts, one warning on stderr
    naming the cache, nothing written into it. The compilation for this run only copies the primed package (the
    one it would compile; `primed` compiled it for real)."""
    folder, reference, _ = primed
    case = tmp_path / "case"
    case.mkdir()
    copy_val_from(folder, case)
    (genuine,) = (folder / "cache" / "aoti").glob("*.pt2")
    cache = case / "shared-cache"
    cache.mkdir()
    cache.chmod(0o777)
    os.chown(cache, NOBODY, NOBODY)
    argv = ["--weights", "tiny.safetensors", "--data", "val", "--workers", "0", "--quiet"]
    env = {"REGNET_CACHE": str(cache)}
    eager = zygote.run(VALIDATE, [*argv, "--json", "reference.json"], case, env=env, seconds=120)
    assert (eager.code, eager.stderr) == (0, "")
    fast = zygote.run(VALIDATE, [*argv, "--json", "fast.json", "--fast"], case, env=env, seconds=300, compiled=genuine)
    assert fast.code == 0, fast.stderr
    assert fast.stderr.splitlines() == [
        f"warning: fast-path cache {cache}: is owned by another user (uid {NOBODY}); not used, compiling for this "
        "run only"
    ]
    records = [json.loads((case / name).read_text()) for name in ("reference.json", "fast.json")]
    assert [counts(record) for record in records] == [counts(reference)] * 2 and counts(reference)[0] == 6
    assert not any(cache.iterdir())


def copy_val_from(folder: Path, case: Path) -> None:
    shutil.copytree(folder / "val", case / "val")
    shutil.copy(folder / "tiny.safetensors", case / "tiny.safetensors")
