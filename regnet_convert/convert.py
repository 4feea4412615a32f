"""Checkpoint (pycls or mmcls) -> native RegNet safetensors file, checked before anything is written."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from tqdm import tqdm

from regnet import RegNet, RegNetConfig
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet.timm_layout import to_timm
from regnet_convert import __version__, mmcls_keys, pycls_keys
from regnet_convert.architecture import check_cfg_model_type, find_config, rank_problem
from regnet_convert.atomic import atomic_output, check_output
from regnet_convert.checkpoint import SourceCheckpoint, read_mmcls_checkpoint, read_pycls_checkpoint, tensor_problem
from regnet_convert.errors import ConvertError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LAYOUTS = ("native", "timm")
BGR_PREPROCESSING = Preprocessing()  # pycls weights: BGR, pycls's ImageNet mean/std, resize 256, crop 224
PROBE_RESOLUTION = 64


@dataclass(frozen=True)
class SourceFormat:
    """How to read one kind of checkpoint and name its tensors natively."""

    name: str
    read: Callable[[str | Path], SourceCheckpoint]
    to_native: Callable[[str], str | None]


FORMATS = {
    "pycls": SourceFormat("pycls", read_pycls_checkpoint, pycls_keys.to_native),
    "mmcls": SourceFormat("mmcls", read_mmcls_checkpoint, mmcls_keys.to_native),
}


@dataclass
class Conversion:
    """What a conversion produced."""

    config: RegNetConfig
    found_by: str
    metadata: WeightsMetadata
    tensors: int
    dropped: list[str]


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


def map_keys(
    path: Path, state: dict[str, torch.Tensor], to_native: Callable[[str], str | None]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key to its native name; unknown keys, or two keys for one name, are an error."""
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    native, source_of, dropped, unknown = {}, {}, [], []
    for key, tensor in state.items():
        if pycls_keys.is_dropped(key):
            dropped.append(key)
        elif (name := to_native(key)) is None:
            unknown.append(key)
        elif name in native:
            raise ConvertError(path, f"two tensors, {source_of[name]!r} and {key!r}, are both {name!r}")
        else:
            native[name], source_of[name] = tensor, key
    if unknown:
        examples = ", ".join(repr(k)[:60] for k in unknown[:3])
        raise ConvertError(path, f"not a RegNet: {len(unknown)} tensor(s) no RegNet has, e.g. {examples}")
    for name, tensor in native.items():
        if problem := tensor_problem(tensor) or rank_problem(name, tensor):
            raise ConvertError(path, f"tensor {source_of[name]!r} {problem}")
    return native, dropped


def map_pycls_keys(path: Path, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`map_keys` for pycls names."""
    return map_keys(path, state, pycls_keys.to_native)


def cast_checked(path: Path, state: dict[str, torch.Tensor], dtype: str | None) -> dict[str, torch.Tensor]:
    """The tensors in one floating dtype (`dtype`, or the one they share), every value finite."""
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    if dtype is None and len(dtypes) > 1:
        raise ConvertError(path, f"mixes dtypes ({', '.join(dtypes)}); choose one with --dtype")
    _check_finite(path, state, "")
    if dtype is not None:
        state = {k: v.to(DTYPES[dtype]) for k, v in state.items()}
        _check_finite(path, state, f" once cast to {dtype} (out of its range)")
    return state


def _check_finite(path: Path, state: dict[str, torch.Tensor], cause: str) -> None:
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ConvertError(path, f"tensor {key!r} holds infinite or NaN values{cause}")


def build_checked_model(path: Path, config: RegNetConfig, state: dict[str, torch.Tensor]) -> RegNet:
    """Load `state` strictly and run a probe input through the model in float32."""
    model = RegNet.from_state_dict(config, {k: v.float() for k, v in state.items()})
    shape = (2, config.in_channels, PROBE_RESOLUTION, PROBE_RESOLUTION)
    probe = torch.linspace(-2, 2, shape[0] * shape[1] * shape[2] * shape[3]).reshape(shape)
    with torch.inference_mode():
        logits = model(probe)
    if logits.shape != (2, config.num_classes) or not torch.isfinite(logits).all():
        raise ConvertError(path, "the converted model's probe forward pass gave non-finite or misshapen logits")
    return model


def to_rgb(state: dict[str, torch.Tensor], pre: Preprocessing) -> tuple[dict[str, torch.Tensor], Preprocessing]:
    """Reverse the stem's input channels (and mean/std) so the network takes RGB instead of BGR."""
    flipped = {**state, "stem.conv.weight": state["stem.conv.weight"].flip(1).contiguous()}
    order = "RGB" if pre.channel_order == "BGR" else "BGR"
    return flipped, Preprocessing(order, pre.mean[::-1], pre.std[::-1], pre.resize, pre.crop)


def prepare(
    source: str | Path,
    *,
    source_format: str = "pycls",
    model: str | None = None,
    dtype: str | None = None,
    rgb: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, torch.Tensor], Conversion]:
    """Read, map, identify and check a checkpoint in memory: native tensors and what they are."""
    source, fmt = Path(source), FORMATS[source_format]
    checkpoint = fmt.read(source)
    if checkpoint.cfg is not None:
        check_cfg_model_type(str(source), checkpoint.cfg)
    state, dropped = map_keys(source, checkpoint.state, fmt.to_native)
    if dropped:
        log(f"dropped {len(dropped)} BN num_batches_tracked counters, e.g. {dropped[0]} (not used for inference)")
    config, found_by = find_config(str(source), state, checkpoint.cfg, model)
    log(f"architecture from {found_by}: {config.name or 'custom RegNet'}")
    state = cast_checked(source, state, dtype)
    build_checked_model(source, config, state)
    preprocessing = BGR_PREPROCESSING
    if rgb:
        state, preprocessing = to_rgb(state, preprocessing)
        log("stem input channels reversed: the model takes RGB input")
    metadata = WeightsMetadata(
        config=config,
        preprocessing=preprocessing,
        source_format=fmt.name,
        source_file=source.name,
        source_sha256=sha256_of(source, quiet),
        converter_version=__version__,
    )
    return state, Conversion(config, found_by, metadata, len(state), dropped)


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with storage of its own (safetensors refuses tensors that share memory)."""
    seen: set[int] = set()
    result = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        result[key] = (
            tensor.contiguous() if pointer not in seen else tensor.clone(memory_format=torch.contiguous_format)
        )
        seen.add(pointer)
    return result


def write_converted(
    output: Path,
    state: dict[str, torch.Tensor],
    metadata: WeightsMetadata,
    force: bool,
    layout: str = "native",
    inputs: tuple[Path, ...] = (),
) -> None:
    """Write the safetensors file atomically, tensors named in `layout`."""
    if layout == "timm":
        state = {to_timm(k): v for k, v in state.items()}
        metadata = WeightsMetadata(**{**vars(metadata), "layout": "timm"})
    with atomic_output(output, force, inputs) as tmp:
        try:
            save_file(_unshared(state), tmp, metadata.to_strings())
        except SafetensorError as exc:
            raise ConvertError(output, f"writing failed ({exc}); nothing was written") from None


def convert(
    source: str | Path,
    output: str | Path,
    *,
    source_format: str = "pycls",
    model: str | None = None,
    dtype: str | None = None,
    rgb: bool = False,
    layout: str = "native",
    force: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> Conversion:
    """Convert one checkpoint; the output appears complete or not at all."""
    output = Path(output)
    check_output(output, force, inputs=[Path(source)])
    state, conversion = prepare(
        source, source_format=source_format, model=model, dtype=dtype, rgb=rgb, quiet=quiet, log=log
    )
    write_converted(output, state, conversion.metadata, force, layout, inputs=(Path(source),))
    return conversion


def convert_pycls(source: str | Path, output: str | Path, **options) -> Conversion:
    """Convert a pycls checkpoint (see `convert`)."""
    return convert(source, output, source_format="pycls", **options)
