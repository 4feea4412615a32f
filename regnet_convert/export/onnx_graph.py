"""Export for ONNX: one self-contained `.onnx` file for onnxruntime, batch (and image size) dynamic.

torch's own exporter (`torch.onnx.export(..., dynamo=True)`, which writes the graph with onnxscript) traces the
native model in float32 and eval mode, every BatchNorm folded into the convolution before it (`regnet.fast`'s
folding, as the exporter's optimizer would do; tracing the smaller graph takes about half the time): the graph
holds Conv, Relu, Add, the SE ops, ReduceMean and Gemm.
The channel order is the source's: a BGR graph fed RGB runs without complaint, so the order, mean, std, resize
and crop travel in the model's `metadata_props`, with the architecture, the input's name and the logits of a
probe image preprocessed as they say (`conversion/onnx_model.py` checks a file against them when reading it).
The exporter's messages, logging and warnings are kept off the terminal, and the file is checked with
`onnx.checker` before it becomes OUTPUT.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from regnet import RegNet
from regnet.fast import fold_batchnorm
from regnet.metadata import WeightsMetadata
from regnet_convert.conversion.onnx_model import probe_logits
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target

INPUT, OUTPUT = "image", "logits"
MAX_PROTO_BYTES = (2 << 30) - 1  # protobuf's limit for one serialized message: larger needs external data files
_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo", "onnxscript", "onnx_ir")


def _onnx() -> ModuleType:
    """The onnx module, after making sure the exporter's packages are installed."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter imports it; missing, it fails deep inside)
    except ImportError:
        raise InputError(
            "--to onnx", "needs the onnx and onnxscript packages: pip install 'regnet-convert[onnx]'"
        ) from None
    return onnx


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """No print, log record or warning of the exporter reaches the terminal."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def metadata_props(metadata: WeightsMetadata, probe: list[float] | None = None) -> dict[str, str]:
    """What a user of the graph needs to feed it: the preprocessing, and where the weights came from; the
    architecture, the input's name and the probe's logits let a reader check the graph against them."""
    pre = metadata.preprocessing
    props = {
        "format": "regnet-convert",
        "model": metadata.model,
        "architecture": json.dumps(metadata.config.to_dict(), sort_keys=True),
        "num_classes": str(metadata.config.num_classes),
        "input_name": INPUT,
        "output_name": OUTPUT,
        "channel_order": pre.channel_order,
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "normalization": f"(pixel / 255 - mean) / std, channels in {pre.channel_order} order, NCHW float32",
        "resize": str(pre.resize),
        "crop": str(pre.crop),
        "source_format": metadata.source_format,
        "source_file": metadata.source_file,
        "source_sha256": metadata.source_sha256,
        "converter_version": metadata.converter_version,
    }
    if metadata.categories:
        props["categories"] = json.dumps(list(metadata.categories))
    if metadata.category_names:
        props["category_names"] = json.dumps(list(metadata.category_names))
    strings = metadata.to_strings()
    props.update({key: strings[key] for key in ("zoo_weights", "identified_by") if key in strings})  # identity
    if probe is not None:  # the logits of `onnx_model.probe_input(preprocessing)`: channel order, mean, std, crop
        props["probe_logits"] = json.dumps([float(f"{v:.7g}") for v in probe])
    return props


def export_graph(model: RegNet) -> torch.onnx.ONNXProgram:
    """The model as an ONNX program with dynamic batch, height and width (float32, eval mode), its batch norms
    folded into the convolutions first (the graph onnx's optimizer would make, traced in about half the time)."""
    config = model.config
    model = fold_batchnorm(model)
    sample = torch.zeros(2, config.in_channels, 64, 64)
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    with _silenced(), torch.no_grad():
        program = torch.onnx.export(
            model,
            (sample,),
            dynamo=True,
            dynamic_shapes=(dims,),
            input_names=[INPUT],
            output_names=[OUTPUT],
            external_data=False,
            optimize=True,
            verbose=False,
        )
    if program is None:  # only the legacy exporter (dynamo=False) writing to a file returns None
        raise RuntimeError("torch.onnx.export gave no ONNX program")
    return program


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """Export to the temporary file `path`, with the preprocessing in its metadata, and check it."""
    onnx = _onnx()
    model = RegNet.from_state_dict(metadata.config, {k: v.float() for k, v in state.items()}).float().eval()
    proto = export_graph(model).model_proto
    props = metadata_props(metadata, probe_logits(model, metadata.preprocessing))
    kept = [entry for entry in proto.metadata_props if entry.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"RegNet {metadata.model} converted by regnet-convert {metadata.converter_version}"
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise InputError("--to onnx", "the model is over 2 GB, too large for one self-contained .onnx file")
    with _silenced():
        onnx.save_model(proto, path)
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except onnx.checker.ValidationError as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise InputError("--to onnx", f"the exported graph fails onnx.checker ({first})") from None


TARGET = Target(
    "onnx",
    "one .onnx file, dynamic batch, for onnxruntime; BN folded into the convolutions, float32,\n"
    "the source's channel order; metadata_props state channel_order, mean, std, resize and crop",
    None,
    write,
    requires=_onnx,
)
