"""How a tool's process ends, whatever goes wrong: one error line, a documented exit code, signals and a closed
standard output handled.

Ctrl-C (SIGINT), SIGTERM and SIGHUP are decided by the main process alone: there they raise where the program is,
so `finally` blocks remove temporary files, and whatever error the interruption sets off afterwards (a worker that
died of the same signal, a peer that went away) is reported as the interruption, once; forked children (DataLoader
workers) ignore them. `REGNET_DEBUG=1` shows the traceback of an unexpected error. Text that comes from files
(names, metadata) reaches the terminal only through `printable`.

A closed standard output (`| head`) is not an error: `emit` stops writing to it, quietly, and the command
finishes (its files written) with its usual exit status; a command stopped by it exits 141 (128 + SIGPIPE),
quietly too.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import click

from regnet_convert.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, InputError

INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
EXIT_BROKEN_STDOUT = 128 + signal.SIGPIPE


class Interrupted(BaseException):
    """A termination signal, raised where the program is so that cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Ended(Exception):
    """A failure already decided elsewhere (another rank of a torchrun job): exit with `code`, printing `message`
    as the one error line, or nothing when it is None (the line is another process's to print)."""

    def __init__(self, code: int, message: str | None) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


_OWNER = {"pid": 0}
RECEIVED: list[int] = []  # the interrupting signals the main process got during this command, in order


def _on_signal(signum: int, _frame: object) -> None:
    if os.getpid() != _OWNER["pid"]:  # a forked child (a DataLoader worker): the main process decides
        return
    RECEIVED.append(signum)
    if len(RECEIVED) > 1:  # already on the way out: a second signal must not break the cleanup
        return
    with suppress(ValueError, OSError):  # a worker dying of the same signal is part of this interruption
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    raise Interrupted(signum)  # for SIGINT too: not a KeyboardInterrupt, which libraries catch and print around


def ignore_interruptions() -> None:
    """For a worker process: let the main process alone decide on Ctrl-C, SIGTERM and SIGHUP."""
    for signum in INTERRUPTING_SIGNALS:
        with suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_IGN)


def raise_if_interrupted() -> None:
    """Raise the interruption again where the work goes on (each batch): Python swallows an exception raised in
    a fork handler or a finalizer, so a signal that lands while DataLoader workers start would else be lost (and
    the later ones ignored as part of it)."""
    if RECEIVED and os.getpid() == _OWNER["pid"]:
        raise Interrupted(RECEIVED[0])


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread while the command runs; the first one is
    remembered in `RECEIVED` and later ones are ignored."""
    previous = {signal.SIGCHLD: signal.getsignal(signal.SIGCHLD)}  # `_on_signal` may reset it
    _OWNER["pid"] = os.getpid()
    RECEIVED.clear()
    outer_hook = sys.unraisablehook

    def quiet_about_interruptions(unraisable: sys.UnraisableHookArgs) -> None:
        """An interruption swallowed where Python cannot raise it (see `raise_if_interrupted`) prints no
        traceback; any other unraisable error goes to the hook that was in place."""
        if not isinstance(unraisable.exc_value, Interrupted):
            outer_hook(unraisable)

    sys.unraisablehook = quiet_about_interruptions
    for signum in INTERRUPTING_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, _on_signal)
        except ValueError:  # not the main thread: leave the signals alone
            break
    try:
        yield
    finally:
        for signum, handler in previous.items():
            with suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        sys.unraisablehook = outer_hook
        RECEIVED.clear()  # the command's outcome is decided: nothing after it may read an interruption


_ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def printable(text: object) -> str:
    """`text` safe for a terminal: control characters (C0, DEL, C1), format characters (bidi overrides,
    zero-width ones), line separators and unassigned code points escaped as `\\x1b`, `\\u202e`; the bytes of a
    non-UTF-8 file name (surrogate escapes) as `\\xff`."""
    out = []
    for char in str(text):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(char) not in _ESCAPED_CATEGORIES:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def error_line(message: str) -> None:
    """Print one `error: ...` line on stderr (whitespace folded, file-borne text escaped)."""
    click.echo(f"error: {printable(' '.join(str(message).split()))}", err=True)


def notice(line: str) -> None:
    """A one-line notice on stderr (above a progress bar, if one is shown), file-borne text escaped."""
    from tqdm import tqdm

    tqdm.write(printable(" ".join(line.split())), file=sys.stderr)


_STDOUT = {"broken": False}


def _stdout_gone() -> None:
    """Standard output's reader went away: send whatever is still buffered to /dev/null, and stop writing."""
    _STDOUT["broken"] = True
    with suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def emit(text: str) -> None:
    """Print results on stdout, line by line through `printable`; a closed stdout is noted, not an error."""
    if _STDOUT["broken"] or sys.stdout is None:
        return
    try:
        click.echo("\n".join(printable(line) for line in str(text).split("\n")))
    except (BrokenPipeError, ValueError):  # ValueError: stdout was closed from inside the process
        _stdout_gone()
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.EBADF):
            raise
        _stdout_gone()


def flush_stdout() -> None:
    """Flush stdout, quietly when it is closed or its reader is gone."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _stdout_gone()


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll reports an error on its write end)."""
    if _STDOUT["broken"]:
        return True
    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _reserve_standard_descriptors() -> None:
    """Put /dev/null where stdin, stdout or stderr is closed, so that no file the command opens becomes one."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: `fd` itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _interruption(signum: int, then: str = "; nothing was written") -> tuple[int, str]:
    if signum == signal.SIGINT:
        return EXIT_INTERRUPTED, f"interrupted{then}"
    return 128 + signum, f"terminated by {signal.Signals(signum).name}{then}"


def outcome(error: BaseException) -> tuple[int, str | None]:
    """The exit code and the one error line (None: print nothing) of a command that ended with `error`."""
    if isinstance(error, Ended):
        return error.code, error.message
    if RECEIVED:  # whatever went wrong after an interruption (a worker or a peer that died of it) is that
        return _interruption(RECEIVED[0])
    if isinstance(error, InputError):
        return EXIT_BAD_INPUT, str(error)
    if isinstance(error, click.UsageError):  # one line, like every other refusal
        hint = f" (see {error.ctx.command_path} --help)" if error.ctx else ""
        return error.exit_code, error.format_message() + hint
    if isinstance(error, click.ClickException):
        return error.exit_code, error.format_message()
    if isinstance(error, (KeyboardInterrupt, click.Abort)):
        return _interruption(signal.SIGINT)
    if isinstance(error, Interrupted):
        return _interruption(error.signum)
    if isinstance(error, MemoryError):
        return EXIT_INTERNAL, "out of memory"
    if isinstance(error, OSError) and error.errno == errno.EPIPE and _stdout_reader_gone():
        _stdout_gone()
        return EXIT_BROKEN_STDOUT, None
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return EXIT_INTERNAL, f"internal error ({type(error).__name__}: {first_line}); please report it"


def exit_code_of(run: Callable[[], object]) -> int:
    """Run a click command in non-standalone mode and map everything that can end it to an exit code."""
    try:
        result = run()
        if RECEIVED:  # a signal whose exception Python swallowed, and the command went on to its end
            signalled, line = _interruption(RECEIVED[0], ", after the command had done its work")
            error_line(line)
            return signalled
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except (Exception, KeyboardInterrupt, Interrupted) as error:
        code, message = outcome(error)
        if code == EXIT_INTERNAL and os.environ.get("REGNET_DEBUG") and not isinstance(error, Ended):
            raise  # a bug: one line, not a traceback, unless REGNET_DEBUG=1 asks for it
        if message is not None:
            error_line(message)
        return code


def start_command() -> None:
    """Before a command runs: standard output usable again, and file descriptors 0-2 held (never an output's)."""
    _STDOUT["broken"] = False
    _reserve_standard_descriptors()
