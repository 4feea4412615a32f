"""Hostile inputs to `regnet-validate`: models and `--model`, options, `--json` outputs, labels files, data
folders and images; and accepted inputs that used to fail (every dtype, shared storage, a BOM).

Every case asserts the refusal contract (`hostile.refuse`, `hostile.check_refusal`): the documented exit status,
no traceback, one `error:` line naming the file or option, no leftover or temporary file, every file that existed
before byte-identical, all within the case's time and memory limits.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from crafted import (
    Fixtures,
    code_running_checkpoint,
    copy_val,
    deep_pickle,
    hdr_image,
    png_bytes,
    save,
    with_cfg,
    with_state,
)
from helpers import convert_file
from hostile import Case, Zygote, refuse
from hostile_setups import (
    CONVERT,
    OUT,
    VALIDATE,
    Setup,
    fifo,
    set_key,
    then,
)

pytestmark = pytest.mark.hostile


# ---- 7. validation: models, options, labels, data, images -----------------------------------------------


def _validate(id: str, argv: list[str], setup: Setup, says: list[str], code: int = 2, **kw) -> Case:
    return Case(
        id,
        VALIDATE,
        [*argv, "--workers", "0", "--quiet"],
        then(lambda d, fx: copy_val(fx, d), setup),
        says,
        code,
        **kw,
    )


def _weights(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.tiny_safetensors, d / "w.safetensors")


def _ten_classes(d: Path, fx: Fixtures) -> None:
    contents = fx.checkpoint(zoo=True)
    contents["model_state"]["head.fc.weight"] = contents["model_state"]["head.fc.weight"][:10].clone()
    contents["model_state"]["head.fc.bias"] = contents["model_state"]["head.fc.bias"][:10].clone()
    contents = with_cfg(contents, set_key("MODEL", "NUM_CLASSES", 10))
    save(contents, d / "src10.pyth")
    convert_file(d / "src10.pyth", d / "w10.safetensors")
    (d / "src10.pyth").unlink()


def _eps_variant(d: Path, fx: Fixtures) -> None:
    save(with_cfg(fx.checkpoint(zoo=True), set_key("BN", "EPS", 0.1)), d / "eps.pyth")
    convert_file(d / "eps.pyth", d / "eps.safetensors")
    (d / "eps.pyth").unlink()


def _labels(text: str | bytes, name: str = "labels.txt") -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        flat = d / "flat"
        flat.mkdir()
        for i, image in enumerate(sorted((d / "val").rglob("*.JPEG"))[:2]):
            shutil.copy(image, flat / f"v{i}.JPEG")
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def _image(name: str, data: Callable[[], bytes]) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        folder = next(p for p in sorted((d / "val").iterdir()) if p.is_dir())
        (folder / name).write_bytes(data())

    return setup


def _sparse_image(d: Path, fx: Fixtures) -> None:
    folder = next(p for p in sorted((d / "val").iterdir()) if p.is_dir())
    with open(folder / "huge.JPEG", "wb") as f:
        f.write(b"\xff\xd8\xff")
        f.truncate(65 << 20)  # sparse: 65 MB on paper, nothing on disk


def validation_cases() -> list[Case]:
    w = ["--weights", "w.safetensors", "--data", "val"]
    flat = ["--weights", "w.safetensors", "--data", "flat", "--labels", "labels.txt"]
    weights = _weights
    cases = [
        _validate(
            "ten-classes", ["--weights", "w10.safetensors", "--data", "val"], _ten_classes, ["has 10 classes", "1000"]
        ),
        _validate(
            "ten-classes-with-model",
            ["--weights", "w10.safetensors", "--data", "val", "--model", "regnetx_200mf"],
            _ten_classes,
            ["has 10 classes"],
        ),
        _validate(
            "model-option-other-eps",
            ["--weights", "eps.safetensors", "--data", "val", "--model", "regnetx_200mf"],
            _eps_variant,
            ["not the --model regnetx_200mf architecture"],
        ),
        _validate(
            "model-option-custom-file", [*w, "--model", "regnetx_200mf"], weights, ["not the --model regnetx_200mf"]
        ),
        _validate(
            "validate-model-option-unknown",
            ["--model", "regnetz_9gf", "--data", "val"],
            weights,
            ["--model", "unknown model"],
        ),
        _validate(
            "model-without-weights",
            ["--model", "regnetx_200mf", "--data", "val"],
            weights,
            ["no converted weights", "regnet-convert zoo fetch regnetx_200mf"],
            env={"REGNET_CHECKPOINTS": "ckpt"},
        ),
        _validate("no-model-no-weights", ["--data", "val"], weights, ["--model NAME or --weights FILE"]),
        _validate(
            "weights-fifo", ["--weights", "pipe", "--data", "val"], lambda d, fx: fifo(d, "pipe"), ["pipe", "FIFO"]
        ),
        _validate("weights-directory", ["--weights", "val", "--data", "val"], weights, ["val", "is a directory"]),
        _validate(
            "weights-missing", ["--weights", "nope.safetensors", "--data", "val"], weights, ["no such weights file"]
        ),
        _validate(
            "weights-jpeg",
            ["--weights", "val/n01440764/img_0_0.JPEG", "--data", "val"],
            weights,
            ["img_0_0.JPEG", "neither a PyTorch checkpoint nor a safetensors file"],
        ),
        _validate(
            "weights-pyth-code",
            ["--weights", "bad.pyth", "--data", "val"],
            lambda d, fx: code_running_checkpoint(d / "bad.pyth", str(d / "pwned")),
            ["refused to unpickle"],
        ),
        _validate(
            "weights-pyth-deep",
            ["--weights", "bad.pyth", "--data", "val"],
            lambda d, fx: (d / "bad.pyth").write_bytes(deep_pickle(200_000)),
            ["nests deeper"],
        ),
        _validate("tolerance-nan", [*w, "--tolerance", "nan"], weights, ["--tolerance", "finite"]),
        _validate("tolerance-inf", [*w, "--tolerance", "inf"], weights, ["--tolerance", "finite"]),
        _validate("tolerance-negative", [*w, "--tolerance", "-1"], weights, ["--tolerance"]),
        _validate("tolerance-text", [*w, "--tolerance", "abc"], weights, ["--tolerance", "not a number"]),
        _validate("batch-size-zero", [*w, "--batch-size", "0"], weights, ["--batch-size"]),
        _validate("limit-zero", [*w, "--limit", "0"], weights, ["--limit"]),
        _validate("preprocess-unknown", [*w, "--preprocess", "keras"], weights, ["--preprocess"]),
        _validate("unknown-option", [*w, "--frobnicate"], weights, ["--frobnicate"]),
        _validate("json-is-weights", [*w, "--json", "w.safetensors"], weights, ["--json", "is the input file"]),
        _validate(
            "json-symlink-to-weights",
            [*w, "--json", "r.json"],
            then(weights, lambda d, fx: os.symlink("w.safetensors", d / "r.json")),
            ["is the input file"],
        ),
        _validate(
            "json-is-labels",
            [*flat, "--json", "labels.txt"],
            then(weights, _labels("v0.JPEG 0\nv1.JPEG 1\n")),
            ["--json", "is the input file"],
        ),
        _validate("json-is-directory", [*w, "--json", "val"], weights, ["--json", "is a directory"]),
        _validate(
            "json-is-fifo", [*w, "--json", "pipe"], then(weights, lambda d, fx: fifo(d, "pipe")), ["--json", "FIFO"]
        ),
        _validate("json-is-device", [*w, "--json", "/dev/null"], weights, ["--json", "character device"]),
        _validate("json-dir-missing", [*w, "--json", "nodir/r.json"], weights, ["--json", "does not exist"]),
        _validate("json-under-a-file", [*w, "--json", "w.safetensors/r.json"], weights, ["--json"]),
        _validate(
            "data-missing", ["--weights", "w.safetensors", "--data", "nodata"], weights, ["nodata", "no such data"]
        ),
        _validate(
            "data-is-file", ["--weights", "w.safetensors", "--data", "w.safetensors"], weights, ["is not a directory"]
        ),
        _validate(
            "data-not-wnids", ["--weights", "w.safetensors", "--data", "."], weights, ["not ImageNet-1k WordNet ids"]
        ),
        _validate("labels-not-utf8", flat, then(weights, _labels(b"v0.JPEG 0\n\xff\xfe\x00bad 1\n")), ["not UTF-8"]),
        _validate(
            "labels-conflicting-duplicate",
            flat,
            then(weights, _labels("v0.JPEG 0\nv1.JPEG 1\nv0.JPEG 5\n")),
            ["labels.txt", "line 3", "'v0.JPEG'", "line 1"],
        ),
        _validate(
            "labels-csv-conflict",
            ["--weights", "w.safetensors", "--data", "flat", "--labels", "l.csv"],
            then(
                weights,
                _labels("ImageId,PredictionString\nv0,n01440764 1 2 3 4\nv1,n01443537 1\nv0,n01443537 5\n", "l.csv"),
            ),
            ["l.csv", "line 4"],
        ),
        _validate(
            "labels-fifo",
            ["--weights", "w.safetensors", "--data", "val", "--labels", "pipe"],
            then(weights, lambda d, fx: fifo(d, "pipe")),
            ["--labels", "FIFO"],
        ),
        _validate(
            "labels-missing",
            ["--weights", "w.safetensors", "--data", "val", "--labels", "nope.txt"],
            weights,
            ["nope.txt", "no such labels file"],
        ),
        _validate("labels-absolute-path", flat, then(weights, _labels("/etc/passwd 0\n")), ["not an image inside"]),
        _validate("labels-dot-dot", flat, then(weights, _labels("../w.safetensors 0\n")), ["not an image inside"]),
        _validate("labels-class-1000", flat, then(weights, _labels("v0.JPEG 1000\n")), ["line 1", "0..999"]),
        _validate("labels-three-columns", flat, then(weights, _labels("v0.JPEG 1 2\n")), ["line 1"]),
        _validate("labels-empty", flat, then(weights, _labels(b"")), ["labels.txt", "empty file"]),
        _validate("labels-only-blank-lines", flat, then(weights, _labels("\n\n")), ["holds no labels"]),
        _validate(
            "labels-unknown-wnid",
            ["--weights", "w.safetensors", "--data", "flat", "--labels", "l.csv"],
            then(weights, _labels("ImageId,PredictionString\nv0,n99999999 1\n", "l.csv")),
            ["not an ImageNet-1k id"],
        ),
        _validate(
            "labels-image-missing", flat, then(weights, _labels("v0.JPEG 0\nv1.JPEG 1\nv9.JPEG 1\n")), ["missing from"]
        ),
        _validate(
            "image-thin-png",
            w,
            then(weights, _image("thin.png", lambda: png_bytes(12000, 1))),
            ["thin.png", "aspect ratio"],
        ),
        _validate(
            "image-20000-square-png",
            w,
            then(weights, _image("big.png", lambda: png_bytes(20000, 20000))),
            ["big.png", "budget"],
        ),
        _validate("image-65-megabytes", w, then(weights, _sparse_image), ["huge.JPEG", "too large"]),
        _validate("image-garbage", w, then(weights, _image("junk.JPEG", lambda: os.urandom(2000))), ["junk.JPEG"]),
        _validate(
            "image-hdr-8000-wide",
            w,
            then(weights, _image("wide.JPEG", lambda: hdr_image(8000, 1))),
            ["wide.JPEG", "not a JPEG, PNG, WebP, BMP or TIFF"],
        ),
        _validate("labels-superscript-digit", flat, then(weights, _labels("v0.JPEG \u00b2\n")), ["line 1", "0..999"]),
        _validate(
            "labels-name-over-255-bytes",
            flat,
            then(weights, _labels("x" * 300 + ".JPEG 1\n")),
            ["line 1", "not an image inside"],
        ),
        _validate(
            "labels-csv-huge-field",
            ["--weights", "w.safetensors", "--data", "flat", "--labels", "l.csv"],
            then(weights, _labels("ImageId,PredictionString\n" + "v" * 200_000 + ",n01440764 1\n", "l.csv")),
            ["l.csv", "line 2", "not CSV"],
        ),
        _validate("image-empty", w, then(weights, _image("empty.JPEG", lambda: b"")), ["empty.JPEG", "empty file"]),
        _validate(
            "image-truncated-jpeg",
            w,
            then(
                weights,
                lambda d, fx: _image(
                    "cut.JPEG",
                    lambda: (d / "val").joinpath(sorted(os.listdir(d / "val"))[0], "img_0_0.JPEG").read_bytes()[:3000],
                )(d, fx),
            ),
            ["cut.JPEG", "truncated JPEG"],
        ),
        _validate(
            "image-zero-sized-png-header", w, then(weights, _image("z.png", lambda: png_bytes(1, 1)[:16])), ["z.png"]
        ),
    ]
    return cases


CASES = validation_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


# ---- accepted inputs that used to fail: every dtype validates, odd but legal inputs work ---------------------


def _converted(dtype: str | None, *options: str) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        convert_file(fx.tiny_pyth, d / "w.safetensors", dtype=dtype, **({"rgb": True} if "rgb" in options else {}))

    return setup


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("path", [[], ["--fast"], ["--channels-last"]], ids=["reference", "fast", "channels-last"])
@pytest.mark.slow
def test_every_dtype_validates_in_float32(dtype, path, fixtures, zygote, tmp_path):
    """Weights that float16 and bfloat16 both hold exactly: every dtype is the same float32 model, so of the three
    `--fast` cases the first compiles and the others load its package from the session's cache."""
    folder = tmp_path / "case"
    folder.mkdir()
    copy_val(fixtures, folder)

    def narrowed(state: dict) -> None:
        wide = {k: v.half().bfloat16().float() if v.is_floating_point() else v for k, v in state.items()}
        state.update({k: v.double() for k, v in wide.items()} if dtype == "float64" else wide)

    save(with_state(fixtures.checkpoint(), narrowed), folder / "d.pyth")
    convert_file(folder / "d.pyth", folder / "w.safetensors", dtype=None if dtype == "float64" else dtype)
    argv = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--quiet", "--json", "r.json", *path]
    outcome = zygote.run(VALIDATE, argv, folder, seconds=300)  # --fast compiles: minutes on a loaded 2-core box
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr  # no traceback, no library warning
    assert f"weights stored as {dtype}, computed in float32" in outcome.stdout
    record = __import__("json").loads((folder / "r.json").read_text())
    assert record["weights_dtype"] == dtype and record["computed_in"] == "float32" and record["images"] == 6


def test_every_dtype_gives_the_float32_counts(fixtures, zygote, tmp_path):
    """A float16 copy of the weights is computed in float32: same top-1/top-5 counts as the float32 file."""
    records = []
    for dtype in (None, "float16"):
        folder = tmp_path / str(dtype)
        folder.mkdir()
        copy_val(fixtures, folder)
        _converted(dtype)(folder, fixtures)
        argv = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--quiet", "--json", "r.json"]
        assert zygote.run(VALIDATE, argv, folder).code == 0
        records.append(__import__("json").loads((folder / "r.json").read_text()))
    assert records[0]["images"] == records[1]["images"] == 6


def test_shared_storage_and_bom_labels_are_accepted(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()

    def share(state: dict) -> None:
        state["s1.b1.f.a_bn.bias"] = state["s1.b1.f.a_bn.weight"]  # one storage, two names

    save(with_state(fixtures.checkpoint(), share), folder / "src.pyth")
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "-q"], folder).code == 0
    copy_val(fixtures, folder)
    _labels("\ufeffImageId,PredictionString\nv0,n01440764 1\nv1,n01443537 1\n", "l.csv")(folder, fixtures)
    argv = ["--weights", OUT, "--data", "flat", "--labels", "l.csv", "--workers", "0", "--quiet"]
    outcome = zygote.run(VALIDATE, argv, folder)
    assert outcome.code == 0 and "images      2" in outcome.stdout, outcome.stderr


def test_result_is_printed_when_json_cannot_be_written_late(fixtures, tmp_path, monkeypatch, runner):
    """A --json write that fails after the evaluation still leaves the accuracy on the terminal."""
    from regnet_convert.cli import validate as cli_validate
    from regnet_convert.errors import InputError

    copy_val(fixtures, tmp_path)

    def failing_write(path, record, inputs=()):
        raise InputError(f"--json {path}", "writing failed (No space left on device); nothing was written")

    monkeypatch.setattr(cli_validate, "write_json", failing_write)
    argv = ["--weights", str(fixtures.tiny_safetensors), "--data", str(tmp_path / "val"), "--workers", "0", "--quiet",
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    result = runner.invoke(cli_validate.main, argv)
    assert result.exit_code == 2 and "measured" in result.stdout and "images      6" in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"error: --json {tmp_path / 'r.json'}: writing failed (No space left on device); nothing was written"
    ]


def test_manifest_is_not_needed_in_regnet_checkpoints(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    (folder / "ckpt").mkdir(parents=True)
    copy_val(fixtures, folder)
    shutil.copy(fixtures.zoo_safetensors, folder / "ckpt" / "regnetx_200mf.safetensors")
    argv = ["--model", "regnetx_200mf", "--data", "val", "--workers", "0", "--quiet"]
    outcome = zygote.run(VALIDATE, argv, folder, env={"REGNET_CHECKPOINTS": "ckpt"})
    assert outcome.code == 0 and "pycls" in outcome.stdout and "68.9" in outcome.stdout, outcome.stderr
