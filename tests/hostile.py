"""Run CLI cases in child processes with time and memory limits, and check how they end.

A zygote process imports the command-line tools (and the optional packages they import on demand: onnx,
onnxruntime, matplotlib) once and forks one child per case; the child sets
`resource.setrlimit` limits (address space, CPU time), chdirs into the case's folder and runs the
command's `main` as the console script would. The parent kills a child that outlives its wall-clock
limit. Before the first `--fast` case the zygote imports inductor's compiler and package loader and asks it once
which vector instructions this CPU builds (about 9 s of test compilations, cached in the process), so that each
fast-path child does not do either again.
`check_refusal` asserts what every refused input must satisfy; `refuse` sets up a `Case`, runs it and checks
its refusal (the body of every hostile suite's `test_refused`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SECONDS = 60
DEFAULT_MEMORY = 1536 << 20  # bytes of address space on top of the zygote's own
NOBODY = 65534  # a uid that is not ours: the owner of "another user's" files

_ZYGOTE = r"""
import json, os, resource, signal, sys, time, warnings
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.cli.validate import main as validate_main
TOOLS = {"regnet-convert": convert_main, "regnet-validate": validate_main}
# what the commands import only when a case needs it, imported once here (each child saved 1-2 s of imports)
import onnx, onnxruntime, matplotlib.backends.backend_agg, matplotlib.figure
base = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
warm = False
for line in sys.stdin:
    case = json.loads(line)
    if "--fast" in case["argv"] and not warm:  # once, before forking: children inherit what it learns
        import shutil, tempfile
        from regnet import fast_cache
        with fast_cache._quiet():  # the modules a compilation and a package load import (seconds)
            import torch._inductor.compile_fx, torch._inductor.codegen.cpp_wrapper_cpu, torch._inductor.package
            import torch.utils.cpp_extension
        from torch._inductor.cpu_vec_isa import pick_vec_isa  # what inductor learns
        from torch._inductor.utils import fresh_cache
        scratch = tempfile.mkdtemp()
        with fresh_cache(dir=scratch):
            pick_vec_isa()
        shutil.rmtree(scratch)
        warm = True
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(case["cwd"])
            os.environ.update(case["env"])
            memory = base + case["memory"]
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CPU, (case["cpu"], case["cpu"] + 5))
            out = os.open(case["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            err = os.open(case["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1); os.dup2(err, 2)
            sys.stdin = open(os.devnull)
            sys.stdout = os.fdopen(1, "w", buffering=1); sys.stderr = os.fdopen(2, "w", buffering=1)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            warnings.resetwarnings()
            if case["compiled"]:  # the fast path "compiles" by copying this genuine package of the same model
                import shutil
                from regnet import fast_cache
                fast_cache._compile = lambda folded, example, path: shutil.copy(case["compiled"], path)
            TOOLS[case["tool"]].main(case["argv"], prog_name=case["tool"])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 99
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    deadline = start + case["seconds"]
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            done, status, usage = os.wait4(pid, 0)
            status = -1
            break
        time.sleep(0.01)
    result = {"seconds": time.monotonic() - start, "maxrss": usage.ru_maxrss * 1024}
    if status == -1:
        result["code"] = None
        result["timed_out"] = True
    elif os.WIFSIGNALED(status):
        result["code"] = -os.WTERMSIG(status)
    else:
        result["code"] = os.WEXITSTATUS(status)
    print(json.dumps(result), flush=True)
"""


@dataclass
class Outcome:
    """How one case ended."""

    code: int | None  # exit status; negative: killed by that signal; None: over its wall-clock limit
    stdout: str
    stderr: str
    seconds: float
    maxrss: int
    timed_out: bool = False


class Zygote:
    """A process that has imported the tools and forks a limited child per case."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(
        self,
        tool: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        seconds: float = DEFAULT_SECONDS,
        memory: int = DEFAULT_MEMORY,
        compiled: Path | None = None,
    ) -> Outcome:
        """Run `tool argv...` in `cwd` under the limits; its stdout and stderr go to files beside `cwd`. With
        `compiled`, a fast-path compilation copies that package instead (seconds saved per package; the package
        is still checked and probed as any other)."""
        logs = cwd.parent / f".{cwd.name}.logs"
        logs.mkdir(exist_ok=True)
        case = {
            "tool": tool,
            "argv": [str(a) for a in argv],
            "cwd": str(cwd),
            "env": env or {},
            "seconds": seconds,
            "cpu": int(seconds) + 1,
            "memory": memory,
            "compiled": str(compiled) if compiled else "",
            "stdout": str(logs / "stdout"),
            "stderr": str(logs / "stderr"),
        }
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        result = json.loads(self.process.stdout.readline())
        return Outcome(
            code=result["code"],
            stdout=(logs / "stdout").read_text(errors="replace"),
            stderr=(logs / "stderr").read_text(errors="replace"),
            seconds=result["seconds"],
            maxrss=result["maxrss"],
            timed_out=result.get("timed_out", False),
        )

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative name -> sha256 of its bytes, or its kind for special files)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        name, mode = str(path.relative_to(folder)), path.lstat()
        if stat.S_ISLNK(mode.st_mode):
            files[name] = "symlink -> " + os.readlink(path)
        elif stat.S_ISREG(mode.st_mode):  # an empty file is not opened (folders of 100,000 of them)
            files[name] = hashlib.sha256(path.read_bytes() if mode.st_size else b"").hexdigest()
        elif not stat.S_ISDIR(mode.st_mode):
            files[name] = "special"
    return files


@dataclass
class Case:
    """One hostile input: a command line run in a folder the setup fills, and what the refusal must say."""

    id: str
    tool: str  # "regnet-convert" or "regnet-validate"
    argv: list[str]
    setup: object  # callable(folder: Path, fixtures) -> None, creates the inputs
    says: list[str] = field(default_factory=list)  # substrings of the one error line
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    seconds: float = DEFAULT_SECONDS
    memory: int = DEFAULT_MEMORY


def check_refusal(outcome: Outcome, before: dict[str, str], after: dict[str, str], code: int, says: list[str]) -> None:
    """The refusal contract: exit code, no traceback, one error line naming the input, nothing changed."""
    assert not outcome.timed_out, f"over its time limit ({outcome.seconds:.1f} s)"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.code == code, (outcome.code, outcome.stderr)
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    for text in says:
        assert text in lines[0], (text, lines[0])
    assert after == before, f"files changed: {set(after.items()) ^ set(before.items())}"


def refuse(case: Case, fixtures: object, zygote: Zygote, tmp_path: Path) -> Outcome:
    """Set `case` up in `tmp_path/case`, run it, assert the refusal contract and that no pickle ran code (a crafted
    pickle would create `pwned`); returns how it ended."""
    folder = tmp_path / "case"
    folder.mkdir()
    case.setup(folder, fixtures)
    before = snapshot(folder)
    outcome = zygote.run(case.tool, case.argv, folder, case.env, case.seconds, case.memory)
    check_refusal(outcome, before, snapshot(folder), case.code, case.says)
    assert not (folder / "pwned").exists()  # no pickle ever runs code
    return outcome
