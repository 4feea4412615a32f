"""pycls checkpoint -> native RegNet safetensors file, checked before anything is written."""

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
from regnet_convert import __version__
from regnet_convert.architecture import check_cfg_model_type, find_config
from regnet_convert.atomic import atomic_output, check_output
from regnet_convert.checkpoint import read_pycls_checkpoint
from regnet_convert.errors import ConvertError
from regnet_convert.pycls_keys import is_dropped, to_native

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PYCLS_PREPROCESSING = Preprocessing()  # BGR, pycls's ImageNet mean/std, resize 256, crop 224
PROBE_RESOLUTION = 64


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
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc="hashing",
            disable=True if quiet else None,
            leave=False,
        ) as bar,
    ):
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def map_pycls_keys(path: Path, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key to its native name; unknown keys are an error, never ignored."""
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    native, dropped, unknown = {}, [], []
    for key, tensor in state.items():
        if is_dropped(key):
            dropped.append(key)
        elif (name := to_native(key)) is not None:
            native[name] = tensor
        else:
            unknown.append(key)
    if unknown:
        examples = ", ".join(unknown[:3])
        raise ConvertError(path, f"not a RegNet: {len(unknown)} tensor(s) no RegNet has, e.g. {examples}")
    return native, dropped


def build_checked_model(path: Path, config: RegNetConfig, state: dict[str, torch.Tensor]) -> RegNet:
    """Load `state` strictly (without copying it) and run a probe input through the model."""
    with torch.device("meta"):
        model = RegNet(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    dtype = next(iter(state.values())).dtype
    shape = (2, config.in_channels, PROBE_RESOLUTION, PROBE_RESOLUTION)
    probe = torch.linspace(-2, 2, shape[0] * shape[1] * shape[2] * shape[3], dtype=dtype).reshape(shape)
    with torch.inference_mode():
        logits = model(probe)
    if logits.shape != (2, config.num_classes) or not torch.isfinite(logits).all():
        raise ConvertError(path, "the converted model's probe forward pass gave non-finite or misshapen logits")
    return model


def prepare_pycls(
    source: str | Path,
    *,
    model: str | None = None,
    dtype: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, torch.Tensor], Conversion]:
    """Read, map, identify and check a pycls checkpoint in memory: native tensors and what they are."""
    source = Path(source)
    checkpoint = read_pycls_checkpoint(source)
    if checkpoint.cfg is not None and model is None:
        check_cfg_model_type(str(source), checkpoint.cfg)
    state, dropped = map_pycls_keys(source, checkpoint.state)
    if dropped:
        log(f"dropped {len(dropped)} BN num_batches_tracked counters, e.g. {dropped[0]} (not used for inference)")
    config, found_by = find_config(str(source), state, checkpoint.cfg, model)
    log(f"architecture from {found_by}: {config.name or 'custom RegNet'}")
    build_checked_model(source, config, state)
    if dtype is not None:
        state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state.items()}
    metadata = WeightsMetadata(
        config=config,
        preprocessing=PYCLS_PREPROCESSING,
        source_format="pycls",
        source_file=source.name,
        source_sha256=sha256_of(source, quiet),
        converter_version=__version__,
    )
    return state, Conversion(config, found_by, metadata, len(state), dropped)


def convert_pycls(
    source: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    dtype: str | None = None,
    force: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> Conversion:
    """Convert one pycls checkpoint; the output appears complete or not at all."""
    output = Path(output)
    check_output(output, force)
    state, conversion = prepare_pycls(source, model=model, dtype=dtype, quiet=quiet, log=log)
    with atomic_output(output, force) as tmp:
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, tmp, conversion.metadata.to_strings())
        except SafetensorError as exc:
            raise ConvertError(output, f"writing failed ({exc}); nothing was written") from None
    return conversion
