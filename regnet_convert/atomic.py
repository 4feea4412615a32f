"""Write an output file all at once or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from regnet_convert.errors import ConvertError


def check_output(path: Path, force: bool) -> None:
    """Fail early when `path` exists (without `force`) or cannot be created."""
    if path.is_dir():
        raise ConvertError(path, "is a directory; give an output file name")
    if path.exists() and not force:
        raise ConvertError(path, "already exists (use --force to overwrite it)")
    if not path.parent.is_dir():
        raise ConvertError(path, f"output directory {str(path.parent)!r} does not exist")


@contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[Path]:
    """A temporary path beside `path`; on success it becomes `path`, on any failure it vanishes.

    Without `force` the final step is a hard link, which fails rather than replacing a file
    that appeared in the meantime.
    """
    check_output(path, force)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ConvertError(path, f"cannot write in {str(path.parent)!r} ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync(tmp)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConvertError(path, "already exists (use --force to overwrite it)") from None
    except OSError as exc:
        raise ConvertError(path, f"writing failed ({exc.strerror or exc}); nothing was written") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
