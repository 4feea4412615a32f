"""Hostile and damaged inputs to regnet-convert and regnet-validate, each run in a limited child process.

Every case asserts the refusal contract (`hostile.check_refusal`): the documented exit status, no traceback,
one `error:` line naming the file or option, no leftover or temporary file, every file that existed before
byte-identical, all within the case's time and memory limits. `zoo fetch` cases are in test_hostile_zoo.py.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted import (
    Fixtures,
    code_running_checkpoint,
    copy_val,
    deep_list_pickle,
    deep_pickle,
    edit_architecture,
    edit_header,
    edit_metadata,
    edit_tensors,
    hdr_image,
    join_safetensors,
    nested_json,
    png_bytes,
    raw_pickle,
    save,
    shortened_record,
    split_safetensors,
    torch_zip,
    with_cfg,
    with_state,
    zero_size_tensors,
)
from helpers import convert_file
from hostile import Case, Zygote, check_refusal, snapshot

Setup = Callable[[Path, Fixtures], object]
CONVERT, VALIDATE = "regnet-convert", "regnet-validate"
OUT = "out.safetensors"


def pyth(contents: Callable[[Fixtures], object], name: str = "bad.pyth", **options) -> Setup:
    """Setup: save what `contents(fixtures)` returns as a checkpoint file."""
    return lambda d, fx: save(contents(fx), d / name, **options)


def cfg_edit(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    return pyth(lambda fx: with_cfg(fx.checkpoint(zoo), edit))


def state_edit(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    return pyth(lambda fx: with_state(fx.checkpoint(zoo), edit))


def set_key(section: str, key: str, value: object) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        cfg.setdefault(section, {})[key] = value

    return edit


def convert_case(id: str, setup: Setup, says: list[str], *options: str, source: str = "bad.pyth") -> Case:
    return Case(id, CONVERT, ["pycls", source, OUT, *options], setup, [source, *says])


# ---- 1. files that are not checkpoints, damaged pickles and zips ---------------------------------------


def _truncated(fx: Fixtures, d: Path, legacy: bool) -> None:
    path = d / "whole.pyth"
    torch.save(fx.checkpoint(), path, _use_new_zipfile_serialization=not legacy)
    raw = path.read_bytes()
    path.unlink()
    (d / "bad.pyth").write_bytes(raw[: len(raw) // 2])


def _fifo(d: Path, name: str) -> None:
    os.mkfifo(d / name)


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
        convert_case("fifo", lambda d, fx: _fifo(d, "bad.pyth"), ["is a FIFO"]),
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

STEM = "stem.conv.weight"


def _replace(key: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def edit(state: dict) -> None:
        state[key] = make(state[key])

    return edit


def _shared_storage(state: dict) -> None:
    state["head.fc.bias"] = state["head.fc.weight"].view(-1)[: state["head.fc.bias"].numel()]


def bad_tensors() -> list[Case]:
    kinds = {
        "int32": lambda t: t.to(torch.int32),
        "int64": lambda t: t.to(torch.int64),
        "bool": lambda t: t > 0,
        "uint8": lambda t: t.to(torch.uint8),
        "int8": lambda t: t.to(torch.int8),
        "complex64": lambda t: t.to(torch.complex64),
        "quantized": lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8),
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
        convert_case(f"stem-weight-{kind}", state_edit(_replace(STEM, make)), [says[kind]])
        for kind, make in kinds.items()
    ]
    cases += [
        convert_case("bn-weight-2-d", state_edit(_replace("stem.bn.weight", lambda t: t[None].clone())), ["is 2-d"]),
        convert_case(
            "fc-weight-4-d", state_edit(_replace("head.fc.weight", lambda t: t[..., None, None].clone())), ["is 4-d"]
        ),
        convert_case(
            "mixed-dtypes", state_edit(_replace("head.fc.bias", lambda t: t.half())), ["mixes dtypes", "--dtype"]
        ),
        convert_case(
            "float16-overflow",
            state_edit(_replace("head.fc.bias", lambda t: t + 1e6)),
            ["once cast to float16"],
            "--dtype",
            "float16",
        ),
        convert_case(
            "bfloat16-nan",
            state_edit(_replace("head.fc.bias", lambda t: t * float("nan"))),
            ["NaN"],
            "--dtype",
            "bfloat16",
        ),
        convert_case(
            "huge-values-probe", state_edit(_replace(STEM, lambda t: torch.full_like(t, 1e38))), ["probe forward pass"]
        ),
    ]
    return cases


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
                    _replace(STEM, lambda t: torch.zeros(t.shape[0], 3, 7, 7)),
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


# ---- 4. cfg values ---------------------------------------------------------------------------------------


def cfg_cases() -> list[Case]:
    regnet = [
        ("model-is-5", lambda c: c.__setitem__("MODEL", 5), "MODEL is 5, not a section"),
        ("model-is-string", lambda c: c.__setitem__("MODEL", "regnet"), "not a section"),
        ("regnet-section-string", lambda c: c.__setitem__("REGNET", "deep"), "REGNET is 'deep'"),
        ("depth-null", set_key("REGNET", "DEPTH", None), "REGNET.DEPTH is null"),
        ("depth-string", set_key("REGNET", "DEPTH", "13"), "REGNET.DEPTH is '13'"),
        ("depth-float", set_key("REGNET", "DEPTH", 13.5), "REGNET.DEPTH is 13.5"),
        ("depth-bool", set_key("REGNET", "DEPTH", True), "expected an integer"),
        ("depth-1e8", set_key("REGNET", "DEPTH", 100_000_000), "at most"),
        ("depth-zero", set_key("REGNET", "DEPTH", 0), "must be positive"),
        ("depth-negative", set_key("REGNET", "DEPTH", -3), "must be positive"),
        ("eps-list", set_key("BN", "EPS", [1]), "BN.EPS is [1]"),
        ("eps-zero", set_key("BN", "EPS", 0.0), "BN eps"),
        ("eps-nan", set_key("BN", "EPS", float("nan")), "not a finite number"),
        ("group-w-zero", set_key("REGNET", "GROUP_W", 0), "must be positive"),
        ("bot-mul-zero", set_key("REGNET", "BOT_MUL", 0.0), "must be positive"),
        ("wm-one", set_key("REGNET", "WM", 1.0), "invalid RegNet parameters"),
        ("wa-inf", set_key("REGNET", "WA", float("inf")), "not a finite number"),
        ("wa-huge", set_key("REGNET", "WA", 1e300), "out of range"),
        ("w0-odd", set_key("REGNET", "W0", 25), "invalid RegNet parameters"),
        ("se-on-string", set_key("REGNET", "SE_ON", "yes"), "expected true or false"),
        (
            "se-ratio-negative",
            lambda c: (set_key("REGNET", "SE_ON", True)(c), set_key("REGNET", "SE_R", -1.0)(c)),
            "positive",
        ),
        ("missing-depth", lambda c: c["REGNET"].pop("DEPTH"), "its cfg has no REGNET.DEPTH"),
        ("model-type-resnet", set_key("MODEL", "TYPE", "resnet"), "MODEL.TYPE 'resnet'"),
        ("stem-width-1e30", set_key("REGNET", "STEM_W", 10**30), "implausible RegNet"),
        ("classes-1e30", set_key("MODEL", "NUM_CLASSES", 10**30), "implausible RegNet"),
        ("bot-mul-1e308", set_key("REGNET", "BOT_MUL", 1e308), "implausible RegNet"),
        ("stride-1e30", set_key("REGNET", "STRIDE", 10**30), "implausible RegNet"),
        (
            "se-ratio-1e300",
            lambda c: (set_key("REGNET", "SE_ON", True)(c), set_key("REGNET", "SE_R", 1e300)(c)),
            "implausible",
        ),
        ("model-type-list", set_key("MODEL", "TYPE", ["regnet"]), "MODEL.TYPE is ['regnet']"),
        ("stem-type-resnet", set_key("REGNET", "STEM_TYPE", "res_stem_in"), "stem type 'res_stem_in'"),
        ("block-type-vanilla", set_key("REGNET", "BLOCK_TYPE", "vanilla_block"), "block type 'vanilla_block'"),
        ("classes-contradict-tensors", set_key("MODEL", "NUM_CLASSES", 10), "head.fc.weight"),
        ("cfg-of-another-model", set_key("REGNET", "DEPTH", 12), "tensor shapes contradict the checkpoint's cfg"),
    ]
    cases = [convert_case(f"zoo-cfg-{id}", cfg_edit(edit, zoo=True), [text]) for id, edit, text in regnet]
    anynet = [
        ("depths-1e8", set_key("ANYNET", "DEPTHS", [100_000_000, 1]), "at most"),
        ("columns-differ", set_key("ANYNET", "WIDTHS", [16]), "differ in length"),
        ("depths-not-list", set_key("ANYNET", "DEPTHS", 3), "ANYNET.DEPTHS is 3, expected a list"),
        ("width-1e30", set_key("ANYNET", "WIDTHS", [16, 10**30]), "implausible RegNet"),
        ("bot-mul-1e300", set_key("ANYNET", "BOT_MULS", [1e300, 1.0]), "implausible RegNet"),
        ("width-string", set_key("ANYNET", "WIDTHS", [16, "x"]), "ANYNET.WIDTHS[1] is 'x'"),
        ("group-width-zero", set_key("ANYNET", "GROUP_WS", [0, 8]), "must be positive"),
        ("bot-mul-zero", set_key("ANYNET", "BOT_MULS", [0.0, 1.0]), "gives no channels"),
        ("stride-zero", set_key("ANYNET", "STRIDES", [0, 2]), "must be positive"),
    ]
    cases += [convert_case(f"anynet-cfg-{id}", cfg_edit(edit), [text]) for id, edit, text in anynet]
    model_option = [
        ("eps-0.1", set_key("BN", "EPS", 0.1), "--model regnetx_200mf contradicts its cfg: BN eps 1e-05 vs 0.1"),
        ("se-on", lambda c: set_key("REGNET", "SE_ON", True)(c), "SE ratio"),
        ("stem-width", set_key("REGNET", "STEM_W", 24), "stem width"),
    ]
    cases += [
        convert_case(f"model-option-vs-cfg-{id}", cfg_edit(edit, zoo=True), [text], "--model", "regnetx_200mf")
        for id, edit, text in model_option
    ]
    cases += [
        convert_case(
            "model-option-unknown",
            pyth(lambda fx: fx.checkpoint()),
            ["unknown model 'regnetx_1tf'"],
            "--model",
            "regnetx_1tf",
        ),
        convert_case(
            "model-option-wrong-zoo-model",
            pyth(lambda fx: {"model_state": fx.checkpoint(True)["model_state"]}),
            ["tensor shapes contradict --model regnetx_400mf"],
            "--model",
            "regnetx_400mf",
        ),
    ]
    return cases


# ---- 5. outputs ------------------------------------------------------------------------------------------


def _source(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.tiny_pyth, d / "src.pyth")


def _then(*steps: Setup) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        for step in steps:
            step(d, fx)

    return setup


def output_cases() -> list[Case]:
    def case(id: str, output: str, setup: Setup, says: list[str], *options: str) -> Case:
        return Case(id, CONVERT, ["pycls", "src.pyth", output, *options], _then(_source, setup), says)

    return [
        case("output-is-source", "src.pyth", lambda d, fx: None, ["src.pyth", "is the input file"], "--force"),
        case(
            "output-hardlink-to-source",
            "link.pyth",
            lambda d, fx: os.link(d / "src.pyth", d / "link.pyth"),
            ["link.pyth", "is the input file"],
            "--force",
        ),
        case(
            "output-symlink-to-source",
            "sym.safetensors",
            lambda d, fx: os.symlink("src.pyth", d / "sym.safetensors"),
            ["is the input file"],
            "--force",
        ),
        case(
            "output-is-directory",
            "outdir",
            lambda d, fx: (d / "outdir").mkdir(),
            ["outdir", "is a directory"],
            "--force",
        ),
        case("output-is-fifo", "pipe", lambda d, fx: _fifo(d, "pipe"), ["pipe", "is a FIFO"], "--force"),
        case("output-is-device", "/dev/null", lambda d, fx: None, ["/dev/null", "character device"], "--force"),
        case("output-exists", OUT, lambda d, fx: (d / OUT).write_bytes(b"precious"), ["already exists", "--force"]),
        case("output-dir-missing", "missing/out.safetensors", lambda d, fx: None, ["does not exist"]),
        case(
            "output-dir-is-a-file",
            "afile/out.safetensors",
            lambda d, fx: (d / "afile").write_text("x"),
            ["afile/out.safetensors"],
        ),
        case("output-name-too-long", "x" * 300, lambda d, fx: None, ["x" * 50]),
        case("output-in-proc", "/proc/out.safetensors", lambda d, fx: None, ["/proc/out.safetensors"]),
        case("output-trailing-slash", "newdir/", lambda d, fx: None, ["newdir/", "not a file name"]),
        case("output-empty-name", "", lambda d, fx: None, ["not a file name"]),
        case("bad-dtype-option", OUT, lambda d, fx: None, ["--dtype"], "--dtype", "int8"),
        case("bad-layout-option", OUT, lambda d, fx: None, ["--layout"], "--layout", "keras"),
    ]


# ---- 6. converted files that are damaged or crafted -------------------------------------------------------


def _bytes(data: Callable[[Fixtures], bytes]) -> Setup:
    return lambda d, fx: (d / "bad.safetensors").write_bytes(data(fx))


def _header(edit: Callable[[dict], None]) -> Setup:
    return lambda d, fx: edit_header(fx.tiny_safetensors, d / "bad.safetensors", edit)


def _metadata(**changes: str) -> Setup:
    return lambda d, fx: edit_metadata(fx.tiny_safetensors, d / "bad.safetensors", **changes)


def _architecture(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    return lambda d, fx: edit_architecture(
        fx.zoo_safetensors if zoo else fx.tiny_safetensors, d / "bad.safetensors", edit
    )


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
        ("truncated", _bytes(lambda fx: fx.tiny_safetensors.read_bytes()[:-1000]), "truncated or damaged"),
        ("header-only", _bytes(lambda fx: fx.tiny_safetensors.read_bytes()[:300]), "safetensors"),
        ("eight-bytes", _bytes(lambda fx: b"\x10" + b"\0" * 7), "safetensors"),
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
            _architecture(lambda a: a["stages"][0].__setitem__("depth", "1")),
            "not an integer",
        ),
        ("architecture-depth-1e8", _architecture(_set_depth(100_000_000)), "implausible RegNet: 100000002 blocks"),
        ("architecture-depth-1e8-zoo", _architecture(_set_depth(100_000_000), zoo=True), "implausible RegNet"),
        ("architecture-depth-zero", _architecture(_set_depth(0)), "must be positive"),
        (
            "architecture-width-1e30",
            _architecture(lambda a: a["stages"][0].__setitem__("width", 10**30)),
            "implausible",
        ),
        ("architecture-classes-1e30", _architecture(lambda a: a.__setitem__("num_classes", 10**30)), "implausible"),
        (
            "architecture-stride-1e30",
            _architecture(lambda a: a["stages"][0].__setitem__("stride", 10**30)),
            "implausible",
        ),
        ("architecture-se-1e300", _architecture(lambda a: a.__setitem__("se_ratio", 1e300)), "implausible"),
        (
            "zero-size-tensors-deep",
            lambda d, fx: zero_size_tensors(fx.tiny_safetensors, d / "bad.safetensors", 30_000),
            "implausible RegNet",
        ),
        (
            "architecture-unknown-field",
            _architecture(lambda a: a.__setitem__("dropout", 0.5)),
            "unknown architecture field",
        ),
        ("architecture-eps-negative", _architecture(lambda a: a.__setitem__("bn_eps", -1.0)), "BN eps"),
        (
            "model-name-lies",
            _architecture(lambda a: a.__setitem__("name", "regnetx_400mf"), zoo=True),
            "not that model",
        ),
        ("model-name-unknown", _architecture(lambda a: a.__setitem__("name", "regnetq_1gf")), "not that model"),
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
        ("empty", _bytes(lambda fx: b""), "empty file"),
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
                _then(setup, lambda d, fx: copy_val(fx, d)),
                ["bad.safetensors", text],
            )
        )
    cases += [
        Case("inspect-fifo", CONVERT, ["inspect", "pipe"], lambda d, fx: _fifo(d, "pipe"), ["pipe", "is a FIFO"]),
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
            state_edit(_replace(STEM, lambda t: t.int())),
            ["is int32"],
        ),
    ]
    return cases


# ---- 7. validation: models, options, labels, data, images -----------------------------------------------


def _validate(id: str, argv: list[str], setup: Setup, says: list[str], code: int = 2, **kw) -> Case:
    return Case(
        id,
        VALIDATE,
        [*argv, "--workers", "0", "--quiet"],
        _then(lambda d, fx: copy_val(fx, d), setup),
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
            "weights-fifo", ["--weights", "pipe", "--data", "val"], lambda d, fx: _fifo(d, "pipe"), ["pipe", "FIFO"]
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
            _then(weights, lambda d, fx: os.symlink("w.safetensors", d / "r.json")),
            ["is the input file"],
        ),
        _validate(
            "json-is-labels",
            [*flat, "--json", "labels.txt"],
            _then(weights, _labels("v0.JPEG 0\nv1.JPEG 1\n")),
            ["--json", "is the input file"],
        ),
        _validate("json-is-directory", [*w, "--json", "val"], weights, ["--json", "is a directory"]),
        _validate(
            "json-is-fifo", [*w, "--json", "pipe"], _then(weights, lambda d, fx: _fifo(d, "pipe")), ["--json", "FIFO"]
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
        _validate("labels-not-utf8", flat, _then(weights, _labels(b"v0.JPEG 0\n\xff\xfe\x00bad 1\n")), ["not UTF-8"]),
        _validate(
            "labels-conflicting-duplicate",
            flat,
            _then(weights, _labels("v0.JPEG 0\nv1.JPEG 1\nv0.JPEG 5\n")),
            ["labels.txt", "line 3", "'v0.JPEG'", "line 1"],
        ),
        _validate(
            "labels-csv-conflict",
            ["--weights", "w.safetensors", "--data", "flat", "--labels", "l.csv"],
            _then(
                weights,
                _labels("ImageId,PredictionString\nv0,n01440764 1 2 3 4\nv1,n01443537 1\nv0,n01443537 5\n", "l.csv"),
            ),
            ["l.csv", "line 4"],
        ),
        _validate(
            "labels-fifo",
            ["--weights", "w.safetensors", "--data", "val", "--labels", "pipe"],
            _then(weights, lambda d, fx: _fifo(d, "pipe")),
            ["--labels", "FIFO"],
        ),
        _validate(
            "labels-missing",
            ["--weights", "w.safetensors", "--data", "val", "--labels", "nope.txt"],
            weights,
            ["nope.txt", "no such labels file"],
        ),
        _validate("labels-absolute-path", flat, _then(weights, _labels("/etc/passwd 0\n")), ["not an image inside"]),
        _validate("labels-dot-dot", flat, _then(weights, _labels("../w.safetensors 0\n")), ["not an image inside"]),
        _validate("labels-class-1000", flat, _then(weights, _labels("v0.JPEG 1000\n")), ["line 1", "0..999"]),
        _validate("labels-three-columns", flat, _then(weights, _labels("v0.JPEG 1 2\n")), ["line 1"]),
        _validate("labels-empty", flat, _then(weights, _labels(b"")), ["labels.txt", "empty file"]),
        _validate("labels-only-blank-lines", flat, _then(weights, _labels("\n\n")), ["holds no labels"]),
        _validate(
            "labels-unknown-wnid",
            ["--weights", "w.safetensors", "--data", "flat", "--labels", "l.csv"],
            _then(weights, _labels("ImageId,PredictionString\nv0,n99999999 1\n", "l.csv")),
            ["not an ImageNet-1k id"],
        ),
        _validate(
            "labels-image-missing", flat, _then(weights, _labels("v0.JPEG 0\nv1.JPEG 1\nv9.JPEG 1\n")), ["missing from"]
        ),
        _validate(
            "image-thin-png",
            w,
            _then(weights, _image("thin.png", lambda: png_bytes(12000, 1))),
            ["thin.png", "aspect ratio"],
        ),
        _validate(
            "image-20000-square-png",
            w,
            _then(weights, _image("big.png", lambda: png_bytes(20000, 20000))),
            ["big.png", "budget"],
        ),
        _validate("image-65-megabytes", w, _then(weights, _sparse_image), ["huge.JPEG", "too large"]),
        _validate("image-garbage", w, _then(weights, _image("junk.JPEG", lambda: os.urandom(2000))), ["junk.JPEG"]),
        _validate(
            "image-hdr-8000-wide",
            w,
            _then(weights, _image("wide.JPEG", lambda: hdr_image(8000, 1))),
            ["wide.JPEG", "not a JPEG, PNG, WebP, BMP or TIFF"],
        ),
        _validate("labels-superscript-digit", flat, _then(weights, _labels("v0.JPEG \u00b2\n")), ["line 1", "0..999"]),
        _validate(
            "labels-name-over-255-bytes",
            flat,
            _then(weights, _labels("x" * 300 + ".JPEG 1\n")),
            ["line 1", "not an image inside"],
        ),
        _validate(
            "labels-csv-huge-field",
            ["--weights", "w.safetensors", "--data", "flat", "--labels", "l.csv"],
            _then(weights, _labels("ImageId,PredictionString\n" + "v" * 200_000 + ",n01440764 1\n", "l.csv")),
            ["l.csv", "line 2", "not CSV"],
        ),
        _validate("image-empty", w, _then(weights, _image("empty.JPEG", lambda: b"")), ["empty.JPEG", "empty file"]),
        _validate(
            "image-truncated-jpeg",
            w,
            _then(
                weights,
                lambda d, fx: _image(
                    "cut.JPEG",
                    lambda: (d / "val").joinpath(sorted(os.listdir(d / "val"))[0], "img_0_0.JPEG").read_bytes()[:3000],
                )(d, fx),
            ),
            ["cut.JPEG", "truncated JPEG"],
        ),
        _validate(
            "image-zero-sized-png-header", w, _then(weights, _image("z.png", lambda: png_bytes(1, 1)[:16])), ["z.png"]
        ),
    ]
    return cases


def export_cases() -> list[Case]:
    """`regnet-convert export`: the same input and output rules as conversion."""

    def case(id: str, argv: list[str], setup: Setup, says: list[str]) -> Case:
        return Case(f"export-{id}", CONVERT, ["export", *argv], setup, says)

    weights = lambda d, fx: shutil.copy(fx.tiny_safetensors, d / "w.safetensors")  # noqa: E731
    return [
        case("output-is-source", ["w.safetensors", "w.safetensors", "--to", "timm", "--force"], weights,
             ["w.safetensors", "is the input file"]),
        case("output-exists", ["w.safetensors", "o.safetensors", "--to", "timm"],
             _then(weights, lambda d, fx: (d / "o.safetensors").write_bytes(b"keep")), ["already exists"]),
        case("output-is-directory", ["w.safetensors", "val", "--to", "torchvision"],
             _then(weights, lambda d, fx: (d / "val").mkdir()), ["is a directory"]),
        case("unknown-target", ["w.safetensors", "o.onnx", "--to", "keras"], weights, ["--to"]),
        case("no-target", ["w.safetensors", "o.safetensors"], weights, ["--to"]),
        case("source-missing", ["nope.safetensors", "o.safetensors", "--to", "timm"], weights, ["no such weights file"]),
        case("source-fifo", ["pipe", "o.safetensors", "--to", "timm"], lambda d, fx: _fifo(d, "pipe"), ["is a FIFO"]),
        case("source-truncated", ["bad.safetensors", "o.safetensors", "--to", "torchvision"],
             _bytes(lambda fx: fx.tiny_safetensors.read_bytes()[:-1000]), ["bad.safetensors", "truncated"]),
        case("source-lies-about-model", ["bad.safetensors", "o.safetensors", "--to", "timm"],
             _architecture(lambda a: a.__setitem__("name", "regnetx_400mf"), zoo=True), ["not that model"]),
        case("source-code-pickle", ["bad.pyth", "o.safetensors", "--to", "timm"],
             lambda d, fx: code_running_checkpoint(d / "bad.pyth", str(d / "pwned")), ["refused to unpickle"]),
        case("source-deep-pickle", ["bad.pyth", "o.safetensors", "--to", "torchvision"],
             lambda d, fx: (d / "bad.pyth").write_bytes(deep_pickle(200_000)), ["nests deeper"]),
        case("source-jpeg", ["x.JPEG", "o.safetensors", "--to", "timm"],
             lambda d, fx: (d / "x.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100)), ["neither a PyTorch"]),
    ]  # fmt: skip


def import_cases() -> list[Case]:
    """`regnet-convert timm|torchvision SOURCE OUT`: weights in another library's names."""

    def state_file(edit: Callable[[dict], None], safetensors: bool = True) -> Setup:
        def setup(d: Path, fx: Fixtures) -> None:
            from safetensors.torch import save_file

            import regnet

            to_timm = regnet.layouts.LAYOUTS["timm"].from_native
            state = {to_timm(k): v for k, v in regnet.load(fx.tiny_safetensors).state_dict().items()
                     if "num_batches" not in k}  # fmt: skip
            edit(state)
            if safetensors:
                save_file(state, str(d / "bad.safetensors"))
            else:
                torch.save(state, d / "bad.safetensors")

        return setup

    def case(id: str, fmt: str, setup: Setup, says: list[str]) -> Case:
        return Case(f"import-{fmt}-{id}", CONVERT, [fmt, "bad.safetensors", OUT], setup, ["bad.safetensors", *says])

    return [
        case("torchvision-names-given-as-timm", "torchvision", state_file(lambda s: None), ["no RegNet has"]),
        case("unknown-key", "timm", state_file(lambda s: s.__setitem__("s1.b1.extra.weight", torch.zeros(1))),
             ["no RegNet has"]),
        case("duplicate-native-name", "timm", state_file(lambda s: s.__setitem__("s01.b1.conv1.conv.weight",
             s["s1.b1.conv1.conv.weight"].clone())), ["no RegNet has"]),
        case("int-tensor", "timm", state_file(lambda s: s.__setitem__("head.fc.bias", s["head.fc.bias"].long())),
             ["integer"]),
        case("torch-file-int-tensor", "timm", state_file(lambda s: s.__setitem__("head.fc.bias", s["head.fc.bias"].long()),
             safetensors=False), ["is int64"]),
        case("truncated", "timm", _bytes(lambda fx: fx.tiny_safetensors.read_bytes()[:-1000]), ["truncated"]),
        case("not-a-state-dict", "torchvision", lambda d, fx: save([torch.zeros(2)], d / "bad.safetensors"),
             ["not a state dict"]),
        case("code-pickle", "timm", lambda d, fx: code_running_checkpoint(d / "bad.safetensors", str(d / "pwned")),
             ["refused to unpickle"]),
        case("deep-pickle", "torchvision", lambda d, fx: (d / "bad.safetensors").write_bytes(deep_pickle(200_000)),
             ["nests deeper"]),
    ]  # fmt: skip


ALL_CASES = (
    import_cases()
    + export_cases()
    + damaged_checkpoints()
    + bad_tensors()
    + key_cases()
    + cfg_cases()
    + output_cases()
    + safetensors_cases()
)
ALL_CASES += validation_cases()


def test_suite_is_large_enough():
    """The issue asks for at least 150 generated cases over every family (plus test_hostile_zoo.py)."""
    assert len(ALL_CASES) >= 150, len(ALL_CASES)
    assert len({case.id for case in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    folder = tmp_path / "case"
    folder.mkdir()
    case.setup(folder, fixtures)
    before = snapshot(folder)
    outcome = zygote.run(case.tool, case.argv, folder, case.env, case.seconds, case.memory)
    check_refusal(outcome, before, snapshot(folder), case.code, case.says)
    assert not (folder / "pwned").exists()  # no pickle ever runs code


# ---- accepted inputs that used to fail: every dtype validates, odd but legal outputs work ------------------


def _converted(dtype: str | None, *options: str) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        convert_file(fx.tiny_pyth, d / "w.safetensors", dtype=dtype, **({"rgb": True} if "rgb" in options else {}))

    return setup


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("path", [[], ["--fast"], ["--channels-last"]], ids=["reference", "fast", "channels-last"])
def test_every_dtype_validates_in_float32(dtype, path, fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    copy_val(fixtures, folder)
    if dtype == "float64":
        save(
            with_state(fixtures.checkpoint(), lambda s: s.update({k: v.double() for k, v in s.items()})),
            folder / "d.pyth",
        )
        convert_file(folder / "d.pyth", folder / "w.safetensors")
    else:
        _converted(dtype)(folder, fixtures)
    argv = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--quiet", "--json", "r.json", *path]
    outcome = zygote.run(VALIDATE, argv, folder)
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


def test_long_output_name_and_umask(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    name = "m" * 236 + ".safetensors"  # 248 characters: legal, so it must work
    assert len(name) == 248
    os.umask(old := os.umask(0o022))
    try:
        outcome = zygote.run(CONVERT, ["pycls", "src.pyth", name, "-q"], folder)
    finally:
        os.umask(old)
    assert outcome.code == 0, outcome.stderr
    assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~old
    assert sorted(p.name for p in folder.iterdir()) == sorted(["src.pyth", name])


def test_force_keeps_the_permissions_of_the_replaced_file(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    (folder / OUT).write_bytes(b"old")
    (folder / OUT).chmod(0o640)
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "--force", "-q"], folder).code == 0
    assert stat.S_IMODE((folder / OUT).stat().st_mode) == 0o640 and (folder / OUT).read_bytes() != b"old"


def test_symlink_output_is_written_through(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    (folder / "real").mkdir(parents=True)
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    (folder / "real" / "target.safetensors").write_bytes(b"old")
    os.symlink("real/target.safetensors", folder / OUT)
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "--force", "-q"], folder).code == 0
    assert (folder / OUT).is_symlink() and os.readlink(folder / OUT) == "real/target.safetensors"
    import regnet

    assert regnet.read_metadata(folder / "real" / "target.safetensors").model == "custom"
    assert sorted(p.name for p in (folder / "real").iterdir()) == ["target.safetensors"]


def test_stale_temporary_of_a_killed_process_is_removed(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.tiny_pyth, folder / "src.pyth")
    stale = folder / f".{OUT}.999999999-0123456789ab.part"  # no such PID
    alive = folder / f".{OUT}.{os.getpid()}-0123456789ab.part"  # a running process's: left alone
    other = folder / ".other.safetensors.999999999-0123456789ab.part"  # another output's: left alone
    for path in (stale, alive, other):
        path.write_bytes(b"x" * 100)
    assert zygote.run(CONVERT, ["pycls", "src.pyth", OUT, "-q"], folder).code == 0
    assert not stale.exists() and alive.exists() and other.exists()


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


# ---- interruptions: termination signals clean up like Ctrl-C ----------------------------------------------

_SLOW_WRITE = """
import sys, time
import regnet.weights as weights
def slow_save(state, path, metadata):
    open(path, "wb").write(b"partial" * 1000)
    print("writing", flush=True)
    time.sleep(60)
weights.save_file = slow_save
from regnet_convert.cli.convert import main
main(sys.argv[1:], prog_name="regnet-convert")
"""

_SLOW_EVALUATION = """
import sys, time
import regnet_convert.validation.evaluate as evaluate
def slow_run(self, *args, **kwargs):
    print("evaluating", flush=True)
    time.sleep(60)
evaluate.Evaluation.run = slow_run
from regnet_convert.cli.validate import main
main(sys.argv[1:], prog_name="regnet-validate")
"""


def _interrupt(script: str, argv: list[str], cwd: Path, signum: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() in ("writing", "evaluating")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_during_write_leaves_nothing(signum, fixtures, tmp_path):
    shutil.copy(fixtures.tiny_pyth, tmp_path / "src.pyth")
    (tmp_path / OUT).write_bytes(b"previous version")
    before = snapshot(tmp_path)
    result = _interrupt(_SLOW_WRITE, ["pycls", "src.pyth", OUT, "--force"], tmp_path, signum)
    assert result.returncode == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(tmp_path) == before  # no .part left, the previous output untouched


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_interrupted_validation_is_not_a_fail(signum, fixtures, tmp_path):
    copy_val(fixtures, tmp_path)
    shutil.copy(fixtures.tiny_safetensors, tmp_path / "w.safetensors")
    argv = ["--weights", "w.safetensors", "--data", "val", "--workers", "0", "--json", "r.json"]
    result = _interrupt(_SLOW_EVALUATION, argv, tmp_path, signum)
    assert result.returncode == 128 + signum != 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()


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
