"""Where regnet-convert keeps its files: one cache root (downloads, compiled fast-path packages) and the folder of
converted files."""

from __future__ import annotations

import os
from pathlib import Path

USER_CACHE = Path("~/.cache/regnet-convert")


def cache_root() -> Path:
    """`$REGNET_CACHE`, else ~/.cache/regnet-convert: downloads and the fast path's `aoti` packages live here."""
    return Path(os.environ.get("REGNET_CACHE") or USER_CACHE).expanduser()


def user_checkpoints() -> Path:
    """~/.cache/regnet-convert/checkpoints: converted files when neither $REGNET_CHECKPOINTS nor ./checkpoints is."""
    return (USER_CACHE / "checkpoints").expanduser()


def checkpoints_dir() -> Path:
    """Where converted files live: `$REGNET_CHECKPOINTS`, else `./checkpoints/` if it exists, else a per-user folder."""
    if folder := os.environ.get("REGNET_CHECKPOINTS"):
        return Path(folder)
    if Path("checkpoints").is_dir():
        return Path("checkpoints")
    return user_checkpoints()
