"""Print the pyproject's runtime dependencies at their lower bounds (`name>=X` -> `name==X`), one per line; with
`--others LOCK`, the lock's pins of every other package.

`make test-floor` installs exactly these, so every floor the pyproject declares is one a test ran on. Standard
library only. A dependency without a `>=` bound is an error: it would have no floor to test.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

BOUND = re.compile(r"([A-Za-z0-9._-]+)\s*>=\s*([0-9][0-9A-Za-z.+!-]*)")


def floors(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for dependency in dependencies:
        match = BOUND.search(dependency)
        if match is None:
            raise SystemExit(f"error: {pyproject}: dependency {dependency!r} has no '>=' floor")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0]).lower()


def others(lock: Path, pins: list[str]) -> list[str]:
    """The lock's pins of every package that is not one of `pins` (what the floors pull in stays locked)."""
    direct = {_name(pin) for pin in pins}
    lines = [line.strip() for line in lock.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#") and _name(line) not in direct]


if __name__ == "__main__":
    pins = floors(Path("pyproject.toml"))
    print("\n".join(others(Path(sys.argv[2]), pins) if sys.argv[1:2] == ["--others"] else pins))
