"""Hostile inputs to `regnet-convert hf FOLDER OUT` and hostile output folders of `export --to hf`.

Each case runs in a limited child process (`hostile.Zygote`) and must keep the refusal contract
(`hostile.check_refusal`): exit 2, one `error:` line naming the file or folder, no traceback, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from crafted import code_running_checkpoint, deep_pickle, nested_json
from hostile import Case, Zygote, refuse, snapshot
from safetensors.torch import load_file, save_file

import regnet
from regnet import RegNetConfig, StageConfig
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.export.pipeline import export

pytestmark = pytest.mark.hostile

CONVERT, OUT = "regnet-convert", "out.safetensors"
TINY = RegNetConfig((StageConfig(1, 16, 8), StageConfig(2, 32, 8)), se_ratio=0.25, num_classes=5)


@dataclass(frozen=True)
class Fixtures:
    native: Path  # a tiny RegNetY, converted
    hf: Path  # its export --to hf


Setup = Callable[[Path, Fixtures], object]


def native_file(path: Path, config: RegNetConfig = TINY) -> Path:
    model = regnet.RegNet(config).init_weights()
    regnet.save(path, model.state_dict(), WeightsMetadata(config, Preprocessing(), "test", "x", "0" * 64, "test"))
    return path


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> Fixtures:
    folder = tmp_path_factory.mktemp("hf-genuine")
    native = native_file(folder / "tiny.safetensors")
    export(native, folder / "hf", "hf")
    return Fixtures(native, folder / "hf")


def source(d: Path, fx: Fixtures) -> None:
    shutil.copytree(fx.hf, d / "src")


def config_edit(edit: Callable[[dict], object]) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        source(d, fx)
        config = json.loads((d / "src" / "config.json").read_text())
        edit(config)
        (d / "src" / "config.json").write_text(json.dumps(config))

    return setup


def setting(**changes: object) -> Setup:
    return config_edit(lambda c: c.update(changes))


def removing(key: str) -> Setup:
    return config_edit(lambda c: c.pop(key))


def config_bytes(data: bytes) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        source(d, fx)
        (d / "src" / "config.json").write_bytes(data)

    return setup


def tensors_edit(edit: Callable[[dict], object]) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        source(d, fx)
        state = load_file(d / "src" / "model.safetensors")
        edit(state)
        save_file(state, str(d / "src" / "model.safetensors"))

    return setup


def then(*steps: Callable[[Path, Fixtures], object]) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        for step in steps:
            step(d, fx)

    return setup


def weights(action: Callable[[Path], object]) -> Setup:
    """The source folder with model.safetensors replaced by what `action(path)` makes."""

    def setup(d: Path, fx: Fixtures) -> None:
        source(d, fx)
        (d / "src" / "model.safetensors").unlink()
        action(d / "src" / "model.safetensors")

    return setup


def as_pytorch_bin(make: Callable[[Path], object]) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        source(d, fx)
        (d / "src" / "model.safetensors").unlink()
        make(d / "src" / "pytorch_model.bin")

    return setup


SE_CONV = "regnet.encoder.stages.1.layers.1.layer.3.convolution.weight"  # a Y layer's last 1x1 convolution


def import_cases() -> list[Case]:
    def case(id: str, setup: Setup, says: list[str], src: str = "src", out: str = OUT, *options: str) -> Case:
        return Case(f"hf-import-{id}", CONVERT, ["hf", src, out, *options], setup, says)

    cfg = ["src/config.json"]
    big_labels = {str(i): "x" * 100 for i in range(12_000)}
    return [
        case("folder-missing", lambda d, fx: None, ["src", "no such folder"]),
        case("file-not-folder", lambda d, fx: (d / "src").write_bytes(b"{}"), ["src", "is not a folder"]),
        case("fifo-not-folder", lambda d, fx: os.mkfifo(d / "src"), ["src", "is not a folder"]),
        case("no-config", then(source, lambda d, fx: (d / "src" / "config.json").unlink()), ["no such config.json"]),
        case("config-is-folder", then(source, lambda d, fx: ((d / "src" / "config.json").unlink(),
             (d / "src" / "config.json").mkdir())), [*cfg, "is a directory"]),
        case("config-empty", config_bytes(b""), [*cfg, "empty file"]),
        case("config-not-json", config_bytes(b"{model_type: regnet"), [*cfg, "not valid JSON"]),
        case("config-not-utf8", config_bytes(b'{"model_type": "\xff\xfe"}'), [*cfg, "not valid JSON"]),
        case("config-deep", config_bytes(nested_json(300_000)), [*cfg, "not valid JSON"]),
        case("config-huge", config_bytes(json.dumps({"id2label": big_labels}).encode()), [*cfg, "bytes, not"]),
        case("config-array", config_bytes(b"[1, 2]"), [*cfg, "JSON list, not an object"]),
        case("model-type-resnet", setting(model_type="resnet"), [*cfg, "not a RegNet", "resnet"]),
        case("model-type-missing", removing("model_type"), [*cfg, "no 'model_type'"]),
        case("model-type-number", setting(model_type=7), [*cfg, "'model_type' is 7"]),
        case("layer-type-unknown", setting(layer_type="z"), [*cfg, "neither 'x' nor 'y'"]),
        case("layer-type-list", setting(layer_type=["y"]), [*cfg, "layer_type", "expected a string"]),
        case("hidden-act-gelu", setting(hidden_act="gelu"), [*cfg, "gelu", "only ReLU"]),
        case("hidden-sizes-missing", removing("hidden_sizes"), [*cfg, "no 'hidden_sizes'"]),
        case("hidden-sizes-string", setting(hidden_sizes="16,32"), [*cfg, "hidden_sizes", "expected a list"]),
        case("hidden-sizes-bool", setting(hidden_sizes=[16, True]), [*cfg, "hidden_sizes[1]", "true"]),
        case("hidden-sizes-float", setting(hidden_sizes=[16, 32.0]), [*cfg, "hidden_sizes[1]", "32.0"]),
        case("hidden-sizes-huge", setting(hidden_sizes=[16, 10**12]), [*cfg, "hidden_sizes[1]", "1 to 65536"]),
        case("hidden-sizes-zero", setting(hidden_sizes=[0, 32]), [*cfg, "hidden_sizes[0]"]),
        case("hidden-sizes-empty", setting(hidden_sizes=[], depths=[]), [*cfg, "0 entries"]),
        case("hidden-sizes-1000-stages", setting(hidden_sizes=[16] * 1000, depths=[1] * 1000), [*cfg, "1000 entries"]),
        case("depths-absurd", setting(depths=[1, 10**9]), [*cfg, "depths[1]", "1 to 256"]),
        case("depths-sum", setting(depths=[200, 200]), [*cfg, "400 blocks"]),
        case("depths-negative", setting(depths=[1, -2]), [*cfg, "depths[1]"]),
        case("depths-length", setting(depths=[1, 2, 3]), [*cfg, "differ in length"]),
        case("depths-null", setting(depths=None), [*cfg, "'depths' is null"]),
        case("groups-width-zero", setting(groups_width=0), [*cfg, "'groups_width' is 0"]),
        case("groups-width-float", setting(groups_width=8.5), [*cfg, "groups_width", "expected an integer"]),
        case("groups-indivisible", setting(hidden_sizes=[16, 50], groups_width=16), [*cfg, "hidden_sizes[1] 50"]),
        case("embedding-negative", setting(embedding_size=-32), [*cfg, "'embedding_size' is -32"]),
        case("channels-one", setting(num_channels=1), [*cfg, "num_channels is 1"]),
        case("channels-absurd", setting(num_channels=10**6), [*cfg, "num_channels"]),
        case("downsample-string", setting(downsample_in_first_stage="yes"), [*cfg, "expected true or false"]),
        case("id2label-list", setting(id2label=["a"] * 5), [*cfg, "'id2label' is not a mapping"]),
        case("id2label-gap", setting(id2label={str(i): "a" for i in (0, 1, 2, 3, 7)}), [*cfg, "class ids 0 to 4"]),
        case("id2label-not-strings", setting(id2label={str(i): i for i in range(5)}), [*cfg, "not strings"]),
        case("num-labels-contradicts", setting(num_labels=7), [*cfg, "'num_labels' 7 contradicts"]),
        case("labels-contradict-tensors", setting(id2label={str(i): "a" for i in range(9)}), ["src", "contradict"]),
        case("depths-contradict-tensors", setting(depths=[1, 3]), ["src", "contradict"]),
        case("widths-contradict-tensors", setting(hidden_sizes=[16, 48]), ["src", "contradict"]),
        case("stem-contradicts-tensors", setting(embedding_size=24), ["src", "contradict"]),
        case("groups-contradict-tensors", setting(groups_width=16), ["src", "contradict"]),
        case("says-x-holds-y", setting(layer_type="x"), ["src/model.safetensors", "layer_type x"]),
        case("says-y-holds-x", tensors_edit(lambda s: [s.pop(k) for k in list(s) if "attention" in k]),
             ["src", "contradict"]),
        case("y-conv-at-x-place", tensors_edit(lambda s: s.__setitem__(SE_CONV.replace("layer.3", "layer.2"),
             s.pop(SE_CONV))), ["src/model.safetensors", "layer_type y"]),
        case("unknown-tensor", tensors_edit(lambda s: s.__setitem__("regnet.extra.weight", torch.zeros(1))),
             ["src", "no RegNet has"]),
        case("base-model-only", tensors_edit(lambda s: [s.pop(k) for k in list(s) if k.startswith("classifier")]),
             ["src", "contradict"]),
        case("int-tensor", tensors_edit(lambda s: s.__setitem__("classifier.1.bias", s["classifier.1.bias"].long())),
             ["src/model.safetensors", "integer"]),
        case("counter-not-scalar", tensors_edit(lambda s: s.__setitem__(
             "regnet.embedder.embedder.normalization.num_batches_tracked", torch.zeros(2, dtype=torch.long))),
             ["src/model.safetensors", "integer"]),
        case("nan-tensor", tensors_edit(lambda s: s["classifier.1.bias"].fill_(float("nan"))), ["NaN"]),
        case("weights-truncated", then(source, lambda d, fx: (d / "src" / "model.safetensors").write_bytes(
             (fx.hf / "model.safetensors").read_bytes()[:-100])), ["src/model.safetensors", "truncated"]),
        case("no-weights", weights(lambda p: None), ["src", "holds neither model.safetensors nor pytorch_model.bin"]),
        case("sharded", weights(lambda p: (p.parent / "model.safetensors.index.json").write_text("{}")),
             ["model.safetensors.index.json", "sharded"]),
        case("weights-folder", weights(lambda p: p.mkdir()), ["src/model.safetensors", "is a directory"]),
        case("weights-fifo", weights(lambda p: os.mkfifo(p)), ["src/model.safetensors", "is a FIFO"]),
        case("weights-dangling-link", weights(lambda p: p.symlink_to("gone")), ["src/model.safetensors", "no such"]),
        case("bin-runs-code", as_pytorch_bin(lambda p: code_running_checkpoint(p, str(p.parent.parent / "pwned"))),
             ["src/pytorch_model.bin", "refused to unpickle"]),
        case("bin-deep-pickle", as_pytorch_bin(lambda p: p.write_bytes(deep_pickle(200_000))),
             ["src/pytorch_model.bin", "nests deeper"]),
        case("bin-not-state-dict", as_pytorch_bin(lambda p: torch.save([torch.zeros(2)], p)),
             ["src/pytorch_model.bin", "not a state dict"]),
        case("bin-random-bytes", as_pytorch_bin(lambda p: p.write_bytes(os.urandom(4096))),
             ["src/pytorch_model.bin"]),
        case("output-exists", then(source, lambda d, fx: (d / OUT).write_bytes(b"keep")), ["already exists"]),
        case("output-is-source-folder", source, ["src", "is a directory"], "src", "src", "--force"),
        case("output-in-missing-folder", source, ["does not exist"], "src", "nowhere/out.safetensors"),
        case("model-contradicts", source, ["--model regnetx_200mf"], "src", OUT, "--model", "regnetx_200mf"),
    ]  # fmt: skip


def export_case(id: str, output: str, setup: Setup, says: list[str], *options: str, src: str = "w.safetensors") -> Case:
    return Case(f"hf-export-{id}", CONVERT, ["export", src, output, "--to", "hf", *options], setup, says)


def weights_file(d: Path, fx: Fixtures) -> None:
    shutil.copy(fx.native, d / "w.safetensors")


def earlier_export(d: Path, fx: Fixtures) -> None:
    shutil.copytree(fx.hf, d / "out")


def refused(config: RegNetConfig) -> Setup:
    return lambda d, fx: native_file(d / "w.safetensors", config)


def export_cases() -> list[Case]:
    stages = TINY.stages
    return [
        export_case("exists", "out", then(weights_file, earlier_export), ["out", "already exists"]),
        export_case("holds-other-files", "out", then(weights_file, earlier_export,
                    lambda d, fx: (d / "out" / "notes.txt").write_text("mine")), ["holds other files"], "--force"),
        export_case("allowed-name-is-a-folder", "out", then(weights_file, earlier_export, lambda d, fx: (
                    (d / "out" / "config.json").unlink(), (d / "out" / "config.json").mkdir(),
                    (d / "out" / "config.json" / "precious").write_text("mine"))), ["holds a folder 'config.json'"], "--force"),
        export_case("is-a-file", "out", then(weights_file, lambda d, fx: (d / "out").write_text("x")),
                    ["out", "is a file"], "--force"),
        export_case("is-a-fifo", "out", then(weights_file, lambda d, fx: os.mkfifo(d / "out")), ["is a FIFO"]),
        export_case("link-to-file", "out", then(weights_file, lambda d, fx: ((d / "f").write_text("x"),
                    (d / "out").symlink_to("f"))), ["out", "is a file"], "--force"),
        export_case("is-source-folder", ".", weights_file, ["already exists"]),
        export_case("holds-the-source", "out", then(earlier_export, lambda d, fx: (
                    (d / "out" / "model.safetensors").unlink(), shutil.copy(fx.native, d / "out" / "model.safetensors"))),
                    ["holds the input file"], "--force", src="out/model.safetensors"),
        export_case("empty-name", "", weights_file, ["not a folder name"]),
        export_case("missing-parent", "a/b/out", weights_file, ["does not exist"]),
        export_case("unwritable-parent", "/proc/regnet-hf-out", weights_file, ["cannot write in '/proc'"]),
        export_case("bottleneck", "out", refused(RegNetConfig(tuple(StageConfig(s.depth, s.width, 8, 0.5)
                    for s in stages), 0.25, num_classes=5)), ["hf cannot express", "bottleneck multiplier 0.5"]),
        export_case("se-ratio", "out", refused(RegNetConfig(stages, 0.5, num_classes=5)), ["SE ratio 0.5"]),
        export_case("group-widths", "out", refused(RegNetConfig((StageConfig(1, 16, 8), StageConfig(2, 32, 16)),
                    num_classes=5)), ["group widths 8, 16 per stage"]),
        export_case("stride", "out", refused(RegNetConfig((StageConfig(1, 16, 8), StageConfig(2, 32, 8, stride=1)),
                    num_classes=5)), ["stage strides 2, 1"]),
        export_case("bn-eps", "out", refused(RegNetConfig(stages, 0.25, num_classes=5, bn_eps=1e-3)),
                    ["BN eps 0.001"]),
        export_case("channels", "out", refused(RegNetConfig(stages, 0.25, num_classes=5, in_channels=1)),
                    ["1 input channel (an image"]),
    ]  # fmt: skip


ALL_CASES = import_cases() + export_cases()


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)
    assert not list(Path("/proc").glob(".regnet-hf-out*"))


def test_force_replaces_an_earlier_export_and_leaves_nothing_else(fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(fixtures.native, folder / "w.safetensors")
    shutil.copytree(fixtures.hf, folder / "out")
    (folder / "out" / "config.json").write_text("{}")  # an earlier, different export
    outcome = zygote.run(CONVERT, ["export", "w.safetensors", "out", "--to", "hf", "--force"], folder)
    assert outcome.code == 0 and not outcome.stderr, outcome.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["out", "w.safetensors"]  # no temporary folder left
    assert snapshot(folder / "out") == snapshot(fixtures.hf)
    outcome = zygote.run(CONVERT, ["hf", "out", "back.safetensors", "--quiet"], folder)
    assert outcome.code == 0 and not outcome.stderr and not outcome.stdout, outcome.stderr
