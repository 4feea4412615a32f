"""Print pip's configured package sources as uv options, so that `make` installs with uv from where pip would.

uv reads neither pip.conf nor PIP_* variables. This asks pip itself (`pip config list`: files and environment,
pip's precedence: environment over the `install` section over `global`) for index-url, extra-index-url,
find-links and no-index, and prints them as `uv pip install` options on one line (nothing when pip uses PyPI
alone). Standard library only (it runs before the venv exists).
"""

from __future__ import annotations

import shlex
import subprocess
import sys

KEYS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}
PRECEDENCE = (":env:", "install", "global")  # pip's own: the first section that sets a key wins


def pip_config(python: str) -> dict[str, dict[str, str]]:
    """`pip config list` as {section: {key: value}}."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    config: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        name, sep, quoted = line.partition("=")
        section, dot, key = name.rpartition(".")
        if sep and dot:
            config.setdefault(section, {})[key] = " ".join(shlex.split(quoted))
    return config


def uv_options(config: dict[str, dict[str, str]]) -> list[str]:
    """The uv options for pip's effective index-url, extra-index-url, find-links and no-index."""
    options = []
    for key in [*KEYS, "no-index"]:
        value = next((config[s][key] for s in PRECEDENCE if key in config.get(s, {})), None)
        if value is None:
            continue
        if key == "no-index":
            options += ["--no-index"] if value.lower() in ("1", "true", "yes", "on") else []
        else:
            options += [part for item in value.split() for part in (KEYS[key], item)]
    return options


def main(argv: list[str]) -> int:
    python = argv[0] if argv else sys.executable
    try:
        config = pip_config(python)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"error: {python} -m pip config list failed ({exc}); uv would not see pip's indexes", file=sys.stderr)
        return 2
    print(shlex.join(uv_options(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
