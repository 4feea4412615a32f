"""The wheel, installed outside the source tree, works: its console scripts convert, inspect and validate.

The wheel is built from a copy of the source tree (a build writes `build/` and `*.egg-info` where it runs),
installed alone with `pip install --no-deps --target SITE`, and its scripts run from an empty folder with
`PYTHONPATH=SITE`, this environment's dependencies and a fresh HOME: the package's own files, data files
included, come from the wheel, and nothing is written into the source tree or the install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import regnet
import regnet_convert
from regnet.imagenet import wnids
from regnet_convert.demo import predictions
from regnet_convert.sources.pycls_format import write_pycls_checkpoint

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("regnet", "regnet_convert")
MODEL = "regnetx_200mf"
IMAGES = 4
# what is neither built nor packaged: left out of the copy the wheel is built from
NOT_COPIED = {".git", ".venv", "build", "dist", "checkpoints", "demo-output", ".pytest_cache", ".ruff_cache"}
SKIPPED = ("__pycache__", "*.egg-info", "*.pyc", "*.safetensors", "*.pyth", "*.part")


def tree(folder: Path, exclude: tuple[str, ...] = ()) -> set[str]:
    """Every path under `folder` (relative), leaving out bytecode caches and the top-level `exclude`."""
    paths = set()
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if relative.parts[0] in exclude or "__pycache__" in relative.parts:
            continue
        paths.add(relative.as_posix())
    return paths


def source_tree() -> set[str]:
    """The source tree's paths, outside the environment, git's own folder and the test caches."""
    return tree(ROOT, (".git", ".venv", ".pytest_cache", ".ruff_cache"))


def copy_source(destination: Path) -> Path:
    """A copy of what a build reads: the tree without virtual environments, git, caches or build outputs."""
    skip = shutil.ignore_patterns(*SKIPPED)

    def ignore(folder: str, names: list[str]) -> set[str]:
        ignored = set(skip(folder, names))
        if Path(folder) == ROOT:
            ignored |= {n for n in names if n in NOT_COPIED or (ROOT / n / "pyvenv.cfg").exists()}
        return ignored

    shutil.copytree(ROOT, destination, ignore=ignore)
    return destination


def pip(*args: str | Path) -> None:
    """This environment's pip, quietly, with no version check or prompt."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    subprocess.run([sys.executable, "-m", "pip", *map(str, args), "--quiet"], check=True, env=env)


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` of `source`, without build isolation when setuptools is here (no network needed)."""
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    pip("wheel", "--no-deps", *isolation, "-w", out, source)
    (wheel,) = out.glob("regnet_convert-*.whl")
    return wheel


def packaged_files() -> set[str]:
    """The files the packages need at run time: their modules and data files (not caches or editor leftovers)."""
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".orig", ".rej", ".swp")
    }


def write_val_folder(val: Path, model: torch.nn.Module) -> int:
    """A few small JPEGs filed under the WordNet id of the class `model` predicts for each; returns the count."""
    rng = np.random.default_rng(0)
    staging = val.parent / "generated"
    staging.mkdir()
    images = []
    for i in range(IMAGES):
        height, width = (96, 128) if i % 2 else (128, 96)
        x = np.mgrid[0:height, 0:width][1] / 128
        pixels = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)], axis=-1)
        pixels += rng.normal(0, 0.1, pixels.shape)
        path = staging / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.fromarray(((pixels + 1.5) / 3 * 255).clip(0, 255).astype(np.uint8)).save(path, quality=90)
        images.append(path)
    for path, label in zip(images, predictions(model, images), strict=True):
        (val / wnids()[label]).mkdir(parents=True, exist_ok=True)
        path.rename(val / wnids()[label] / path.name)
    staging.rmdir()
    return len(images)


def test_wheel_installed_elsewhere_runs_its_console_scripts(tmp_path):
    before = source_tree()

    # the wheel: every module and data file of both packages, and nothing else
    (tmp_path / "wheel").mkdir()
    wheel = build_wheel(copy_source(tmp_path / "source"), tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"regnet_convert-{regnet_convert.__version__}.dist-info"
        scripts = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert {"regnet/imagenet_wnids.txt", "regnet/__init__.py", "regnet_convert/__init__.py"} <= names
    assert any(name.endswith("/zoo.json") for name in names)  # the zoo table, wherever the packages keep it
    assert packaged_files() - names == set(), "files of the packages missing from the wheel"
    assert {name.split("/")[0] for name in names} == {*PACKAGES, dist_info}  # no tests/, bench/ or strays
    assert "regnet-convert = regnet_convert.cli.convert:run" in scripts
    assert "regnet-validate = regnet_convert.cli.validate:run" in scripts

    # the wheel alone, installed outside the source tree
    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-index", "--target", site, wheel)
    bin_dir = site / "bin"
    assert (bin_dir / "regnet-convert").is_file() and (bin_dir / "regnet-validate").is_file()
    installed = tree(site)

    # inputs: a pycls checkpoint and a tiny ImageNet-style val folder labelled by the model's own predictions
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    torch.manual_seed(0)
    original = regnet.create_model(MODEL).eval()
    source = write_pycls_checkpoint(original, inputs / "RegNetX-200MF_dds_8gpu.pyth", regnet.ZOO[MODEL])
    count = write_val_folder(inputs / "val", original)

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REGNET_CHECKPOINTS", "REGNET_CACHE", "REGNET_DEBUG")}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # the packages come from the install, not from the source tree (which is not importable from `work`)
    where = run("-c", "import regnet, regnet_convert.cli.convert as c, regnet_convert.cli.validate as v; "
                      "print(regnet.__file__, c.__file__, v.__file__, sep='\\n')")  # fmt: skip
    for path in where.split():
        assert Path(path).resolve().is_relative_to(site.resolve()), path

    convert, validate = str(bin_dir / "regnet-convert"), str(bin_dir / "regnet-validate")

    # zoo list: the seed table's 16 rows and pycls's 24 models from the packaged table; converted files are looked
    # for in ~/.cache (no ./checkpoints)
    seed, pycls = run(convert, "zoo", "list").split("\n\n")
    rows, models = seed.splitlines()[2:], pycls.splitlines()[2:]
    assert len(rows) == 16 and rows[0].startswith("RegNetX-400MF ") and rows[-1].startswith("RegNetX-12GF* ")
    assert {line.split()[0] for line in models} == {f"{name}.pycls_in1k" for name in regnet.ZOO}
    assert all(line.endswith("  no") for line in rows + models)
    assert tree(home) == set()  # listing creates no folder

    # a conversion writes where asked (relative to the working folder) and says where
    (work / "out").mkdir()
    printed = run(convert, "pycls", str(source), "out/regnetx_200mf.safetensors")
    output = work / "out" / "regnetx_200mf.safetensors"
    assert output.is_file()
    assert f"{source} -> out/regnetx_200mf.safetensors: {MODEL}" in printed
    assert tree(work) == {"out", "out/regnetx_200mf.safetensors"}

    described = run(convert, "inspect", str(output))
    assert f"model:        {MODEL}" in described and "classes:      1000" in described
    assert f"converter:    regnet-convert {regnet_convert.__version__}" in described

    # a small validation: every image in the class the unconverted model predicts, so 100% top-1
    report = run(validate, "--weights", str(output), "--data", str(inputs / "val"),
                 "--workers", "0", "--quiet", "--json", "r.json")  # fmt: skip
    result = json.loads((work / "r.json").read_text())
    assert result["model"] == MODEL and result["images"] == count and result["skipped_images"] == 0
    assert result["top1"] == 100.0 and result["top5"] == 100.0, report
    assert result["subset"] is True and result["passed"] is None  # 4 images judge nothing
    assert result["reference"]["pycls"] is not None  # compared with the zoo model's published numbers
    assert "measured" in report and "SUBSET" in report

    # the default place of converted files, from a folder without checkpoints/: ~/.cache/regnet-convert/checkpoints
    default = home / ".cache" / "regnet-convert" / "checkpoints"
    default.mkdir(parents=True)
    shutil.copy(output, default / f"{MODEL}.safetensors")
    models = run(convert, "zoo", "list").split("\n\n")[1].splitlines()[2:]
    assert {line.split()[0]: line.split()[-1] for line in models}[f"{MODEL}.pycls_in1k"] == "yes"

    assert tree(work) == {"out", "out/regnetx_200mf.safetensors", "r.json"}
    assert tree(site) == installed, "the commands wrote into the install"
    assert source_tree() == before, "files appeared in (or vanished from) the source tree"
