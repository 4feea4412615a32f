"""Hostile inputs to `regnet-validate --weights` and `inspect` in the formats read since issue 18: ONNX files whose
graph, input name or channel order disagree with their metadata, truncated ONNX, tampered or card-less hf and
timm-hub folders, folders with extra files, symlinks out of the folder.

Refusals keep the contract of `hostile.check_refusal` (exit 2, one `error:` line naming the file, no traceback,
nothing changed); accepted oddities (no card, extra files, the symlinks of a Hugging Face cache) must give the
native file's counts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from crafted import copy_val
from hostile import Case, Zygote, refuse, snapshot
from safetensors.torch import load_file, save_file

from regnet_convert.export.pipeline import export

pytestmark = [pytest.mark.hostile, pytest.mark.slow]

VALIDATE, INSPECT = "regnet-validate", "regnet-convert"
ONNX_MEMORY = 4 << 30  # onnxruntime reserves address space for its arenas and threads


@dataclass(frozen=True)
class Exports:
    native: Path  # a converted RegNetX-200MF with random weights
    onnx: Path
    hf: Path
    timm_hub: Path


@pytest.fixture(scope="module")
def exports(tmp_path_factory, converted_200mf) -> Exports:
    folder = tmp_path_factory.mktemp("exports")
    native = converted_200mf[0]
    for target, name in (("onnx", "model.onnx"), ("hf", "hf"), ("timm-hub", "timm-hub")):
        export(native, folder / name, target)
    return Exports(native, folder / "model.onnx", folder / "hf", folder / "timm-hub")


Setup = Callable[[Path, Exports], object]


def validate_args(weights: str) -> list[str]:
    return ["--weights", weights, "--data", "val", "--workers", "0", "--quiet", "--batch-size", "4"]


def onnx_edit(edit: Callable[[onnx.ModelProto], object]) -> Setup:
    """The ONNX export as `w.onnx`, edited."""

    def setup(d: Path, ex: Exports) -> None:
        proto = onnx.load(ex.onnx)
        edit(proto)
        onnx.save(proto, d / "w.onnx")

    return setup


def set_props(**changes: str | None) -> Callable[[onnx.ModelProto], None]:
    def edit(proto: onnx.ModelProto) -> None:
        props = {p.key: p.value for p in proto.metadata_props}
        for key, value in changes.items():
            if value is None:
                props.pop(key, None)
            else:
                props[key] = value
        del proto.metadata_props[:]
        for key, value in props.items():
            proto.metadata_props.add(key=key, value=value)

    return edit


def other_order(proto: onnx.ModelProto) -> None:
    """The metadata says RGB (mean and std reversed with it): the graph still takes BGR."""
    props = {p.key: p.value for p in proto.metadata_props}
    set_props(
        channel_order="RGB",
        mean=json.dumps(json.loads(props["mean"])[::-1]),
        std=json.dumps(json.loads(props["std"])[::-1]),
    )(proto)


def other_weights(proto: onnx.ModelProto) -> None:
    """Another graph under the same metadata: the classifier's weights changed."""
    fc = next(t for t in proto.graph.initializer if t.name == "head.fc.weight")
    values = onnx.numpy_helper.to_array(fc).copy()
    values[::2] += 0.5
    fc.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), fc.name))


def truncated(d: Path, ex: Exports) -> None:
    data = ex.onnx.read_bytes()
    (d / "w.onnx").write_bytes(data[: len(data) // 2])


def copy_folder(which: str, edit: Callable[[Path], object] = lambda _: None) -> Setup:
    def setup(d: Path, ex: Exports) -> None:
        shutil.copytree(getattr(ex, which), d / "w")
        edit(d / "w")

    return setup


def config_edit(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))

    return apply


def provenance_says(model: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "model.safetensors"
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata()
        save_file(load_file(path), path, {**meta, "regnet-convert.model": model})

    return apply


def swap_labels(config: dict) -> None:
    names = config["label_names"]
    names[0], names[1] = names[1], names[0]


def link(name: str, target: Callable[[Path], Path]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        os.remove(folder / name)
        os.symlink(target(folder), folder / name)

    return apply


def fifo_outside(folder: Path) -> Path:
    os.mkfifo(folder.parent / "pipe")
    return folder.parent / "pipe"


def with_val(setup: Setup) -> Setup:
    def both(d: Path, ex: Exports) -> None:
        setup(d, ex)
        copy_val(_genuine["fixtures"], d)

    return both


_genuine: dict = {}  # conftest's `fixtures` (the val folder), set by the autouse fixture below


@pytest.fixture(autouse=True)
def genuine_val(fixtures):
    _genuine["fixtures"] = fixtures


ONNX_CASES = [
    ("onnx-channel-order", other_order, ["w.onnx", "does not compute what its metadata says", "as RGB"]),
    ("onnx-other-graph", other_weights, ["w.onnx", "does not compute what its metadata says"]),
    ("onnx-input-name", set_props(input_name="pixels"), ["w.onnx", "input is named 'image'", "'pixels'"]),
    ("onnx-no-metadata", lambda p: p.ClearField("metadata_props"), ["w.onnx", "without regnet-convert metadata"]),
    ("onnx-no-probe", set_props(probe_logits=None), ["w.onnx", "no probe_logits", "export it again"]),
    ("onnx-bad-probe", set_props(probe_logits='"x"'), ["w.onnx", "probe_logits is not"]),
    ("onnx-crop", set_props(crop="192"), ["w.onnx", "does not compute what its metadata says"]),
]
CASES = [
    *(Case(id, VALIDATE, validate_args("w.onnx"), with_val(onnx_edit(edit)), says, memory=ONNX_MEMORY)
      for id, edit, says in ONNX_CASES),
    Case("inspect-onnx-channel-order", INSPECT, ["inspect", "w.onnx"], onnx_edit(other_order),
         ["w.onnx", "does not compute what its metadata says"], memory=ONNX_MEMORY),
    Case("onnx-truncated", VALIDATE, validate_args("w.onnx"), with_val(truncated),
         ["w.onnx", "truncated or damaged ONNX file"], memory=ONNX_MEMORY),
    Case("hf-provenance-tampered", VALIDATE, validate_args("w"),
         with_val(copy_folder("hf", provenance_says("regnety_800mf"))),
         ["w/model.safetensors", "provenance names 'regnety_800mf'", "tampered"]),
    Case("timm-hub-architecture-tampered", VALIDATE, validate_args("w"),
         with_val(copy_folder("timm_hub", config_edit(lambda c: c.update(architecture="regnetx_004")))),
         ["w/config.json", "regnetx_400mf", "tampered"]),
    Case("timm-hub-labels-tampered", VALIDATE, validate_args("w"),
         with_val(copy_folder("timm_hub", config_edit(swap_labels))), ["w/config.json", "label_names"]),
    Case("timm-hub-not-timm", VALIDATE, validate_args("w"),
         with_val(copy_folder("timm_hub", config_edit(lambda c: c.update(architecture="resnet50")))),
         ["w/config.json", "'resnet50' is not a timm RegNet"]),
    Case("folder-both-configs", VALIDATE, validate_args("w"),
         with_val(copy_folder("timm_hub", config_edit(lambda c: c.update(model_type="regnet")))),
         ["w/config.json", "both a model_type", "and an architecture"]),
    Case("folder-no-config", VALIDATE, validate_args("w"),
         with_val(copy_folder("hf", lambda f: os.remove(f / "config.json"))), ["w", "without config.json"]),
    Case("folder-weights-link-to-device", VALIDATE, validate_args("w"),
         with_val(copy_folder("timm_hub", link("model.safetensors", lambda _: Path("/dev/zero")))),
         ["w/model.safetensors", "character device"]),
    Case("folder-config-link-to-fifo-outside", VALIDATE, validate_args("w"),
         with_val(copy_folder("hf", link("config.json", fifo_outside))), ["w/config.json", "FIFO"], seconds=20),
    Case("folder-weights-link-to-folder-outside", VALIDATE, validate_args("w"),
         with_val(copy_folder("hf", link("model.safetensors", lambda f: f.parent)))),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, exports: Exports, zygote: Zygote, tmp_path: Path):
    refuse(case, exports, zygote, tmp_path)


def counts(zygote: Zygote, folder: Path, weights: str) -> tuple[int, float, float]:
    outcome = zygote.run(VALIDATE, [*validate_args(weights), "--json", "../out.json"], folder, memory=ONNX_MEMORY)
    assert outcome.code == 0 and not outcome.stderr.strip(), outcome.stderr
    record = json.loads((folder.parent / "out.json").read_text())
    return record["images"], record["top1"], record["top5"]


def hf_cache_layout(folder: Path) -> None:
    """Each file a symlink to a blob outside the folder, as huggingface_hub's cache keeps a snapshot."""
    blobs = folder.parent / "blobs"
    blobs.mkdir()
    for path in list(folder.iterdir()):
        blob = blobs / path.name
        shutil.move(path, blob)
        os.symlink(os.path.relpath(blob, folder), path)


ACCEPTED = {
    "hf-without-card": ("hf", lambda f: os.remove(f / "README.md")),
    "timm-hub-without-card": ("timm_hub", lambda f: os.remove(f / "README.md")),
    "hf-extra-files": ("hf", lambda f: [(f / "notes.txt").write_text("x"), (f / ".git").mkdir(),
                                         (f / "pytorch_model.bin").write_bytes(b"not read")]),
    "timm-hub-extra-files": ("timm_hub", lambda f: [(f / "open_clip_config.json").write_text("{"),
                                                     (f / "sub").mkdir()]),
    "hf-cache-symlinks": ("hf", hf_cache_layout),
}  # fmt: skip


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_and_counted_as_the_native_file(name, exports, fixtures, zygote, tmp_path):
    which, edit = ACCEPTED[name]
    folder = tmp_path / "case"
    folder.mkdir()
    copy_val(fixtures, folder)
    shutil.copy(exports.native, folder / "native.safetensors")
    copy_folder(which, edit)(folder, exports)
    before = snapshot(folder)
    assert counts(zygote, folder, "w") == counts(zygote, folder, "native.safetensors")
    assert snapshot(folder) == before
