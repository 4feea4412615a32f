"""A manifest override for tests only: the packaged zoo table with some files' facts replaced, for one test."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import regnet.zoo as zoo

CACHED = ("_table", "zoo_models", "seed_rows", "zoo_files", "zoo_weights")


def _clear() -> None:
    for name in CACHED:
        getattr(zoo, name).cache_clear()


@contextmanager
def overridden(files: dict[str, dict]) -> Iterator[None]:
    """The zoo table with `files` (file name -> fields to replace: url, hash_prefix, size, sha256) changed; every
    cached view of it rebuilt on entry and on exit."""
    table = copy.deepcopy(zoo._table())
    for entry in table["files"]:
        name = entry["url"].rsplit("/", 1)[-1]
        if name in files:
            changes = files[name]
            if "name" in changes:  # a file renamed: the seed row that names it follows
                old, new = name, changes["name"]
                entry["url"] = entry["url"][: -len(old)] + new
                for row in table["seed_table"]["rows"]:
                    if row["file"].endswith(old):
                        row["file"] = row["file"][: -len(old)] + new
            entry.update({k: v for k, v in changes.items() if k != "name"})
    original = zoo._table
    zoo._table = lambda: table  # type: ignore[assignment]
    zoo._table.cache_clear = lambda: None  # type: ignore[attr-defined]
    _clear()
    try:
        yield
    finally:
        zoo._table = original
        _clear()
