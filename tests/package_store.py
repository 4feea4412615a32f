"""Fast-path packages compiled once per test run: a stand-in for `regnet.fast_cache._compile` that all pytest-xdist
workers share.

Several test files compile the same tiny model at the same input size and thread count (each file its own cache, on
purpose). `PackageStore.compile` compiles a package for real the first time the run asks for one, keeps a copy in a
folder every worker sees, and later copies it into place: the cache's logic (record, trust, probe, install) still
runs on a genuine package each time, without the seconds of another compilation. A package is keyed by what it
depends on: every tensor of the folded model, the module tree (strides, groups), the input's shape and torch's
thread count. Files that check what a compilation itself does (a cold run that prints nothing, a killed or failing
compiler) do not use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from filelock import FileLock

from regnet import fast_cache

REAL_COMPILE = fast_cache._compile
STORE = "fast-packages"  # the store's folder name, beside the zoo store (zoo_sources.py)


def package_key(folded: torch.nn.Module, example: torch.Tensor) -> str:
    """The fast cache's own digest of what a package depends on, the module tree standing for the architecture."""
    return fast_cache.digest_of(fast_cache.entry_key(folded, folded, tuple(example.shape[1:])))


class PackageStore:
    """`compile(folded, example, path)`: `fast_cache._compile`'s signature, compiling each key once per run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)

    def compile(self, folded: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
        stored = self.folder / f"{package_key(folded, example)}.pt2"
        with FileLock(f"{stored}.lock"):  # another worker compiling the same package: wait for it
            if not stored.exists():
                REAL_COMPILE(folded, example, path)
                staging = stored.with_suffix(".staging")
                shutil.copy(path, staging)
                os.replace(staging, stored)
                return
        shutil.copy(stored, path)
