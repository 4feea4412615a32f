"""A per-user cache of AOTInductor packages: one compiled CPU model per weights, input size, threads, torch and CPU.

An entry is `<digest>.pt2` (the package) beside `<digest>.json` (the full key and the package's sha256 and
size); the digest names the key. The batch dimension is dynamic, so one entry serves every batch size.

A package is a shared library that loading runs, so the cache is an input like any other and only the user's
own is trusted: `$REGNET_CACHE` (by default ~/.cache/regnet-convert) and its `aoti` folder must be folders of
the user's that nobody else can write (`aoti` is created with, or tightened to, mode 0700), an entry's files
regular files of the user's that nobody else can write. A cache that fails this, or cannot be created or
written, is not used at all: one warning, and the package is compiled into a private temporary folder for this
process. An entry is loaded only when its record (a few KB at most, read without following links or blocking)
names the same key and the package matches its recorded size and hash; a loaded package is used only when a
probe input gives the folded model's output (to 1e-4), which binds it to these weights whatever its record
says. Anything else is rebuilt. Build folders left by processes that died are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from regnet.paths import cache_root

FORMAT = 1  # bump when what goes into a package changes
RECORD_LIMIT = 16 << 10  # bytes: a record holds a key, a size and a hash
TOLERANCE = 1e-4  # the fp32 agreement of the fast path with the folded model (max |a - b| / max |b|)
Runner = Callable[[torch.Tensor], torch.Tensor]


def cache_dir() -> Path:
    """Where compiled packages live: `$REGNET_CACHE/aoti`, by default `~/.cache/regnet-convert/aoti`."""
    return cache_root() / "aoti"


@dataclass
class CacheStats:
    """What the cache did in this process (for tests and benchmarks)."""

    hits: int = 0  # a verified entry was loaded
    builds: int = 0  # a package was compiled
    rejected: int = 0  # an entry existed but was damaged, stale or not this model's, so it was rebuilt
    uncached: int = 0  # the cache folder was unusable or not trusted: compiled for this process only


stats = CacheStats()
_warned: set[Path] = set()  # cache folders already reported as unusable in this process


class Refused(Exception):
    """A cache folder or entry that is not used; the message says why."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_of(f.fileno())


def _sha256_of(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 22):
        digest.update(chunk)
    return digest.hexdigest()


def _cpu_model() -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def entry_key(folded: nn.Module, config: object, input_size: tuple[int, ...]) -> dict[str, object]:
    """Everything a compiled package depends on; the weights enter as a sha256 of every tensor."""
    weights = hashlib.sha256()
    for name, tensor in folded.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        weights.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        weights.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return {
        "format": FORMAT,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "input": [*input_size],  # channels, height, width; the batch is dynamic
        "dtype": "float32",
        "architecture": repr(config),
        "weights": weights.hexdigest(),
    }


def digest_of(key: dict[str, object]) -> str:
    """The file stem of an entry: a sha256 of its key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No Python warning or library log line reaches the terminal (torch logs, e.g., a missing CUDA runtime)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _owner_problem(st: os.stat_result) -> str | None:
    """Why a file or folder with status `st` is not the user's own, or None when it is."""
    if st.st_uid != os.getuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"can be written by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _check_root(root: Path) -> None:
    """`root` ($REGNET_CACHE), created if missing, is a folder of the user's that nobody else can write (a link
    to one is accepted when the link is the user's)."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    link, st = os.lstat(root), os.stat(root)
    if stat.S_ISLNK(link.st_mode) and link.st_uid != os.getuid():
        raise Refused(f"is a link owned by another user (uid {link.st_uid})")
    if not stat.S_ISDIR(st.st_mode):
        raise Refused("is not a folder")
    if problem := _owner_problem(st):
        raise Refused(problem)


def _check_folder(folder: Path) -> None:
    """`folder` (the `aoti` folder), created if missing, is a real folder of the user's, mode 0700, writable."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise Refused("is a link" if stat.S_ISLNK(st.st_mode) else "is not a folder")
    if problem := _owner_problem(st):
        raise Refused(problem)
    if st.st_mode & 0o077:  # readable by others, writable by nobody else (checked above): made private
        os.chmod(folder, 0o700)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Refused("cannot be written")


def trusted_folder(warn: Callable[[str], None] = lambda _: None) -> Path | None:
    """The cache folder when it is the user's own and usable; else None, after telling `warn` why (once)."""
    folder = cache_dir()
    where = folder.parent
    try:
        _check_root(where)
        where = folder
        _check_folder(folder)
    except (Refused, OSError) as exc:
        why = str(exc) if isinstance(exc, Refused) else f"cannot be used ({exc.strerror or exc})"
        if folder not in _warned:
            _warned.add(folder)
            warn(f"warning: fast-path cache {where}: {why}; not used, compiling for this run only")
        return None
    return folder


_BUILD = re.compile(r"\.build-(\d+)-([0-9a-f]{8})-")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): alive
        return True
    return True


def sweep(folder: Path) -> None:
    """Remove the build folders that processes of this host left in `folder` when they died mid-compilation."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            found = _BUILD.match(entry.name)
            if found and found[2] == _host() and not _alive(int(found[1])) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def _open_own(path: Path) -> int:
    """A descriptor of `path`, a regular file of the user's that nobody else can write (never a link, and a
    FIFO or device does not block): Refused otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("is not a regular file")
        if problem := _owner_problem(st):
            raise Refused(problem)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_record(record: Path) -> dict:
    """The JSON object in `record`, a file of the user's of at most RECORD_LIMIT bytes."""
    fd = _open_own(record)
    try:
        if os.fstat(fd).st_size > RECORD_LIMIT:
            raise Refused("is too large for a record")
        meta = json.loads(os.read(fd, RECORD_LIMIT + 1))
    finally:
        os.close(fd)
    if not isinstance(meta, dict):
        raise Refused("is not a record")
    return meta


def _check_package(package: Path, meta: dict) -> None:
    """`package` is a file of the user's with the size and sha256 that its record names."""
    fd = _open_own(package)
    try:
        if not (os.fstat(fd).st_size == meta.get("size") and _sha256_of(fd) == meta.get("sha256")):
            raise Refused("does not match its record")
    finally:
        os.close(fd)


def _load(path: Path) -> Runner:
    """The package at `path`, loaded by torch's public loader."""
    with _quiet():
        import torch._inductor as inductor

        return inductor.aoti_load_package(str(path))


@torch.inference_mode()
def _probe(runner: Runner, folded: nn.Module, example: torch.Tensor) -> None:
    """Refused unless `runner` computes what `folded` computes on a random input shaped like `example`."""
    x = torch.randn(1, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    expected = folded(x)
    with _quiet():
        try:
            got = runner(x)
        except Exception as exc:  # another model's package: another input or output shape
            raise Refused(f"does not run on this model's input ({type(exc).__name__})") from None
    if not (isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype):
        raise Refused("does not compute this model")
    error = float((got - expected).abs().max())
    if not error <= TOLERANCE * max(float(expected.abs().max()), 1e-30):  # NaN fails too
        raise Refused("does not compute this model")


# No precompiled headers: inductor writes them (two, ~300 MB, a set of compiler flags) to its global folder in
# /tmp, which `fresh_cache` does not move, and leaves them there. The wrapper (a sequence of kernel calls; the
# kernels keep -O3) compiles at -O0, which wins back most of what the headers saved; packages run as fast
# (bench/README.md).
COMPILE_OPTIONS = {"aot_inductor.precompile_headers": False, "aot_inductor.compile_wrapper_opt_level": "O0"}


def _compile(folded: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export `folded` with a dynamic batch and compile it with AOTInductor into the package `path`; inductor's
    intermediate files go to a folder beside it (torch's `fresh_cache`), not to its shared temporary cache."""
    with _quiet(), torch.no_grad():
        import torch._inductor as inductor
        from torch._inductor.utils import fresh_cache

        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(folded, (example,), dynamic_shapes=({0: batch},))
        with fresh_cache(dir=str(path.parent)):
            options = dict(COMPILE_OPTIONS)  # a copy: torch adds its own keys to the dict it is given
            inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=options)


def _cached(package: Path, record: Path, key: dict[str, object], folded: nn.Module, example: torch.Tensor) -> Runner:
    """The entry's package, loaded, when its record names `key`, the package matches it and computes `folded`."""
    meta = _read_record(record)
    if meta.get("key") != key:
        raise Refused("is stale")
    _check_package(package, meta)
    runner = _load(package)
    _probe(runner, folded, example)
    return runner


def _install(built: Path, package: Path, record: Path, key: dict[str, object]) -> None:
    """Move the package `built` into the cache as `package`, with its record (both mode 0600)."""
    meta = {"key": key, "size": built.stat().st_size, "sha256": _sha256(built)}
    written = built.with_name("record.json")
    fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        json.dump(meta, f, indent=1)
    os.chmod(built, 0o600)
    record.unlink(missing_ok=True)  # no moment where an old record names the new package
    os.replace(built, package)
    os.replace(written, record)


def _build_folder(folder: Path | None) -> Path:
    """A build folder for this process: in the cache `folder` (named after the process, so that `sweep` can
    tell when it is left over), or a private temporary folder (mode 0700) where there is no cache."""
    return Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-{_host()}-", dir=folder))


def compiled(
    folded: nn.Module,
    example: torch.Tensor,
    key: dict[str, object],
    notice: Callable[[str], None] = lambda _: None,
    warn: Callable[[str], None] = lambda _: None,
) -> Runner:
    """The cached package for `key` if a sound one exists, else a newly compiled one (stored when the cache is
    the user's own); `notice` hears, before a compilation, that one starts (it takes tens of seconds), `warn`
    why the cache folder is not used."""
    folder = trusted_folder(warn)
    if folder is None:
        stats.uncached += 1
        return _built(folded, example, None, notice)
    sweep(folder)
    package, record = folder / f"{digest_of(key)}.pt2", folder / f"{digest_of(key)}.json"
    if os.path.lexists(package) or os.path.lexists(record):
        try:
            runner = _cached(package, record, key, folded, example)
        except Exception:  # refused, unreadable or unloadable: rebuilt
            stats.rejected += 1
        else:
            stats.hits += 1
            return runner
    return _built(folded, example, (package, record, key), notice)


def _built(
    folded: nn.Module,
    example: torch.Tensor,
    entry: tuple[Path, Path, dict[str, object]] | None,
    notice: Callable[[str], None],
) -> Runner:
    """A newly compiled package, loaded and probed, then stored as `entry` (package, record, key) if given."""
    build = _build_folder(entry[0].parent if entry else None)
    try:
        built = build / "model.pt2"
        later = f"once (tens of seconds); later runs load it from {entry[0].parent}" if entry else "(tens of seconds)"
        notice(f"compiling the fast path {later}")
        _compile(folded, example, built)
        stats.builds += 1
        runner = _load(built)
        _probe(runner, folded, example)
        if entry:
            _install(built, *entry)
        return runner
    finally:
        shutil.rmtree(build, ignore_errors=True)
