"""The one error type the tools report: a file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class ConvertError(Exception):
    """A problem with one input or output file, reported as one line."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)
