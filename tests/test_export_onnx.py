"""`regnet-convert export --to onnx`, judged by onnx's checker and onnxruntime.

One `.onnx` file per export, batch dynamic: onnxruntime must reproduce the native model (`regnet.load` of the
source) within 1e-4 relative, on real photographs preprocessed with the project's own pycls pipeline as the
graph's `metadata_props` prescribe, at batch 1 and 7 from the same file, and for every zoo model on a probe batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import native_model_with_random_bn, probe_input, relative_difference
from images import PHOTOS, photograph, write_image

import regnet
from regnet.fast import fold_batchnorm
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.cli.convert import main
from regnet_convert.validation.preprocess import load_crop, normalize, to_chw_tensor

pytestmark = [pytest.mark.oracle, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONSOLE_SCRIPT = Path(sys.executable).with_name("regnet-convert")
TOLERANCE = 1e-4  # relative: max |onnxruntime - torch| / max |torch|


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """The seven scikit-image photographs as JPEGs at their own sizes."""
    folder = tmp_path_factory.mktemp("photos")
    return [write_image(folder / f"{name}.jpg", photograph(name)) for name in PHOTOS]


def export(source: Path, output: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(source), str(output), "--to", "onnx", "--quiet"])
    assert result.exit_code == 0 and not result.output, result.output


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(graph: ort.InferenceSession, batch: torch.Tensor) -> torch.Tensor:
    (logits,) = graph.run(["logits"], {"image": batch.numpy()})
    return torch.from_numpy(logits)


def props(path: Path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}


def photo_batch(paths: list[Path], meta: dict[str, str]) -> torch.Tensor:
    """The photographs as the graph's metadata says to feed them, through the project's pycls preprocessing."""
    crops = [load_crop(p, int(meta["resize"]), int(meta["crop"]), "pycls") for p in paths]
    batch = torch.stack([to_chw_tensor(c, meta["channel_order"]) for c in crops])
    return normalize(batch, json.loads(meta["mean"]), json.loads(meta["std"]))


def assert_one_self_contained_file(path: Path) -> onnx.ModelProto:
    """The file alone holds the weights (no external data), passes the full checker, and has a dynamic batch."""
    model = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.DEFAULT and not t.external_data for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    (image,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"] and image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    return model


def test_photographs_at_batch_1_and_7_match_the_native_model(tmp_path, converted_200mf, photos):
    """The console script in a fresh process: one result line, nothing on stderr (no exporter chatter)."""
    native, _ = converted_200mf
    output = tmp_path / "regnetx_200mf.onnx"
    done = subprocess.run(
        [CONSOLE_SCRIPT, "export", native, output, "--to", "onnx"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"{native} -> {output}: regnetx_200mf for onnx, BGR input\n"
    assert sorted(os.listdir(tmp_path)) == ["regnetx_200mf.onnx"]
    assert_one_self_contained_file(output)
    ours, meta = regnet.load(native), props(output)
    source = ours.metadata
    assert meta["channel_order"] == "BGR" == source.preprocessing.channel_order  # a BGR source stays BGR
    assert json.loads(meta["mean"]) == list(source.preprocessing.mean) == [0.406, 0.456, 0.485]
    assert json.loads(meta["std"]) == list(source.preprocessing.std) == [0.225, 0.224, 0.229]
    assert (meta["resize"], meta["crop"], meta["model"]) == ("256", "224", "regnetx_200mf")
    assert meta["source_sha256"] == source.source_sha256 and len(meta["source_sha256"]) == 64
    graph, batch = session(output), photo_batch(photos, meta)
    assert batch.shape == (7, 3, 224, 224)
    with torch.inference_mode():
        expected = ours(batch)
    assert relative_difference(run(graph, batch), expected) < TOLERANCE
    for i in range(len(photos)):
        assert relative_difference(run(graph, batch[i : i + 1]), expected[i : i + 1]) < TOLERANCE


def test_an_rgb_source_stays_rgb_and_says_so(tmp_path, converted_200mf, photos):
    """From timm's layout (RGB) the graph takes RGB: fed as its metadata says, it gives the BGR one's logits."""
    native, _ = converted_200mf
    rgb_source = tmp_path / "timm.safetensors"
    result = CliRunner().invoke(main, ["export", str(native), str(rgb_source), "--to", "timm", "--quiet"])
    assert result.exit_code == 0, result.output
    export(rgb_source, tmp_path / "rgb.onnx")
    meta = props(tmp_path / "rgb.onnx")
    assert meta["channel_order"] == "RGB" and json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    bgr_batch = photo_batch(photos[:3], {**meta, "channel_order": "BGR", "mean": "[0.406, 0.456, 0.485]",
                                         "std": "[0.225, 0.224, 0.229]"})  # fmt: skip
    with torch.inference_mode():
        expected = regnet.load(native)(bgr_batch)
    rgb_logits = run(session(tmp_path / "rgb.onnx"), photo_batch(photos[:3], meta))
    assert relative_difference(rgb_logits, expected) < TOLERANCE
    assert relative_difference(rgb_logits, run(session(tmp_path / "rgb.onnx"), bgr_batch)) > 1e-3  # order matters


@pytest.mark.parametrize("name", list(regnet.ZOO))
def test_zoo_models_match_on_a_probe_batch(tmp_path, name):
    """Weights of the scale trained ones have (not pycls_oracle's random ones, whose logits of thousands differ by
    up to 6% between any two float32 summation orders)."""
    model = native_model_with_random_bn(name, seed=3, affine=True)
    metadata = WeightsMetadata(model.config, Preprocessing(), "test", "x", "ab" * 32, "test")
    regnet.save(tmp_path / "native.safetensors", model.state_dict(), metadata)
    export(tmp_path / "native.safetensors", tmp_path / "model.onnx")
    (tmp_path / "native.safetensors").unlink()
    proto = onnx.load(str(tmp_path / "model.onnx"))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert (meta["model"], meta["channel_order"], meta["source_sha256"]) == (name, "BGR", "ab" * 32)
    graph = proto.graph  # BN folded, the native names, a RegNet's operators
    assert {t.name for t in graph.initializer} == set(fold_batchnorm(model).state_dict())
    se = {"Sigmoid", "Mul"} if model.config.se_ratio else set()
    assert {n.op_type for n in graph.node} == {"Conv", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm", *se}
    x = probe_input(64, batch=3, seed=1)
    with torch.inference_mode():
        expected = model(x)
    assert relative_difference(run(session(tmp_path / "model.onnx"), x), expected) < TOLERANCE


def test_half_precision_source_exports_float32(tmp_path, converted_200mf):
    """A float16 file becomes a float32 graph (its values, widened)."""
    native, _ = converted_200mf
    half = tmp_path / "half.safetensors"
    ours = regnet.load(native)
    regnet.save(half, {k: v.half() for k, v in ours.state_dict().items()}, ours.metadata)
    export(half, tmp_path / "half.onnx")
    model = assert_one_self_contained_file(tmp_path / "half.onnx")
    floating = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
    assert {t.data_type for t in model.graph.initializer if t.data_type in floating} == {onnx.TensorProto.FLOAT}
    x = probe_input(64, batch=2)
    with torch.inference_mode():
        expected = regnet.load(half).float()(x)
    graph = session(tmp_path / "half.onnx")
    logits = run(graph, x)
    assert logits.dtype == torch.float32 and relative_difference(logits, expected) < TOLERANCE
    assert np.isfinite(logits.numpy()).all()
    for shape in [(1, 3, 32, 32), (2, 3, 97, 131), (1, 3, 7, 7)]:  # traced at 64x64, any image size runs
        x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
        with torch.inference_mode():
            assert relative_difference(run(graph, x), regnet.load(half).float()(x)) < TOLERANCE


def test_weights_over_2_gb_are_refused_before_any_work(tmp_path):
    """One .onnx file holds at most 2 GB (protobuf): more weights are refused from their sizes alone."""
    from regnet_convert.errors import InputError
    from regnet_convert.export import onnx_graph

    metadata = WeightsMetadata(regnet.zoo_config("regnetx_200mf"), Preprocessing(), "test", "x", "ab" * 32, "test")
    state = {"huge": torch.empty(540_000_000, device="meta")}  # 2.16 GB of float32, never allocated
    with pytest.raises(InputError, match="over 2 GB"):
        onnx_graph.write(tmp_path / "model.onnx", state, metadata)
    assert not any(tmp_path.iterdir())


def test_other_input_channel_counts_are_refused_with_the_reason(tmp_path):
    """The probe an .onnx file records, and its readers' check, are a 3-channel image: one line, exit 2, no file."""
    config = regnet.RegNetConfig((regnet.StageConfig(1, 16, 8),), in_channels=1, num_classes=4)
    model = regnet.RegNet(config).init_weights()
    regnet.save(tmp_path / "gray.safetensors", model.state_dict(), WeightsMetadata(config, Preprocessing(), "test",
                "x", "ab" * 32, "test"))  # fmt: skip
    result = CliRunner().invoke(main, ["export", str(tmp_path / "gray.safetensors"), str(tmp_path / "gray.onnx"),
                                       "--to", "onnx"])  # fmt: skip
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "onnx cannot express this RegNet: 1 input channel (an .onnx export takes 3)" in result.output
    assert sorted(os.listdir(tmp_path)) == ["gray.safetensors"]
