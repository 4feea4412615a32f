"""`regnet-convert zoo`: the seed table's 16 rows and pycls's 24 models, listed, downloaded, verified and converted."""

from __future__ import annotations

import math

import click

from regnet.paths import checkpoints_dir
from regnet.zoo import seed_rows, zoo_models, zoo_weights
from regnet_convert.errors import InputError
from regnet_convert.zoo import records
from regnet_convert.zoo.download import STALL_TIMEOUT
from regnet_convert.zoo.fetch import conversion_status, fetch_one, mirror_url, resolve

SEED_HEADER = "seed table: mmclassification's RegNet README, 16 rows (* converted from pycls)"
PYCLS_HEADER = "pycls zoo: 24 models, pycls's own weights (.pyth; no published hashes)"


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
    """List, download, verify and convert the seed table's 16 rows and pycls's 24 RegNets."""


def seed_lines(status: dict[str, str]) -> list[str]:
    """The seed table's rows: numbers as printed there, the weights each measured, its file, whether converted."""
    lines = [
        SEED_HEADER,
        f"{'row':16}{'params':>8}{'GFLOPs':>8}{'top-1':>8}{'top-5':>8}  {'weights':26}{'file':50}converted",
    ]
    for row in seed_rows():
        numbers = f"{row.params_m:8.2f}{row.gflops:8.2f}{row.accuracy.top1:8.2f}{row.accuracy.top5:8.2f}"
        lines.append(f"{row.name:16}{numbers}  {row.weights:26}{row.file:50}{status[row.weights]}")
    return lines


def pycls_lines(status: dict[str, str], recorded: dict[str, records.FileRecord]) -> list[str]:
    """pycls's models: complexity, pycls's numbers, the starred row, the first download's record, converted."""
    rows = {row.weights: row.name for row in seed_rows()}
    columns = f"{'weights':26}{'params':>9}{'GFLOPs':>8}{'pycls top-1/5':>16}  {'seed row':16}"
    lines = [PYCLS_HEADER, f"{columns}{'first download':29}converted"]
    for model in zoo_models().values():
        weights = zoo_weights()[model.weights]
        first = recorded.get(model.file_name)
        when = f"sha256 {first.sha256[:12]} ({first.first_downloaded[:10]})" if first else "-"
        pycls = f"{model.pycls.top1:.2f}/{model.pycls.top5:.2f}"
        row = f"{weights.key:26}{model.params / 1e6:8.2f}M{model.flops / 1e9:8.2f}{pycls:>16}  "
        lines.append(f"{row}{rows.get(weights.key, '-'):16}{when:29}{status[weights.key]}")
    return lines


@zoo.command("list")
def list_command() -> None:
    """The seed table's 16 rows and pycls's 24 models, and which weights are converted here.

    \b
    Weights are named MODEL.TAG, as timm names them: MODEL.pycls_in1k (pycls's
    own, the default: MODEL alone means them) and MODEL.mmcls_in1k (trained
    by mmclassification). Each seed row names the weights it measured and its
    file (below https://download.openmmlab.com/mmclassification/v0/regnet/),
    whose name carries the first 8 hex digits of its sha256.

    Converted files are looked for where `zoo fetch` puts them (see `zoo fetch --help`); `invalid`
    means another file is in the way, `?` that the folder cannot be read.

    pycls publishes no hashes of its files. "first download" shows the sha256
    recorded when the file was first downloaded (downloads.json in the
    checkpoints folder): every later download or cached copy must match it.
    That is trust on first use: the first download itself is not verified.
    """
    folder = checkpoints_dir()
    recorded = records.load(folder) if folder.is_dir() else {}
    status = {key: conversion_status(weights) for key, weights in zoo_weights().items()}
    click.echo("\n".join([*seed_lines(status), "", *pycls_lines(status, recorded)]))


@zoo.command("fetch")
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("--all", "fetch_all", is_flag=True, help="All 32 sets of weights (pycls's 24, mmclassification's 8).")
@click.option("--mirror", metavar="URL", callback=checked_mirror,
              help="Download from this copy (http(s):// or file://) of the files, each at its path below its host's "
                   "folder (pycls's dds_baselines/..., OpenMMLab's regnetx-....pth and convert/...).")  # fmt: skip
@click.option("--force", is_flag=True, help="Convert again, replacing the converted file if it exists.")
@click.option("--stall-timeout", type=float, default=STALL_TIMEOUT, show_default=True, metavar="SECONDS",
              callback=positive_seconds, help="Give up when under 64 KiB arrived in this many seconds.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def fetch_command(
    names: tuple[str, ...], fetch_all: bool, mirror: str | None, force: bool, stall_timeout: float, quiet: bool
) -> None:
    """Download zoo files (resuming partial downloads), verify and convert them.

    \b
    NAME is a model (regnetx_400mf: pycls's weights, from pycls's .pyth),
    weights (regnetx_400mf.mmcls_in1k: mmclassification's), or a file's
    own name (RegNetX-400MF-0db9f35c.pth: OpenMMLab's copy of pycls's).
    Converted files go to $REGNET_CHECKPOINTS if set, else to ./checkpoints
    if the current folder has one, else to ~/.cache/regnet-convert/checkpoints
    (created when needed), as MODEL.safetensors for pycls's weights and
    MODEL.TAG.safetensors for others. Downloads are cached in $REGNET_CACHE,
    else in ~/.cache/regnet-convert; an interrupted or stalled download stays
    there as FILE.part and the next run resumes it. Each converted file is
    printed as `WEIGHTS: PATH`.

    \b
    A file whose name carries a hash (OpenMMLab's ...-89bfc226.pth) must have
    a sha256 starting with it (torch.hub's check_hash convention): one that
    does not is refused and removed. pycls publishes no hashes: the first
    download's size and sha256 are recorded in downloads.json in the
    checkpoints folder, and a later download (or cached copy) that differs
    is refused and removed.
    """
    if not names and not fetch_all:
        raise click.UsageError("name at least one model, weights or file, or give --all")
    try:
        chosen = [zoo_weights()[k].files[0] for k in zoo_weights()] if fetch_all else [resolve(n)[1] for n in names]
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    for file in dict.fromkeys(chosen):
        fetch_one(zoo_weights()[file.weights], file, mirror, force, quiet, stall_timeout, click.echo)
