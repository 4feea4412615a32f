"""The model-zoo manifest (packaged `zoo.json`): reference numbers and download addresses."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from regnet import canonical_name

USER_CHECKPOINTS = Path("~/.cache/regnet-convert/checkpoints")


def checkpoints_dir() -> Path:
    """Where converted files live: `$REGNET_CHECKPOINTS`, else `./checkpoints/` if it exists, else a per-user folder."""
    if folder := os.environ.get("REGNET_CHECKPOINTS"):
        return Path(folder)
    if Path("checkpoints").is_dir():
        return Path("checkpoints")
    return USER_CHECKPOINTS.expanduser()


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-5 in percent."""

    top1: float
    top5: float


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model's published facts."""

    name: str
    pycls_name: str
    params: int
    flops: int
    acts: int
    pycls: Accuracy
    seed_table: Accuracy | None
    weights_url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def file_name(self) -> str:
        """The pycls file's own name, e.g. `RegNetX-4.0GF_dds_8gpu.pyth`."""
        return self.weights_url.rsplit("/", 1)[-1]


@cache
def zoo_entries() -> dict[str, ZooEntry]:
    """All 24 entries, by canonical name (the manifest ships inside the package)."""
    entries = {}
    for item in json.loads(resources.files("regnet_convert.zoo").joinpath("zoo.json").read_text())["models"]:
        seed = item.get("seed_table")
        entries[item["name"]] = ZooEntry(
            name=item["name"],
            pycls_name=item["pycls_name"],
            pycls=Accuracy(item["pycls"]["top1"], item["pycls"]["top5"]),
            seed_table=Accuracy(seed["top1"], seed["top5"]) if seed else None,
            weights_url=item["weights_url"],
            sha256=item.get("sha256"),
            size=item.get("size"),
            **item["complexity"],
        )
    return entries


def zoo_entry(name: str) -> ZooEntry:
    """One entry; KeyError for a name outside the zoo."""
    return zoo_entries()[canonical_name(name)]
