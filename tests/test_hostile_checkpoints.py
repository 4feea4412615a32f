"""Hostile checkpoints to `regnet-convert pycls|mmcls`: files that are not checkpoints, damaged pickles and
zips, tensors that cannot be RegNet weights, and state-dict keys (each run in a limited child process).

Every case asserts the refusal contract (`hostile.refuse`, `hostile.check_refusal`): the documented exit status,
no traceback, one `error:` line naming the file or option, no leftover or temporary file, every file that existed
before byte-identical, all within the case's time and memory limits.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted import (
    Fixtures,
    code_running_checkpoint,
    deep_list_pickle,
    deep_pickle,
    raw_pickle,
    shortened_record,
    torch_zip,
    with_state,
)
from hostile import Case, Zygote, refuse
from hostile_setups import (
    CONVERT,
    OUT,
    STEM,
    convert_case,
    fifo,
    pyth,
    replace_tensor,
    state_edit,
)

pytestmark = pytest.mark.hostile


# ---- 1. files that are not checkpoints, damaged pickles and zips ---------------------------------------


def _truncated(fx: Fixtures, d: Path, legacy: bool) -> None:
    path = d / "whole.pyth"
    torch.save(fx.checkpoint(), path, _use_new_zipfile_serialization=not legacy)
    raw = path.read_bytes()
    path.unlink()
    (d / "bad.pyth").write_bytes(raw[: len(raw) // 2])


def _marker_case() -> Case:
    return convert_case(
        "pickle-runs-os-system",
        lambda d, fx: code_running_checkpoint(d / "bad.pyth", str(d / "pwned")),
        ["refused to unpickle", "system"],
    )


def damaged_checkpoints() -> list[Case]:
    cases = [
        *(
            convert_case(
                f"random-bytes-{seed}",
                lambda d, fx, seed=seed: (d / "bad.pyth").write_bytes(random.Random(seed).randbytes(4096)),
                ["not a PyTorch checkpoint"],
            )
            for seed in range(12)  # some decode as pickles asking for gigabytes (caught once as an out-of-memory)
        ),
        convert_case(
            "random-bytes-after-proto",
            lambda d, fx: (d / "bad.pyth").write_bytes(b"\x80\x02" + random.Random(99).randbytes(4096)),
            ["not a PyTorch checkpoint"],
        ),
        convert_case("text-file", lambda d, fx: (d / "bad.pyth").write_text("hello\n"), ["not a PyTorch checkpoint"]),
        convert_case("empty-file", lambda d, fx: (d / "bad.pyth").write_bytes(b""), ["empty file"]),
        convert_case("missing-file", lambda d, fx: None, ["no such checkpoint file"]),
        convert_case("directory", lambda d, fx: (d / "bad.pyth").mkdir(), ["is a directory"]),
        convert_case("fifo", lambda d, fx: fifo(d, "bad.pyth"), ["is a FIFO"]),
        convert_case("truncated-zip", lambda d, fx: _truncated(fx, d, legacy=False), ["truncated or damaged"]),
        convert_case(
            "zip-record-shortened",
            lambda d, fx: shortened_record(fx.tiny_pyth, d / "bad.pyth"),
            ["truncated or damaged", "records do not match"],
        ),
        convert_case("truncated-legacy", lambda d, fx: _truncated(fx, d, legacy=True), ["checkpoint"]),
        _marker_case(),
        convert_case(
            "pickle-calls-eval",
            pyth(lambda fx: {"model_state": {}, "x": __import__("crafted").CallsEval()}),
            ["refused to unpickle", "eval"],
        ),
        convert_case(
            "deep-tuple-200000-raw",
            lambda d, fx: (d / "bad.pyth").write_bytes(deep_pickle(200_000)),
            ["nests deeper than"],
        ),
        convert_case(
            "deep-tuple-in-zip", lambda d, fx: torch_zip(d / "bad.pyth", deep_pickle(200_000)), ["nests deeper than"]
        ),
        convert_case(
            "deep-lists-in-zip", lambda d, fx: torch_zip(d / "bad.pyth", deep_list_pickle(5_000)), ["nests deeper than"]
        ),
        convert_case(
            "compressed-zip-member",
            lambda d, fx: torch_zip(d / "bad.pyth", b"\x80\x02N.", compress=True),
            ["compressed"],
        ),
        convert_case(
            "zip-without-pickle",
            lambda d, fx: __import__("zipfile").ZipFile(d / "bad.pyth", "w").close(),
            ["checkpoint"],
        ),
        convert_case(
            "pickle-protocol-4", pyth(lambda fx: fx.checkpoint(), pickle_protocol=4), ["pickle protocol 4", "re-save"]
        ),
        convert_case("pickle-protocol-5", pyth(lambda fx: fx.checkpoint(), pickle_protocol=5), ["pickle protocol 5"]),
        convert_case(
            "pickle-protocol-4-legacy",
            pyth(lambda fx: fx.checkpoint(), pickle_protocol=4, _use_new_zipfile_serialization=False),
            ["pickle protocol 4"],
        ),
        convert_case(
            "pickle-protocol-3-bytes",
            pyth(lambda fx: {**fx.checkpoint(), "note": b"raw bytes"}, pickle_protocol=3),
            ["pickle opcode 'C'", "re-save"],
        ),
        convert_case("plain-pickle-of-dict", lambda d, fx: raw_pickle(d / "bad.pyth", {"a": 1}), ["checkpoint"]),
        convert_case("a-list", pyth(lambda fx: [torch.zeros(1)]), ["holds a list, not a dict"]),
        convert_case("an-int", pyth(lambda fx: 5), ["holds a int, not a dict"]),
        convert_case("no-model-state", pyth(lambda fx: {"epoch": 1, "weights": {}}), ["no 'model_state'"]),
        convert_case(
            "model-state-a-tensor", pyth(lambda fx: {"model_state": torch.zeros(3)}), ["not a non-empty dict"]
        ),
        convert_case("model-state-empty", pyth(lambda fx: {"model_state": {}}), ["not a non-empty dict"]),
        convert_case(
            "model-state-non-tensor", pyth(lambda fx: {"model_state": {"stem.conv.weight": 3}}), ["not named tensors"]
        ),
        convert_case(
            "model-state-int-key", pyth(lambda fx: {"model_state": {5: torch.zeros(1)}}), ["not named tensors"]
        ),
        convert_case("cfg-not-a-string", pyth(lambda fx: {**fx.checkpoint(), "cfg": 5}), ["'cfg' is a int"]),
        convert_case("cfg-a-yaml-list", pyth(lambda fx: {**fx.checkpoint(), "cfg": "[1, 2]"}), ["'cfg' is a str"]),
        convert_case("cfg-invalid-yaml", pyth(lambda fx: {**fx.checkpoint(), "cfg": "a: [1, 2\n"}), ["not valid YAML"]),
        convert_case(
            "cfg-nested-20000",
            pyth(lambda fx: {**fx.checkpoint(), "cfg": "[" * 20_000 + "]" * 20_000}),
            ["nests too deeply"],
        ),
        convert_case(
            "cfg-2-megabytes", pyth(lambda fx: {**fx.checkpoint(), "cfg": "a: " + "x" * (2 << 20)}), ["characters long"]
        ),
    ]
    return cases


# ---- 2. tensors that cannot be RegNet weights -----------------------------------------------------------


def quantized(t: torch.Tensor) -> torch.Tensor:
    """`t` as a qint8 tensor (what an old checkpoint may hold), without torch's deprecation warning for making one
    (the crafted input's own warning, not the tool's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)


def bad_tensors() -> list[Case]:
    kinds = {
        "int32": lambda t: t.to(torch.int32),
        "int64": lambda t: t.to(torch.int64),
        "bool": lambda t: t > 0,
        "uint8": lambda t: t.to(torch.uint8),
        "int8": lambda t: t.to(torch.int8),
        "complex64": lambda t: t.to(torch.complex64),
        "quantized": quantized,
        "sparse": lambda t: t.to_sparse(),
        "meta": lambda t: t.to("meta"),
        "0-d": lambda t: t.flatten()[0].clone(),
        "1-d": lambda t: t.flatten().clone(),
        "2-d": lambda t: t.flatten(1).clone(),
        "nan": lambda t: torch.full_like(t, float("nan")),
        "inf": lambda t: torch.full_like(t, float("inf")),
    }
    says = {
        "int32": "is int32", "int64": "is int64", "bool": "is bool", "uint8": "is uint8", "int8": "is int8",
        "complex64": "is complex64", "quantized": "quantized", "sparse": "sparse", "meta": "holds no data",
        "0-d": "is 0-d", "1-d": "is 1-d", "2-d": "is 2-d", "nan": "NaN", "inf": "infinite",
    }  # fmt: skip
    cases = [
        convert_case(f"stem-weight-{kind}", state_edit(replace_tensor(STEM, make)), [says[kind]])
        for kind, make in kinds.items()
    ]
    cases += [
        convert_case(
            "bn-weight-2-d", state_edit(replace_tensor("stem.bn.weight", lambda t: t[None].clone())), ["is 2-d"]
        ),
        convert_case(
            "fc-weight-4-d",
            state_edit(replace_tensor("head.fc.weight", lambda t: t[..., None, None].clone())),
            ["is 4-d"],
        ),
        convert_case(
            "mixed-dtypes", state_edit(replace_tensor("head.fc.bias", lambda t: t.half())), ["mixes dtypes", "--dtype"]
        ),
        convert_case(
            "float16-overflow",
            state_edit(replace_tensor("head.fc.bias", lambda t: t + 1e6)),
            ["once cast to float16"],
            "--dtype",
            "float16",
        ),
        convert_case(
            "bfloat16-nan",
            state_edit(replace_tensor("head.fc.bias", lambda t: t * float("nan"))),
            ["NaN"],
            "--dtype",
            "bfloat16",
        ),
        convert_case(
            "huge-values-probe",
            state_edit(replace_tensor(STEM, lambda t: torch.full_like(t, 1e38))),
            ["probe forward pass"],
        ),
        convert_case(  # only a probe whose last stage is larger than 1x1 uses that tap (a 32x32 probe missed it)
            "huge-corner-tap-in-the-last-stage",
            state_edit(replace_tensor("s4.b2.f.b.weight", _with_huge_corner_taps), zoo=True),
            ["probe forward pass"],
        ),
    ]
    return cases


def _with_huge_corner_taps(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution's weight with its top-left taps at 3e38 (finite in float32): NaN or inf on real images."""
    weight = weight.clone()
    weight[..., 0, 0] = 3e38
    return weight


# ---- 3. keys ---------------------------------------------------------------------------------------------


def _add(key: str, like: str) -> Callable[[dict], None]:
    def edit(state: dict) -> None:
        state[key] = state[like].clone()

    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda state: state.pop(key)


def _rename_block(state: dict, old: str, new: str) -> None:
    for key in [k for k in state if k.startswith(old)]:
        state[new + key.removeprefix(old)] = state.pop(key)


def mmcls_file(fx: Fixtures, d: Path, extra: dict[str, str]) -> None:
    """The zoo checkpoint in mmclassification's names, plus `extra` (new name -> existing mmcls name)."""
    from regnet_convert.sources.formats import map_keys

    native, _ = map_keys(Path("x"), {k: v for k, v in fx.checkpoint(zoo=True)["model_state"].items()})
    names = {"stem.conv": "conv1", "stem.bn": "bn1", "head.fc": "head.fc"}
    blocks = {"conv1.conv": "conv1", "conv1.bn": "bn1", "conv2.conv": "conv2", "conv2.bn": "bn2",
              "conv3.conv": "conv3", "conv3.bn": "bn3", "shortcut.conv": "downsample.0", "shortcut.bn": "downsample.1"}  # fmt: skip
    state = {}
    for key, tensor in native.items():
        module, _, leaf = key.rpartition(".")
        if module in names:
            state[f"backbone.{names[module]}.{leaf}".replace("backbone.head", "head")] = tensor
        else:
            _, s, b, rest = module.split(".", 3)
            state[f"backbone.layer{int(s) + 1}.{b}.{blocks[rest]}.{leaf}"] = tensor
    for new, old in extra.items():
        state[new] = state[old].clone()
    torch.save({"state_dict": state, "meta": {}}, d / "bad.pth")


def key_cases() -> list[Case]:
    first = "s1.b1.f.a.weight"
    cases = [
        convert_case(
            "duplicate-s01", state_edit(_add("s01.b1.f.a.weight", first)), ["'s1.b1.f.a.weight'", "'s01.b1.f.a.weight'"]
        ),
        convert_case("duplicate-b001", state_edit(_add("s1.b001.f.a.weight", first)), ["are both"]),
        convert_case("unknown-key", state_edit(_add("s1.b1.f.z.weight", first)), ["no RegNet has"]),
        convert_case("stage-zero", state_edit(_add("s0.b1.f.a.weight", first)), ["no RegNet has"]),
        convert_case("partial-module-prefix", state_edit(_add("module.stem.conv.weight", STEM)), ["no RegNet has"]),
        convert_case(
            "huge-block-index",
            pyth(
                lambda fx: with_state(
                    {"model_state": fx.checkpoint()["model_state"]}, _add("s1.b99999999.f.a.weight", first)
                )
            ),
            ["implausible RegNet", "blocks (at most 256)"],
        ),
        convert_case(
            "stage-gap",
            pyth(
                lambda fx: with_state(
                    {"model_state": fx.checkpoint()["model_state"]}, lambda s: _rename_block(s, "s2.", "s3.")
                )
            ),
            ["not numbered"],
        ),
        convert_case(
            "no-stem",
            pyth(lambda fx: with_state({"model_state": fx.checkpoint()["model_state"]}, _drop(STEM))),
            ["no 'stem.conv.weight'"],
        ),
        convert_case(
            "no-head",
            pyth(lambda fx: with_state({"model_state": fx.checkpoint()["model_state"]}, _drop("head.fc.weight"))),
            ["no 'head.fc.weight'"],
        ),
        convert_case("missing-tensor-with-cfg", state_edit(_drop("s1.b1.f.b_bn.running_var")), ["missing"]),
        convert_case(
            "extra-se-tensor", state_edit(_add("s1.b1.f.se.f_ex.0.weight", first)), ["not part of this model"]
        ),
        convert_case(
            "resnet-stem",
            pyth(
                lambda fx: with_state(
                    {"model_state": fx.checkpoint()["model_state"]},
                    replace_tensor(STEM, lambda t: torch.zeros(t.shape[0], 3, 7, 7)),
                )
            ),
            ["7x7"],
        ),
    ]
    mmcls = [
        ("mmcls-head-and-backbone-fc", {"backbone.fc.weight": "head.fc.weight"}, "'backbone.fc.weight'"),
        ("mmcls-conv1-twice", {"conv1.weight": "backbone.conv1.weight"}, "'conv1.weight'"),
        ("mmcls-bn1-twice", {"bn1.bias": "backbone.bn1.bias"}, "are both"),
    ]
    cases += [
        Case(id, CONVERT, ["mmcls", "bad.pth", OUT], lambda d, fx, e=extra: mmcls_file(fx, d, e), ["bad.pth", text])
        for id, extra, text in mmcls
    ]
    return cases


CASES = damaged_checkpoints() + bad_tensors() + key_cases()


def test_suite_is_large_enough():
    """The issue asks for at least 150 generated cases over every family (plus test_hostile_zoo.py)."""
    from test_hostile_cfgs import CASES as CFGS
    from test_hostile_export_import import CASES as EXPORT_IMPORT
    from test_hostile_outputs import CASES as OUTPUTS
    from test_hostile_safetensors import CASES as SAFETENSORS
    from test_hostile_validation import CASES as VALIDATION

    every = EXPORT_IMPORT + CASES + CFGS + OUTPUTS + SAFETENSORS + VALIDATION
    assert len(every) >= 150, len(every)
    assert len({case.id for case in every}) == len(every)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


def test_mmcv_checkpoint_with_numpy_meta(fixtures, zygote, tmp_path):
    """mmcv writes numpy scalars and dtypes into `meta`: allowed through torch's safe globals, nothing else."""
    import numpy as np

    from regnet_convert.sources.formats import map_keys

    native, _ = map_keys(Path("x"), fixtures.checkpoint(zoo=True)["model_state"])
    tmp_path.joinpath("case").mkdir()
    mmcls_file(fixtures, tmp_path / "case", {})
    contents = torch.load(tmp_path / "case" / "bad.pth", weights_only=True)
    contents["meta"] = {"epoch": np.int64(100), "best": np.float64(77.5), "dtype": np.dtype("float32"), "hook_msgs": {}}
    torch.save(contents, tmp_path / "case" / "mmcv.pth")
    (tmp_path / "case" / "bad.pth").unlink()
    outcome = zygote.run(CONVERT, ["mmcls", "mmcv.pth", OUT, "--model", "regnetx_200mf"], tmp_path / "case")
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert len(native) == len(__import__("safetensors").safe_open(str(tmp_path / "case" / OUT), "pt").keys())
