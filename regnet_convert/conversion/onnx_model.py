"""Read an exported `.onnx` file back as a model `regnet-validate` can feed: an onnxruntime session, checked first.

The file is hostile like any input. Its `metadata_props` (written by `export --to onnx`) say how to feed it:
channel order, mean, std, resize, crop, the input's name, the architecture. They are checked against the graph
itself: one float32 NCHW input of that name with 3 channels, one output of `num_classes` logits, every weight
inside the file (no external data), only the operators a RegNet needs (no control flow: a `Loop` could run
for ever, beyond Ctrl-C's reach, inside onnxruntime), and a probe: a fixed image with three different channels,
preprocessed as the metadata prescribes (so a wrong channel order, mean, std or crop changes it), must give the
logits recorded at export. A graph swapped for another, or metadata edited to another channel order, is refused.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from regnet.metadata import Preprocessing, WeightsFileError, WeightsMetadata
from regnet_convert.errors import InputError

if TYPE_CHECKING:  # imported when an .onnx file is read (`onnx_modules`)
    import onnx
    import onnxruntime

INPUT, OUTPUT = "image", "logits"  # the names `export --to onnx` gives the graph's input and output
MAX_ONNX_BYTES = 2 << 30  # one self-contained file (protobuf's limit)
# The operators of a RegNet export (BN folded), in ONNX's own domain: those `export --to onnx` writes, and those
# torch's exporter wrote for earlier versions of it (Reshape, Shape, ...). Nothing else runs, so no Loop, Scan or
# If (no subgraphs), no custom or contrib operator, no op that builds tensors of data-dependent size
OPERATORS = frozenset(
    {"Add", "Concat", "Constant", "Conv", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "MatMul", "Mul"}
    | {"ReduceMean", "Relu", "Reshape", "Shape", "Sigmoid", "Squeeze", "Transpose", "Unsqueeze"}
)
# What running the graph may cost, checked before onnxruntime sees it (the operators alone do not bound it: 200
# convolutions with 224x224 kernels ran for half an hour; Concat fed 1000 times 4 levels deep asked for 12 GB).
# A RegNet export has ~100-500 nodes, 1x1 and 3x3 convolutions, and RegNetY-32GF at 224 does 32 G multiply-adds
# and ~80 M output values per image.
MAX_NODES = 10_000
MAX_KERNEL = 3  # height and width of a convolution's kernel
MAX_MACS = 200e9  # multiply-adds of Conv, Gemm and MatMul per image at the file's crop
MAX_VALUES = 1e9  # values all nodes output per image at the file's crop
PROBE_TOLERANCE = 1e-3  # relative to the largest recorded logit: onnxruntime vs torch differ by ~1e-6
ONNX_MAGIC = b"\x08"  # a ModelProto starts with field 1 (ir_version, a varint)
FLOAT = 1  # onnx.TensorProto.FLOAT


def onnx_modules(label: str = "--weights") -> tuple[ModuleType, ModuleType]:
    """onnx and onnxruntime, or one line saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise InputError(
            label, "reading an .onnx file needs onnx and onnxruntime: pip install 'regnet-convert[onnx]'"
        ) from None
    return onnx, onnxruntime


def probe_pixels(crop: int) -> np.ndarray:
    """A fixed BGR uint8 image (crop x crop x 3) whose three channels differ: gradients and a checkerboard."""
    ramp = np.linspace(0, 255, crop, dtype=np.float64)
    blue = np.broadcast_to(ramp[None, :], (crop, crop))
    green = np.broadcast_to(ramp[::-1, None], (crop, crop))
    yy, xx = np.indices((crop, crop))
    red = np.where(((yy // 16) + (xx // 16)) % 2 == 0, 230.0, 20.0)
    return np.stack([blue, green, red], axis=-1).round().astype(np.uint8)


def probe_input(pre: Preprocessing) -> np.ndarray:
    """The probe as the network takes it under `pre`: channel order, (pixel / 255 - mean) / std, NCHW float32."""
    pixels = probe_pixels(pre.crop).astype(np.float32)
    if pre.channel_order == "RGB":
        pixels = pixels[..., ::-1]
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    x = (pixels / np.float32(255) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def probe_logits(model: torch.nn.Module, pre: Preprocessing) -> list[float]:
    """The model's logits for the probe (recorded in the file at export)."""
    with torch.inference_mode():
        return model(torch.from_numpy(probe_input(pre))).float()[0].tolist()


def metadata_of(path: Path, props: dict[str, str]) -> WeightsMetadata:
    """The WeightsMetadata the file's metadata_props state; InputError when they are not ours or not plausible."""
    if props.get("format") != "regnet-convert":
        raise InputError(path, "is an ONNX file without regnet-convert metadata (format: regnet-convert)")
    strings = {
        "format_version": "1",
        "layout": "native",
        **props,
        "test_resize": props.get("resize", ""),
        "test_crop": props.get("crop", ""),
    }
    try:
        metadata = WeightsMetadata.from_strings(strings)
    except (WeightsFileError, ValueError) as exc:
        raise InputError(path, f"its metadata_props: {exc}") from None
    if metadata.model != props.get("model") or str(metadata.config.num_classes) != props.get("num_classes"):
        raise InputError(path, "its metadata_props contradict themselves (model or num_classes vs architecture)")
    return metadata


class OnnxModel(torch.nn.Module):
    """An onnxruntime session as a module: NCHW float32 logits of NCHW float32 input, on the input's device."""

    def __init__(self, session: onnxruntime.InferenceSession, input_name: str) -> None:
        super().__init__()
        self.session, self.input_name = session, input_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (logits,) = self.session.run(None, {self.input_name: feed})
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(x.device)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def check_graph(path: Path, graph: onnx.GraphProto, metadata: WeightsMetadata, input_name: str) -> None:
    """One float32 NCHW input named `input_name` with 3 channels, one output of num_classes logits, no external
    data; InputError naming the disagreement otherwise."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(path, f"its graph has {len(inputs)} inputs; a RegNet graph has one (image)")
    (graph_input,) = inputs
    if graph_input.name != input_name:
        raise InputError(
            path, f"its graph's input is named {graph_input.name[:40]!r}, its metadata says {input_name[:40]!r}"
        )
    dims = _dims(graph_input)
    if graph_input.type.tensor_type.elem_type != FLOAT or len(dims) != 4 or dims[1] != 3:
        raise InputError(path, f"its graph's input is not float32 NCHW with 3 channels (shape {dims})")
    if len(graph.output) != 1:
        raise InputError(path, f"its graph has {len(graph.output)} outputs; a RegNet graph has one (logits)")
    out = _dims(graph.output[0])
    if len(out) != 2 or out[1] != metadata.config.num_classes:
        raise InputError(path, f"its graph's output {out} is not {metadata.config.num_classes} logits per image")
    check_nodes(path, graph)


def check_nodes(path: Path, graph: onnx.GraphProto) -> None:
    """Only OPERATORS, in ONNX's domain, and every tensor (initializers, constants) inside the file."""
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPERATORS:
            name = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            raise InputError(path, f"its graph uses the operator {name[:60]!r}, which no RegNet export has")
    tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.HasField("t"))]
    tensors += [t for n in graph.node for a in n.attribute for t in a.tensors]
    if any(t.data_location == 1 for t in tensors):  # TensorProto.EXTERNAL
        raise InputError(path, "keeps weights in external data files; only self-contained .onnx files are read")


def check_cost(path: Path, onnx: ModuleType, proto: onnx.ModelProto, input_name: str, crop: int) -> None:
    """Refuse a graph whose run would take long or much memory (MAX_NODES, MAX_KERNEL, MAX_MACS, MAX_VALUES per
    image at 224, scaled with the crop's area above it), from the shapes ONNX infers at `crop` x `crop` for one
    image and for two (a graph whose cost grows faster than its batch is refused too); InputError naming why."""
    graph = proto.graph
    if len(graph.node) > MAX_NODES:
        raise InputError(path, f"its graph has {len(graph.node):,} nodes; a RegNet export has at most {MAX_NODES:,}")
    one, two = (_cost(path, graph, _inferred_shapes(path, onnx, proto, input_name, crop, n)) for n in (1, 2))
    if two[0] > 2 * one[0] or two[1] > 2 * one[1]:
        raise InputError(path, "its graph's cost grows faster than its batch (a RegNet's grows in proportion)")
    scale = max(1.0, (crop / 224) ** 2)
    macs, values = one
    most_macs, most_values = MAX_MACS * scale, MAX_VALUES * scale
    if macs > most_macs or values > most_values:
        raise InputError(path, f"its graph would take {macs / 1e9:,.0f} G multiply-adds and {values / 1e6:,.0f} M "
                               f"values per image at {crop}x{crop}; a RegNet's take at most {most_macs / 1e9:,.0f} G "
                               f"and {most_values / 1e6:,.0f} M")  # fmt: skip


def _cost(path: Path, graph: onnx.GraphProto, shapes: dict[str, list[int]]) -> tuple[int, int]:
    """Multiply-adds (Conv, Gemm, MatMul) and output values of the whole graph at `shapes`; InputError for an
    output of unknown size or a convolution no RegNet has."""
    macs = values = 0
    for index, node in enumerate(graph.node):
        what = f"node {index} ({node.op_type} {node.name[:40]!r})" if node.name else f"node {index} ({node.op_type})"
        if not node.output or any(name not in shapes for name in node.output):
            raise InputError(path, f"the size of its {what}'s output cannot be worked out")
        out = [shapes[name] for name in node.output]
        values += sum(math.prod(dims) for dims in out)
        if node.op_type == "Conv":
            weight, dilated = shapes.get(node.input[1]) if len(node.input) > 1 else None, _dilated(node)
            if weight is None or len(weight) != 4 or max(weight[2:]) > MAX_KERNEL or dilated:
                kernel = "x".join(map(str, weight[2:])) if weight else "unknown"
                raise InputError(path, f"its {what} has a {kernel} kernel{' (dilated)' if dilated else ''}; "
                                       f"a RegNet's are undilated and at most {MAX_KERNEL}x{MAX_KERNEL}")  # fmt: skip
            macs += math.prod(out[0]) * math.prod(weight[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            if (left := shapes.get(node.input[0])) is None:
                raise InputError(path, f"the size of its {what}'s input cannot be worked out")
            transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
            macs += math.prod(out[0]) * left[-2 if transposed else -1]
    return macs, values


def _first_line(exc: Exception) -> str:
    """An exception's first line (its type's name if it has no text), cut to 120 characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def _dilated(node: onnx.NodeProto) -> bool:
    return any(a.name == "dilations" and any(d != 1 for d in a.ints) for a in node.attribute)


def _inferred_shapes(
    path: Path, onnx: ModuleType, proto: onnx.ModelProto, input_name: str, crop: int, batch: int
) -> dict[str, list[int]]:
    """Every tensor's shape for `batch` images at `crop`, inferred by ONNX on a copy without the large weights'
    bytes (their stored shapes stand in as graph inputs, whatever the graph declares for them); a name whose shape
    stays unknown or symbolic is left out."""
    light = onnx.ModelProto()
    light.ir_version, light.graph.name = proto.ir_version, proto.graph.name
    light.opset_import.extend(proto.opset_import)
    light.graph.node.extend(proto.graph.node)
    light.graph.output.extend(proto.graph.output)
    light.graph.input.append(onnx.helper.make_tensor_value_info(input_name, FLOAT, [batch, 3, crop, crop]))
    for tensor in proto.graph.initializer:
        if tensor.data_type == FLOAT and math.prod(tensor.dims) > 64:  # weights: their shape is all that matters
            light.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, FLOAT, list(tensor.dims)))
        else:  # small tensors (a Reshape's target shape) keep their values: inference reads them
            light.graph.initializer.append(tensor)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True, data_prop=True).graph
    except Exception as exc:  # onnx raises InferenceError and others for shapes that do not fit together
        raise InputError(path, f"its graph's shapes do not fit together ({_first_line(exc)})") from None
    shapes = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = _dims(info)
        if info.type.tensor_type.HasField("shape") and all(isinstance(d, int) and d > 0 for d in dims):
            shapes[info.name] = [int(d) for d in dims]
    shapes.update({t.name: list(t.dims) for t in light.graph.initializer})
    return shapes


def _session(path: Path, data: bytes, ort: ModuleType) -> onnxruntime.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: nothing on the terminal
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    options.intra_op_num_threads = max(1, min(threads, 8))
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...) for a bad graph
        detail = " ".join(str(exc).split())[:160]
        raise InputError(path, f"onnxruntime cannot run its graph ({detail})") from None


def check_probe(path: Path, model: OnnxModel, metadata: WeightsMetadata, props: dict[str, str]) -> None:
    """The probe, preprocessed as the metadata says, gives the logits recorded at export."""
    try:
        recorded = np.asarray(json.loads(props["probe_logits"]), dtype=np.float64)
    except KeyError:
        raise InputError(
            path, "has no probe_logits in its metadata (exported by an older regnet-convert): export it again"
        ) from None
    except (ValueError, TypeError, RecursionError):
        raise InputError(path, "its metadata's probe_logits is not a list of numbers") from None
    if recorded.shape != (metadata.config.num_classes,) or not np.isfinite(recorded).all():
        raise InputError(path, "its metadata's probe_logits is not one finite logit per class")
    got = model(torch.from_numpy(probe_input(metadata.preprocessing)))[0].double().numpy()
    scale = max(1.0, float(np.abs(recorded).max()))
    if not np.isfinite(got).all() or float(np.abs(got - recorded).max()) > PROBE_TOLERANCE * scale:
        order = metadata.preprocessing.channel_order
        raise InputError(
            path,
            f"its graph does not compute what its metadata says (the probe image, fed as {order} with its mean, std "
            "and crop, does not give the recorded logits): another graph, or edited metadata",
        )


def load_onnx(path: Path, label: str | None = "--weights") -> tuple[OnnxModel, WeightsMetadata]:
    """The checked onnxruntime model of a regnet-convert `.onnx` export and the metadata its props state."""
    onnx, ort = onnx_modules(label or str(path))
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise InputError(path, f"is {size:,} bytes, over the 2 GB of one self-contained .onnx file")
    with open(path, "rb") as f:
        data = f.read(MAX_ONNX_BYTES + 1)
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError: a truncated or damaged file
        raise InputError(path, f"truncated or damaged ONNX file ({_first_line(exc)})") from None
    props = {entry.key: entry.value for entry in proto.metadata_props}
    metadata = metadata_of(path, props)
    input_name = props.get("input_name", INPUT)
    check_graph(path, proto.graph, metadata, input_name)
    check_cost(path, onnx, proto, input_name, metadata.preprocessing.crop)
    model = OnnxModel(_session(path, data, ort), input_name)
    check_probe(path, model, metadata, props)
    return model, metadata
