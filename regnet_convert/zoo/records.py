"""The size and sha256 of each pycls file as first downloaded, kept beside the converted files (trust on first use).

pycls publishes no hashes for its zoo files, so nothing can prove the first download genuine. What can be proven is
that every later download (a re-download, another mirror, a cached copy) is the same file: `zoo fetch` records the
first download's size and sha256 in `downloads.json` in the checkpoints folder and refuses any later file that
differs. The record is an input like any other: a record that is not exactly what this module writes is refused with
one line, never trusted and never silently replaced.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import atomic_output

RECORD_NAME = "downloads.json"
FORMAT = "regnet-convert-downloads"
MAX_BYTES = 1 << 20  # a few hundred bytes a file; 24 pycls files
SHA256 = re.compile(r"[0-9a-f]{64}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")
WHEN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")  # what `now` writes


@dataclass(frozen=True)
class FileRecord:
    """A downloaded file's identity: its size and sha256, and when it was first seen."""

    size: int
    sha256: str
    first_downloaded: str = ""


def record_path(folder: Path) -> Path:
    return folder / RECORD_NAME


def _damaged(path: Path, problem: str) -> InputError:
    return InputError(path, f"{problem}; this record of first downloads is not trusted (move it away to start anew)")


def _read(path: Path) -> bytes | None:
    """The record's bytes, None if there is none; bounded, never blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _damaged(path, "is not a regular file")
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise _damaged(path, f"is over {MAX_BYTES >> 10} KB")
    return raw


def _entry(path: Path, name: object, value: object) -> tuple[str, FileRecord]:
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
        raise _damaged(path, f"names an implausible file {str(name)[:40]!r}")
    if not isinstance(value, dict) or set(value) != {"size", "sha256", "first_downloaded"}:
        raise _damaged(path, f"the entry of {name} is not size, sha256 and first_downloaded")
    size, sha256, when = value["size"], value["sha256"], value["first_downloaded"]
    if type(size) is not int or not 0 < size < 1 << 40:
        raise _damaged(path, f"the size of {name} is not a positive number of bytes")
    if not isinstance(sha256, str) or not SHA256.fullmatch(sha256):
        raise _damaged(path, f"the sha256 of {name} is not 64 lower-case hex digits")
    if not isinstance(when, str) or not WHEN.fullmatch(when):
        raise _damaged(path, f"the date of {name} is not a UTC time as YYYY-MM-DDTHH:MM:SSZ")
    return name, FileRecord(size, sha256, when)


def load(folder: Path) -> dict[str, FileRecord]:
    """The records kept in `folder` (empty when there are none); InputError for anything else."""
    path = record_path(folder)
    raw = _read(path)
    if raw is None:
        return {}
    try:
        document = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8 or JSON, an integer over 4300 digits, deep nesting
        raise _damaged(path, "is not UTF-8 JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or set(document) != {"format", "files"}:
        raise _damaged(path, f"is not a {FORMAT} record")
    if not isinstance(document["files"], dict):
        raise _damaged(path, "its 'files' is not an object")
    return dict(_entry(path, name, value) for name, value in document["files"].items())


def add(folder: Path, file_name: str, record: FileRecord) -> None:
    """Record a first download (atomically: a crash leaves the previous record)."""
    records = load(folder)
    if file_name in records:
        raise InputError(record_path(folder), f"already records {file_name}")
    records[file_name] = record
    document = {"format": FORMAT, "files": {name: vars(r) for name, r in sorted(records.items())}}
    with atomic_output(record_path(folder), True, label="record") as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")


def now() -> str:
    """The current time in UTC, to the second (when a first download was recorded)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
