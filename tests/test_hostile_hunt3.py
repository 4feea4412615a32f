"""A third hunt over what issues 13-18 added (issue 19): ONNX graphs, JSON in folders and headers, the record of
first downloads, text a file carries into `inspect`, `predict` and model cards, folders of images, the lock.

Defects found (each case failed before its fix): an ONNX graph with a `Loop` of 10^12 turns ran for ever inside
onnxruntime, deaf to Ctrl-C; a `Constant` node's external data slipped past the self-contained check and was read
relative to the working folder; a JSON integer over Python's 4300 digits (a config.json, a safetensors header) or
a deeply nested downloads.json ended in exit 3; downloads.json's dates reached `zoo list` with their terminal
escapes; a newline in a class name or source name forged lines of `predict`'s and `inspect`'s output and a
source name wrote Markdown into model cards; a symbolic link loop in a folder of images blamed the folder (and
`--skip-bad-images` did not skip it); the lock checker read `a==1#b --hash=...` as a pin where pip does not.
The cases that held are kept too (a handful).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from crafted import Fixtures, copy_val, edit_metadata, nested_json
from hostile import Case, Outcome, Zygote, check_refusal, snapshot
from onnx import TensorProto, helper, numpy_helper

from regnet_convert.export.pipeline import export

pytestmark = [pytest.mark.hostile, pytest.mark.slow]

CONVERT, VALIDATE = "regnet-convert", "regnet-validate"
ONNX_MEMORY = 4 << 30  # onnxruntime reserves address space for its arenas and threads
ROOT = Path(__file__).parent.parent
HUGE_INT = "1" + "0" * 5000  # over Python's 4300 digits of int() from a string


@dataclass(frozen=True)
class Inputs:
    fixtures: Fixtures
    native: Path  # a converted RegNetX-200MF
    onnx: Path
    hf: Path
    timm_hub: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, converted_200mf, fixtures) -> Inputs:
    folder = tmp_path_factory.mktemp("hunt3")
    native = converted_200mf[0]
    for target, name in (("onnx", "model.onnx"), ("hf", "hf"), ("timm-hub", "timm-hub")):
        export(native, folder / name, target)
    return Inputs(fixtures, native, folder / "model.onnx", folder / "hf", folder / "timm-hub")


def run_case(case: Case, inputs: Inputs, zygote: Zygote, tmp_path: Path) -> Outcome:
    """`hostile.refuse` with `{folder}` in the environment replaced by the case's folder; returns how it ended."""
    folder = tmp_path / "case"
    folder.mkdir()
    case.setup(folder, inputs)
    before = snapshot(folder)
    env = {k: v.format(folder=folder) for k, v in case.env.items()}
    outcome = zygote.run(case.tool, case.argv, folder, env, case.seconds, case.memory)
    check_refusal(outcome, before, snapshot(folder), case.code, case.says)
    return outcome


# ---- crafted inputs ----------------------------------------------------------------------------------------------


def onnx_graph(tail: Callable[[list, list], None]) -> Callable[[Path, Inputs], None]:
    """`w.onnx`: the export's metadata on a small graph (pooled image -> 1000 logits) that `tail` finishes."""

    def setup(d: Path, ex: Inputs) -> None:
        source = onnx.load(ex.onnx)
        props = {p.key: p.value for p in source.metadata_props}
        image = helper.make_tensor_value_info(props.get("input_name", "image"), TensorProto.FLOAT, ["N", 3, "H", "W"])
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
        nodes = [helper.make_node("GlobalAveragePool", [image.name], ["g"]), helper.make_node("Flatten", ["g"], ["f"])]
        initializers: list = []
        tail(nodes, initializers)
        model = helper.make_model(
            helper.make_graph(nodes, "g", [image], [logits], initializer=initializers),
            opset_imports=[helper.make_opsetid("", 17)],
        )
        model.ir_version = source.ir_version
        for key, value in {**props, "probe_logits": json.dumps([0.0] * 1000)}.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, d / "w.onnx")

    return setup


def endless_loop(nodes: list, initializers: list) -> None:
    """logits = Loop(10^12 turns, identity body) over zero logits: onnxruntime would turn for hours."""
    state = [helper.make_tensor_value_info(n, t, s) for n, t, s in (("i", TensorProto.INT64, []),
             ("c", TensorProto.BOOL, []), ("a", TensorProto.FLOAT, None))]  # fmt: skip
    outs = [
        helper.make_tensor_value_info("c2", TensorProto.BOOL, []),
        helper.make_tensor_value_info("a2", TensorProto.FLOAT, None),
    ]
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c2"]), helper.make_node("Identity", ["a"], ["a2"])], "body", state, outs
    )
    initializers += [
        numpy_helper.from_array(np.zeros((3, 1000), np.float32), "W"),
        numpy_helper.from_array(np.array(10**12, np.int64), "M"),
        numpy_helper.from_array(np.array(True), "cond"),
    ]
    nodes += [
        helper.make_node("MatMul", ["f", "W"], ["m"]),
        helper.make_node("Loop", ["M", "cond", "m"], ["logits"], body=body),
    ]


def external_constant(nodes: list, initializers: list) -> None:
    """logits = f @ W, W a Constant node whose tensor lives in `w.bin` (no initializer is external)."""
    weights = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 1000], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", "12000")):
        weights.external_data.add(key=key, value=value)
    nodes += [
        helper.make_node("Constant", [], ["W"], value=weights),
        helper.make_node("MatMul", ["f", "W"], ["logits"]),
    ]


def with_external_file(setup: Callable[[Path, Inputs], None]) -> Callable[[Path, Inputs], None]:
    def both(d: Path, ex: Inputs) -> None:
        setup(d, ex)
        (d / "w.bin").write_bytes(np.ones((3, 1000), np.float32).tobytes())

    return both


def folder_with_config(which: str, text: Callable[[str], str]) -> Callable[[Path, Inputs], None]:
    """A copy of the hf or timm-hub export as `w`, its config.json's text edited."""

    def setup(d: Path, ex: Inputs) -> None:
        import shutil

        shutil.copytree(getattr(ex, which), d / "w")
        config = d / "w" / "config.json"
        config.write_text(text(config.read_text()))

    return setup


def huge_num_classes(text: str) -> str:
    assert '"num_classes": 1000' in text
    return text.replace('"num_classes": 1000', f'"num_classes": {HUGE_INT}')


def huge_int_header(d: Path, ex: Inputs) -> None:
    header = b'{"w": {"dtype": "F32", "shape": [' + HUGE_INT.encode() + b'], "data_offsets": [0, 4]}}'
    (d / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)


RECORD = {"format": "regnet-convert-downloads", "files": {"RegNetX-200MF_dds_8gpu.pyth": {
    "size": 10, "sha256": "ab" * 32, "first_downloaded": "2026-12-05T20:08:53Z"}}}  # fmt: skip


def record(content: bytes) -> Callable[[Path, Inputs], None]:
    def setup(d: Path, ex: Inputs) -> None:
        (d / "ck").mkdir()
        (d / "ck" / "downloads.json").write_bytes(content)

    return setup


def escaped_date() -> bytes:
    files = RECORD["files"]["RegNetX-200MF_dds_8gpu.pyth"]
    return json.dumps({**RECORD, "files": {"RegNetX-200MF_dds_8gpu.pyth": {
        **files, "first_downloaded": "\x1b]0;owned\x07\x1b[2J"}}}).encode()  # fmt: skip


def forged_class_name(d: Path, ex: Inputs) -> None:
    from safetensors import safe_open

    with safe_open(str(ex.fixtures.zoo_safetensors), "pt") as f:
        names = json.loads(f.metadata()["category_names"])
    names = ["tench\n  2.  99.00%  forged (n99999999)", *names[1:]]
    edit_metadata(ex.fixtures.zoo_safetensors, d / "w.safetensors", category_names=json.dumps(names))
    (d / "a.jpg").write_bytes(next(ex.fixtures.val.rglob("*.JPEG")).read_bytes())


def images_with_link_loop(d: Path, ex: Inputs) -> None:
    (d / "imgs").mkdir()
    (d / "imgs" / "a.jpg").write_bytes(next(ex.fixtures.val.rglob("*.JPEG")).read_bytes())
    os.symlink("b.jpg", d / "imgs" / "b.jpg")  # b.jpg -> b.jpg: a loop


def with_native(d: Path, ex: Inputs) -> None:
    os.symlink(ex.native, d / "w.safetensors")


REFUSED = [
    Case("onnx-endless-loop", CONVERT, ["inspect", "w.onnx"], onnx_graph(endless_loop),
         ["w.onnx", "operator 'Loop'"], seconds=30, memory=ONNX_MEMORY),
    Case("onnx-endless-loop-validate", VALIDATE, ["--weights", "w.onnx", "--data", "val", "--workers", "0", "-q"],
         lambda d, ex: (onnx_graph(endless_loop)(d, ex), copy_val(ex.fixtures, d)), ["w.onnx", "operator 'Loop'"],
         seconds=30, memory=ONNX_MEMORY),
    Case("onnx-constant-external-data", CONVERT, ["inspect", "w.onnx"],
         with_external_file(onnx_graph(external_constant)), ["w.onnx", "external data"], memory=ONNX_MEMORY),
    Case("hf-config-huge-integer", CONVERT, ["inspect", "w"], folder_with_config("hf", lambda t: t.replace(
         '"num_channels": 3', f'"num_channels": {HUGE_INT}')), ["w/config.json", "not valid JSON"]),
    Case("timm-hub-config-huge-integer", CONVERT, ["timm", "w", "out.safetensors"],
         folder_with_config("timm_hub", huge_num_classes), ["w/config.json", "not valid JSON"]),
    Case("safetensors-header-huge-integer", CONVERT, ["inspect", "w.safetensors"], huge_int_header,
         ["w.safetensors", "header is not JSON"]),
    Case("downloads-record-nested", CONVERT, ["zoo", "list"], record(nested_json(100_000)),
         ["downloads.json", "not trusted"], env={"REGNET_CHECKPOINTS": "{folder}/ck"}),
    Case("downloads-record-escapes-in-date", CONVERT, ["zoo", "list"], record(escaped_date()),
         ["downloads.json", "not a UTC time", "not trusted"], env={"REGNET_CHECKPOINTS": "{folder}/ck"}),
    Case("predict-class-name-with-newline", CONVERT, ["predict", "w.safetensors", "a.jpg"], forged_class_name,
         ["w.safetensors", "categories", "printable"]),
    Case("predict-folder-with-link-loop", CONVERT, ["predict", "w.safetensors", "imgs"],
         lambda d, ex: (images_with_link_loop(d, ex), with_native(d, ex)), ["imgs/b.jpg", "not a regular file"]),
    # held: refused before the fixes too
    Case("predict-json-onto-an-image", CONVERT, ["predict", "w.safetensors", "imgs/a.jpg", "--json", "imgs/a.jpg"],
         lambda d, ex: (images_with_link_loop(d, ex), with_native(d, ex)), ["--json imgs/a.jpg", "input"]),
    Case("predict-a-fifo", CONVERT, ["predict", "w.safetensors", "f.jpg"],
         lambda d, ex: (with_native(d, ex), os.mkfifo(d / "f.jpg")), ["f.jpg", "FIFO"], seconds=20),
    Case("timm-hub-config-nested", CONVERT, ["inspect", "w"],
         folder_with_config("timm_hub", lambda t: nested_json(100_000).decode()), ["w/config.json", "nests too deeply"]),
    Case("zoo-mirror-ftp", CONVERT, ["zoo", "fetch", "regnetx_200mf", "--mirror", "ftp://example.invalid/"],
         lambda d, ex: (d / "ck").mkdir(), ["--mirror", "http://, https:// or file://"],
         env={"REGNET_CHECKPOINTS": "{folder}/ck", "REGNET_CACHE": "{folder}/cache"}),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.id)
def test_refused(case: Case, inputs: Inputs, zygote: Zygote, tmp_path: Path):
    run_case(case, inputs, zygote, tmp_path)


def test_skip_bad_images_skips_a_link_loop_in_a_folder(inputs: Inputs, zygote: Zygote, tmp_path: Path):
    images_with_link_loop(tmp_path, inputs)
    with_native(tmp_path, inputs)
    outcome = zygote.run(CONVERT, ["predict", "w.safetensors", "imgs", "--skip-bad-images", "--topk", "1"], tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert outcome.stderr.splitlines() == ["warning: imgs/b.jpg: not a regular file; skipped"]
    assert outcome.stdout.splitlines()[0] == "imgs/a.jpg"


def test_the_genuine_onnx_export_still_reads(inputs: Inputs, zygote: Zygote, tmp_path: Path):
    os.symlink(inputs.onnx, tmp_path / "w.onnx")
    outcome = zygote.run(CONVERT, ["inspect", "w.onnx"], tmp_path, memory=ONNX_MEMORY)
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert "model:        regnetx_200mf" in outcome.stdout


FORGING_NAME = "x`` <img src=x>\n# Owned\n- model: regnetx_32gf"


def test_a_source_name_forges_no_line_of_inspect(inputs: Inputs, zygote: Zygote, tmp_path: Path):
    edit_metadata(inputs.native, tmp_path / "w.safetensors", source_file=FORGING_NAME)
    outcome = zygote.run(CONVERT, ["inspect", "w.safetensors"], tmp_path)
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    (source,) = [line for line in outcome.stdout.splitlines() if line.startswith("source:")]
    assert "x`` <img src=x>\\x0a# Owned\\x0a- model: regnetx_32gf" in source
    assert not any(line.startswith(("# Owned", "- model")) for line in outcome.stdout.splitlines())


def test_a_source_name_writes_no_markdown_into_the_model_card(inputs: Inputs, zygote: Zygote, tmp_path: Path):
    edit_metadata(inputs.native, tmp_path / "w.safetensors", source_file=FORGING_NAME)
    outcome = zygote.run(CONVERT, ["export", "w.safetensors", "hf", "--to", "hf", "-q"], tmp_path)
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    card = (tmp_path / "hf" / "README.md").read_text().splitlines()
    assert "- source: `pycls` file ```x`` <img src=x>\\x0a# Owned\\x0a- model: regnetx_32gf```" in card
    assert "# Owned" not in card


# ---- the lock ----------------------------------------------------------------------------------------------------


def check_lock(tmp_path: Path, text: bytes | None) -> subprocess.CompletedProcess:
    lock = tmp_path / "constraints.txt"
    if text is None:
        os.mkfifo(lock)
    else:
        lock.write_bytes(text)
    command = [sys.executable, str(ROOT / "tools" / "check_lock.py"), str(lock)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"click==8.5.1#x --hash=sha256:" + b"0" * 64 + b"\n", "'click==8.5.1#x --hash"),  # pip: no comment
        (b"click==8.5.1\n-r other.txt\n", "'-r other.txt'"),  # held
        (None, "not a regular file"),  # held: a FIFO, without blocking
    ],
    ids=["hash-behind-a-glued-hash-sign", "requirement-file", "fifo"],
)
def test_the_lock_refuses(tmp_path: Path, text: bytes | None, says: str):
    done = check_lock(tmp_path, text)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert says in done.stderr, done.stderr


def test_the_lock_keeps_comments_as_pip_reads_them(tmp_path: Path):
    done = check_lock(tmp_path, b"# the lock\nclick==8.5.1  # a comment\nnumpy==2.3.5\t#another\n")
    assert done.returncode == 0 and done.stderr == "", done.stderr


# ---- interrupted -------------------------------------------------------------------------------------------------


def wait_until_it_catches(child: subprocess.Popen, signum: int, seconds: float = 120) -> None:
    """Return once `child` has a handler for `signum` (its command is running), per /proc/PID/status."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and child.poll() is None:
        status = Path(f"/proc/{child.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"the process did not catch signal {signum} within {seconds} s (exit code {child.poll()})")


def test_sigterm_during_predict_keeps_the_previous_json(inputs: Inputs, tmp_path: Path):
    """Held: a predict stopped mid-run exits 143 with one line, the earlier --json untouched, no temporary left."""
    images = tmp_path / "imgs"
    images.mkdir()
    data = next(inputs.fixtures.val.rglob("*.JPEG")).read_bytes()
    for i in range(400):
        (images / f"{i:03}.jpg").write_bytes(data)
    (tmp_path / "p.json").write_text("old\n")
    argv = [sys.executable, "-m", "regnet_convert", "predict", str(inputs.native), "imgs", "--json", "p.json"]
    child = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_it_catches(child, signal.SIGTERM)  # a fixed sleep lost the race on a loaded machine: the
    child.send_signal(signal.SIGTERM)  # signal came while torch was still being imported, and killed it outright
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM and err.count("\n") == 1 and err.startswith("error: "), err
    assert (tmp_path / "p.json").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "p.json"]
