"""Run a converted RegNet over ImageNet validation images and compare with the published numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import regnet
from regnet.metadata import WeightsMetadata
from regnet_convert.conversion.atomic import check_output
from regnet_convert.conversion.convert import load_any
from regnet_convert.errors import InputError
from regnet_convert.validation.distributed import Placement
from regnet_convert.validation.evaluate import Amp, Evaluation
from regnet_convert.validation.imagenet import IMAGENET_CLASSES, find_samples, subset
from regnet_convert.validation.loader import CropSettings, make_loader, shard
from regnet_convert.validation.preprocess import Preset
from regnet_convert.validation.report import ValidationResult
from regnet_convert.zoo.manifest import checkpoints_dir, zoo_entries


@dataclass
class ValidationOptions:
    """What `regnet-validate` was asked to do."""

    data: Path
    model: str | None = None
    weights: Path | None = None
    labels: Path | None = None
    preprocess: Preset = "mmcls"
    batch_size: int = 64
    workers: int = 4
    device: str = "auto"
    amp: Amp = "off"
    channels_last: bool = False
    fast: bool = False
    limit: int | None = None
    tolerance: float = 0.1
    skip_bad_images: bool = False
    progress: bool = True
    demo: bool = False
    json_path: str | Path | None = None


def json_inputs(options: ValidationOptions, weights: Path) -> list[Path]:
    """The files a --json output must never replace."""
    return [p for p in (weights, options.labels) if p is not None]


def default_weights(name: str) -> Path:
    """`checkpoints/NAME.safetensors`, or an error saying how to make it."""
    path = checkpoints_dir() / f"{name}.safetensors"
    if not path.exists():
        raise InputError(path, f"no converted weights for {name}; get them with: regnet-convert zoo fetch {name}")
    return path


def resolve_model(options: ValidationOptions) -> tuple[torch.nn.Module, WeightsMetadata, Path]:
    """The model to validate: an ImageNet-1k classifier, the very --model architecture when one is named."""
    name = None
    if options.model:
        try:
            name = regnet.canonical_name(options.model)
        except KeyError as exc:
            raise InputError(None, f"--model: {exc.args[0]}") from None
    if options.weights is None and name is None:
        raise InputError(None, "give --model NAME or --weights FILE")
    path = options.weights or default_weights(name)
    model, metadata = load_any(path, label="--weights")
    classes = metadata.config.num_classes
    if classes != IMAGENET_CLASSES:
        raise InputError(path, f"has {classes} classes; ImageNet-1k validation needs {IMAGENET_CLASSES}")
    if name and metadata.config != regnet.zoo_config(name):
        raise InputError(path, f"holds {metadata.model}, not the --model {name} architecture")
    return model, metadata, path


def validate(options: ValidationOptions, placement: Placement) -> ValidationResult:
    """Validate on this process's shard and reduce the counts over the job; every rank gets the result."""
    rank, world_size, device = placement.rank, placement.world_size, placement.device
    model, metadata, weights_path = resolve_model(options)
    if options.json_path is not None:  # refused now, not after 50,000 images
        check_output(options.json_path, True, json_inputs(options, weights_path), label="--json")
    zoo = None if options.demo else zoo_entries().get(metadata.model)
    samples = subset(find_samples(options.data, options.labels), options.limit)
    weights_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    model = model.float()  # computed in float32 whatever the file stores; --amp lowers it explicitly
    pre = metadata.preprocessing
    settings = CropSettings(options.preprocess, pre.resize, pre.crop, pre.channel_order)
    loader = make_loader(
        shard(samples, rank, world_size), settings, options.batch_size, options.workers, device.type == "cuda"
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if options.amp == "off":  # float32 means float32: no TF32 convolutions or matmuls on Ampere and later
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    evaluation = Evaluation(device, pre.mean, pre.std, options.amp, options.channels_last, options.fast)
    counts, wall = evaluation.run(
        evaluation.model_on_device(model), loader, options.skip_bad_images, options.progress and rank == 0
    )
    counts = counts.all_reduce()
    if counts.images + len(counts.bad_images) != len(samples):
        raise RuntimeError(f"counted {counts.images + len(counts.bad_images)} images of {len(samples)}")
    return ValidationResult(
        model=metadata.model,
        weights=str(weights_path),
        counts=counts,
        expected_images=len(samples),
        preprocess=options.preprocess,
        channel_order=pre.channel_order,
        amp=options.amp,
        fast=options.fast,
        device=str(device.type),
        world_size=world_size,
        tolerance=options.tolerance,
        wall_seconds=wall,
        demo=options.demo,
        zoo=zoo,
        weights_dtype=weights_dtype,
    )
