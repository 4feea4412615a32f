"""The one error family the tools report, and their exit codes."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAIL = 1  # regnet-validate: the accuracy is outside the tolerance
EXIT_BAD_INPUT = 2  # bad usage, a bad input file, option or data, an output that cannot be written
EXIT_INTERNAL = 3  # an unexpected error: a bug, reported as one line
EXIT_INTERRUPTED = 130  # Ctrl-C; other termination signals exit 128 + the signal number


class InputError(Exception):
    """A problem with an input file, an output, an option or the data, reported as one line: `WHAT: PROBLEM`.

    The one error type of the tools (bad images are InputErrors too); it survives pickling, so DataLoader
    workers can hand it over.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.problem)
