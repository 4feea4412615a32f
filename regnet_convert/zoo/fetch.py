"""Fetching zoo files: which file a name means, where it goes, where it comes from, how a download is verified
(the hash its name carries, else the manifest, else the first download's record) and converted."""

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
from regnet.zoo import ZooFile, ZooWeights, file_named, seed_base_url, weights_key, zoo_models, zoo_weights
from regnet_convert.conversion.identity import identity_of
from regnet_convert.conversion.pipeline import convert
from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import check_output
from regnet_convert.zoo import records
from regnet_convert.zoo.download import HARD_LIMIT, download, file_sha256

PYCLS_URL = "https://dl.fbaipublicfiles.com/pycls/"
MIRROR_SCHEMES = ("http", "https", "file")


def converted_path(weights: ZooWeights) -> Path:
    """Where `weights` are converted to: `MODEL.safetensors` (the default tag) or `MODEL.TAG.safetensors`."""
    return checkpoints_dir() / weights.converted_name


def resolve(name: str) -> tuple[ZooWeights, ZooFile]:
    """The weights and file a `zoo fetch` NAME means: a published file's own name, or weights (`MODEL[.TAG]`, the
    default tag pycls's) from their first file (pycls's `.pyth` for pycls's weights); KeyError for neither."""
    if (named := file_named(name.strip())) is not None:
        return zoo_weights()[named.weights], named
    if name.strip().endswith((".pth", ".pyth")):
        raise KeyError(f"no published file is named {name[:80]!r}; zoo list names the table's files")
    weights = zoo_weights()[weights_key(name)]
    return weights, weights.primary_file


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


def conversion_problem(weights: ZooWeights, path: Path) -> str | None:
    """None if `path` is a well-formed conversion of `weights`, else what is wrong with it."""
    try:
        header = read_header(path)
        metadata = WeightsMetadata.from_strings(header.metadata)
        check_against_architecture(header, metadata)
    except (WeightsFileError, ValueError) as exc:
        return str(exc)
    if metadata.model != weights.model:
        return f"it holds {metadata.model[:40]}"
    try:
        identity = identity_of(metadata, path)
    except InputError as error:
        return error.problem
    if identity.weights != weights.key:
        return f"it holds {identity.weights or 'unidentified weights'} ({identity.identified_by})"
    return None


def already_converted(weights: ZooWeights, output: Path) -> bool:
    """Whether `output` holds `weights` converted; InputError if it holds anything else."""
    if not output.is_file():
        return False
    if problem := conversion_problem(weights, output):
        raise InputError(
            output, f"exists but is not a valid converted {weights.short} ({problem}); use --force to replace it"
        )
    return True


def conversion_status(weights: ZooWeights) -> str:
    """`yes`, `no`, `invalid` (something else is in its place) or `?` (the folder cannot be read)."""
    output = converted_path(weights)
    try:
        if not output.is_file():
            return "no"
    except OSError:
        return "?"
    return "invalid" if conversion_problem(weights, output) else "yes"


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
        raise InputError(name, "is not an http://, https:// or file:// URL of a copy of the zoo's files")
    return mirror


def source_url(file: ZooFile, mirror: str | None) -> str:
    """The file's address, on `mirror` when one is given (at its path below its host's folder: pycls's
    `dds_baselines/...`, OpenMMLab's `regnetx-...pth` and `convert/...pth`)."""
    if mirror is None:
        return file.url
    base = next(b for b in (PYCLS_URL, seed_base_url()) if file.url.startswith(b))
    return mirror.rstrip("/") + "/" + file.url.removeprefix(base)


def largest_download(weights: ZooWeights, file: ZooFile) -> int:
    """The manifest's size, else a bound no file of the model reaches (four float32 copies and 16 MiB)."""
    params = zoo_models()[weights.model].params
    return file.size if file.size is not None else min(HARD_LIMIT, 16 * params + (16 << 20))


def convert_download(weights: ZooWeights, file: ZooFile, source: Path, output: Path, force: bool, quiet: bool) -> None:
    """Convert the download; remove it if its content is at fault (never for a problem with the output)."""
    try:
        convert(source, output, source_format=file.format, model=weights.model, force=force, quiet=quiet)
    except InputError as error:
        if error.path != str(source):
            raise
        source.unlink(missing_ok=True)
        raise InputError(source, f"{error.problem}; the download was removed, run again to fetch it anew") from None


def expected_identity(
    file: ZooFile, known: records.FileRecord | None, folder: Path
) -> tuple[int | None, str | None, str]:
    """The size and sha256 (or its first hex digits) a download must have, and who says so: the manifest, else the
    hash its name carries, else the first download's record."""
    if file.sha256 is not None:
        return file.size, file.sha256, "the manifest"
    if file.hash_prefix is not None:
        return file.size, file.hash_prefix, "its name"
    if known is None:
        return file.size, None, "the manifest"
    return known.size, known.sha256, f"the first download ({known.first_downloaded}, {records.record_path(folder)})"


def fetch_one(
    weights: ZooWeights,
    file: ZooFile,
    mirror: str | None,
    force: bool,
    quiet: bool,
    stall_timeout: float,
    say: Callable[[str], None],
) -> Path:
    """Download (or reuse) `file`, verified, and convert it into the checkpoints folder as `weights`."""
    output = checkpoints_folder() / weights.converted_name
    if not force and already_converted(weights, output):
        say(f"{weights.short}: already converted ({output}); --force converts again")
        return output
    check_output(output, force)  # before a download of up to 1.2 GB, not after
    folder = output.parent
    known = records.load(folder).get(file.name)  # a damaged record is refused before anything is fetched
    size, sha256, expected_from = expected_identity(file, known, folder)
    url = source_url(file, mirror)
    destination = download_folder() / file.name
    source = download(
        url, destination, size, sha256, quiet, stall_timeout, largest_download(weights, file), expected_from
    )
    convert_download(weights, file, source, output, force, quiet)
    if sha256 is None:  # the first download of a file no one publishes a hash for, converted: remember what it was
        first = records.FileRecord(source.stat().st_size, file_sha256(source), records.now())
        records.add(folder, file.name, first)
    say(f"{weights.short}: {output}")
    return output
