"""ImageNet-1k validation images and their labels: class folders, or a flat folder plus a labels file."""

from __future__ import annotations

import csv
import errno
import itertools
import os
import stat
from pathlib import Path
from typing import NamedTuple

from regnet.imagenet import class_index
from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import check_input_file
from regnet_convert.validation.preprocess import IMAGE_EXTENSIONS

Sample = tuple[Path, int]
FULL_VALIDATION_SET = 50_000
MAX_LABELS_BYTES = 64 << 20  # meta/val.txt is 1.3 MB
MAX_LABEL_LINES = 1_000_000  # 20 times ImageNet's 50,000 validation images


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


class LabelEntry(NamedTuple):
    """One line of a labels file: the image it names, its class index, and the line's number."""

    name: str
    label: int
    line: int


def _read_lines(labels: Path) -> list[str]:
    """The labels file's lines, refused before splitting when it is too large or has too many."""
    check_input_file(labels, "labels file", label="--labels")
    with open(labels, "rb") as f:
        data = f.read(MAX_LABELS_BYTES + 1)
    if len(data) > MAX_LABELS_BYTES:
        raise InputError(labels, f"is over {MAX_LABELS_BYTES >> 20} MB, too large for a labels file")
    if (count := data.count(b"\n") + (not data.endswith(b"\n"))) > MAX_LABEL_LINES:
        raise InputError(labels, f"has {count:,} lines; a labels file has one per image (at most {MAX_LABEL_LINES:,})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(labels, f"is not UTF-8 text (byte {exc.start})") from None
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _name_problem(name: str) -> bool:
    """Whether a labels entry cannot name an image inside the data folder."""
    if "/" not in name and len(name) <= 63:  # most names: one short part (4 UTF-8 bytes a character at most)
        return "\0" in name or name == ".."
    parts = name.split("/")
    return (
        "\0" in name
        or name.startswith("/")
        or ".." in parts
        or any(len(part) > 63 and len(os.fsencode(part)) > 255 for part in parts)
    )


def read_labels(labels: Path) -> list[LabelEntry]:
    """Every entry of mmcls's `meta/val.txt` or Kaggle's `LOC_val_solution.csv`, in file order.

    A name given twice is an error (whatever the classes); UTF-8 with or without a byte-order mark; at most
    MAX_LABELS_BYTES and MAX_LABEL_LINES, refused before anything is parsed.
    """
    lines = _read_lines(labels)
    entries: list[LabelEntry] = []
    line_of: dict[str, int] = {}

    def add(name: str, index: int, number: int) -> None:
        if _name_problem(name):
            raise InputError(labels, f"line {number} names {name[:60]!r}, not an image inside the data folder")
        if (first := line_of.setdefault(name, number)) != number:
            raise InputError(labels, f"line {number} names {name[:60]!r} again (line {first}); one label per image")
        entries.append(LabelEntry(name, index, number))

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
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()) or not 0 <= int(parts[1]) < 1000:
                raise InputError(labels, f"line {number} is not 'FILE CLASS_INDEX' with an index 0..999: {line[:80]!r}")
            add(parts[0], int(parts[1]), number)
    if not entries:
        raise InputError(labels, "holds no labels")
    return entries


FileKey = tuple[int, int]  # (st_dev, st_ino): which file a path is, whatever its spelling or links


def _regular_file(path: str) -> FileKey | None:
    """The identity of the regular file at `path` (links followed), or None when there is none."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def _resolve(data: str, name: str) -> tuple[str, FileKey] | None:
    """The image a labels entry names: a path relative to `data`, or (CSV ids) that name plus an extension."""
    path = os.path.join(data, name)
    if (key := _regular_file(path)) is not None:
        return path, key
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return None
    for suffix in (".JPEG", ".jpeg", ".jpg", ".JPG", ".png"):
        if (key := _regular_file(path + suffix)) is not None:
            return path + suffix, key
    return None


def labelled_samples(data: Path, labels: Path) -> list[Sample]:
    """Every labelled image must exist and every image in `data` must have a label.

    Entries are keyed by the file they resolve to: two lines naming one image (`a.JPEG` and `./a.JPEG`, a
    Kaggle id and its file name, two links to one file) are an error, even when they agree.
    """
    samples, missing = [], []
    entry_of: dict[FileKey, LabelEntry] = {}
    for entry in sorted(read_labels(labels)):
        found = _resolve(os.fspath(data), entry.name)
        if found is None:
            missing.append(entry.name)
            continue
        path, key = found
        if (first := entry_of.setdefault(key, entry)) is not entry:
            a, b = sorted((first, entry), key=lambda e: e.line)
            raise InputError(
                labels, f"lines {a.line} ({a.name[:60]!r}) and {b.line} ({b.name[:60]!r}) name the same image"
            )
        samples.append((Path(path), entry.label))
    if missing:
        raise InputError(labels, f"names {len(missing)} image(s) missing from {data}: {_examples(missing)}")
    unlabelled = sorted(p.name for p in data.iterdir() if is_image(p) and _regular_file(os.fspath(p)) not in entry_of)
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
