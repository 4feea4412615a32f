"""Hostile labels files for `regnet-validate --labels`: one image named twice, and files too long to parse.

Labels are keyed by the file they resolve to: two lines naming one image (`a.JPEG` and `./a.JPEG`, a Kaggle id
and its file name, a link to the same file) are refused, even when they agree, instead of counting the image
twice. Each case runs in a limited child process (`hostile.Zygote`) and keeps the refusal contract
(`hostile.check_refusal`): exit 2, one `error:` line naming the labels file, no traceback, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from crafted import Fixtures
from hostile import Case, Zygote, refuse

pytestmark = pytest.mark.hostile

Setup = Callable[[Path, Fixtures], object]
VALIDATE = "regnet-validate"
FLAT = ["--weights", "w.safetensors", "--data", "flat", "--workers", "0", "--quiet"]


def _flat(d: Path, fx: Fixtures) -> None:
    """Two images in a flat folder, v0.JPEG and v1.JPEG, and converted weights of 1000 classes."""
    (d / "flat").mkdir()
    for i, image in enumerate(sorted(fx.val.rglob("*.JPEG"))[:2]):
        shutil.copy(image, d / "flat" / f"v{i}.JPEG")
    shutil.copy(fx.tiny_safetensors, d / "w.safetensors")


def labels(text: str, name: str = "labels.txt", then: Callable[[Path], object] = lambda d: None) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        _flat(d, fx)
        then(d)
        (d / name).write_text(text)

    return setup


def _many_lines(count: int) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        _flat(d, fx)
        with open(d / "labels.txt", "w") as f:
            f.writelines(f"x{i}.JPEG {i % 1000}\n" for i in range(count))

    return setup


def case(id: str, setup: Setup, says: list[str], name: str = "labels.txt", seconds: float = 60) -> Case:
    return Case(f"labels-{id}", VALIDATE, [*FLAT, "--labels", name], setup, [name, *says], seconds=seconds)


CSV = "ImageId,PredictionString\n"
CASES = [
    case("dot-slash", labels("v0.JPEG 0\nv1.JPEG 1\n./v0.JPEG 0\n"), ["lines 1", "and 3", "same image"]),
    case("agreeing-duplicate", labels("v0.JPEG 0\nv1.JPEG 1\nv0.JPEG 0\n"), ["line 3", "'v0.JPEG' again", "line 1"]),
    case("double-slash", labels("v0.JPEG 0\nv1.JPEG 1\n.//v0.JPEG 0\n"), ["lines 1", "and 3", "same image"]),
    case(
        "kaggle-id-and-file-name",
        labels(CSV + "v0,n01440764 1 2 3 4\nv1,n01443537 1\nv0.JPEG,n01440764 1\n", "l.csv"),
        ["lines 2", "and 4", "same image"],
        name="l.csv",
    ),
    case(
        "hard-link",
        labels("v0.JPEG 0\nv1.JPEG 1\nv2.JPEG 0\n", then=lambda d: os.link(d / "flat/v0.JPEG", d / "flat/v2.JPEG")),
        ["lines 1", "and 3", "same image"],
    ),
    case(
        "symlink",
        labels("v0.JPEG 0\nv1.JPEG 1\nv2.JPEG 0\n", then=lambda d: os.symlink("v0.JPEG", d / "flat/v2.JPEG")),
        ["same image"],
    ),
    case("3.75-million-lines", _many_lines(3_750_000), ["3,750,000 lines", "at most 1,000,000"], seconds=20),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


def test_each_image_counts_once(fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    """Genuine files: Windows line ends, a byte-order mark and a Kaggle CSV give each image once."""
    for name, text in [
        ("crlf.txt", "\ufeffv0.JPEG 0\r\nv1.JPEG 1\r\n"),
        ("kaggle.csv", CSV + "v0,n01440764 1 2 3 4\nv1,n01443537 5 6 7 8\n"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        labels(text, name)(folder, fixtures)
        outcome = zygote.run(VALIDATE, [*FLAT, "--labels", name, "--json", "r.json"], folder)
        assert outcome.code in (0, 1) and "error" not in outcome.stderr, outcome.stderr
        assert json.loads((folder / "r.json").read_text())["images"] == 2
