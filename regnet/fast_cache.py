"""A per-user cache of AOTInductor packages: one compiled CPU model per weights, input size, threads, torch and CPU.

An entry is `<digest>.pt2` (the package) beside `<digest>.json` (the full key and the package's sha256 and
size); the digest names the key. An entry is used only when its record parses, names the same key and the
package hashes to the recorded value; anything else is rebuilt. The batch dimension is dynamic, so one entry
serves every batch size. A folder that cannot be written means no cache: the package is built in a temporary
folder for this process only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

FORMAT = 1  # bump when what goes into a package changes
Runner = Callable[[torch.Tensor], torch.Tensor]
USER_CACHE = Path("~/.cache/regnet-convert")


def cache_dir() -> Path:
    """Where compiled packages live: `$REGNET_CACHE/aoti`, by default `~/.cache/regnet-convert/aoti`."""
    return Path(os.environ.get("REGNET_CACHE") or USER_CACHE).expanduser() / "aoti"


@dataclass
class CacheStats:
    """What the cache did in this process (for tests and benchmarks)."""

    hits: int = 0  # a verified entry was loaded
    builds: int = 0  # a package was compiled
    rejected: int = 0  # an entry existed but was damaged or stale, so it was rebuilt
    uncached: int = 0  # the cache folder was unusable: compiled for this process only


stats = CacheStats()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
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


def _leaves(spec: dict) -> int:
    """How many values a serialized pytree spec holds."""
    children = spec["children_spec"]
    return sum(_leaves(child) for child in children) if spec["type"] is not None else 1


def _load(path: Path) -> Runner:
    """The package at `path`, loaded by the C++ loader that `torch._inductor.aoti_load_package` wraps: used
    directly, it does not need torch._inductor imported, which takes longer than everything else here. Where
    that binding differs, or the package's model does not map one tensor to one tensor, the public function."""
    with _quiet():
        try:
            loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
            inputs, outputs = (json.loads(spec)[1] for spec in loader.get_call_spec())
            if _leaves(inputs) == 1 and outputs["type"] is None:
                return lambda x: loader.boxed_run([x])[0]
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            pass
        import torch._inductor as inductor

        return inductor.aoti_load_package(str(path))


@contextlib.contextmanager
def _inductor_work_dir(folder: Path) -> Iterator[None]:
    """Inductor's intermediate files go to `folder` (deleted with the build) rather than its shared temp cache."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def _compile(folded: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export `folded` with a dynamic batch and compile it with AOTInductor into the package `path`."""
    with _quiet(), torch.no_grad(), _inductor_work_dir(path.parent / "inductor"):
        import torch._inductor as inductor

        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(folded, (example,), dynamic_shapes=({0: batch},))
        inductor.aoti_compile_and_package(program, package_path=str(path))


def _verified(package: Path, record: Path, key: dict[str, object]) -> Callable | None:
    """The loaded entry if its record names `key` and the package matches its recorded size and hash, else None."""
    try:
        meta = json.loads(record.read_text())
        if not (isinstance(meta, dict) and meta.get("key") == key and meta.get("size") == package.stat().st_size):
            return None
        if meta.get("sha256") != _sha256(package):
            return None
        return _load(package)
    except Exception:  # unreadable, unparsable or unloadable: the caller rebuilds
        return None


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def compiled(
    folded: nn.Module, example: torch.Tensor, key: dict[str, object], notice: Callable[[str], None] = lambda _: None
) -> Runner:
    """The cached package for `key` if a sound one exists, else a newly compiled one (stored when possible);
    `notice` hears, before a compilation, that one starts (it takes tens of seconds)."""
    folder = cache_dir()
    usable = _writable(folder)
    package, record = folder / f"{digest_of(key)}.pt2", folder / f"{digest_of(key)}.json"
    if usable and (package.exists() or record.exists()):
        if (runner := _verified(package, record, key)) is not None:
            stats.hits += 1
            return runner
        stats.rejected += 1
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder if usable else None) as tmp:
        built = Path(tmp) / "model.pt2"
        notice(f"compiling the fast path once (tens of seconds); later runs load it from {folder}")
        _compile(folded, example, built)
        stats.builds += 1
        if usable:
            try:
                meta = {"key": key, "size": built.stat().st_size, "sha256": _sha256(built)}
                (Path(tmp) / "record.json").write_text(json.dumps(meta, indent=1))
                record.unlink(missing_ok=True)  # no moment where an old record names the new package
                os.replace(built, package)
                os.replace(Path(tmp) / "record.json", record)
            except OSError:
                pass
            else:
                return _load(package)
        stats.uncached += 1
        return _load(built if built.exists() else package)
