"""Classify images with a converted or exported RegNet: top-k classes with readable names and probabilities.

The model comes through the loader `regnet-validate` uses (`load_any`: every format the tool reads), each image
through the validator's preprocessing (`regnet.transforms`, bit-exact), so its top-1 is the validator's. Images are
decoded in this process, a batch at a time, and results are given as each batch is done.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import regnet
from regnet.metadata import ChannelOrder, WeightsMetadata
from regnet.preprocess import IMAGE_EXTENSIONS, ImageDecodeError, Preset
from regnet.transforms import ImageInput
from regnet_convert.conversion.pipeline import load_any
from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import file_kind

DEFAULT_TOPK = 5
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class ClassScore:
    """One of an image's top classes."""

    index: int  # the class index (the model's output)
    label: str | None  # the file's category for it: an ImageNet WordNet id, or the source's own class name
    name: str  # readable: "tench", or the label, or "class 17" for a file that names no classes
    probability: float  # softmax of the logits


@dataclass(frozen=True)
class Prediction:
    """An image's top classes, best first, or why it could not be read (`error`, with `top` empty)."""

    image: str
    top: tuple[ClassScore, ...] = ()
    error: str | None = None

    def to_json(self) -> dict:
        record: dict = {"image": self.image}
        if self.error is not None:
            return record | {"error": self.error}
        return record | {"top": [asdict(score) for score in self.top]}


def resolve_device(device: str) -> torch.device:
    """`auto`: CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda", "no CUDA device is available")
    return torch.device(device)


class Predictor:
    """A loaded model and its preprocessing: `predictor(images, topk)` gives each image's top classes."""

    def __init__(
        self,
        weights: str | Path | regnet.RegNet,
        preset: Preset = "mmcls",
        device: str = "auto",
        label: str | None = None,
    ) -> None:
        model: torch.nn.Module
        if isinstance(weights, regnet.RegNet):
            if weights.metadata is None:
                raise ValueError("the model has no metadata (regnet.load gives it); pass its file instead")
            model, metadata = weights, weights.metadata
        else:
            model, metadata = load_any(Path(weights), label=label)
        self.metadata: WeightsMetadata = metadata
        self.device = resolve_device(device) if isinstance(model, regnet.RegNet) else torch.device("cpu")
        if self.device.type == "cuda":  # float32 means float32, as in regnet-validate
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.float().to(self.device).eval() if isinstance(model, regnet.RegNet) else model
        self.transform = regnet.transforms(metadata, preset)
        self.names = class_names(metadata)

    @property
    def num_classes(self) -> int:
        return self.metadata.config.num_classes

    def check_topk(self, topk: int, label: str = "topk") -> None:
        """Refuse a k the model cannot give."""
        if not 1 <= topk <= self.num_classes:
            raise InputError(label, f"{topk} is not between 1 and the model's {self.num_classes} classes")

    def __call__(
        self, images: Sequence[ImageInput], topk: int = DEFAULT_TOPK, order: ChannelOrder | None = None
    ) -> list:
        """The top `topk` classes of each image (paths, bytes or uint8 HxWx3 arrays in channel `order`), as
        tuples of `ClassScore`, best first; `regnet.preprocess.ImageDecodeError` for an image that cannot be read."""
        self.check_topk(topk)
        crops = [self.transform.crop(image, order) for image in images]
        return self.top(torch.stack(crops), topk) if crops else []

    @torch.inference_mode()
    def top(self, crops: torch.Tensor, topk: int) -> list[tuple[ClassScore, ...]]:
        """The top classes of a batch of crops (`transform.crop`), normalised on the model's device."""
        logits = self.model(self.transform.normalize(crops.to(self.device))).float()
        ranked = logits.topk(topk, dim=1)  # ranked on the logits, as the validator does: no ties from rounding
        probabilities = logits.softmax(dim=1).gather(1, ranked.indices).cpu().tolist()
        return [
            tuple(self._score(i, p) for i, p in zip(indices, row, strict=True))
            for indices, row in zip(ranked.indices.cpu().tolist(), probabilities, strict=True)
        ]

    def _score(self, index: int, probability: float) -> ClassScore:
        label, name = self.names[index]
        return ClassScore(index, label, name, probability)


def class_names(metadata: WeightsMetadata) -> list[tuple[str | None, str]]:
    """(label, readable name) of each class: the file's categories and their readable names where it has them."""
    labels = metadata.categories or (None,) * metadata.config.num_classes
    readable = metadata.category_names or labels
    return [(label, name or f"class {i}") for i, (label, name) in enumerate(zip(labels, readable, strict=True))]


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_file(entry: os.DirEntry) -> bool:
    """Whether a folder's entry is a file; one that cannot be looked at (a symbolic link loop) is kept, so that
    reading it names it (or `--skip-bad-images` skips it) rather than the folder."""
    try:
        return entry.is_file()
    except OSError:
        return True


def folder_images(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by extension, hidden ones left out), sorted by name."""
    try:
        with os.scandir(folder) as entries:
            found = [Path(e.path) for e in entries if _is_image_name(e.name) and _is_file(e)]
    except OSError as exc:
        raise InputError(folder, f"cannot be read ({exc.strerror or exc})") from None
    if not found:
        raise InputError(folder, f"holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(found)


def image_paths(inputs: Iterable[str | Path], skipped: Callable[[Prediction], None] | None = None) -> list[Path]:
    """The images to classify: each file given, and the images in each folder given, in order.

    A path that is neither a file nor a folder (missing, a FIFO, a device) is refused, or with `skipped` reported
    to it and left out.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        try:
            mode = item.stat().st_mode
            problem = None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else f"is {file_kind(mode)}, not an image"
        except FileNotFoundError:
            problem = "no such file or folder"
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        if problem is None:
            paths += folder_images(item) if stat.S_ISDIR(mode) else [item]
        elif skipped is None:
            raise InputError(item, problem)
        else:
            skipped(Prediction(str(item), error=f"{item}: {problem}"))
    return paths


def predictions(
    predictor: Predictor, paths: Sequence[Path], topk: int = DEFAULT_TOPK, batch_size: int = DEFAULT_BATCH
) -> Iterator[Prediction]:
    """Each image's prediction, in order, a batch at a time; an image that cannot be read gives a `Prediction` with
    its `error` (the caller decides whether that ends the run)."""
    predictor.check_topk(topk)
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        results: list[Prediction | None] = [None] * len(batch)
        crops, done = [], []
        for i, path in enumerate(batch):
            try:
                crops.append(predictor.transform.crop(path))
                done.append(i)
            except ImageDecodeError as error:
                results[i] = Prediction(str(path), error=str(error))
        if crops:
            for i, top in zip(done, predictor.top(torch.stack(crops), topk), strict=True):
                results[i] = Prediction(str(batch[i]), top)
        yield from (r for r in results if r is not None)


def predict(
    weights: str | Path | regnet.RegNet,
    images: str | Path | Iterable[str | Path],
    topk: int = DEFAULT_TOPK,
    preset: Preset = "mmcls",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    skip_bad_images: bool = False,
) -> list[Prediction]:
    """Classify image files (and the images in folders) with a converted or exported model: each one's top `topk`
    classes, as `regnet-convert predict` prints them. An image that cannot be read raises InputError, or with
    `skip_bad_images` gives a `Prediction` whose `error` says why."""
    inputs = [images] if isinstance(images, str | os.PathLike) else list(images)
    predictor = Predictor(weights, preset, device)
    predictor.check_topk(topk)
    bad: list[Prediction] = []
    paths = image_paths(inputs, bad.append if skip_bad_images else None)
    results = [*bad]
    for prediction in predictions(predictor, paths, topk, batch_size):
        if prediction.error and not skip_bad_images:
            raise InputError(None, prediction.error)
        results.append(prediction)
    return results
