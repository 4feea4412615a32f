"""Shared fixtures: a CLI runner, a converted model, one thread per test module; and the run's preconditions
(the oracles installed, one thread per parallel worker). Shared plain helpers are in helpers.py."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from crafted import Fixtures, build_fixtures
from helpers import convert_file, native_model_with_random_bn, one_torch_thread
from hostile import Zygote
from package_store import STORE as PACKAGES
from package_store import PackageStore
from zoo_sources import STORE as ZOO
from zoo_sources import ZooSources, run_folder

from regnet_convert.fs import outputs

# Test-only oracles that the `test` extra cannot pin (their own pins would swap torch): the Makefile installs them.
ORACLES = {"pycls": "0.1.1", "mmcv": "1.7.2", "mmcls": "0.25.0"}
SHM = "/dev/shm"  # memory-backed on Linux


def pytest_configure(config: pytest.Config) -> None:
    """Refuse the run, with one line, where the oracles are missing (`pip install -e .[test]` alone); put the run's
    temporary folders in memory where there is room (`memory_has_room`; `--basetemp`, $PYTEST_DEBUG_TEMPROOT or
    $TMPDIR choose otherwise); and give each pytest-xdist worker one thread (two spin-waiting OpenMP pools on two
    cores lose ~10x)."""
    missing = [name for name in ORACLES if importlib.util.find_spec(name) is None]
    if missing:
        wanted = ", ".join(f"{name} {version}" for name, version in ORACLES.items())
        raise pytest.UsageError(
            f"the test oracles {wanted} are installed by `make install` (see the Makefile), not by the test extra; "
            f"missing: {', '.join(missing)}"
        )
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # for the child processes too
        torch.set_num_threads(1)
    elif config.option.basetemp is None and memory_has_room():  # the workers' folders are inside the controller's
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", SHM)


def memory_has_room(needed: int = 12 << 30) -> bool:
    """Whether the run's temporary folders can live in SHM: a tmpfs with room for a run (the zoo store and the
    exports of the largest models, ~8 GB at most) that runs what is written there (the fast path loads compiled
    libraries), and no $TMPDIR the user chose. Writing the zoo models' files to memory rather than this machine's
    disk saves ~35 s of a run; pytest still keeps only failed tests' folders and removes the rest when a run
    passes."""
    if os.environ.get("TMPDIR"):
        return False
    try:
        stats = os.statvfs(SHM)
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) << 10
    except (OSError, KeyError, ValueError):
        return False
    roomy = stats.f_bavail * stats.f_frsize >= needed and available >= needed + (4 << 30)
    mounted_without = getattr(os, "ST_NOEXEC", 0) | getattr(os, "ST_RDONLY", 0)
    return roomy and not stats.f_flag & mounted_without and os.access(SHM, os.W_OK | os.X_OK)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (not an xdist worker) removes the run's shared stores (3 GB of zoo models, compiled
    packages) once every worker is done."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and not hasattr(session.config, "workerinput"):
        for store in (ZOO, PACKAGES):
            shutil.rmtree(run_folder(factory.getbasetemp()) / store, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Downloads and compiled fast-path packages of this test session go to its own folder, never ~/.cache
    (set before any fixture forks a child process, which inherits it; tests that need another set their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGNET_CACHE", str(tmp_path_factory.mktemp("regnet-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def outputs_not_forced_to_disk():
    """In the test processes (not the command-line children) outputs are written, renamed into place and checked
    as ever, but not forced to the disk: no test can observe durability across a power loss, and fsync of the
    zoo models' files cost the suite about a minute of waiting on this machine's disk. test_outputs.py checks
    that every output is forced to the disk before it appears."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outputs, "_fsync", lambda path: None)
        yield


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> Fixtures:
    """Genuine and crafted inputs the hostile suites copy into each case's folder (read-only)."""
    return build_fixtures(tmp_path_factory.mktemp("genuine"))


@pytest.fixture(scope="session")
def zygote():
    """One process that imports the command-line tools once and forks a limited child per hostile case."""
    process = Zygote()
    yield process
    process.close()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def converted_200mf(tmp_path_factory):
    """A converted RegNetX-200MF with random weights and BN statistics, and its original."""
    import regnet
    from regnet_convert.sources.pycls_format import write_pycls_checkpoint

    folder = tmp_path_factory.mktemp("converted")
    original = native_model_with_random_bn("regnetx_200mf", seed=1)
    source = write_pycls_checkpoint(original, folder / "RegNetX-200MF.pyth", regnet.ZOO["regnetx_200mf"])
    return convert_file(source, folder / "regnetx_200mf.safetensors"), original


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): 64x64 forwards gain
    little from threads, and two spin-waiting OpenMP threads on a shared 2-core box lose a lot."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def zoo_sources(tmp_path_factory) -> ZooSources:
    """Each zoo model's pycls checkpoint converted once in this run, with pycls's logits (zoo_sources.py)."""
    return ZooSources(run_folder(tmp_path_factory.getbasetemp()) / ZOO)


@pytest.fixture(scope="session")
def compile_once(tmp_path_factory) -> PackageStore:
    """Fast-path packages compiled once in this run: `compile_once.compile` replaces `fast_cache._compile`
    (package_store.py)."""
    return PackageStore(run_folder(tmp_path_factory.getbasetemp()) / PACKAGES)
