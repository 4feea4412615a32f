"""The opt-in crop cache (`regnet-validate --cache DIR`): each image decoded, resized and cropped once, then
memory-mapped by every later run on the same files.

An entry is a folder `DIR/<preset>-<resize>-<crop>-<digest of the image paths>` holding `crops.bin`, the BGR NCHW
crops as raw bytes in the preset's dtype (uint8 for mmcls, float32 for pycls: `RESIZE_DTYPES`), and `index.json`:
its key (preset, resize, crop, OpenCV version, and every image's absolute path, size, modification time and the
sha256 of its bytes), the crops' shape and dtype, and the error of each undecodable image. An entry is used only when
its index parses, its key equals the current one and `crops.bin` has exactly the size the shape gives; anything else
(changed files, a new OpenCV, a truncated or damaged file, garbage) makes it stale, and it is rebuilt in place. The
bytes of the crops carry no checksum: a same-size overwrite of `crops.bin` is not detected.

Why a content hash: size and modification time say nothing once a file is replaced by one of the same size with its
mtime set back (`touch -r`, `cp -p`, `rsync -t`, an archive extracted with its times), which stale crops would then be
scored from. (st_dev, st_ino, st_ctime_ns) would catch most of those for free but not all: a coarse ctime (1 s or
2 s on some file systems) misses a rewrite within the same tick, NFS attribute caches serve old times, a restored or
copied tree changes them all. Hashing costs one read of the images, 0.04-0.07 ms of sha256 per ImageNet-sized JPEG
(110 KB) on one core against 2-5 ms to decode and crop it (3-4 s for 50,000 images, spread over a few threads): a
few percent of what the cache saves, so the key holds the sha256 of each image's bytes, next to its size and mtime
(kept so that a touched file still rebuilds, as before). A file that is not a regular file, or is over the decoder's
size limit, is keyed without a hash (decoding refuses it anyway). What it cannot catch: an image rewritten while an
entry is being built (between hashing and decoding), whose crop may then be of bytes other than the ones hashed.

Entries are written with `atomic_directory`: a temporary folder filled during the run and renamed into place only
once complete, so a crash or an interruption never leaves an entry that looks valid (the next write removes the
dead process's folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import cv2
import numpy as np
import torch

from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import file_kind
from regnet_convert.fs.outputs import atomic_directory
from regnet_convert.process import notice
from regnet_convert.validation.dataset import Sample
from regnet_convert.validation.evaluate import Batch
from regnet_convert.validation.loader import CropSettings
from regnet_convert.validation.preprocess import MAX_FILE_BYTES, RESIZE_DTYPES

FORMAT, VERSION = "regnet-convert crop cache", 1
INDEX, DATA = "index.json", "crops.bin"
MAX_INDEX_BYTES = 256 << 20  # 50,000 paths take about 5 MB
LABEL = "--cache"


HASH_THREADS = 4  # hashlib and file reads release the GIL


def file_key(path: str | Path) -> list:
    """An image's absolute path, size, mtime (ns) and the sha256 of its bytes, read from one open file.

    A FIFO, device or folder is not read (it could block or never end), nor a file over the decoder's size limit;
    their hash is "" and a file gone since the listing is keyed [path, -1, -1, ""]: decoding reports them.
    """
    name = os.path.abspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return [name, -1, -1, ""]
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            return [name, info.st_size, info.st_mtime_ns, ""]
        digest = hashlib.sha256()
        with open(fd, "rb", closefd=False) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return [name, info.st_size, info.st_mtime_ns, digest.hexdigest()]
    except OSError:
        return [name, -1, -1, ""]
    finally:
        os.close(fd)


def cache_key(samples: list[Sample], settings: CropSettings) -> dict:
    """What the crops depend on: preprocessing, OpenCV, and each file's path, size, mtime and content (`file_key`)."""
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        files = list(pool.map(file_key, [path for path, _ in samples]))
    s = settings
    return {"preset": s.preset, "resize": s.resize, "crop": s.crop, "opencv": cv2.__version__, "files": files}


class Stale(Exception):
    """Why an entry cannot be used (it is then rebuilt)."""


class CachedCrops:
    """A current entry's crops, memory-mapped read-only, served as batches."""

    def __init__(self, crops: np.memmap, errors: dict[int, str]) -> None:
        self.crops, self.errors = crops, errors

    def batches(self, labels: list[int], batch_size: int) -> Iterator[Batch]:
        """The crops in order, `batch_size` at a time, with the labels given (labels are not cached)."""
        for start in range(0, len(self.crops), batch_size):
            end = min(start + batch_size, len(self.crops))
            images = torch.from_numpy(np.array(self.crops[start:end]))  # one copy, out of the page cache
            errors = [self.errors.get(i, "") for i in range(start, end)]
            yield images, torch.tensor(labels[start:end], dtype=torch.int64), torch.arange(start, end), errors


class Recorder:
    """Writes the crops of a run to a new entry as its batches go by."""

    def __init__(self, entry: Path, data: Path, shape: tuple[int, ...]) -> None:
        self.entry, self.data, self.shape = entry, data, shape
        self.written = 0
        self.errors: dict[int, str] = {}  # undecodable images' errors by index
        self.failed = False  # a write failed: the entry is abandoned, the run goes on uncached
        self.file = open(data, "wb")  # noqa: SIM115 (closed by `finish` or by `CropCache.building`)

    def record(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """`batches`, unchanged, their crops appended to the entry's data file (until a write fails)."""
        for batch in batches:
            images, _, indices, errors = batch
            if indices.tolist() != list(range(self.written, self.written + len(errors))):
                raise RuntimeError("the crop cache expects the batches in order")
            if not self.failed:
                try:
                    self.file.write(np.ascontiguousarray(images.numpy()).tobytes())
                except OSError as exc:
                    self.failed = True
                    _uncached(f"{LABEL} {self.entry}", exc)
            self.errors.update({self.written + i: e for i, e in enumerate(errors) if e})
            self.written += len(errors)
            yield batch

    def finish(self, index: Path, key: dict, dtype: np.dtype) -> None:
        """Close the data file and write the index (the entry is complete)."""
        self.file.close()
        if self.written != self.shape[0]:
            raise RuntimeError(f"the crop cache got {self.written} crops of {self.shape[0]}")
        record = {
            "format": FORMAT,
            "version": VERSION,
            "key": key,
            "shape": list(self.shape),
            "dtype": dtype.name,
            "errors": {str(i): e for i, e in sorted(self.errors.items())},
        }
        index.write_text(json.dumps(record) + "\n")


class CropCache:
    """The entry of one set of images and crop settings in a `--cache` folder."""

    def __init__(self, folder: str | Path, samples: list[Sample], settings: CropSettings) -> None:
        self.folder = Path(folder)
        self.key = cache_key(samples, settings)
        self.dtype = RESIZE_DTYPES[settings.preset]
        self.shape = (len(samples), 3, settings.crop, settings.crop)
        identity = json.dumps([settings.preset, settings.resize, settings.crop, [f[0] for f in self.key["files"]]])
        digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.entry = self.folder / f"{settings.preset}-{settings.resize}-{settings.crop}-{digest}"
        self.stale_reason = "no entry yet"

    def _name(self, path: Path | None = None) -> str:
        return f"{LABEL} {path or self.folder}"

    def prepare(self) -> CachedCrops | None:
        """The entry's crops when it is current; None when it must be (and can be) built. Refuses a folder that
        cannot hold the cache, and an entry name taken by something other than a folder."""
        text = os.fspath(self.folder)
        if not text:
            raise InputError(f"{LABEL} ''", "is not a folder name; give a folder for the cache")
        try:
            info = os.stat(self.folder)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise InputError(self._name(), f"cannot be used ({exc.strerror or exc})") from None
        if info is not None and not stat.S_ISDIR(info.st_mode):
            kind = file_kind(info.st_mode) or "a file"
            raise InputError(self._name(), f"is {kind}; give a folder for the cache")
        if info is None and not self.folder.parent.is_dir():
            raise InputError(self._name(), f"parent folder {str(self.folder.parent)!r} does not exist")
        with suppress(FileNotFoundError):
            mode = os.lstat(self.entry).st_mode
            if not stat.S_ISDIR(mode):
                kind = file_kind(mode) or "a file"
                raise InputError(self._name(self.entry), f"is {kind}, not a cache entry; remove it")
        try:
            return self.open()
        except Stale as reason:
            self.stale_reason = str(reason)
        with suppress(OSError):
            if others := sorted(set(os.listdir(self.entry)) - {INDEX, DATA}):
                raise InputError(self._name(self.entry), f"holds {others[0]!r}, not a cache file; remove the folder")
        writable = self.folder if info is not None else self.folder.parent
        if not os.access(writable, os.W_OK | os.X_OK):
            raise InputError(self._name(), f"cannot write in {str(writable)!r} (permission denied)")
        return None

    def open(self) -> CachedCrops:
        """The current entry's crops, memory-mapped; `Stale` when there is none or it does not match."""
        if not self.entry.is_dir():
            raise Stale("no entry yet")
        index, data = self.entry / INDEX, self.entry / DATA
        record = _read_index(index)
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            raise Stale(f"{INDEX} is not a version {VERSION} index")
        if record.get("key") != self.key:
            raise Stale("the images (bytes, sizes or modification times), the crop settings or OpenCV changed")
        if record.get("shape") != list(self.shape) or record.get("dtype") != self.dtype.name:
            raise Stale(f"{INDEX} gives another shape or dtype")
        errors = record.get("errors")
        if not isinstance(errors, dict) or not all(
            isinstance(k, str) and k.isascii() and k.isdigit() and int(k) < self.shape[0] and isinstance(v, str) and v
            for k, v in errors.items()
        ):
            raise Stale(f"{INDEX} has a malformed error list")
        expected = int(np.prod(self.shape)) * self.dtype.itemsize
        try:
            info = os.lstat(data)
        except OSError:
            raise Stale(f"no {DATA}") from None
        if not stat.S_ISREG(info.st_mode) or info.st_size != expected:
            raise Stale(f"{DATA} is not a file of {expected:,} bytes")
        try:
            crops = np.memmap(data, dtype=self.dtype, mode="r", shape=self.shape)
        except (OSError, ValueError) as exc:
            raise Stale(f"{DATA} cannot be mapped ({exc})") from None
        return CachedCrops(crops, {int(k): v for k, v in errors.items()})

    @contextmanager
    def building(self) -> Iterator[Recorder]:
        """A recorder for this run's crops; the entry appears, complete, when the block ends without an error
        (a folder this call created is removed again if it fails)."""
        created, stage = False, "setup"
        try:
            if not self.folder.exists():
                try:
                    os.mkdir(self.folder)
                except OSError as exc:
                    raise InputError(self._name(), f"cannot be created ({exc.strerror or exc})") from None
                created = True
            for name in (INDEX, DATA):  # a damaged entry of ours may hold a folder where a file belongs: clear it
                part = self.entry / name
                if part.is_dir() and not part.is_symlink():
                    shutil.rmtree(part, ignore_errors=True)
            with ExitStack() as stack:
                tmp = stack.enter_context(atomic_directory(self.entry, True, (), (INDEX, DATA)))
                recorder = Recorder(self.entry, tmp / DATA, self.shape)
                stack.callback(recorder.file.close)
                stage = "run"
                yield recorder
                stage = "commit"
                if recorder.failed:
                    raise _Abandoned
                recorder.finish(tmp / INDEX, self.key, self.dtype)
        except BaseException as exc:
            if created:
                with suppress(OSError):
                    os.rmdir(self.folder)
            if isinstance(exc, _Abandoned):
                return
            if stage != "commit" or not isinstance(exc, (OSError, InputError)):
                raise  # a folder that cannot be created is refused before anything runs
            # the finished entry cannot be written (a full disk, a quota): the evaluation's results are kept
            _uncached(self._name(), exc)


class _Abandoned(Exception):
    """A write to the entry failed during the run: the temporary entry is removed, the results are kept."""


def _uncached(name: str, exc: OSError | InputError) -> None:
    """One notice line: the cache could not be written, and the run does without it."""
    reason = exc.problem if isinstance(exc, InputError) else exc.strerror or str(exc)
    notice(f"notice: {name}: cannot be written ({reason}); running without the cache")


def _read_index(path: Path) -> dict:
    """The parsed index, bounded in size; `Stale` for anything but a regular file holding a JSON object."""
    try:
        info = os.lstat(path)
    except OSError:
        raise Stale(f"no {INDEX}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_INDEX_BYTES:
        raise Stale(f"{INDEX} is not a regular file under {MAX_INDEX_BYTES >> 20} MB")
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read(MAX_INDEX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        raise Stale(f"{INDEX} is not JSON") from None
    if not isinstance(record, dict):
        raise Stale(f"{INDEX} is not a JSON object")
    return record
