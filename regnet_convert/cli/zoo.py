"""`regnet-convert zoo`: the 24 pycls RegNets, listed, downloaded and converted on demand."""

from __future__ import annotations

import math

import click

from regnet import canonical_name
from regnet.paths import checkpoints_dir
from regnet.zoo import zoo_models
from regnet_convert.errors import InputError
from regnet_convert.zoo import records
from regnet_convert.zoo.download import STALL_TIMEOUT
from regnet_convert.zoo.fetch import conversion_status, fetch_one, mirror_url


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
    for entry in zoo_models().values():
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
        keys = list(zoo_models()) if fetch_all else [canonical_name(n) for n in names]
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    for key in keys:
        fetch_one(zoo_models()[key], mirror, force, quiet, stall_timeout, click.echo)
