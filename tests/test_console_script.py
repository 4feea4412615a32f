"""The console-script entry point: a normal end skips interpreter teardown, yet every byte and code arrives."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import sys, click
from regnet_convert.cli.common import ReportingCommand, console_script
from regnet_convert.errors import InputError

@click.command(cls=ReportingCommand)
@click.argument("how")
def main(how):
    click.echo("x" * 200_000)  # more than a pipe buffer: it must be flushed, not lost with the buffers
    click.echo("last line")
    if how == "bad":
        raise InputError("in.file", "is bad")
    sys.exit({"ok": 0, "fail": 1}[how])

console_script(main)()
print("not reached")
"""


@pytest.mark.parametrize(("how", "code"), [("ok", 0), ("fail", 1), ("bad", 2)])
def test_output_and_exit_code_arrive(how, code):
    done = subprocess.run([sys.executable, "-c", PROGRAM, how], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stdout == "x" * 200_000 + "\nlast line\n"
    assert done.stderr == ("error: in.file: is bad\n" if how == "bad" else "")
