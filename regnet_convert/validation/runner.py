"""Run converted RegNets over ImageNet validation images and compare with the published numbers.

One run validates one model or several (a sweep): models with the same resize and crop share one pass over the
images, each batch fed to every model in turn (all loaded at once: the 8 starred RegNetX take about 700 MB in
float32), so each image is decoded and cropped once; an RGB model gets the BGR crops' channels reversed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

import regnet
from regnet.imagenet import IMAGENET_CLASSES, categories_problem
from regnet.metadata import WeightsMetadata
from regnet.paths import cache_root
from regnet.zoo import zoo_models
from regnet_convert.conversion.detect import Kind
from regnet_convert.conversion.identity import Identity
from regnet_convert.conversion.pipeline import load_weights
from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import check_output
from regnet_convert.validation import selection, selfcheck
from regnet_convert.validation.crop_cache import CropCache
from regnet_convert.validation.dataset import find_samples, subset
from regnet_convert.validation.distributed import Placement
from regnet_convert.validation.evaluate import Amp, Batch, Counts, Evaluation, Feed
from regnet_convert.validation.loader import CropSettings, make_loader, shard
from regnet_convert.validation.plot import check_plot_path
from regnet_convert.validation.preprocess import Preset
from regnet_convert.validation.report import ValidationResult
from regnet_convert.validation.selection import checked_identity, model_of

DEFAULT_WORKERS = min(8, os.cpu_count() or 1)  # DataLoader workers: one per core, at most 8
MAX_WORKERS = 4 * max(8, os.cpu_count() or 1)  # each is a process: --workers 100000 forked until memory ran out


@dataclass
class ValidationOptions:
    """What `regnet-validate` was asked to do."""

    data: Path
    model: tuple[str, ...] | str | None = ()
    weights: tuple[Path, ...] | Path | None = ()  # any format load_weights reads; several: one sweep
    labels: Path | None = None
    preprocess: Preset = "mmcls"
    batch_size: int = 64
    workers: int = DEFAULT_WORKERS
    device: str = "auto"
    amp: Amp = "off"
    channels_last: bool = False
    fast: bool = False
    limit: int | None = None
    tolerance: float = 0.1
    skip_bad_images: bool = False
    progress: bool = True
    json_path: str | Path | None = None
    table_path: str | Path | None = None
    plot_path: str | Path | None = None
    cache: str | Path | None = None

    def __post_init__(self) -> None:
        self.model = self.models
        self.weights = self.weights_files

    @property
    def models(self) -> tuple[str, ...]:
        """The `--model` names (`model` is one name, several or none)."""
        return (self.model,) if isinstance(self.model, str) else tuple(self.model or ())

    @property
    def weights_files(self) -> tuple[Path, ...]:
        """The `--weights` files (`weights` is one file, several or none)."""
        return (self.weights,) if isinstance(self.weights, str | os.PathLike) else tuple(self.weights or ())

    @property
    def sweep(self) -> bool:
        """More than one `--model`, or a group (`starred`, `all`): the JSON record is then a list."""
        models = self.models
        return len(models) > 1 or any(selection.is_group(name) for name in models) or len(self.weights_files) > 1


@dataclass
class Candidate:
    """A model to validate: loaded, checked, not yet on the device."""

    model: torch.nn.Module  # a RegNet, or an ONNX graph as a module (`onnx_model.OnnxModel`)
    metadata: WeightsMetadata
    path: Path
    identity: Identity | None = None
    kind: Kind = "native"  # the format it was read from (detect.KIND_NAMES)


def json_inputs(options: ValidationOptions, weights: Iterable[Path], images: Iterable[Path] = ()) -> list[str | Path]:
    """What a --json or --table output must never replace or be written into: the weights, labels, images, and
    the data and cache folders."""
    return [p for p in (*weights, options.labels, options.data, options.cache, *images) if p is not None]


def load_candidate(path: Path, name: str | None, label: str | None = "--weights") -> Candidate:
    """An ImageNet-1k classifier from `path`, the very `name` architecture when one is given."""
    loaded = load_weights(path, label=label)
    model, metadata = loaded.model, loaded.metadata
    classes = metadata.config.num_classes
    if classes != IMAGENET_CLASSES:
        raise InputError(path, f"has {classes} classes; ImageNet-1k validation needs {IMAGENET_CLASSES}")
    if problem := categories_problem(metadata.categories):
        raise InputError(path, problem)
    if name and metadata.config != regnet.zoo_config(model_of(name)):
        raise InputError(path, f"holds {metadata.model}, not the --model {name} architecture")
    identity = checked_identity(metadata, path, name, exact=label is None)
    return Candidate(model, metadata, path, identity, loaded.kind)


def resolve_models(options: ValidationOptions) -> list[Candidate]:
    """Every model of the run, loaded and checked before anything runs (missing weights all named at once)."""
    models, weights = options.models, options.weights_files
    if weights:
        if len(models) > 1 or any(selection.is_group(name) for name in models):
            raise InputError(
                "--weights",
                "goes with one --model at most (every --weights must hold it); a sweep of zoo models takes its "
                "weights from the checkpoints folder",
            )
        name = selection.expand(models)[0] if models else None
        candidates = [load_candidate(path, name) for path in weights]
        check_onnx_options(options, candidates)
        return candidates
    if not models:
        raise InputError(None, "give --model NAME or --weights FILE")
    names = selection.expand(models)
    candidates = []
    for name, path in zip(names, selection.weights_paths(names), strict=True):
        with selection.blamed_on_model(name, path):  # no --weights was given: name the file and --model
            candidates.append(load_candidate(path, name, label=None))
    return candidates


def check_onnx_options(options: ValidationOptions, candidates: list[Candidate]) -> None:
    """--fast and --amp change how torch runs a model: an ONNX file runs in onnxruntime, float32, as it is."""
    onnx = next((c.path for c in candidates if c.kind == "onnx"), None)
    for flag, given in (("--fast", options.fast), (f"--amp {options.amp}", options.amp != "off")):
        if onnx is not None and given:
            raise InputError(flag, f"applies to torch models; {onnx} is an ONNX graph (onnxruntime, float32)")


def check_outputs(options: ValidationOptions, candidates: list[Candidate], images: Iterable[Path] = ()) -> None:
    """Refuse --json and --table outputs now, not after 50,000 images."""
    inputs = json_inputs(options, [c.path for c in candidates], images)
    targets: dict[str, Path] = {}
    if options.plot_path is not None:
        check_plot_path(options.plot_path)
    for label, path in (("--json", options.json_path), ("--table", options.table_path), ("--plot", options.plot_path)):
        if path is not None:
            target = check_output(path, True, inputs, label=label).resolve()
            if other := next((name for name, known in targets.items() if known == target), None):
                raise InputError(f"{label} {path}", f"is the {other} file too; give each its own name")
            targets[label] = target


def check_cache_folder(options: ValidationOptions, device: torch.device) -> None:
    """A --cache folder, or with --fast on the CPU $REGNET_CACHE, must not be the data folder or inside it (it
    would then be scanned as images: the next run refuses a class folder named aoti)."""
    data = Path(options.data).resolve()
    if options.fast and device.type == "cpu" and _inside((root := cache_root()).resolve(), data):
        where = f"is inside the --data folder {options.data} (--fast would write its packages there)"
        raise InputError(f"REGNET_CACHE {root}", f"{where}; set REGNET_CACHE to another folder")
    if options.cache is None:
        return
    if not os.fspath(options.cache):
        raise InputError("--cache ''", "is not a folder name; give a folder for the cache")
    if _inside(Path(options.cache).resolve(), data):
        raise InputError(f"--cache {options.cache}", f"is inside the --data folder {options.data}; give another")


def _inside(folder: Path, data: Path) -> bool:
    return folder == data or data in folder.parents


def validate(options: ValidationOptions, placement: Placement) -> list[ValidationResult]:
    """Validate every model on this process's shard and reduce the counts over the job; every rank gets the
    results, in the order the models were asked for."""
    rank, world_size, device = placement.rank, placement.world_size, placement.device
    candidates = resolve_models(options)
    check_outputs(options, candidates)
    check_cache_folder(options, device)
    pipeline = selfcheck.check(options.preprocess, device)
    if not pipeline.exact and rank == 0:
        selfcheck.announce(pipeline)
    samples = subset(find_samples(options.data, options.labels), options.limit)
    check_outputs(options, candidates, [path for path, _ in samples])  # again: an image may be linked elsewhere
    mine = shard(samples, rank, world_size)
    groups: dict[tuple[int, int], list[int]] = {}  # (resize, crop) -> indices into candidates
    for i, candidate in enumerate(candidates):
        pre = candidate.metadata.preprocessing
        groups.setdefault((pre.resize, pre.crop), []).append(i)
    settings = {key: CropSettings(options.preprocess, *key, "BGR") for key in groups}
    caches = {
        key: CropCache(options.cache, mine, settings[key]) for key in groups if options.cache is not None and mine
    }
    cached = {key: cache.prepare() for key, cache in caches.items()}  # refusals before anything runs
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if options.amp == "off":  # float32 means float32: no TF32 convolutions or matmuls on Ampere and later
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    evaluation = Evaluation(device, options.amp, options.channels_last, options.fast)
    announce = options.progress and rank == 0
    results: list[ValidationResult | None] = [None] * len(candidates)
    for key, members in groups.items():
        weights_dtypes = [stored_dtype(candidates[i].model) for i in members]
        feeds = []
        for i in members:  # computed in float32 whatever the file stores; --amp lowers it explicitly
            c, pre = candidates[i], candidates[i].metadata.preprocessing
            model = on_device(evaluation, c, announce)
            feeds.append(Feed(c.metadata.model, model, pre.mean, pre.std, pre.channel_order))
            c.model = None  # type: ignore[assignment]  # the device copy (or the fast graph) is all we keep
        labels = [label for _, label in mine]
        with ExitStack() as stack:
            batches: Iterable[Batch]
            if (hit := cached.get(key)) is not None:
                batches = hit.batches(labels, options.batch_size)
            else:
                batches = make_loader(mine, settings[key], options.batch_size, options.workers, device.type == "cuda")
                if key in caches:
                    batches = stack.enter_context(caches[key].building()).record(batches)
            counts, wall = evaluation.run(
                feeds, batches, len(mine), options.skip_bad_images, options.progress and rank == 0
            )
        del feeds
        for i, model_counts, weights_dtype in zip(members, counts, weights_dtypes, strict=True):
            result = result_of(options, placement, candidates[i], model_counts, len(samples), wall, weights_dtype)
            results[i] = dataclasses.replace(result, pipeline=pipeline)
    return [r for r in results if r is not None]


def on_device(evaluation: Evaluation, candidate: Candidate, announce: bool) -> torch.nn.Module:
    """The candidate as it runs: a RegNet in float32 on the device (or its fast graph), an ONNX graph as it is."""
    if candidate.kind == "onnx":
        return candidate.model
    if not isinstance(candidate.model, regnet.RegNet):
        raise TypeError(f"a {candidate.kind} file gave a {type(candidate.model).__name__}, not a RegNet")
    return evaluation.model_on_device(candidate.model.float(), announce)


def stored_dtype(model: torch.nn.Module) -> str:
    """The dtype the weights are stored in (an ONNX graph: float32)."""
    first = next(model.parameters(), None)
    return "float32" if first is None else str(first.dtype).removeprefix("torch.")


def result_of(
    options: ValidationOptions,
    placement: Placement,
    candidate: Candidate,
    counts: Counts,
    expected: int,
    wall: float,
    weights_dtype: str,
) -> ValidationResult:
    """One model's result, its counts summed over the job."""
    counts = counts.all_reduce()
    if counts.images + len(counts.bad_images) != expected:
        raise RuntimeError(f"counted {counts.images + len(counts.bad_images)} images of {expected}")
    metadata = candidate.metadata
    return ValidationResult(
        model=metadata.model,
        weights=str(candidate.path),
        counts=counts,
        expected_images=expected,
        preprocess=options.preprocess,
        channel_order=metadata.preprocessing.channel_order,
        amp=options.amp,
        fast=options.fast,
        device=str(placement.device.type),
        world_size=placement.world_size,
        tolerance=options.tolerance,
        wall_seconds=wall,
        zoo=zoo_models().get(metadata.model),
        identity=candidate.identity,
        weights_dtype=weights_dtype,
        weights_format=candidate.kind,
    )
