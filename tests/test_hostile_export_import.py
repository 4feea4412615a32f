"""Hostile inputs to `regnet-convert export` (the same input and output rules as conversion) and to the import
commands `regnet-convert timm|torchvision` (weights in another library's names).

Every case asserts the refusal contract (`hostile.refuse`, `hostile.check_refusal`): the documented exit status,
no traceback, one `error:` line naming the file or option, no leftover or temporary file, every file that existed
before byte-identical, all within the case's time and memory limits.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted import (
    Fixtures,
    code_running_checkpoint,
    deep_pickle,
    save,
)
from hostile import Case, Zygote, refuse
from hostile_setups import (
    CONVERT,
    OUT,
    Setup,
    architecture_edit,
    bytes_file,
    fifo,
    then,
)

pytestmark = pytest.mark.hostile


def export_cases() -> list[Case]:
    """`regnet-convert export`: the same input and output rules as conversion."""

    def case(id: str, argv: list[str], setup: Setup, says: list[str]) -> Case:
        return Case(f"export-{id}", CONVERT, ["export", *argv], setup, says)

    weights = lambda d, fx: shutil.copy(fx.tiny_safetensors, d / "w.safetensors")  # noqa: E731
    return [
        case("output-is-source", ["w.safetensors", "w.safetensors", "--to", "timm", "--force"], weights,
             ["w.safetensors", "is the input file"]),
        case("output-exists", ["w.safetensors", "o.safetensors", "--to", "timm"],
             then(weights, lambda d, fx: (d / "o.safetensors").write_bytes(b"keep")), ["already exists"]),
        case("output-is-directory", ["w.safetensors", "val", "--to", "torchvision"],
             then(weights, lambda d, fx: (d / "val").mkdir()), ["is a directory"]),
        case("unknown-target", ["w.safetensors", "o.onnx", "--to", "keras"], weights, ["--to"]),
        case("no-target", ["w.safetensors", "o.safetensors"], weights, ["--to"]),
        case("source-missing", ["nope.safetensors", "o.safetensors", "--to", "timm"], weights, ["no such weights file"]),
        case("source-fifo", ["pipe", "o.safetensors", "--to", "timm"], lambda d, fx: fifo(d, "pipe"), ["is a FIFO"]),
        case("source-truncated", ["bad.safetensors", "o.safetensors", "--to", "torchvision"],
             bytes_file(lambda fx: fx.tiny_safetensors.read_bytes()[:-1000]), ["bad.safetensors", "truncated"]),
        case("source-lies-about-model", ["bad.safetensors", "o.safetensors", "--to", "timm"],
             architecture_edit(lambda a: a.__setitem__("name", "regnetx_400mf"), zoo=True), ["not that model"]),
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
        case("truncated", "timm", bytes_file(lambda fx: fx.tiny_safetensors.read_bytes()[:-1000]), ["truncated"]),
        case("not-a-state-dict", "torchvision", lambda d, fx: save([torch.zeros(2)], d / "bad.safetensors"),
             ["not a state dict"]),
        case("code-pickle", "timm", lambda d, fx: code_running_checkpoint(d / "bad.safetensors", str(d / "pwned")),
             ["refused to unpickle"]),
        case("deep-pickle", "torchvision", lambda d, fx: (d / "bad.safetensors").write_bytes(deep_pickle(200_000)),
             ["nests deeper"]),
    ]  # fmt: skip


CASES = import_cases() + export_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)
