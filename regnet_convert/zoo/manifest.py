"""Where converted zoo files live, and the zoo's facts (read from `regnet`'s packaged table)."""

from __future__ import annotations

import os
from pathlib import Path

from regnet.zoo import ZooModel, zoo_model, zoo_models

USER_CHECKPOINTS = Path("~/.cache/regnet-convert/checkpoints")


def checkpoints_dir() -> Path:
    """Where converted files live: `$REGNET_CHECKPOINTS`, else `./checkpoints/` if it exists, else a per-user folder."""
    if folder := os.environ.get("REGNET_CHECKPOINTS"):
        return Path(folder)
    if Path("checkpoints").is_dir():
        return Path("checkpoints")
    return USER_CHECKPOINTS.expanduser()


def zoo_entries() -> dict[str, ZooModel]:
    """All 24 zoo models by canonical name (`regnet.zoo_models`: the packaged table)."""
    return zoo_models()


def zoo_entry(name: str) -> ZooModel:
    """One model's facts; KeyError for a name outside the zoo."""
    return zoo_model(name)
