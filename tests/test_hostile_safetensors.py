"""Converted files that are damaged or crafted, given to `inspect`, `regnet-validate` (each run in a limited child
process) and `regnet.load`.

Every case asserts the refusal contract (`hostile.refuse`, `hostile.check_refusal`): the documented exit status,
no traceback, one `error:` line naming the file or option, no leftover or temporary file, every file that existed
before byte-identical, all within the case's time and memory limits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted import (
    Fixtures,
    copy_val,
    deep_pickle,
    edit_header,
    edit_metadata,
    edit_tensors,
    join_safetensors,
    nested_json,
    split_safetensors,
    zero_size_tensors,
)
from hostile import Case, Zygote, refuse
from hostile_setups import (
    CONVERT,
    STEM,
    VALIDATE,
    Setup,
    architecture_edit,
    bytes_file,
    cfg_edit,
    fifo,
    replace_tensor,
    set_key,
    state_edit,
    then,
)

pytestmark = pytest.mark.hostile


# ---- 6. converted files that are damaged or crafted -------------------------------------------------------


def _header(edit: Callable[[dict], None]) -> Setup:
    return lambda d, fx: edit_header(fx.tiny_safetensors, d / "bad.safetensors", edit)


def _metadata(**changes: str) -> Setup:
    return lambda d, fx: edit_metadata(fx.tiny_safetensors, d / "bad.safetensors", **changes)


def _tensors(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    return lambda d, fx: edit_tensors(fx.zoo_safetensors if zoo else fx.tiny_safetensors, d / "bad.safetensors", edit)


def _first_tensor(header: dict) -> dict:
    return next(v for k, v in header.items() if k != "__metadata__")


def _overlap(header: dict) -> None:
    """Two same-sized tensors described as one span of bytes (so another span is never covered)."""
    entries = sorted((v for k, v in header.items() if k != "__metadata__"), key=lambda e: e["data_offsets"])
    first, second = next((a, b) for a, b in itertools.pairwise(entries) if a["shape"] == b["shape"])
    second["data_offsets"] = first["data_offsets"]


def _raw_header(text: bytes) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        _, data = split_safetensors(fx.tiny_safetensors)
        join_safetensors(d / "bad.safetensors", text, data)

    return setup


def _huge_length(d: Path, fx: Fixtures) -> None:
    header, data = split_safetensors(fx.tiny_safetensors)
    join_safetensors(d / "bad.safetensors", header, data, length=1 << 60)


def _set_depth(depth: int) -> Callable[[dict], None]:
    def edit(arch: dict) -> None:
        arch["stages"][0]["depth"] = depth

    return edit


def damaged_safetensors() -> list[tuple[str, Setup, str]]:
    """(id, setup writing bad.safetensors, text of the refusal)."""
    return [
        ("truncated", bytes_file(lambda fx: fx.tiny_safetensors.read_bytes()[:-1000]), "truncated or damaged"),
        ("header-only", bytes_file(lambda fx: fx.tiny_safetensors.read_bytes()[:300]), "safetensors"),
        ("eight-bytes", bytes_file(lambda fx: b"\x10" + b"\0" * 7), "safetensors"),
        ("huge-header-length", _huge_length, "header claims"),
        ("header-not-json", _raw_header(b"{not json at all}"), "not JSON"),
        ("header-json-array", _raw_header(b"[1, 2, 3]"), "neither a PyTorch checkpoint nor a safetensors file"),
        ("header-nested-100000", _raw_header(b"{" + nested_json(100_000)[1:]), "not JSON"),
        ("overlapping-offsets", _header(_overlap), "overlaps or leaves gaps"),
        ("offsets-past-end", _header(lambda h: _first_tensor(h).__setitem__("data_offsets", [0, 10**12])), "offsets"),
        ("dtype-i32", _header(lambda h: _first_tensor(h).__setitem__("dtype", "I32")), "integer or boolean"),
        ("dtype-unknown", _header(lambda h: _first_tensor(h).__setitem__("dtype", "Q99")), "unknown dtype"),
        ("shape-negative", _header(lambda h: _first_tensor(h).__setitem__("shape", [-1, 3])), "malformed shape"),
        ("shape-string", _header(lambda h: _first_tensor(h).__setitem__("shape", "big")), "malformed shape"),
        ("metadata-not-strings", _header(lambda h: h["__metadata__"].__setitem__("format", 5)), "map of strings"),
        ("not-ours", _header(lambda h: h.pop("__metadata__")), "not a regnet-convert file"),
        ("format-version-9", _metadata(format_version="9"), "unsupported format version"),
        ("architecture-not-json", _metadata(architecture="{]"), "damaged regnet-convert metadata"),
        (
            "architecture-deep-json",
            _metadata(architecture="[" * 50_000 + "]" * 50_000),
            "damaged regnet-convert metadata",
        ),
        (
            "architecture-depth-string",
            architecture_edit(lambda a: a["stages"][0].__setitem__("depth", "1")),
            "not an integer",
        ),
        ("architecture-depth-1e8", architecture_edit(_set_depth(100_000_000)), "implausible RegNet: 100000002 blocks"),
        ("architecture-depth-1e8-zoo", architecture_edit(_set_depth(100_000_000), zoo=True), "implausible RegNet"),
        ("architecture-depth-zero", architecture_edit(_set_depth(0)), "must be positive"),
        (
            "architecture-width-1e30",
            architecture_edit(lambda a: a["stages"][0].__setitem__("width", 10**30)),
            "implausible",
        ),
        ("architecture-classes-1e30", architecture_edit(lambda a: a.__setitem__("num_classes", 10**30)), "implausible"),
        (
            "architecture-stride-1e30",
            architecture_edit(lambda a: a["stages"][0].__setitem__("stride", 10**30)),
            "implausible",
        ),
        ("architecture-se-1e300", architecture_edit(lambda a: a.__setitem__("se_ratio", 1e300)), "implausible"),
        (
            "zero-size-tensors-deep",
            lambda d, fx: zero_size_tensors(fx.tiny_safetensors, d / "bad.safetensors", 30_000),
            "implausible RegNet",
        ),
        (
            "architecture-unknown-field",
            architecture_edit(lambda a: a.__setitem__("dropout", 0.5)),
            "unknown architecture field",
        ),
        ("architecture-eps-negative", architecture_edit(lambda a: a.__setitem__("bn_eps", -1.0)), "BN eps"),
        (
            "model-name-lies",
            architecture_edit(lambda a: a.__setitem__("name", "regnetx_400mf"), zoo=True),
            "not that model",
        ),
        ("model-name-unknown", architecture_edit(lambda a: a.__setitem__("name", "regnetq_1gf")), "not that model"),
        ("channel-order-xyz", _metadata(channel_order="XYZ"), "not one of BGR, RGB"),
        ("mean-nan", _metadata(mean="[NaN, 0.4, 0.4]"), "implausible mean or std"),
        ("std-zero", _metadata(std="[0, 0.2, 0.2]"), "implausible mean or std"),
        ("crop-over-resize", _metadata(test_crop="300"), "larger than the test resize"),
        ("resize-huge", _metadata(test_resize="100000"), "implausible test size"),
        ("layout-unknown", _metadata(layout="keras"), "not one of native, timm"),
        ("categories-wrong-count", _metadata(categories='["n01440764"]'), "are not one per class (1000)"),
        ("categories-not-a-list", _metadata(categories="5"), "categories must be a list"),
        ("missing-tensor", _tensors(lambda s: s.pop("stem.bn.running_var")), "missing"),
        ("extra-tensor", _tensors(lambda s: s.__setitem__("extra.weight", torch.zeros(2))), "not part of this model"),
        (
            "misshapen-tensor",
            _tensors(lambda s: s.__setitem__("head.fc.bias", torch.zeros(999))),
            "head.fc.bias is [999]",
        ),
        ("integer-tensor", _tensors(lambda s: s.__setitem__("head.fc.bias", s["head.fc.bias"].long())), "integer"),
        ("mixed-dtypes", _tensors(lambda s: s.__setitem__("head.fc.bias", s["head.fc.bias"].half())), "mix dtypes"),
        ("nan-values", _tensors(lambda s: s["head.fc.bias"].fill_(float("nan"))), "NaN"),
        ("empty", bytes_file(lambda fx: b""), "empty file"),
    ]


def safetensors_cases() -> list[Case]:
    cases = []
    for id, setup, text in damaged_safetensors():
        if id != "nan-values":  # inspect reads the header only, never the tensors' values
            cases.append(
                Case(f"inspect-{id}", CONVERT, ["inspect", "bad.safetensors"], setup, ["bad.safetensors", text])
            )
        cases.append(
            Case(
                f"validate-{id}",
                VALIDATE,
                ["--weights", "bad.safetensors", "--data", "val", "--workers", "0", "--quiet"],
                then(setup, lambda d, fx: copy_val(fx, d)),
                ["bad.safetensors", text],
            )
        )
    cases += [
        Case("inspect-fifo", CONVERT, ["inspect", "pipe"], lambda d, fx: fifo(d, "pipe"), ["pipe", "is a FIFO"]),
        Case("inspect-directory", CONVERT, ["inspect", "adir"], lambda d, fx: (d / "adir").mkdir(), ["is a directory"]),
        Case("inspect-missing", CONVERT, ["inspect", "nope"], lambda d, fx: None, ["nope", "no such file"]),
        Case(
            "inspect-pyth-deep-pickle",
            CONVERT,
            ["inspect", "bad.pyth"],
            lambda d, fx: (d / "bad.pyth").write_bytes(deep_pickle(100_000)),
            ["nests deeper"],
        ),
        Case(
            "inspect-pyth-cfg-depth-1e8",
            CONVERT,
            ["inspect", "bad.pyth"],
            cfg_edit(set_key("ANYNET", "DEPTHS", [100_000_000, 1])),
            ["at most"],
        ),
        Case(
            "inspect-pyth-int-tensor",
            CONVERT,
            ["inspect", "bad.pyth"],
            state_edit(replace_tensor(STEM, lambda t: t.int())),
            ["is int32"],
        ),
    ]
    return cases


CASES = safetensors_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


@pytest.mark.parametrize(("id", "setup", "text"), damaged_safetensors(), ids=[c[0] for c in damaged_safetensors()])
def test_regnet_load_refuses_damaged_files(id, setup, text, fixtures, tmp_path):
    """The Python API gives the same one-line reasons as a WeightsFileError (a ValueError)."""
    import regnet

    setup(tmp_path, fixtures)
    with pytest.raises(ValueError) as caught:
        regnet.load(tmp_path / "bad.safetensors")
    if "neither" in text or "empty" in text:
        return  # the CLI's own sniffing words; the API says why it is no safetensors file
    assert text in str(caught.value) and "\n" not in str(caught.value)
