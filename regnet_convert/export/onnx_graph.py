"""Export for ONNX: one self-contained `.onnx` file for onnxruntime, batch and image size dynamic.

The graph is written node by node from the native model, every BatchNorm first folded into the convolution
before it (`regnet.fast`'s folding, eval semantics): Conv, Relu, Add, the SE gate (GlobalAveragePool, Conv,
Relu, Conv, Sigmoid, Mul), then GlobalAveragePool, Flatten and Gemm, in ONNX opset 17 with the native tensor
names. A RegNet needs nothing else, and writing it directly takes a fraction of a second where torch's exporter
(torch.export, decompositions, onnxscript) takes 5 to 30 s a model on a CPU; onnxruntime checks it against the
native model in the tests (all 24 zoo models, photographs, batch and size changes).
The channel order is the source's: a BGR graph fed RGB runs without complaint, so the order, mean, std, resize
and crop travel in the model's `metadata_props`, with the architecture, the input's name and the logits of a
probe image preprocessed as they say (`conversion/onnx_model.py` checks a file against them when reading it).
The file is checked with `onnx.checker` before it becomes OUTPUT.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from regnet import RegNet, RegNetConfig
from regnet.fast import fold_batchnorm
from regnet.metadata import WeightsMetadata
from regnet.model import Bottleneck, ConvBN, SqueezeExcite
from regnet_convert.conversion.onnx_model import INPUT, MAX_ONNX_BYTES, OUTPUT, probe_logits
from regnet_convert.errors import InputError
from regnet_convert.export.target import Target, input_channels

MAX_PROTO_BYTES = MAX_ONNX_BYTES - 1  # protobuf's limit for one serialized message: larger needs external data
TOO_LARGE = "the model is over 2 GB, too large for one self-contained .onnx file"
OPSET, IR_VERSION = 17, 8  # ONNX 1.12 (2022) and newer read IR 8; onnxruntime 1.12 and newer run opset 17

if TYPE_CHECKING:
    import onnx as onnx_module


def _onnx() -> ModuleType:
    """The onnx module, or one line saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise InputError("--to onnx", "needs the onnx package: pip install 'regnet-convert[onnx]'") from None
    return onnx


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


class _GraphWriter:
    """Appends the nodes and initializers of a folded RegNet's modules, in forward order."""

    def __init__(self, onnx: ModuleType) -> None:
        self.onnx = onnx
        self.nodes: list[onnx_module.NodeProto] = []
        self.weights: list[onnx_module.TensorProto] = []

    def node(self, op: str, inputs: list[str], output: str, **attributes: object) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def tensor(self, name: str, value: torch.Tensor) -> str:
        array = value.detach().to(torch.float32).contiguous().numpy()
        self.weights.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def conv(self, x: str, conv: nn.Conv2d, name: str) -> str:
        assert conv.bias is not None  # folded: every convolution has a bias
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding
        pads = [p, p, p, p] if isinstance(p, int) else [*p, *p]
        inputs = [x, self.tensor(f"{name}.weight", conv.weight), self.tensor(f"{name}.bias", conv.bias)]
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[s, s], pads=pads, group=conv.groups)

    def conv_bn(self, x: str, module: ConvBN, name: str) -> str:
        assert isinstance(module.conv, nn.Conv2d) and isinstance(module.bn, nn.Identity)
        x = self.conv(x, module.conv, f"{name}.conv")
        return self.node("Relu", [x], f"{name}.relu") if isinstance(module.relu, nn.ReLU) else x

    def squeeze_excite(self, x: str, se: SqueezeExcite, name: str) -> str:
        gate = self.node("GlobalAveragePool", [x], f"{name}.pool")
        gate = self.node("Relu", [self.conv(gate, se.reduce, f"{name}.reduce")], f"{name}.relu")
        gate = self.node("Sigmoid", [self.conv(gate, se.expand, f"{name}.expand")], f"{name}.gate")
        return self.node("Mul", [x, gate], name)

    def block(self, x: str, block: Bottleneck, name: str) -> str:
        shortcut = x if block.shortcut is None else self.conv_bn(x, block.shortcut, f"{name}.shortcut")
        y = self.conv_bn(self.conv_bn(x, block.conv1, f"{name}.conv1"), block.conv2, f"{name}.conv2")
        if block.se is not None:
            y = self.squeeze_excite(y, block.se, f"{name}.se")
        y = self.conv_bn(y, block.conv3, f"{name}.conv3")
        return self.node("Relu", [self.node("Add", [shortcut, y], f"{name}.add")], name)

    def head(self, x: str, fc: nn.Linear) -> str:
        x = self.node("Flatten", [self.node("GlobalAveragePool", [x], "head.pool")], "head.flatten", axis=1)
        inputs = [x, self.tensor("head.fc.weight", fc.weight), self.tensor("head.fc.bias", fc.bias)]
        return self.node("Gemm", inputs, OUTPUT, transB=1)


def export_graph(model: RegNet) -> onnx_module.ModelProto:
    """The model as an ONNX graph (float32, eval mode, batch norms folded) whose input `image` has a dynamic
    batch, height and width, and whose output `logits` a dynamic batch."""
    onnx = _onnx()
    folded = fold_batchnorm(model)
    writer = _GraphWriter(onnx)
    x = writer.conv_bn(INPUT, folded.stem, "stem")
    for name, block in folded.stages.named_modules(prefix="stages"):
        if isinstance(block, Bottleneck):  # in forward order: stages.I.J
            x = writer.block(x, block, name)
    assert isinstance(folded.head.fc, nn.Linear)
    writer.head(x, folded.head.fc)
    channels, classes = model.config.in_channels, model.config.num_classes
    graph = onnx.helper.make_graph(
        writer.nodes,
        "regnet",
        [onnx.helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["batch", channels, "height", "width"])],
        [onnx.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", classes])],
        writer.weights,
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    proto.producer_name = "regnet-convert"
    return proto


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """Export to the temporary file `path`, with the preprocessing in its metadata, and check it."""
    onnx = _onnx()
    if 4 * sum(v.numel() for v in state.values()) > MAX_PROTO_BYTES - (1 << 20):  # the graph itself: well under 1 MB
        raise InputError("--to onnx", TOO_LARGE)
    model = RegNet.from_state_dict(metadata.config, {k: v.float() for k, v in state.items()})
    proto = export_graph(model)
    proto.producer_version = metadata.converter_version
    for key, value in metadata_props(metadata, probe_logits(model, metadata.preprocessing)).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"RegNet {metadata.model} converted by regnet-convert {metadata.converter_version}"
    data = proto.SerializeToString()  # once (onnx.save_model would do the same); protobuf does not refuse > 2 GB
    if len(data) > MAX_PROTO_BYTES:  # the metadata (class names, probe) on top of weights just under the limit
        raise InputError("--to onnx", TOO_LARGE)
    Path(path).write_bytes(data)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError("--to onnx", f"the exported graph fails onnx.checker ({first})") from None


def refuse(config: RegNetConfig) -> str | None:
    """Why an .onnx file cannot hold `config`, or None: the probe its metadata records, and the readers' check of
    it, are a 3-channel image."""
    return f"{input_channels(config.in_channels)} (an .onnx export takes 3)" if config.in_channels != 3 else None


TARGET = Target(
    "onnx",
    "one .onnx file, dynamic batch, for onnxruntime; BN folded into the convolutions, float32,\n"
    "the source's channel order; metadata_props state channel_order, mean, std, resize and crop",
    None,
    write,
    refuse=refuse,
    requires=_onnx,
)
