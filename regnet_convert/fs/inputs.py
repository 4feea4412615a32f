"""Input files are checked for what they are before anything opens them (a FIFO would hang a reader)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from regnet_convert.errors import InputError


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    for test, name in [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),  # as lstat() sees one
    ]:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_input_file(path: Path, what: str = "file", label: str | None = None) -> os.stat_result:
    """The stat of a readable, non-empty regular file; InputError naming `label`/`path` otherwise."""
    name = f"{label} {path}" if label else path
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        raise InputError(name, f"no such {what}") from None
    except OSError as exc:
        raise InputError(name, f"cannot be read ({exc.strerror or exc})") from None
    if kind := file_kind(info.st_mode):
        raise InputError(name, f"is {kind}, not a {what}")
    if not os.access(path, os.R_OK):
        raise InputError(name, "cannot be read (permission denied)")
    if info.st_size == 0:
        raise InputError(name, "empty file")
    return info


def weights_kind(path: Path) -> str:
    """`checkpoint` (torch's zip or legacy pickle) or `safetensors`, from the first bytes; InputError otherwise."""
    with open(path, "rb") as f:
        start = f.read(9)
    if start.startswith(b"PK\x03\x04"):
        return "checkpoint"
    if start[8:9] == b"{":  # before the pickle test: a header length's low byte may be 0x80
        return "safetensors"
    if start[:1] == b"\x80":  # a legacy torch file starts with a pickle's PROTO opcode
        return "checkpoint"
    raise InputError(path, "neither a PyTorch checkpoint nor a safetensors file")
