"""Fetching zoo files: where they go, where they come from, how a download is verified and converted."""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from regnet import WeightsFileError, read_header
from regnet.metadata import WeightsMetadata
from regnet.paths import cache_root, checkpoints_dir, user_checkpoints
from regnet.weights import check_against_architecture
from regnet.zoo import ZooModel
from regnet_convert.conversion.pipeline import convert
from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import check_output
from regnet_convert.zoo import records
from regnet_convert.zoo.download import HARD_LIMIT, download, file_sha256

PYCLS_URL = "https://dl.fbaipublicfiles.com/pycls/"
MIRROR_SCHEMES = ("http", "https", "file")


def converted_path(name: str) -> Path:
    """Where model `name` is converted to."""
    return checkpoints_dir() / f"{name}.safetensors"


def usable_folder(folder: Path, label: str, create: bool) -> Path:
    """`folder` (created first if `create`), refused with one line unless it is a writable folder."""
    name = f"{label} {folder}"
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            pass  # not a folder: said below
        except OSError as exc:
            raise InputError(name, f"cannot be created ({exc.strerror or exc}); give a writable folder") from None
    try:
        info = folder.stat()
    except FileNotFoundError:
        raise InputError(name, "does not exist; create it, or give another folder") from None
    except OSError as exc:
        raise InputError(name, f"cannot be used ({exc.strerror or exc}); give another folder") from None
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(name, "is not a folder; give a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(name, "cannot be written (permission denied); give a writable folder")
    return folder


def checkpoints_folder() -> Path:
    """The checked folder of converted files; only the per-user default is created."""
    folder = checkpoints_dir()
    label = "REGNET_CHECKPOINTS" if os.environ.get("REGNET_CHECKPOINTS") else "checkpoints folder"
    return usable_folder(folder, label, create=folder == user_checkpoints())


def download_folder() -> Path:
    """The checked (and created) download cache."""
    return usable_folder(cache_root(), "REGNET_CACHE" if os.environ.get("REGNET_CACHE") else "download cache", True)


def conversion_problem(entry: ZooModel, path: Path) -> str | None:
    """None if `path` is a well-formed converted file of `entry`'s model, else what is wrong with it."""
    try:
        header = read_header(path)
        metadata = WeightsMetadata.from_strings(header.metadata)
        check_against_architecture(header, metadata)
    except (WeightsFileError, ValueError) as exc:
        return str(exc)
    return None if metadata.model == entry.name else f"it holds {metadata.model[:40]}"


def already_converted(entry: ZooModel, output: Path) -> bool:
    """Whether `output` holds `entry` converted; InputError if it holds anything else."""
    if not output.is_file():
        return False
    if problem := conversion_problem(entry, output):
        raise InputError(
            output, f"exists but is not a valid converted {entry.name} ({problem}); use --force to replace it"
        )
    return True


def conversion_status(entry: ZooModel) -> str:
    """`yes`, `no`, `invalid` (something else is in its place) or `?` (the folder cannot be read)."""
    output = converted_path(entry.name)
    try:
        if not output.is_file():
            return "no"
    except OSError:
        return "?"
    return "invalid" if conversion_problem(entry, output) else "yes"


def mirror_url(mirror: str) -> str:
    """`mirror` if it is an http(s):// or file:// URL; InputError naming --mirror otherwise."""
    name = f"--mirror {mirror[:200]!r}"
    if not mirror.strip():
        raise InputError(name, "is empty; give an http(s):// or file:// URL, or leave --mirror out")
    try:
        parts = urllib.parse.urlsplit(mirror)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise InputError(name, f"is not a URL ({exc})") from None
    located = parts.netloc if parts.scheme in ("http", "https") else parts.path
    if parts.scheme not in MIRROR_SCHEMES or not located or any(c.isspace() or not c.isprintable() for c in mirror):
        raise InputError(name, "is not an http://, https:// or file:// URL of the pycls file tree")
    return mirror


def source_url(entry: ZooModel, mirror: str | None) -> str:
    """The pycls file's address, on `mirror` when one is given."""
    if mirror is None:
        return entry.weights_url
    return mirror.rstrip("/") + "/" + entry.weights_url.removeprefix(PYCLS_URL)


def largest_download(entry: ZooModel) -> int:
    """The manifest's size, else a bound no pycls file of the model reaches (four float32 copies and 16 MiB)."""
    return entry.size if entry.size is not None else min(HARD_LIMIT, 16 * entry.params + (16 << 20))


def convert_download(entry: ZooModel, source: Path, output: Path, force: bool, quiet: bool) -> None:
    """Convert the download; remove it if its content is at fault (never for a problem with the output)."""
    try:
        convert(source, output, model=entry.name, force=force, quiet=quiet)
    except InputError as error:
        if error.path != str(source):
            raise
        source.unlink(missing_ok=True)
        raise InputError(source, f"{error.problem}; the download was removed, run again to fetch it anew") from None


def expected_identity(
    entry: ZooModel, known: records.FileRecord | None, folder: Path
) -> tuple[int | None, str | None, str]:
    """The size and sha256 a download must have, and who says so: the manifest, else the first download's record."""
    if entry.sha256 is not None or known is None:
        return entry.size, entry.sha256, "the manifest"
    return known.size, known.sha256, f"the first download ({known.first_downloaded}, {records.record_path(folder)})"


def fetch_one(
    entry: ZooModel, mirror: str | None, force: bool, quiet: bool, stall_timeout: float, say: Callable[[str], None]
) -> Path:
    """Download (or reuse) the pycls file and convert it into the checkpoints folder."""
    output = checkpoints_folder() / f"{entry.name}.safetensors"
    if not force and already_converted(entry, output):
        say(f"{entry.name}: already converted ({output}); --force converts again")
        return output
    check_output(output, force)  # before a download of up to 1.2 GB, not after
    folder = output.parent
    known = records.load(folder).get(entry.file_name)  # a damaged record is refused before anything is fetched
    size, sha256, expected_from = expected_identity(entry, known, folder)
    url = source_url(entry, mirror)
    destination = download_folder() / entry.file_name
    source = download(url, destination, size, sha256, quiet, stall_timeout, largest_download(entry), expected_from)
    convert_download(entry, source, output, force, quiet)
    if sha256 is None:  # the first download of a file no one publishes a hash for, converted: remember what it was
        first = records.FileRecord(source.stat().st_size, file_sha256(source), records.now())
        records.add(folder, entry.file_name, first)
    say(f"{entry.name}: {output}")
    return output
