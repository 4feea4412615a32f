"""Issue 17's new inputs, refused: files named like a published one with another hash, declarations that contradict
the file's hash or architecture, weights tags that do not exist, converted files whose recorded identity does not
hold, weights in the checkpoints folder that are other weights than --model names, and --plot paths that are a
folder, an input or no picture.

The CLI cases run in a limited child (`hostile.refuse`: exit 2, no traceback, one `error:` line naming the input,
nothing changed or left behind). The cases that need a file the zoo knows by its hash use a manifest override (tests
only), in this process.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from crafted import Fixtures
from helpers import convert_file, native_model_with_random_bn
from hostile import Case, Zygote, refuse, snapshot
from safetensors.torch import load_file, save_file
from zoo_manifest import overridden

import regnet
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.export.pipeline import export
from regnet_convert.sources.pycls_format import write_pycls_checkpoint

pytestmark = pytest.mark.hostile

Setup = Callable[[Path, Fixtures], object]
TRAINED_400MF = "regnetx-400mf_8xb128_in1k_20211213-89bfc226.pth"
STARRED_400MF = "RegNetX-400MF-0db9f35c.pth"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A RegNetX-400MF (random weights) as a pycls checkpoint, converted, and exported in mmcls's format; a
    RegNetX-200MF in mmcls's format."""
    root = tmp_path_factory.mktemp("seed-hostile")
    pyth = write_pycls_checkpoint(
        native_model_with_random_bn("regnetx_400mf", seed=6), root / "x400.pyth", regnet.ZOO["regnetx_400mf"]
    )
    converted = convert_file(pyth, root / "x400.safetensors")
    export(converted, root / "x400.pth", "mmcls", False)
    small = write_pycls_checkpoint(
        native_model_with_random_bn("regnetx_200mf", seed=7), root / "x200.pyth", regnet.ZOO["regnetx_200mf"]
    )
    export(convert_file(small, root / "x200.safetensors"), root / "x200.pth", "mmcls", False)
    return {"pyth": pyth, "converted": converted, "mmcls": root / "x400.pth", "mmcls200": root / "x200.pth"}


FILES: dict[str, Path] = {}  # the module fixture's files, for the setups (filled by the autouse fixture below)


@pytest.fixture(autouse=True)
def _files(files):
    FILES.update(files)


def copy(kind: str, name: str) -> Setup:
    return lambda d, fx: shutil.copy(FILES[kind], d / name)


def zoo_copy(name: str) -> Setup:
    return lambda d, fx: shutil.copy(fx.zoo_pyth, d / name)


def with_metadata(name: str, **changes: str) -> Setup:
    """A converted RegNetX-200MF whose recorded identity is `changes`."""

    def setup(d: Path, fx: Fixtures) -> None:
        metadata = {**regnet.read_header(fx.zoo_safetensors).metadata, **changes}
        save_file(load_file(fx.zoo_safetensors), d / name, metadata={k: v for k, v in metadata.items() if v})

    return setup


def checkpoints(kind: str, name: str) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        (d / "ck").mkdir()
        shutil.copy(FILES[kind], d / "ck" / name)
        shutil.copytree(fx.val, d / "val")

    return setup


def val_and(*steps: Setup) -> Setup:
    return lambda d, fx: [shutil.copytree(fx.val, d / "val"), *(step(d, fx) for step in steps)]


def convert(id: str, fmt: str, source: str, setup: Setup, says: list[str], *options: str) -> Case:
    return Case(f"seed-{id}", "regnet-convert", [fmt, source, "out.safetensors", *options], setup, says)


def validate(id: str, argv: list[str], setup: Setup, says: list[str], env: dict[str, str] | None = None) -> Case:
    return Case(f"seed-{id}", "regnet-validate", [*argv, "--data", "val", "--quiet", "--workers", "0"], setup, says,
                env=env or {})  # fmt: skip


CASES = [
    # a file named like a published one, with another hash
    convert("named-like-trained-file", "mmcls", TRAINED_400MF, copy("mmcls", TRAINED_400MF),
            [TRAINED_400MF, "named like OpenMMLab's", "sha256 starts 89bfc226", "not that file"]),
    convert("named-like-starred-copy", "mmcls", STARRED_400MF, copy("mmcls", STARRED_400MF),
            [STARRED_400MF, "whose sha256 starts 0db9f35c", "not that file"]),
    convert("named-like-it-and-declared", "mmcls", TRAINED_400MF, copy("mmcls", TRAINED_400MF),
            [TRAINED_400MF, "not that file"], "--declare-weights", "regnetx_400mf.mmcls_in1k"),
    # declarations
    convert("declare-unknown-tag", "pycls", "x.pyth", zoo_copy("x.pyth"),
            ["--declare-weights 'regnetx_200mf.mmcls_in1k'", "regnetx_200mf has: regnetx_200mf.pycls_in1k"],
            "--declare-weights", "regnetx_200mf.mmcls_in1k"),
    convert("declare-no-such-tag", "pycls", "x.pyth", zoo_copy("x.pyth"),
            ["--declare-weights 'regnetx_200mf.imagenet'", "no weights"], "--declare-weights", "regnetx_200mf.imagenet"),
    convert("declare-unknown-model", "pycls", "x.pyth", zoo_copy("x.pyth"),
            ["--declare-weights 'regnetq_1gf.pycls_in1k'", "unknown model"], "--declare-weights", "regnetq_1gf.pycls_in1k"),
    convert("declare-empty", "pycls", "x.pyth", zoo_copy("x.pyth"), ["--declare-weights ''"], "--declare-weights", ""),
    convert("declare-other-architecture", "mmcls", "x.pth", copy("mmcls", "x.pth"),
            ["--declare-weights regnetx_800mf.mmcls_in1k", "declares regnetx_800mf weights", "holds regnetx_400mf"],
            "--declare-weights", "regnetx_800mf.mmcls_in1k"),
    convert("declare-custom-regnet", "pycls", "t.pyth", lambda d, fx: shutil.copy(fx.tiny_pyth, d / "t.pyth"),
            ["declares regnetx_400mf weights", "holds a custom RegNet"], "--declare-weights", "regnetx_400mf.mmcls_in1k"),
    # weights tags
    Case("seed-fetch-no-such-tag", "regnet-convert", ["zoo", "fetch", "regnetx_400mf.foo_in1k"], lambda d, fx: None,
         ["no weights 'regnetx_400mf.foo_in1k'", "regnetx_400mf.mmcls_in1k"]),
    Case("seed-fetch-no-such-file", "regnet-convert", ["zoo", "fetch", "RegNetX-400MF-00000000.pth"],
         lambda d, fx: None, ["RegNetX-400MF-00000000.pth"]),
    validate("model-no-such-tag", ["--model", "regnetx_400mf.mmcls_1k"], val_and(),
             ["--model", "no weights 'regnetx_400mf.mmcls_1k'"]),
    validate("model-tag-of-another-model", ["--model", "regnety_400mf.mmcls_in1k"], val_and(),
             ["--model", "regnety_400mf has: regnety_400mf.pycls_in1k"]),
    # converted files whose recorded identity does not hold
    validate("claims-a-hash-it-lacks", ["--weights", "w.safetensors"],
             val_and(with_metadata("w.safetensors", zoo_weights="regnetx_200mf.pycls_in1k", identified_by="sha256")),
             ["w.safetensors", "no published file has that sha256"]),
    validate("declared-other-architecture", ["--weights", "w.safetensors"],
             val_and(with_metadata("w.safetensors", zoo_weights="regnetx_400mf.mmcls_in1k", identified_by="declared")),
             ["w.safetensors", "declares regnetx_400mf weights", "holds regnetx_200mf"]),
    validate("declared-unknown-weights", ["--weights", "w.safetensors"],
             val_and(with_metadata("w.safetensors", zoo_weights="regnetx_200mf.mine", identified_by="declared")),
             ["w.safetensors", "which the zoo does not know"]),
    validate("unknown-identification", ["--weights", "w.safetensors"],
             val_and(with_metadata("w.safetensors", identified_by="a friend")),
             ["w.safetensors", "identified by 'a friend'"]),
    validate("identity-not-one-line", ["--weights", "w.safetensors"],
             val_and(with_metadata("w.safetensors", zoo_weights="regnetx_200mf\x1b[2J.pycls_in1k")),
             ["w.safetensors", "zoo_weights is not a printable string"]),
    validate("pycls-weights-as-mmcls", ["--model", "regnetx_400mf.mmcls_in1k"],
             checkpoints("converted", "regnetx_400mf.mmcls_in1k.safetensors"),
             ["regnetx_400mf.mmcls_in1k.safetensors", "holds regnetx_400mf.pycls_in1k (pycls-format",
              "not the --model regnetx_400mf.mmcls_in1k weights"], env={"REGNET_CHECKPOINTS": "ck"}),
    # --plot
    validate("plot-is-a-folder", ["--weights", "w.safetensors", "--plot", "p.png"],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.safetensors"), lambda d, fx: (d / "p.png").mkdir()),
             ["--plot", "p.png", "is a directory"]),
    validate("plot-is-the-weights", ["--weights", "w.svg", "--plot", "w.svg"],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.svg")), ["--plot w.svg", "input"]),
    validate("plot-is-the-json", ["--weights", "w.safetensors", "--json", "r.svg", "--plot", "r.svg"],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.safetensors")),
             ["--plot r.svg", "is the --json file too"]),
    validate("plot-in-the-data", ["--weights", "w.safetensors", "--plot", "val/p.png"],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.safetensors")), ["--plot", "val"]),
    validate("plot-not-a-picture", ["--weights", "w.safetensors", "--plot", "w.safetensors"],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.safetensors")),
             ["--plot w.safetensors", "not a .png or .svg"]),
    validate("plot-pdf", ["--weights", "w.safetensors", "--plot", "p.pdf"],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.safetensors")), ["--plot p.pdf", "FILE.png"]),
    validate("plot-empty", ["--weights", "w.safetensors", "--plot", ""],
             val_and(lambda d, fx: shutil.copy(fx.zoo_safetensors, d / "w.safetensors")), ["--plot", "FILE.svg"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


def known_as(path: Path, file: str) -> dict[str, dict]:
    """A manifest override: the published `file` has `path`'s hash prefix (and a name carrying it)."""
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return {file: {"name": file.replace(file[-12:-4], prefix), "hash_prefix": prefix}}


def refused_in_process(runner, argv: list[str], folder: Path, says: list[str]) -> None:
    before = snapshot(folder)
    result = runner.invoke(convert_main, argv)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and all(text in lines[0] for text in says), lines[0]
    assert snapshot(folder) == before


def test_a_declaration_that_contradicts_the_files_hash_is_refused(runner, files, tmp_path):
    source = shutil.copy(files["mmcls"], tmp_path / "x.pth")
    with overridden(known_as(source, TRAINED_400MF)):
        argv = ["mmcls", str(source), str(tmp_path / "out.safetensors"), "--declare-weights", "regnetx_400mf"]
        refused_in_process(runner, argv, tmp_path, [
            "--declare-weights regnetx_400mf.pycls_in1k", "declares regnetx_400mf.pycls_in1k",
            "sha256 identifies it as regnetx_400mf.mmcls_in1k"])  # fmt: skip
        agreeing = [
            "mmcls",
            str(source),
            str(tmp_path / "ok.safetensors"),
            "--declare-weights",
            "regnetx_400mf.mmcls_in1k",
        ]
        assert runner.invoke(convert_main, agreeing).exit_code == 0  # the same weights declared: the hash stands
        assert regnet.read_metadata(tmp_path / "ok.safetensors").identified_by == "sha256"


def test_a_known_hash_on_another_architecture_is_refused(runner, files, tmp_path):
    source = shutil.copy(files["mmcls200"], tmp_path / "x.pth")
    with overridden(known_as(source, TRAINED_400MF)):
        refused_in_process(runner, ["mmcls", str(source), str(tmp_path / "out.safetensors")], tmp_path,
                           ["x.pth", "has the sha256 of", "regnetx_400mf.mmcls_in1k", "holds regnetx_200mf"])  # fmt: skip
