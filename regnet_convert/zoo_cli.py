"""`regnet-convert zoo`: the 24 pycls RegNets, listed, downloaded and converted on demand."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from regnet import canonical_name
from regnet_convert.convert import convert
from regnet_convert.download import download
from regnet_convert.errors import ConvertError
from regnet_convert.manifest import ZooEntry, checkpoints_dir, zoo_entries

PYCLS_URL = "https://dl.fbaipublicfiles.com/pycls/"


def cache_dir() -> Path:
    """Where downloads go: `$REGNET_CACHE`, else ~/.cache/regnet-convert."""
    return Path(os.environ.get("REGNET_CACHE") or Path.home() / ".cache" / "regnet-convert")


def converted_path(name: str) -> Path:
    return checkpoints_dir() / f"{name}.safetensors"


@click.group()
def zoo() -> None:
    """List, download and convert the pycls model zoo's 24 RegNets."""


@zoo.command("list")
def list_command() -> None:
    """Each model's size, published accuracies and whether it is converted in checkpoints/."""
    click.echo(f"{'model':15}{'params':>9}{'GFLOPs':>8}{'seed top-1/5':>15}{'pycls top-1/5':>16}  converted")
    for entry in zoo_entries().values():
        seed = f"{entry.seed_table.top1:.2f}/{entry.seed_table.top5:.2f}" if entry.seed_table else "-"
        pycls = f"{entry.pycls.top1:.2f}/{entry.pycls.top5:.2f}"
        done = "yes" if converted_path(entry.name).exists() else "no"
        click.echo(f"{entry.name:15}{entry.params / 1e6:8.2f}M{entry.flops / 1e9:8.2f}{seed:>15}{pycls:>16}  {done}")


def fetch_one(entry: ZooEntry, mirror: str | None, force: bool, quiet: bool) -> Path:
    """Download (or reuse) the pycls file and convert it into checkpoints/."""
    output = converted_path(entry.name)
    if output.exists() and not force:
        click.echo(f"{entry.name}: already converted ({output}); --force converts again")
        return output
    url = entry.weights_url
    if mirror:
        url = mirror.rstrip("/") + "/" + url.removeprefix(PYCLS_URL)
    source = download(url, cache_dir() / entry.file_name, entry.size, entry.sha256, quiet)
    try:
        convert(source, output, model=entry.name, force=force, quiet=quiet)
    except ConvertError:
        source.unlink(missing_ok=True)  # a bad file must not be reused as if it were good
        raise
    if not quiet:
        click.echo(f"{entry.name}: {output}")
    return output


@zoo.command("fetch")
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("--all", "fetch_all", is_flag=True, help="All 24 models.")
@click.option("--mirror", metavar="URL", help="Download from this copy of the pycls file tree instead.")
@click.option("--force", is_flag=True, help="Convert again even if checkpoints/NAME.safetensors exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def fetch_command(names: tuple[str, ...], fetch_all: bool, mirror: str | None, force: bool, quiet: bool) -> None:
    """Download pycls zoo files (resuming partial downloads) and convert them into checkpoints/."""
    if not names and not fetch_all:
        raise click.UsageError("name at least one model, or give --all")
    try:
        keys = list(zoo_entries()) if fetch_all else [canonical_name(n) for n in names]
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    try:
        for key in keys:
            fetch_one(zoo_entries()[key], mirror, force, quiet)
    except ConvertError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
