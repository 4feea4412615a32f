"""The README's `sh` and `python` examples run, as written, on demo data: an example that stops working fails here.

`console` blocks are shown, not run (installs, torchrun). The only substitution is the ImageNet folder: the
examples' `/imagenet/val` becomes a folder of generated JPEGs. The pycls checkpoint they name is written with random
weights in pycls's own format.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import native_model_with_random_bn
from images import synthetic, write_image

import regnet
from regnet_convert.sources.pycls_format import write_pycls_checkpoint

pytestmark = pytest.mark.slow

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
IMAGENET = "/imagenet/val"


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def test_the_readme_opens_with_the_two_commands_and_stays_short():
    text = README.read_text()
    first = BLOCK.search(text)
    assert first is not None and first.group(1) == "sh"
    assert [line.split("#")[0].strip() for line in first.group(2).splitlines()] == ["make demo", "make test"]
    assert text.index(first.group(0)) < 40 and len(text.splitlines()) <= 150
    assert {lang for lang, _ in BLOCK.findall(text)} <= {"sh", "python", "console"}
    assert blocks("sh") and blocks("python")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding what the examples name: the pycls checkpoint and an ImageNet-like folder."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "checkpoints").mkdir()
    model = native_model_with_random_bn("regnetx_4.0gf", seed=5)
    write_pycls_checkpoint(model, folder / "RegNetX-4.0GF_dds_8gpu.pyth", regnet.ZOO["regnetx_4.0gf"])
    for i in range(8):
        wnid = ("n01440764", "n01443537")[i % 2]
        write_image(folder / "imagenet" / "val" / wnid / f"{i}.JPEG", synthetic(320, 260, seed=i))
    return folder


def environment(workdir: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "REGNET_CACHE": str(workdir / "cache")}


def noise(stderr: str) -> list[str]:
    """What stderr holds besides progress bars (tqdm's `validating: ...` lines, rewritten with carriage returns)."""
    parts = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [part for part in parts if part and not part.startswith("validating")]


@pytest.fixture(scope="module")
def shell_runs(workdir) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Every shell example, run once, in order, in the work folder."""
    commands = [line for block in blocks("sh") for line in block.splitlines()]
    commands = [c.split("  #")[0].strip() for c in commands if c.strip() and not c.startswith("make ")]
    runs = []
    for command in commands:
        line = command.replace(IMAGENET, "imagenet/val")
        done = subprocess.run(["bash", "-c", line], cwd=workdir, env=environment(workdir), capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        runs.append((command, done))
    return runs


def test_every_shell_example_runs(shell_runs):
    assert any(c.startswith("regnet-convert pycls") for c, _ in shell_runs)
    assert any(c.startswith("regnet-validate") for c, _ in shell_runs)
    for command, done in shell_runs:
        assert done.returncode == 0, f"README example {command!r} exited {done.returncode}:\n{done.stderr}"
        assert noise(done.stderr) == [], f"README example {command!r} printed on stderr:\n{done.stderr}"


def test_every_python_example_runs(workdir, shell_runs):
    assert all(done.returncode == 0 for _, done in shell_runs)  # the examples use the file the shell examples wrote
    for block in blocks("python"):
        done = subprocess.run([sys.executable, "-c", block], cwd=workdir, env=environment(workdir),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, f"README example failed:\n{block}\n{done.stderr}"
        assert noise(done.stderr) == [], done.stderr
