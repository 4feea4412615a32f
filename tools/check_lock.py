"""Check the lock (`constraints.txt`) before pip reads it: exact `name==version` pins only, one per package.

pip would also honour options, URLs, local paths and other files in a constraints file; a lock that holds any of
those is refused with one line naming the file and line (exit 2), so an edited lock cannot point the install
somewhere else. Run by `make` before every install; standard library only (it runs before the venv exists).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MAX_BYTES = 64 << 10
COMMENT = re.compile(r"(?:^|\s)#")  # pip's COMMENT_RE: a comment starts at the line's start or after whitespace
PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?)==([0-9][0-9A-Za-z.+!-]{0,63})")


def problems(path: Path) -> str | None:
    """The first problem of the lock at `path`, as `WHERE: PROBLEM`, or None when every line is a pin."""
    if not path.is_file():
        return f"{path}: not a regular file"
    if path.stat().st_size > MAX_BYTES:
        return f"{path}: over {MAX_BYTES >> 10} KB, not a lock"
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text"
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        text = COMMENT.split(line, maxsplit=1)[0].strip()  # as pip: `a==1#b` is no comment, so not a pin
        if not text:
            continue
        match = PIN.fullmatch(text)
        if match is None:
            return f"{path}:{number}: {text[:60]!r} is not an exact pin NAME==VERSION (no options, URLs or paths)"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if name in seen:
            return f"{path}:{number}: {name} is pinned twice (also line {seen[name]})"
        seen[name] = number
    if not seen:
        return f"{path}: pins nothing"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_lock.py LOCKFILE", file=sys.stderr)
        return 2
    problem = problems(Path(argv[0]))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
