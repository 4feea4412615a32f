"""Write an output file all at once or not at all, never over an input, a directory or a special file.

The file appears complete under its name or not at all: it is written to a hidden temporary file
beside it (`.NAME.PID-XXXXXX.part`) that is renamed into place, and removed on any failure or
interruption. A temporary file left by a killed process (its PID no longer runs) is removed on the
next write to the same output, unless it is one of the command's inputs. A symbolic link as output is
written through: its target is replaced atomically and the link stays. New files get the permissions
the umask allows; a replaced file keeps its permissions.

Inputs: callers pass every path the command reads (files, and folders such as a data folder, a cache
folder or a Hugging Face folder). No output may be an input file, lie inside an input folder, or (a
folder output) hold an input. Paths are compared by (st_dev, st_ino), which catches symbolic links,
hard links, bind mounts and other spellings of one file, and by resolved path where an input does not
exist yet (a cache folder the run creates). A folder input also protects the files directly in it,
followed through symbolic links (an hf folder whose model.safetensors links into a download cache).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import file_kind

_MAX_NAME_IN_TEMP = 180  # bytes of the output's name kept in the temporary name (file names are <= 255 bytes)


def _stat(path: str | Path) -> os.stat_result | None:
    """What `path` leads to, or None where nothing does (or it cannot be told)."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _chain(real: Path) -> set[tuple[int, int]]:
    """The identities of `real` and of every existing folder above it."""
    return {_identity(info) for p in (real, *real.parents) if (info := _stat(p)) is not None}


def _folder_files(folder: Path) -> Iterator[tuple[Path, tuple[int, int]]]:
    """The files directly in `folder`, followed through symbolic links, with their identities."""
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with suppress(OSError):
                info = entry.stat()  # follows a symbolic link
                if stat.S_ISREG(info.st_mode):
                    yield Path(entry.path), _identity(info)


def input_clash(output: str | Path, inputs: Iterable[str | Path], folder: bool = False) -> str | None:
    """Why writing `output` would destroy one of `inputs`, or None when it would not.

    A file output must not be an input file (or one directly in an input folder) nor lie inside an
    input folder; a `folder` output must not be, lie in, or hold an input either.
    """
    real = Path(os.path.realpath(output))
    here = _stat(real)
    own = _identity(here) if here is not None else None
    chain: set[tuple[int, int]] | None = None
    for source in inputs:
        info = _stat(source)
        if info is None:  # not there (yet): only its resolved path can be compared
            source_real = Path(os.path.realpath(source))
            if source_real == real or source_real in real.parents:
                return f"is inside the input folder {source}" if source_real != real else f"is the input {source}"
            if folder and real in source_real.parents:
                return f"holds the input {source}"
            continue
        is_folder = stat.S_ISDIR(info.st_mode)
        kind = "folder" if is_folder else "file"
        if own is not None and _identity(info) == own:
            return f"is the input {kind} {source} itself"
        if is_folder:
            chain = _chain(real) if chain is None else chain
            if _identity(info) in chain:
                return f"is inside the input folder {source}"
            if own is not None and not folder:
                for path, identity in _folder_files(Path(source)):
                    if identity == own:
                        return f"is the input file {path} itself"
        if folder and own is not None and own in _chain(Path(os.path.realpath(source))):
            return f"holds the input {kind} {source}"
    return None


def check_output(path: str | Path, force: bool, inputs: Iterable[str | Path] = (), label: str | None = None) -> Path:
    """The real destination of `path` (a symlink's target), after refusing what must not be written.

    Refused: an existing file without `force`, a directory, FIFO, socket or device, an input or a path
    inside an input folder (see `input_clash`), a missing or unwritable folder. `label` names the option in
    messages (e.g. `--json`).
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
    if info is not None and (kind := file_kind(info.st_mode)):
        raise InputError(name, f"is {kind}; give a file name to write")
    if clash := input_clash(path, inputs):
        raise InputError(name, f"{clash}; give another output name")
    if info is not None and not force:
        raise InputError(name, "already exists (use --force to overwrite it)")
    _check_parent(name, target.parent)
    return target


def _check_parent(name: str | Path, parent: Path) -> None:
    """An output's folder must exist and take a new file: an unnamed one is created there and dropped at once
    (permissions alone do not tell: root may write everywhere, yet not into /proc or a read-only mount)."""
    if not parent.is_dir():
        raise InputError(name, f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(name, f"cannot write in {str(parent)!r} (permission denied)")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(name, f"cannot write in {str(parent)!r} ({exc.strerror or exc})") from None


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
    except (PermissionError, OverflowError):  # someone else's, or no PID at all: not ours to remove
        return True
    return True


def _stale_pattern(target: Path, suffixes: str) -> re.Pattern[str]:
    """The exact names this module gives the temporaries of `target` (the PID as `os.getpid()` writes it)."""
    return re.compile(re.escape(_temp_prefix(target)) + rf"([1-9][0-9]{{0,9}})-[0-9a-f]{{12}}\.({suffixes})")


def remove_stale_temporaries(target: Path, inputs: Iterable[str | Path] = ()) -> list[Path]:
    """Remove the temporary files of earlier writes to `target` whose process no longer runs.

    Only files named exactly as this module names `target`'s temporaries are removed, never a symbolic
    link, never one of `inputs` (a source may carry such a name).
    """
    pattern, inputs = _stale_pattern(target, "part"), tuple(inputs)
    removed = []
    with suppress(OSError):
        for entry in os.scandir(target.parent):
            match = pattern.fullmatch(entry.name)
            if not match or not entry.is_file(follow_symlinks=False) or _pid_running(int(match.group(1))):
                continue
            if input_clash(entry.path, inputs) is None:
                with suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextmanager
def atomic_output(
    path: str | Path, force: bool, inputs: Iterable[str | Path] = (), label: str | None = None
) -> Iterator[Path]:
    """A temporary path beside the output; on success it becomes the output, on any failure it vanishes.

    Without `force` the final step is a hard link, which fails rather than replace a file that appeared
    in the meantime.
    """
    name, inputs = f"{label} {path}" if label else path, tuple(inputs)
    target = check_output(Path(path), force, inputs, label)
    remove_stale_temporaries(target, inputs)
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


def check_output_directory(path: str | Path, force: bool, inputs: Iterable[str | Path], allowed: Iterable[str]) -> Path:
    """The real folder `path` names, after refusing what must not be replaced.

    An existing folder is replaced only with `force`, and only when it holds nothing but `allowed` names (an
    earlier export of the same kind): a folder with other files is never deleted. A file, a symlink to a file,
    a FIFO or a device is refused, and so is a folder that is, lies in or holds one of `inputs`.
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
    if clash := input_clash(path, inputs, folder=True):
        raise InputError(text, f"{clash}; give another output folder")
    _check_parent(text, path.parent)
    return path


@contextmanager
def atomic_directory(
    path: str | Path, force: bool, inputs: Iterable[Path] = (), allowed: Iterable[str] = ()
) -> Iterator[Path]:
    """A temporary folder beside the output; on success it becomes the output folder, on failure it vanishes.

    With `force`, a previous export (only `allowed` names inside) is moved aside, the new folder renamed into
    place and the old one removed; if the swap fails the old folder is put back.
    """
    allowed, inputs = tuple(allowed), tuple(inputs)
    target = check_output_directory(path, force, inputs, allowed)
    if _remove_stale_folders(target, inputs):  # an earlier export put back is an existing output: check again
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


def _remove_stale_folders(target: Path, inputs: tuple[str | Path, ...] = ()) -> bool:
    """Clean up after a killed export: its `.part` folder goes; an `.old` one is put back if the output is gone.

    A folder that is or holds one of `inputs` is left alone. Returns whether an `.old` folder was put back.
    """
    pattern = _stale_pattern(target, "part|old")
    restored = False
    with suppress(OSError):
        for entry in os.scandir(target.parent):
            match = pattern.fullmatch(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False) or _pid_running(int(match.group(1))):
                continue
            if input_clash(entry.path, inputs, folder=True) is not None:
                continue
            if match.group(2) == "old" and not target.exists():
                with suppress(OSError):
                    os.rename(entry.path, target)
                    restored = True
                    continue
            shutil.rmtree(entry.path, ignore_errors=True)
    return restored
