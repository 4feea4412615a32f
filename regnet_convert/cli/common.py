"""What every command shares: one error line and a documented exit code, whatever goes wrong.

Commands raise `InputError`; `ReportingGroup`/`ReportingCommand` turn it (and interruptions, usage
errors and unexpected exceptions) into one line on stderr and the exit codes of `errors`. Termination
signals (SIGTERM, SIGHUP) are handled like Ctrl-C, so `finally` blocks remove temporary files.
Library warnings are kept off the terminal. `REGNET_DEBUG=1` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import click

from regnet_convert.errors import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, InputError

TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A termination signal, raised where the program is so that cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_OWNER = {"pid": 0}


def _raise_interrupted(signum: int, _frame: object) -> None:
    if os.getpid() != _OWNER["pid"]:  # a forked worker: just end, the main process cleans up
        os._exit(128 + signum)
    raise Interrupted(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Interrupted` in the main thread while the command runs."""
    previous = {}
    _OWNER["pid"] = os.getpid()
    for signum in TERMINATION_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, _raise_interrupted)
        except ValueError:  # not the main thread: leave the signals alone
            break
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def error_line(message: str) -> None:
    """Print one `error: ...` line on stderr."""
    click.echo(f"error: {' '.join(str(message).split())}", err=True)


def exit_code_of(run: Callable[[], object]) -> int:
    """Run a click command in non-standalone mode and map everything that can end it to an exit code."""
    try:
        result = run()
        return result if isinstance(result, int) else 0
    except InputError as error:
        error_line(str(error))
        return EXIT_BAD_INPUT
    except click.UsageError as error:  # one line, like every other refusal
        hint = f" (see {error.ctx.command_path} --help)" if error.ctx else ""
        error_line(error.format_message() + hint)
        return error.exit_code
    except click.ClickException as error:
        error_line(error.format_message())
        return error.exit_code
    except click.exceptions.Exit as done:
        return done.exit_code
    except (KeyboardInterrupt, click.Abort):
        error_line("interrupted; nothing was written")
        return EXIT_INTERRUPTED
    except Interrupted as interruption:
        error_line(f"terminated by {signal.Signals(interruption.signum).name}; nothing was written")
        return 128 + interruption.signum
    except MemoryError:
        error_line("out of memory")
        return EXIT_INTERNAL
    except Exception as error:  # a bug: one line, not a traceback (REGNET_DEBUG=1 shows it)
        if os.environ.get("REGNET_DEBUG"):
            raise
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        error_line(f"internal error ({type(error).__name__}: {first_line}); please report it")
        return EXIT_INTERNAL


class _Reporting:
    """Mixin: `main` in standalone mode reports errors as one line and exits with a documented code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[no-untyped-def]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)  # type: ignore[misc]
        with signals_as_exceptions(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = exit_code_of(lambda: super(_Reporting, self).main(args, prog_name, complete_var, False, **extra))  # type: ignore[misc]
        sys.stdout.flush()
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
                raise
            for stream in (sys.stdout, sys.stderr):
                with suppress(Exception):
                    stream.flush()
            os._exit(code)

    return run
