"""What every command shares: click commands that end through `regnet_convert.process` (one error line, a
documented exit code), with library warnings kept off the terminal, and the console-script entry point."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import click

from regnet_convert.errors import EXIT_FAIL, EXIT_OK
from regnet_convert.process import (
    exit_code_of,
    flush_stdout,
    signals_as_exceptions,
    start_command,
)


class _Reporting:
    """Mixin: `main` in standalone mode reports errors as one line and exits with a documented code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        # a mixin: mypy cannot see the click.Command after it in the subclasses' MRO, hence the ignores [misc]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)  # type: ignore[misc]
        start_command()
        with signals_as_exceptions(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = exit_code_of(lambda: super(_Reporting, self).main(args, prog_name, complete_var, False, **extra))  # type: ignore[misc]
            flush_stdout()
        sys.exit(code)


class ReportingGroup(_Reporting, click.Group):
    """A click group whose commands report errors as one line."""


class ReportingCommand(_Reporting, click.Command):
    """A click command that reports errors as one line."""


def console_script(command: click.Command) -> Callable[[], None]:
    """The console-script entry point of `command`: as `command.main()`, but a run that ended normally (exit 0 or
    1) leaves without tearing the interpreter down, which takes 0.3-0.4 s once torch is imported.

    Everything it writes is already closed (outputs are written atomically and synced), and its worker processes
    have exited; errors and interruptions take the ordinary `sys.exit` path.
    """

    def run() -> None:
        try:
            command.main()
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            if code not in (EXIT_OK, EXIT_FAIL):
                flush_stdout()  # before teardown, which would complain about a closed stdout
                raise
            for stream in (sys.stdout, sys.stderr):
                with suppress(Exception):
                    stream.flush()
            os._exit(code)

    return run
