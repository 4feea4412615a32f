"""Write an output file all at once or not at all, never over an input, a directory or a special file.

The file appears complete under its name or not at all: it is written to a hidden temporary file
beside it (`.NAME.PID-XXXXXX.part`) that is renamed into place, and removed on any failure or
interruption. A temporary file left by a killed process (its PID no longer runs) is removed on the
next write to the same output. A symbolic link as output is written through: its target is replaced
atomically and the link stays. New files get the permissions the umask allows; a replaced file keeps
its permissions.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from regnet_convert.errors import InputError
from regnet_convert.sources.files import file_kind

_MAX_NAME_IN_TEMP = 180  # bytes of the output's name kept in the temporary name (file names are <= 255 bytes)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path: str | Path, force: bool, inputs: Iterable[Path] = (), label: str | None = None) -> Path:
    """The real destination of `path` (a symlink's target), after refusing what must not be written.

    Refused: an existing file without `force`, a directory, FIFO, socket or device, the same file as one
    of `inputs`, a missing or unwritable folder. `label` names the option in messages (e.g. `--json`).
    """
    text = os.fspath(path)
    name = f"{label} {text!r}" if label and not text else f"{label} {path}" if label else path
    if not text or text.endswith(os.sep):
        raise InputError(name, "is not a file name; give a file name to write")
    path = Path(path)
    target = path
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            target = Path(os.path.realpath(path))
        info = os.stat(path)  # what the link leads to (a pipe behind /dev/stdout is a FIFO)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(name, f"cannot be written ({exc.strerror or exc})") from None
    if info is not None:
        if kind := file_kind(info.st_mode):
            raise InputError(name, f"is {kind}; give a file name to write")
        for source in inputs:
            with suppress(OSError):
                if _same_file(info, Path(source).stat()):
                    raise InputError(name, f"is the input file {source} itself; give another output name")
        if not force:
            raise InputError(name, "already exists (use --force to overwrite it)")
    parent = target.parent
    if not parent.is_dir():
        raise InputError(name, f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(name, f"cannot write in {str(parent)!r} (permission denied)")
    return target


def _temp_prefix(target: Path) -> str:
    name = target.name
    if len(os.fsencode(name)) > _MAX_NAME_IN_TEMP:
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
        name = os.fsdecode(os.fsencode(name)[:100]).rstrip("\ufffd") + "~" + digest
    return f".{name}."


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of earlier writes to `target` whose process no longer runs."""
    prefix = _temp_prefix(target)
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[0-9a-f]{12}\.part")
    removed = []
    with suppress(OSError):
        for entry in os.scandir(target.parent):
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False) and not _pid_running(int(match.group(1))):
                with suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextmanager
def atomic_output(path: Path, force: bool, inputs: Iterable[Path] = (), label: str | None = None) -> Iterator[Path]:
    """A temporary path beside the output; on success it becomes the output, on any failure it vanishes.

    Without `force` the final step is a hard link, which fails rather than replace a file that appeared
    in the meantime.
    """
    name = f"{label} {path}" if label else path
    target = check_output(Path(path), force, inputs, label)
    remove_stale_temporaries(target)
    tmp = target.parent / f"{_temp_prefix(target)}{os.getpid()}-{secrets.token_hex(6)}.part"
    try:
        mode = stat.S_IMODE(target.stat().st_mode)  # a replaced file keeps its permissions
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise InputError(name, f"cannot write in {str(target.parent)!r} ({exc.strerror or exc})") from None
    try:
        yield tmp
        os.chmod(tmp, mode)  # after writing: writers may replace the file they were given
        _fsync(tmp)
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise InputError(name, "already exists (use --force to overwrite it)") from None
    except OSError as exc:
        raise InputError(name, f"writing failed ({exc.strerror or exc}); nothing was written") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    with suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    current = os.umask(0o022)
    os.umask(current)
    return current


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def check_output_directory(path: str | Path, force: bool, inputs: Iterable[Path], allowed: Iterable[str]) -> Path:
    """The real folder `path` names, after refusing what must not be replaced.

    An existing folder is replaced only with `force`, and only when it holds nothing but `allowed` names (an
    earlier export of the same kind): a folder with other files is never deleted. A file, a symlink to a file,
    a FIFO or a device is refused, and so is a folder holding one of `inputs`.
    """
    text = os.fspath(path)
    if not text:
        raise InputError(repr(text), "is not a folder name; give a folder to write")
    path = Path(os.path.realpath(text))
    if path.exists():
        if not path.is_dir():
            kind = file_kind(path.stat().st_mode) or "a file"
            raise InputError(text, f"is {kind}; give a folder name to write")
        if not force:
            raise InputError(text, "already exists (use --force to replace it)")
        others = sorted(set(os.listdir(path)) - set(allowed))
        if others:
            raise InputError(text, f"holds other files ({others[0]!r}...); refusing to replace it, even with --force")
        if folders := sorted(entry.name for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)):
            raise InputError(text, f"holds a folder {folders[0]!r}; refusing to replace it, even with --force")
    for source in inputs:
        with suppress(OSError):
            if path == Path(os.path.realpath(source)) or path in Path(os.path.realpath(source)).parents:
                raise InputError(text, f"holds the input file {source}; give another output folder")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(text, f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(text, f"cannot write in {str(parent)!r} (permission denied)")
    return path


@contextmanager
def atomic_directory(
    path: str | Path, force: bool, inputs: Iterable[Path] = (), allowed: Iterable[str] = ()
) -> Iterator[Path]:
    """A temporary folder beside the output; on success it becomes the output folder, on failure it vanishes.

    With `force`, a previous export (only `allowed` names inside) is moved aside, the new folder renamed into
    place and the old one removed; if the swap fails the old folder is put back.
    """
    allowed = tuple(allowed)
    target = check_output_directory(path, force, inputs, allowed)
    if _remove_stale_folders(target):  # an earlier export put back is an existing output: check again
        target = check_output_directory(path, force, inputs, allowed)
    stem = f"{_temp_prefix(target)}{os.getpid()}-{secrets.token_hex(6)}"
    tmp, old = target.parent / f"{stem}.part", target.parent / f"{stem}.old"
    try:
        os.mkdir(tmp)  # the umask applies
    except OSError as exc:
        raise InputError(path, f"cannot write in {str(target.parent)!r} ({exc.strerror or exc})") from None
    try:
        yield tmp
        file_mode = 0o666 & ~_umask()  # what a new file gets (writers such as safetensors create theirs 0600)
        for entry in os.scandir(tmp):
            if entry.is_file(follow_symlinks=False):
                os.chmod(entry.path, file_mode)
                _fsync(Path(entry.path))
        check_output_directory(path, force, inputs, allowed)  # again: it may have appeared meanwhile
        if target.exists():
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except OSError:
                os.rename(old, target)
                raise
        else:
            os.rename(tmp, target)  # onto a folder created meanwhile this fails (unless empty)
    except OSError as exc:
        raise InputError(path, f"writing failed ({exc.strerror or exc}); nothing was written") from None
    finally:
        if old.exists() and not target.exists():  # interrupted between the two renames: the old one goes back
            with suppress(OSError):
                os.rename(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_folders(target: Path) -> bool:
    """Clean up after a killed export: its `.part` folder goes; an `.old` one is put back if the output is gone.

    Returns whether an `.old` folder was put back.
    """
    pattern = re.compile(re.escape(_temp_prefix(target)) + r"(\d+)-[0-9a-f]{12}\.(part|old)")
    restored = False
    with suppress(OSError):
        for entry in os.scandir(target.parent):
            match = pattern.fullmatch(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False) or _pid_running(int(match.group(1))):
                continue
            if match.group(2) == "old" and not target.exists():
                with suppress(OSError):
                    os.rename(entry.path, target)
                    restored = True
                    continue
            shutil.rmtree(entry.path, ignore_errors=True)
    return restored
