"""A fourth hunt: what the third one's cases did not reach (zoo fetch's cases are in test_hostile_zoo.py).

Defects found (each case failed before its fix): an .onnx graph of allowed operators could still run for half an
hour (convolutions with 224x224 kernels) or ask for 12 GB (Concat of Concats), deaf to Ctrl-C; `--workers 100000`
forked until memory ran out; with `--fast`, a $REGNET_CACHE inside the --data folder wrote its packages among the
images (the next run refused the folder `aoti`); an output into /proc was refused only after the whole run (root
passes the permission check); a newline in an image's file name forged lines of `predict`; a signal that landed
while DataLoader workers started was swallowed by Python (a traceback printed, the run finished with exit 0, later
signals ignored).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from crafted import copy_val
from helpers import generated_val_set
from hostile import Case, Zygote
from onnx import TensorProto, helper, numpy_helper
from test_hostile_hunt3 import ONNX_MEMORY, Inputs, onnx_graph, run_case

from regnet_convert import process
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.cli.validate import main as validate_main
from regnet_convert.export.pipeline import export
from regnet_convert.validation import runner

pytestmark = [pytest.mark.hostile, pytest.mark.slow]

CONVERT, VALIDATE = "regnet-convert", "regnet-validate"
VAL = ["--data", "val", "--workers", "0", "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, converted_200mf, fixtures) -> Inputs:
    folder = tmp_path_factory.mktemp("hunt4")
    native = converted_200mf[0]
    export(native, folder / "model.onnx", "onnx")
    return Inputs(fixtures, native, folder / "model.onnx", folder / "hf", folder / "timm-hub")


# ---- crafted .onnx graphs: allowed operators, unbounded cost ----------------------------------------------------


def to_logits(nodes: list, initializers: list, last: str) -> None:
    """`last` (N, C, H, W) -> pooled -> (N, 1000) logits through a zero matrix of C rows."""
    channels = 3
    initializers.append(numpy_helper.from_array(np.zeros((channels, 1000), np.float32), "V"))
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["p"]),
        helper.make_node("Flatten", ["p"], ["q"]),
        helper.make_node("MatMul", ["q", "V"], ["logits"]),
    ]


def convolutions(count: int, kernel: int, dilation: int = 1):
    """`count` convolutions of the image by one shared 3-channel kernel (each ~8 s at 224x224 in onnxruntime)."""

    def tail(nodes: list, initializers: list) -> None:
        nodes.clear()  # from the image itself
        initializers.append(numpy_helper.from_array(np.full((3, 3, kernel, kernel), 1e-6, np.float32), "K"))
        pad = (kernel - 1) * dilation // 2
        previous = "image"
        for i in range(count):
            node = helper.make_node("Conv", [previous, "K"], [f"t{i}"], pads=[pad] * 4, dilations=[dilation] * 2)
            nodes.append(node)
            previous = f"t{i}"
        to_logits(nodes, initializers, previous)

    return tail


def concat_bomb(nodes: list, initializers: list) -> None:
    """Concat of 1000 copies, four levels deep: 10^12 values from a 60 KB file."""
    previous = "f"
    for level in range(4):
        nodes.append(helper.make_node("Concat", [previous] * 1000, [f"c{level}"], axis=1))
        previous = f"c{level}"
    initializers.append(numpy_helper.from_array(np.zeros((1, 1000), np.float32), "V"))
    nodes += [
        helper.make_node("ReduceMean", [previous], ["r"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["r", "V"], ["logits"]),
    ]


def many_nodes(nodes: list, initializers: list) -> None:
    """20,000 Identity nodes in a row (a RegNet export has a few hundred nodes)."""
    previous = "f"
    for i in range(20_000):
        nodes.append(helper.make_node("Identity", [previous], [f"i{i}"]))
        previous = f"i{i}"
    initializers.append(numpy_helper.from_array(np.zeros((3, 1000), np.float32), "V"))
    nodes.append(helper.make_node("MatMul", [previous, "V"], ["logits"]))


def shadowed_kernel(nodes: list, initializers: list) -> None:
    """Three 224x224 convolutions (`kernel_shape` given) whose weight is also declared a graph input of symbolic
    shape: inference would read the declared shape, not the stored one."""
    convolutions(3, 224)(nodes, initializers)
    for node in nodes:
        if node.op_type == "Conv":
            node.attribute.extend([helper.make_attribute("kernel_shape", [224, 224])])


def declare_weight(setup):
    """`setup`'s w.onnx with its weight K declared as a graph input of shape [3, 3, k, k]."""

    def declared(d: Path, ex: Inputs) -> None:
        setup(d, ex)
        model = onnx.load(d / "w.onnx")
        model.graph.input.append(helper.make_tensor_value_info("K", TensorProto.FLOAT, [3, 3, "k", "k"]))
        onnx.save(model, d / "w.onnx")

    return declared


def square_in_the_batch(nodes: list, initializers: list) -> None:
    """(N, K) + (1, N, K) broadcast to (N, N, K): little at one image, N^2 at a batch of N; zero logits."""
    initializers += [numpy_helper.from_array(np.array([i], np.int64), f"axis{i}") for i in (0, 1)]
    initializers.append(numpy_helper.from_array(np.zeros((1, 1000), np.float32), "zero"))
    nodes += [
        helper.make_node("Unsqueeze", ["f", "axis1"], ["a"]),
        helper.make_node("Unsqueeze", ["f", "axis0"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("ReduceMean", ["s"], ["r"], axes=[1, 2], keepdims=0),
        helper.make_node("Unsqueeze", ["r", "axis1"], ["r1"]),
        helper.make_node("Mul", ["r1", "zero"], ["logits"]),
    ]


def with_val(setup):
    def both(d: Path, ex: Inputs) -> None:
        setup(d, ex)
        copy_val(ex.fixtures, d)

    return both


def with_image(setup):
    def both(d: Path, ex: Inputs) -> None:
        setup(d, ex)
        (d / "a.jpg").write_bytes(next(ex.fixtures.val.rglob("*.JPEG")).read_bytes())

    return both


def weights_and_val(d: Path, ex: Inputs) -> None:
    os.symlink(ex.native, d / "w.safetensors")
    copy_val(ex.fixtures, d)


SLOW_GRAPH = {"seconds": 30, "memory": ONNX_MEMORY}
REFUSED = [
    Case("onnx-huge-kernels", CONVERT, ["inspect", "w.onnx"], onnx_graph(convolutions(200, 224)),
         ["w.onnx", "node 0 (Conv) has a 224x224 kernel", "at most 3x3"], **SLOW_GRAPH),
    Case("onnx-huge-kernels-validate", VALIDATE, ["--weights", "w.onnx", *VAL],
         with_val(onnx_graph(convolutions(3, 224))), ["w.onnx", "224x224 kernel"], **SLOW_GRAPH),
    Case("onnx-dilated-kernel", CONVERT, ["inspect", "w.onnx"], onnx_graph(convolutions(2, 3, dilation=60)),
         ["w.onnx", "3x3 kernel (dilated)"], **SLOW_GRAPH),
    Case("onnx-kernel-behind-a-declared-input", CONVERT, ["inspect", "w.onnx"],
         declare_weight(onnx_graph(shadowed_kernel)), ["w.onnx", "224x224 kernel"], **SLOW_GRAPH),
    Case("onnx-cost-square-in-the-batch", CONVERT, ["inspect", "w.onnx"], onnx_graph(square_in_the_batch),
         ["w.onnx", "grows faster than its batch"], **SLOW_GRAPH),
    Case("onnx-concat-bomb", CONVERT, ["predict", "w.onnx", "a.jpg"], with_image(onnx_graph(concat_bomb)),
         ["w.onnx", "M values per image at 224x224", "at most"], **SLOW_GRAPH),
    Case("onnx-20000-nodes", CONVERT, ["inspect", "w.onnx"], onnx_graph(many_nodes),
         ["w.onnx", "20,003 nodes", "at most 10,000"], **SLOW_GRAPH),
    Case("workers-100000", VALIDATE, ["--weights", "w.safetensors", *VAL[:2], "--workers", "100000", "-q"],
         weights_and_val, ["--workers", "100000", "0<=x<=32"]),
    Case("fast-cache-inside-the-data", VALIDATE, ["--weights", "w.safetensors", *VAL, "--fast"], weights_and_val,
         ["REGNET_CACHE", "/val/cache", "inside the --data folder val", "another folder"],
         env={"REGNET_CACHE": "{folder}/val/cache"}),
    Case("fast-cache-is-the-data", VALIDATE, ["--weights", "w.safetensors", *VAL, "--fast"], weights_and_val,
         ["REGNET_CACHE", "inside the --data folder"], env={"REGNET_CACHE": "{folder}/val"}),
    *(Case(f"{option[2:]}-into-proc", VALIDATE, ["--weights", "w.safetensors", *VAL, option, f"/proc/regnet.{ext}"],
           weights_and_val, [f"{option} /proc/regnet.{ext}", "cannot write in '/proc'"])
      for option, ext in (("--plot", "png"), ("--table", "md"), ("--json", "json"))),
    # held: refused before the fix too (when writing, with nothing run before it)
    Case("convert-into-proc", CONVERT, ["export", "w.safetensors", "/proc/regnet.safetensors", "--to", "timm"],
         weights_and_val, ["/proc/regnet.safetensors", "cannot write in '/proc'"]),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.id)
def test_refused(case: Case, inputs: Inputs, zygote: Zygote, tmp_path: Path):
    """One line, the exit code, nothing changed, and nothing run first (no report on stdout)."""
    assert run_case(case, inputs, zygote, tmp_path).stdout == ""


def test_the_genuine_onnx_export_is_within_every_bound(inputs: Inputs, zygote: Zygote, tmp_path: Path):
    outcome = zygote.run(CONVERT, ["inspect", str(inputs.onnx)], tmp_path, seconds=60, memory=ONNX_MEMORY)
    assert (outcome.code, outcome.stderr) == (0, ""), outcome.stderr
    assert "model:        regnetx_200mf" in outcome.stdout


def test_a_newline_in_an_image_name_forges_no_line_of_predict(inputs: Inputs, tmp_path: Path):
    """Each field is escaped on its own: the name stays on its line, the classes on theirs."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    forged = "cat\n  1.  99.90%  goldfish (n01443537)\nx.jpg"
    (folder / forged).write_bytes(next(inputs.fixtures.val.rglob("*.JPEG")).read_bytes())
    result = CliRunner().invoke(convert_main, ["predict", str(inputs.native), str(folder), "--topk", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3 and lines[0] == f"{folder}/cat\\x0a  1.  99.90%  goldfish (n01443537)\\x0ax.jpg"
    assert lines[1].startswith("  1. ") and lines[2].startswith("  2. ")


class SignalInAFinalizer:
    """Sends SIGTERM to this process from `__del__`, where Python swallows the exception the handler raises (as in
    a fork handler while DataLoader workers start)."""

    def __del__(self) -> None:
        if signal.getsignal(signal.SIGTERM) is process._on_signal:  # never at a test worker without the handler
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_swallowed_signal_still_ends_the_run(converted_200mf, tmp_path: Path, monkeypatch):
    """Exit 143 with one line, no traceback: the interruption is raised again at the next batch."""
    weights, _ = converted_200mf
    val = generated_val_set(tmp_path, 4, seed=3)
    real = runner.make_loader

    def loader_while_a_signal_is_lost(*args, **kwargs):
        SignalInAFinalizer()  # dropped at once: its finalizer takes the signal
        assert process.RECEIVED == [signal.SIGTERM]  # received, its exception swallowed
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "make_loader", loader_while_a_signal_is_lost)
    argv = ["--weights", str(weights), "--data", str(val), "--workers", "0", "-q", "--json", str(tmp_path / "r.json")]
    result = CliRunner().invoke(validate_main, argv)
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert result.output == "error: terminated by SIGTERM; nothing was written\n"
    assert not (tmp_path / "r.json").exists()


def test_a_swallowed_signal_in_a_command_that_finishes_sets_its_exit_code(converted_200mf, tmp_path, monkeypatch):
    """Where no batch follows (an export), the command ends with the signal's code and says its work was done."""
    from regnet_convert.export import pipeline

    weights, _ = converted_200mf
    real = pipeline.check_names_round_trip

    def round_trip_while_a_signal_is_lost(*args, **kwargs):
        SignalInAFinalizer()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "check_names_round_trip", round_trip_while_a_signal_is_lost)
    output = tmp_path / "timm.safetensors"
    result = CliRunner().invoke(convert_main, ["export", str(weights), str(output), "--to", "timm", "--quiet"])
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert result.output == "error: terminated by SIGTERM, after the command had done its work\n"
    assert output.is_file() and process.RECEIVED == []  # done, and the next command starts afresh
