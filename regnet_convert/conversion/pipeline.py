"""Checkpoint (pycls or mmcls) -> native RegNet safetensors file, checked before anything is written."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm import tqdm

import regnet
from regnet import RegNet, RegNetConfig
from regnet.imagenet import class_names, is_imagenet_order, wnids
from regnet.metadata import ChannelOrder, Preprocessing, WeightsMetadata
from regnet.weights import all_finite
from regnet_convert import __version__
from regnet_convert.conversion.architecture import check_cfg_model_type, find_config
from regnet_convert.conversion.detect import Kind, detect
from regnet_convert.conversion.identity import identify_source
from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import atomic_output, check_output
from regnet_convert.sources.formats import FORMATS, map_keys
from regnet_convert.sources.timm_hub_folder import read_timm_hub_config

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BGR_PREPROCESSING = Preprocessing()  # pycls weights: BGR, pycls's ImageNet mean/std, resize 256, crop 224
PROBE_RESOLUTION = 64


@dataclass
class Conversion:
    """What a conversion produced."""

    config: RegNetConfig
    found_by: str
    metadata: WeightsMetadata
    tensors: int


def sha256_of(path: Path, quiet: bool = True) -> str:
    """The file's sha256, with a progress bar for large files."""
    digest = hashlib.sha256()
    bar = tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        desc="hashing",
        disable=True if quiet else None,
        leave=False,
    )
    with open(path, "rb") as f, bar:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def cast_checked(path: Path, state: dict[str, torch.Tensor], dtype: str | None) -> dict[str, torch.Tensor]:
    """The tensors in one floating dtype (`dtype`, or the one they share), every value finite."""
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    if dtype is None and len(dtypes) > 1:
        raise InputError(path, f"mixes dtypes ({', '.join(dtypes)}); choose one with --dtype")
    _check_finite(path, state, "")
    if dtype is not None:
        state = {k: v.to(DTYPES[dtype]) for k, v in state.items()}
        _check_finite(path, state, f" once cast to {dtype} (out of its range)")
    return state


def _check_finite(path: Path, state: dict[str, torch.Tensor], cause: str) -> None:
    for key, tensor in state.items():
        if not all_finite(tensor):
            raise InputError(path, f"tensor {key!r} holds infinite or NaN values{cause}")


def build_checked_model(path: Path, config: RegNetConfig, state: dict[str, torch.Tensor]) -> RegNet:
    """Load `state` strictly and run a probe input through the model in float32."""
    model = RegNet.from_state_dict(config, {k: v.float() for k, v in state.items()})
    shape = (2, config.in_channels, PROBE_RESOLUTION, PROBE_RESOLUTION)
    probe = torch.linspace(-2, 2, shape[0] * shape[1] * shape[2] * shape[3]).reshape(shape)
    with torch.inference_mode():
        logits = model(probe)
    if logits.shape != (2, config.num_classes) or not torch.isfinite(logits).all():
        raise InputError(path, "the converted model's probe forward pass gave non-finite or misshapen logits")
    return model


@dataclass
class Loaded:
    """A model read from any format the tool reads or writes, what it is, and which format it came in."""

    model: torch.nn.Module  # a RegNet, or an onnxruntime session as a module (`onnx_model.OnnxModel`)
    metadata: WeightsMetadata
    kind: Kind


HF_PROVENANCE = ("model", "source_format", "source_file", "source_sha256", "converter_version")
PROVENANCE_PREFIX = "regnet-convert."  # an hf export's model.safetensors: where its weights came from


def load_weights(path: Path, label: str | None = None) -> Loaded:
    """The model at `path`, every tensor checked: a converted file (any layout), a pycls, mmcls, timm or
    torchvision checkpoint, a Hugging Face or timm-hub folder (converted in memory), or an ONNX export."""
    path = Path(path)
    kind = detect(path, label)
    if kind == "onnx":
        from regnet_convert.conversion.onnx_model import load_onnx  # onnxruntime only when an .onnx is read

        return Loaded(*load_onnx(path, label), kind)
    if kind == "native":
        return Loaded(*_load_converted(path), kind)
    if kind == "timm-hub" and is_converted(path / "model.safetensors"):
        return Loaded(*_own_timm_hub(path), kind)
    state, conversion = convert_in_memory(path, source_format="timm" if kind == "timm-hub" else kind)
    metadata = _with_hf_provenance(path, conversion.metadata) if kind == "hf" else conversion.metadata
    return Loaded(RegNet.from_state_dict(conversion.config, state).eval(), metadata, kind)


def load_any(path: Path, label: str | None = None) -> tuple[torch.nn.Module, WeightsMetadata]:
    """The model in any format `load_weights` reads, and its metadata."""
    loaded = load_weights(path, label)
    return loaded.model, loaded.metadata


def is_converted(path: Path) -> bool:
    """Whether `path` is a safetensors file with regnet-convert metadata (any layout)."""
    try:
        return regnet.read_header(path, counters=True).metadata.get("format") == "regnet-convert"
    except (regnet.WeightsFileError, ValueError):
        return False


def _load_converted(path: Path) -> tuple[RegNet, WeightsMetadata]:
    """A converted file through `regnet.load`, and the metadata it attaches; InputError naming `path`."""
    try:
        model = regnet.load(path)
    except regnet.WeightsFileError as exc:
        raise InputError(path, f"not a converted RegNet: {exc}") from None
    if model.metadata is None:  # regnet.load always attaches it
        raise RuntimeError(f"regnet.load gave {path} no metadata")
    return model, model.metadata


def _own_timm_hub(folder: Path) -> tuple[RegNet, WeightsMetadata]:
    """A timm-hub export of this tool: its model.safetensors (timm names, our metadata), config.json agreeing."""
    model, metadata = _load_converted(folder / "model.safetensors")
    name, num_classes, names = read_timm_hub_config(folder)  # config.json must agree with the weights
    if metadata.model != name or metadata.config.num_classes != num_classes:
        raise InputError(
            folder / "config.json",
            f"names {name} with {num_classes} classes, but its model.safetensors holds {metadata.model} with "
            f"{metadata.config.num_classes} (a tampered folder)",
        )
    if names is not None and names not in (metadata.categories, metadata.category_names):
        raise InputError(folder / "config.json", "its label_names are not the classes its model.safetensors records")
    return model, metadata


def _with_hf_provenance(folder: Path, metadata: WeightsMetadata) -> WeightsMetadata:
    """An hf export's recorded provenance (model, source file and sha256) in place of the folder's own, after
    checking that the model it names is the one config.json describes."""
    weights = folder / "model.safetensors"
    try:
        stored = regnet.read_header(weights, counters=True).metadata
    except (regnet.WeightsFileError, ValueError):
        return metadata  # pytorch_model.bin: no provenance to read
    recorded = {key: stored.get(PROVENANCE_PREFIX + key) for key in HF_PROVENANCE}
    if not any(recorded.values()):
        return metadata
    provenance = {key: value for key, value in recorded.items() if isinstance(value, str)}
    if len(provenance) != len(recorded):
        raise InputError(weights, "its regnet-convert provenance is incomplete (a tampered export)")
    if provenance["model"] != metadata.model:
        raise InputError(
            weights,
            f"its provenance names {provenance['model'][:40]!r}, but config.json and the tensors describe "
            f"{metadata.model} (a tampered export)",
        )
    return replace(
        metadata,
        source_format=provenance["source_format"],
        source_file=provenance["source_file"],
        source_sha256=provenance["source_sha256"],
        converter_version=provenance["converter_version"],
    )


def reversed_order(pre: Preprocessing) -> Preprocessing:
    """The same preprocessing for the other channel order (BGR <-> RGB), mean and std reversed with it."""
    order: ChannelOrder = "RGB" if pre.channel_order == "BGR" else "BGR"
    return Preprocessing(order, pre.mean[::-1], pre.std[::-1], pre.resize, pre.crop)


def reverse_channels(
    state: dict[str, torch.Tensor], pre: Preprocessing
) -> tuple[dict[str, torch.Tensor], Preprocessing]:
    """Reverse the stem's input channels (and mean/std): a BGR network takes RGB, or the other way round."""
    flipped = {**state, "stem.conv.weight": state["stem.conv.weight"].flip(1).contiguous()}
    return flipped, reversed_order(pre)


def convert_in_memory(
    source: str | Path,
    *,
    source_format: str = "pycls",
    model: str | None = None,
    dtype: str | None = None,
    rgb: bool = False,
    declare: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, torch.Tensor], Conversion]:
    """Read, map, identify and check a checkpoint in memory: native tensors and what they are."""
    source, fmt = Path(source), FORMATS[source_format]
    if rgb and fmt.channel_order == "RGB":
        raise InputError("--rgb", f"{fmt.name} weights already take RGB input; there is no BGR stem to reverse")
    checkpoint = fmt.read(source)
    if checkpoint.cfg is not None:
        check_cfg_model_type(str(source), checkpoint.cfg)
    state, dropped = map_keys(source, checkpoint.state, fmt.to_native)
    state = {k: v.clone() for k, v in state.items()}  # readers memory-map the file: copy before checking a byte
    if dropped:
        log(f"dropped {len(dropped)} BN num_batches_tracked counters, e.g. {dropped[0]} (not used for inference)")
    config, found_by = find_config(str(source), state, checkpoint.cfg, model)
    log(f"architecture from {found_by}: {config.name or 'custom RegNet'}")
    state = cast_checked(source, state, dtype)
    build_checked_model(source, config, state)
    preprocessing = BGR_PREPROCESSING if fmt.channel_order == "BGR" else reversed_order(BGR_PREPROCESSING)
    if rgb and preprocessing.channel_order == "BGR":
        state, preprocessing = reverse_channels(state, preprocessing)
        log(f"stem input channels reversed: the model takes {preprocessing.channel_order} input")
    sha256 = sha256_of(checkpoint.weights_file or source, quiet)
    identity = identify_source(checkpoint.weights_file or source, sha256, fmt.name, config.name, declare)
    log(f"weights: {identity.weights or 'not identified'} ({identity.identified_by}: {identity.evidence})")
    metadata = WeightsMetadata(
        config=config,
        preprocessing=preprocessing,
        source_format=fmt.name,
        source_file=os.fsencode(  # recorded as UTF-8: the bytes of a name that is not UTF-8 as \xff
            f"{source.name}/{checkpoint.weights_file.name}" if checkpoint.weights_file else source.name
        ).decode("utf-8", "backslashreplace"),
        source_sha256=sha256,
        converter_version=__version__,
        **class_labels(source, checkpoint.class_names, config.num_classes),
        zoo_weights=identity.weights,
        identified_by=identity.identified_by,
        identity_evidence=identity.evidence,
    )
    return state, Conversion(config, found_by, metadata, len(state))


def class_labels(source: Path, names: tuple[str, ...] | None, num_classes: int) -> dict:
    """The categories a converted file records: the source's own class names (with ImageNet-1k's WordNet ids
    when they are ImageNet-1k's classes in its order), or, for a source that names none and has 1000 classes,
    ImageNet-1k's, recorded as assumed."""
    if names is None:
        if num_classes != len(wnids()):
            return {}
        return {"categories": wnids(), "category_names": class_names(), "categories_from": "imagenet-1k-assumed"}
    if len(names) != num_classes:
        raise InputError(source, f"names {len(names)} classes, but its weights have {num_classes}")
    if is_imagenet_order(names):
        readable = class_names() if names == wnids() else names
        return {"categories": wnids(), "category_names": readable, "categories_from": "source"}
    return {"categories": names, "categories_from": "source"}


def write_converted(
    output: Path,
    state: dict[str, torch.Tensor],
    metadata: WeightsMetadata,
    force: bool,
    inputs: tuple[Path, ...] = (),
) -> None:
    """Write the safetensors file atomically, tensors named natively (`export` writes other libraries' names)."""
    with atomic_output(output, force, inputs) as tmp:
        try:
            regnet.save(tmp, state, replace(metadata, layout="native"))
        except SafetensorError as exc:
            raise InputError(output, f"writing failed ({exc}); nothing was written") from None


def convert(
    source: str | Path,
    output: str | Path,
    *,
    source_format: str = "pycls",
    model: str | None = None,
    dtype: str | None = None,
    rgb: bool = False,
    declare: str | None = None,
    force: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> Conversion:
    """Convert one checkpoint; the output appears complete or not at all."""
    check_output(output, force, inputs=[Path(source)])  # before Path(): a trailing "/" is refused
    output = Path(output)
    state, conversion = convert_in_memory(
        source, source_format=source_format, model=model, dtype=dtype, rgb=rgb, declare=declare, quiet=quiet, log=log
    )
    write_converted(output, state, conversion.metadata, force, inputs=(Path(source),))
    return conversion
