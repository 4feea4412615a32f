"""The lock (`constraints.txt`): what `make test` installs is what it pins, and a tampered lock is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
LOCK = ROOT / "constraints.txt"
CHECK = ROOT / "tools" / "check_lock.py"
FLOORS = ROOT / "tools" / "floors.py"
VENV_TOOLS = ("pip", "setuptools", "wheel")  # the venv's own tools, which pip freeze leaves out
UNLOCKED = ("torch", "torchvision", "triton", "nvidia-", "cuda-", "regnet-convert")  # chosen by TORCH_SPEC / ours


def normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pins(text: str) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return {normal(line.split("==")[0]): line.split("==")[1] for line in lines if line}


def check(lock: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(lock)], capture_output=True, text=True, timeout=30)


def test_the_committed_lock_passes_its_check():
    done = check(LOCK)
    assert done.returncode == 0 and done.stderr == ""


def test_every_installed_package_is_the_locked_version():
    """The venv `make test` built holds exactly the lock's versions (torch's stack aside: TORCH_SPEC pins it)."""
    locked = pins(LOCK.read_text())
    site = [sysconfig.get_paths()["purelib"]]  # not sys.path: setuptools puts its vendored packages there
    installed = {normal(d.metadata["Name"]): d.version for d in metadata.distributions(path=site)}
    installed = {name: v for name, v in installed.items() if not name.startswith(UNLOCKED) and name not in VENV_TOOLS}
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}
    assert set(locked) <= set(installed)


def test_the_lock_holds_opencv_4_whose_arithmetic_the_known_answers_record():
    assert pins(LOCK.read_text())["opencv-python-headless"].startswith("4.")


def test_floors_are_the_pyprojects_lower_bounds():
    done = subprocess.run([sys.executable, str(FLOORS)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    floors = pins(done.stdout)
    assert floors["torch"] == "2.13" and floors["numpy"] == "1.24.0" and len(floors) == 9


TAMPERED = {
    "index-url": "--index-url https://example.org/simple\nnumpy==2.4.6\n",
    "extra-index": "numpy==2.4.6\n--extra-index-url http://evil.example/\n",
    "url": "numpy @ https://example.org/numpy.whl\n",
    "path": "./numpy-2.4.6.whl\n",
    "editable": "-e .\n",
    "include": "-r other.txt\n",
    "range": "numpy>=2\n",
    "marker": "numpy==2.4.6; python_version < '4'\n",
    "hash-option": "numpy==2.4.6 --hash=sha256:00\n",
    "twice": "numpy==2.4.6\nNumPy==2.4.5\n",
    "empty": "# nothing pinned\n",
    "not-utf8": "numpy==2.4.6\n\udcff\n",
}


@pytest.mark.parametrize("content", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_lock_is_refused_with_one_line(tmp_path, content):
    lock = tmp_path / "constraints.txt"
    lock.write_bytes(content.encode("utf-8", "surrogateescape"))
    done = check(lock)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {lock}"), done.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "huge", "missing"])
def test_a_lock_that_is_not_a_small_regular_file_is_refused(tmp_path, kind):
    lock = tmp_path / "constraints.txt"
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "folder":
        lock.mkdir()
    elif kind == "huge":
        lock.write_text("numpy==2.4.6\n" + "# padding\n" * 10_000)
    done = check(lock)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and str(lock) in done.stderr


def pip_sources(env: dict[str, str], config: str | None = None, tmp_path: Path | None = None) -> list[str]:
    """tools/pip_sources.py's uv options under `env` (PIP_* variables) and a pip.conf holding `config`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | env
    if config is not None and tmp_path is not None:
        (tmp_path / "pip.conf").write_text(config)
        environment["PIP_CONFIG_FILE"] = str(tmp_path / "pip.conf")  # pip then reads this file alone
    else:
        environment["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pip_sources.py"), sys.executable],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.split()


def test_uv_is_given_the_sources_pip_would_use(tmp_path):
    """pip's precedence (environment over the file), lists split, no-index as a flag, nothing for plain PyPI."""
    assert pip_sources({}) == []
    config = "[global]\nindex-url = https://mirror.example/simple\nfind-links = /a /b\n[install]\nno-index = yes\n"
    assert pip_sources({}, config, tmp_path) == [
        "--index-url", "https://mirror.example/simple", "--find-links", "/a", "--find-links", "/b", "--no-index",
    ]  # fmt: skip
    env = {"PIP_FIND_LINKS": "/c", "PIP_EXTRA_INDEX_URL": "file:///x/simple file:///y/simple"}
    assert pip_sources(env, config, tmp_path) == [
        "--index-url", "https://mirror.example/simple", "--extra-index-url", "file:///x/simple",
        "--extra-index-url", "file:///y/simple", "--find-links", "/c", "--no-index",
    ]  # fmt: skip
    assert "--no-index" not in pip_sources({"PIP_NO_INDEX": "false"}, config, tmp_path)
