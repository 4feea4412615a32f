"""`regnet-convert zoo`: the 24 pycls RegNets, listed, downloaded and converted on demand."""

from __future__ import annotations

import math
import os
import stat
import urllib.parse
from pathlib import Path

import click

from regnet import WeightsFileError, canonical_name, read_header
from regnet.metadata import WeightsMetadata
from regnet.weights import check_against_architecture
from regnet.zoo import ZooModel
from regnet_convert.conversion.atomic import check_output
from regnet_convert.conversion.convert import convert
from regnet_convert.errors import InputError
from regnet_convert.zoo import records
from regnet_convert.zoo.download import HARD_LIMIT, STALL_TIMEOUT, download, file_sha256
from regnet_convert.zoo.manifest import USER_CHECKPOINTS, checkpoints_dir, zoo_entries

PYCLS_URL = "https://dl.fbaipublicfiles.com/pycls/"
MIRROR_SCHEMES = ("http", "https", "file")


def cache_dir() -> Path:
    """Where downloads go: `$REGNET_CACHE`, else ~/.cache/regnet-convert."""
    return Path(os.environ.get("REGNET_CACHE") or Path.home() / ".cache" / "regnet-convert")


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
    return usable_folder(folder, label, create=folder == USER_CHECKPOINTS.expanduser())


def download_folder() -> Path:
    """The checked (and created) download cache."""
    return usable_folder(cache_dir(), "REGNET_CACHE" if os.environ.get("REGNET_CACHE") else "download cache", True)


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


def fetch_one(entry: ZooModel, mirror: str | None, force: bool, quiet: bool, stall_timeout: float) -> Path:
    """Download (or reuse) the pycls file and convert it into the checkpoints folder."""
    output = checkpoints_folder() / f"{entry.name}.safetensors"
    if not force and already_converted(entry, output):
        click.echo(f"{entry.name}: already converted ({output}); --force converts again")
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
    click.echo(f"{entry.name}: {output}")
    return output


def checked_mirror(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A click callback: `mirror_url` of a given --mirror."""
    return None if value is None else mirror_url(value)


def positive_seconds(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    """A click callback: a finite, positive number of seconds; InputError naming --stall-timeout otherwise."""
    if not math.isfinite(value) or value <= 0:
        raise InputError("--stall-timeout", f"{value!r} is not a positive number of seconds")
    return value


@click.group()
def zoo() -> None:
    """List, download and convert the pycls model zoo's 24 RegNets."""


@zoo.command("list")
def list_command() -> None:
    """Each model's size, published accuracies, whether it is converted and whether its download is recorded.

    Converted files are looked for where `zoo fetch` puts them (see `zoo fetch --help`); `invalid`
    means another file is in the way, `?` that the folder cannot be read.

    pycls publishes no hashes of its files. "first download" shows the sha256
    recorded when the file was first downloaded (downloads.json in the
    checkpoints folder): every later download or cached copy must match it.
    That is trust on first use: the first download itself is not verified.
    """
    folder = checkpoints_dir()
    recorded = records.load(folder) if folder.is_dir() else {}
    columns = f"{'model':15}{'params':>9}{'GFLOPs':>8}{'seed top-1/5':>15}{'pycls top-1/5':>16}"
    click.echo(f"{columns}  {'first download':27}  converted")
    for entry in zoo_entries().values():
        seed = f"{entry.seed_table.top1:.2f}/{entry.seed_table.top5:.2f}" if entry.seed_table else "-"
        pycls = f"{entry.pycls.top1:.2f}/{entry.pycls.top5:.2f}"
        done = conversion_status(entry)
        first = recorded.get(entry.file_name)
        when = f"sha256 {first.sha256[:12]} ({first.first_downloaded[:10]})" if first else "-"
        row = f"{entry.name:15}{entry.params / 1e6:8.2f}M{entry.flops / 1e9:8.2f}{seed:>15}{pycls:>16}"
        click.echo(f"{row}  {when:27}  {done}")


@zoo.command("fetch")
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("--all", "fetch_all", is_flag=True, help="All 24 models.")
@click.option("--mirror", metavar="URL", callback=checked_mirror,
              help="Download from this copy (http(s):// or file://) of the pycls file tree.")  # fmt: skip
@click.option("--force", is_flag=True, help="Convert again, replacing NAME.safetensors if it exists.")
@click.option("--stall-timeout", type=float, default=STALL_TIMEOUT, show_default=True, metavar="SECONDS",
              callback=positive_seconds, help="Give up when under 64 KiB arrived in this many seconds.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def fetch_command(
    names: tuple[str, ...], fetch_all: bool, mirror: str | None, force: bool, stall_timeout: float, quiet: bool
) -> None:
    """Download pycls zoo files (resuming partial downloads) and convert them.

    \b
    Converted files (NAME.safetensors) go to $REGNET_CHECKPOINTS if set,
    else to ./checkpoints if the current folder has one,
    else to ~/.cache/regnet-convert/checkpoints (created when needed).
    Downloads are cached in $REGNET_CACHE, else in ~/.cache/regnet-convert;
    an interrupted or stalled download stays there as FILE.pyth.part and the
    next run resumes it. Each converted file is printed as `NAME: PATH`.

    pycls publishes no hashes: the first download's size and sha256 are
    recorded in downloads.json in the checkpoints folder, and a later
    download (or cached copy) that differs is refused and removed.
    """
    if not names and not fetch_all:
        raise click.UsageError("name at least one model, or give --all")
    try:
        keys = list(zoo_entries()) if fetch_all else [canonical_name(n) for n in names]
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    for key in keys:
        fetch_one(zoo_entries()[key], mirror, force, quiet, stall_timeout)
