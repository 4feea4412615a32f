"""Interruptions while DataLoader workers run, and failures of one rank of a torchrun job, as a terminal and a
scheduler deliver them: the signal goes to the whole process group (main process and workers alike).

Whoever receives it, the run ends with the documented code (130 for Ctrl-C, 128+N for signal N) and one
`error:` line of its own (the progress bar cleared first, nothing after it), no traceback. On a two-rank job a bad
image on rank 1 is reported by rank 0 as that image (exit 2 on both ranks), not as a lost peer (exit 3).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import generated_val_set, unused_port

from regnet_convert.validation.dataset import find_samples

pytestmark = [pytest.mark.hostile, pytest.mark.slow]

VALIDATE = [sys.executable, "-m", "regnet_convert.cli.validate"]


@pytest.fixture(scope="module")
def val_60(tmp_path_factory) -> Path:
    """60 generated JPEGs in three class folders: a few seconds of work one image at a time."""
    return generated_val_set(tmp_path_factory.mktemp("val60"), 60, seed=7, class_of=lambda i: i % 3 * 100)


def screen(stderr: str) -> list[str]:
    """The non-empty lines a terminal shows for `stderr` (a carriage return starts its line over)."""
    return [shown for line in stderr.split("\n") if (shown := line.split("\r")[-1].strip())]


def read_until(stream: int, pattern: re.Pattern, seconds: float) -> str:
    """Bytes of a pipe until `pattern` matches them (or the pipe closes, or time is up)."""
    seen, deadline = b"", time.monotonic() + seconds
    os.set_blocking(stream, False)
    while time.monotonic() < deadline and not pattern.search(seen.decode(errors="replace")):
        try:
            chunk = os.read(stream, 65536)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            break
        seen += chunk
    os.set_blocking(stream, True)
    return seen.decode(errors="replace")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_to_the_process_group_with_workers(tmp_path, val_60, converted_200mf, signum, code):
    weights, _ = converted_200mf
    out = tmp_path / "r.json"
    argv = ["--weights", weights, "--data", val_60, "--workers", "2", "--batch-size", "1", "--json", out]
    process = subprocess.Popen(
        [*VALIDATE, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        started = read_until(process.stderr.fileno(), re.compile(r"\| *([3-9]|\d\d)/60 "), 120)
        assert process.poll() is None, started  # still evaluating, its workers running
        os.killpg(process.pid, signum)
        stdout, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stderr = started + rest.decode(errors="replace")
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    expected = (
        "error: interrupted" if signum == signal.SIGINT else f"error: terminated by {signal.Signals(signum).name}"
    )
    assert screen(stderr) == [screen(stderr)[0]] and screen(stderr)[0].startswith(expected), stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n") and stderr.split("\r")[-1].startswith("error: "), stderr
    assert stdout == b"" and not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_image_on_one_rank_is_reported_as_that_image(tmp_path, val_60, converted_200mf):
    """Two ranks of a gloo job launched as torchrun launches them; the bad image lies in rank 1's shard."""
    weights, _ = converted_200mf
    data = tmp_path / "val"
    for path, _ in find_samples(val_60):
        target = data / Path(path).parent.name / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(path).read_bytes())
    bad = Path(find_samples(data)[1][0])  # the second image: rank 1's first
    bad.write_bytes(bad.read_bytes()[:2000])
    port = unused_port()
    argv = ["--weights", weights, "--data", data, "--workers", "0", "--batch-size", "4", "-q"]
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        ranks.append(subprocess.Popen([*VALIDATE, *map(str, argv)], env=env, stderr=subprocess.PIPE, text=True))
    try:
        ends = [(p.wait(timeout=240), p.stderr.read()) for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    (code0, err0), (code1, err1) = ends
    assert (code0, code1) == (2, 2), ends
    assert "Traceback" not in err0 + err1, ends
    lines = err0.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and bad.name in lines[0], ends
    assert "--skip-bad-images" in lines[0] and err1 == "", ends  # rank 0 speaks for the job
