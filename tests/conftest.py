"""Shared fixtures: a CLI runner and a converted model. Shared plain helpers are in helpers.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from crafted import Fixtures, build_fixtures
from helpers import convert_file, native_model_with_random_bn
from hostile import Zygote


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Downloads and compiled fast-path packages of this test session go to its own folder, never ~/.cache
    (set before any fixture forks a child process, which inherits it; tests that need another set their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGNET_CACHE", str(tmp_path_factory.mktemp("regnet-cache")))
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
