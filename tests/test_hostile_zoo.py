"""Hostile servers, mirrors, caches and outputs for `regnet-convert zoo fetch` and `zoo list`.

Each case runs in a child of the `hostile.Zygote` (time and memory limits). A server thread in this process,
on 127.0.0.1 only, answers `/CASE/BEHAVIOUR/<pycls path>` with the crafted response BEHAVIOUR names and
records the Range header of every request per case. Refusals must meet `hostile.check_refusal` (exit 2, no
traceback, one `error:` line naming the URL, option or file, files unchanged) except for the files a case
says it leaves (the resumable `.part`) or removes (a download that is garbage).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import convert_file, unused_port
from hostile import Outcome, Zygote, check_refusal, snapshot
from pycls_oracle import build, randomize, save_genuine_checkpoint

from regnet import read_metadata

pytestmark = pytest.mark.hostile

ZOO_PATH = "dds_baselines/160905981/RegNetX-200MF_dds_8gpu.pyth"
DOWNLOAD = "RegNetX-200MF_dds_8gpu.pyth"
CACHED, PART = f"cache/{DOWNLOAD}", f"cache/{DOWNLOAD}.part"
OUTPUT = "checkpoints/regnetx_200mf.safetensors"
CONVERT = "regnet-convert"
HTML = b"<html><body>This file has moved.</body></html>"


@dataclass(frozen=True)
class Served:
    """The genuine pycls file the server offers, and its correct conversion."""

    data: bytes
    converted: bytes


# ---- the server: one crafted answer per behaviour ------------------------------------------------------------


class HostileHandler(http.server.BaseHTTPRequestHandler):
    """Answers `/CASE/BEHAVIOUR/...` with `BEHAVIOURS[BEHAVIOUR]`; records each case's Range headers."""

    data: ClassVar[bytes] = b""
    requests: ClassVar[dict[str, list[str | None]]] = {}

    def do_GET(self) -> None:
        _, case, behaviour, *_ = self.path.split("/", 3)
        type(self).requests.setdefault(case, []).append(self.headers.get("Range"))
        try:
            BEHAVIOURS[behaviour](self)
        except OSError:  # the client gave up
            self.close_connection = True

    def head(self, status: int, headers: dict[str, object]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()

    def start(self) -> int:
        """The first byte a Range header asks for (0 without one)."""
        return int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").rstrip("-"))

    def log_message(self, *args) -> None:
        pass


def serve(h: HostileHandler) -> None:
    """The file, honouring Range."""
    n, start = len(h.data), h.start()
    if start:
        h.head(206, {"Content-Range": f"bytes {start}-{n - 1}/{n}", "Content-Length": n - start})
    else:
        h.head(200, {"Content-Length": n})
    h.wfile.write(h.data[start:])


def error(code: int) -> Callable[[HostileHandler], None]:
    return lambda h: h.send_error(code)


def refuse_ranges(content_range: Callable[[int], str | None]) -> Callable[[HostileHandler], None]:
    """416 (with `content_range(file size)` when not None) for a Range request, the whole file otherwise."""

    def answer(h: HostileHandler) -> None:
        if not h.headers.get("Range"):
            serve(h)
            return
        value = content_range(len(h.data))
        h.head(416, {"Content-Length": 0, **({"Content-Range": value} if value else {})})

    return answer


def always_416(h: HostileHandler) -> None:
    h.head(416, {"Content-Range": f"bytes */{len(h.data)}", "Content-Length": 0})


def announcing(length: Callable[[int], object], body: Callable[[bytes], bytes]) -> Callable[[HostileHandler], None]:
    """200 with `Content-Length: length(size)` and `body(file)`, whatever the Range header asks."""

    def answer(h: HostileHandler) -> None:
        h.head(200, {"Content-Length": length(len(h.data))})
        h.wfile.write(body(h.data))

    return answer


def drip(h: HostileHandler) -> None:
    """A byte a second."""
    h.head(200, {"Content-Length": len(h.data)})
    for i in range(len(h.data)):
        h.wfile.write(h.data[i : i + 1])
        h.wfile.flush()
        time.sleep(1)


def silent_body(h: HostileHandler) -> None:
    """Headers, then nothing."""
    h.head(200, {"Content-Length": len(h.data)})
    h.wfile.flush()
    time.sleep(8)


def mute(_h: HostileHandler) -> None:
    """Not even a status line."""
    time.sleep(8)


def endless(h: HostileHandler, status: int = 200) -> None:
    """Zeros until the client hangs up, with no Content-Length (a 206 states the file size)."""
    n, start = len(h.data), h.start()
    h.head(status, {"Content-Range": f"bytes {start}-{n - 1}/{n}"} if status == 206 else {})
    zeros = bytes(1 << 16)
    while True:
        h.wfile.write(zeros)


def wrong_range(h: HostileHandler) -> None:
    """206 for the whole file, whatever the Range header asked."""
    n = len(h.data)
    h.head(206, {"Content-Range": f"bytes 0-{n - 1}/{n}", "Content-Length": n})
    h.wfile.write(h.data)


def bad_status_line(h: HostileHandler) -> None:
    h.wfile.write(b"HTTP/1.1 two hundred\r\n\r\n")


def redirect_loop(h: HostileHandler) -> None:
    h.head(302, {"Location": h.path, "Content-Length": 0})


def redirect_to(location: str) -> Callable[[HostileHandler], None]:
    return lambda h: h.head(302, {"Location": location, "Content-Length": 0})


def corrupt(data: bytes) -> bytes:
    return data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:]


BEHAVIOURS: dict[str, Callable[[HostileHandler], None]] = {
    "ok": serve,
    "404": error(404),
    "500": error(500),
    "416-total": refuse_ranges(lambda n: f"bytes */{n}"),
    "416-bare": refuse_ranges(lambda n: None),
    "416-other-total": refuse_ranges(lambda n: f"bytes */{n + 7}"),
    "416-always": always_416,
    "length-abc": announcing(lambda n: "abc", lambda d: d),
    "length-negative": announcing(lambda n: "-5", lambda d: d),
    "length-huge": announcing(lambda n: 10**12, lambda d: d[:1000]),
    "shorter-than-announced": announcing(lambda n: n, lambda d: d[:100_000]),
    "longer-than-announced": announcing(lambda n: n // 2, lambda d: d),
    "junk-after-announced": announcing(lambda n: n, lambda d: d + b"junk" * 1000),
    "corrupt": announcing(lambda n: n, corrupt),
    "garbage": announcing(lambda n: 50_000, lambda d: random.Random(8).randbytes(50_000)),
    "html": announcing(lambda n: len(HTML), lambda d: HTML),
    "empty": announcing(lambda n: 0, lambda d: b""),
    "drip": drip,
    "silent-body": silent_body,
    "mute": mute,
    "endless": endless,
    "endless-resume": lambda h: endless(h, 206),
    "wrong-range": wrong_range,
    "bad-status-line": bad_status_line,
    "redirect-loop": redirect_loop,
    "redirect-ftp": redirect_to("ftp://127.0.0.1:1/RegNetX-200MF_dds_8gpu.pyth"),
}


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    folder = tmp_path_factory.mktemp("zoo-served")
    source = save_genuine_checkpoint(randomize(build("regnetx_200mf"), seed=8), folder / "train")
    converted = convert_file(source, folder / "converted.safetensors", model="regnetx_200mf")
    return Served(source.read_bytes(), converted.read_bytes())


@pytest.fixture(scope="module")
def server(served):
    """The base URL of the hostile server, and its handler class (for the recorded requests)."""
    handler = type("Handler", (HostileHandler,), {"data": served.data, "requests": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


@pytest.fixture(scope="module")
def zoo_zygote():
    process = Zygote()
    yield process
    process.close()


# ---- cases ---------------------------------------------------------------------------------------------------

Setup = Callable[[Path, Served], object]


def nothing(_folder: Path, _served: Served) -> None:
    pass


def write(name: str, content: Callable[[Served], bytes]) -> Setup:
    def setup(folder: Path, served: Served) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content(served))

    return setup


def make_dir(name: str) -> Setup:
    return lambda folder, _served: (folder / name).mkdir(parents=True)


def fifo(name: str) -> Setup:
    def setup(folder: Path, _served: Served) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(folder / name)

    return setup


def link_outside(name: str) -> Setup:
    """`name` a symbolic link to `precious.txt`, a file of the user's outside the cache."""

    def setup(folder: Path, _served: Served) -> None:
        (folder / "precious.txt").write_text("notes\n")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(folder / "precious.txt")

    return setup


def both(*setups: Setup) -> Setup:
    def setup(folder: Path, served: Served) -> None:
        for step in setups:
            step(folder, served)

    return setup


cached = write(CACHED, lambda s: s.data)  # a good download, already in the cache
first_bytes = write(PART, lambda s: s.data[:1000])  # a resumable partial download


@dataclass
class ZooCase:
    """`zoo fetch MODEL --mirror SERVER/ID/BEHAVIOUR/` (or `mirror`) in a folder `setup` fills."""

    id: str
    behaviour: str | None
    says: list[str]
    setup: Setup = nothing
    mirror: str | None = None  # instead of the server; {folder} and {closed} are filled in
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # {folder} is filled in
    leaves: dict[str, int | None] = field(default_factory=dict)  # new files it leaves: name -> size (None: > 0)
    removes: list[str] = field(default_factory=list)  # files that were there and are removed (garbage)
    requests: int | None = None  # how many requests reach the server (0: refused before any download)
    model: str = "regnetx_200mf"
    seconds: float = 30


def mirror_cases() -> list[ZooCase]:
    return [
        ZooCase("mirror-empty", None, ["--mirror ''", "empty"], mirror=""),
        ZooCase("mirror-blank", None, ["--mirror ' '", "empty"], mirror=" "),
        ZooCase("mirror-ftp", None, ["--mirror 'ftp://x'", "http://, https:// or file://"], mirror="ftp://x"),
        ZooCase("mirror-not-a-url", None, ["--mirror 'not a url'"], mirror="not a url"),
        ZooCase("mirror-no-host", None, ["--mirror 'http://'"], mirror="http://"),
        ZooCase("mirror-bad-port", None, ["--mirror", "not a URL"], mirror="http://127.0.0.1:eighty/"),
        ZooCase("mirror-newline", None, ["--mirror", "\\n"], mirror="http://127.0.0.1/\nHost: x"),
        ZooCase("mirror-file-missing", None, ["www/dds_baselines", "no such file"], mirror="file://{folder}/www"),
        ZooCase("mirror-file-fifo", None, [DOWNLOAD, "is a FIFO"], fifo(f"www/{ZOO_PATH}"), "file://{folder}/www"),
        ZooCase(
            "mirror-closed-port", None, ["http://127.0.0.1:", "download failed"], mirror="http://127.0.0.1:{closed}"
        ),
        ZooCase("stall-timeout-zero", "ok", ["--stall-timeout", "0.0"], extra=["--stall-timeout", "0"], requests=0),
        ZooCase("stall-timeout-nan", "ok", ["--stall-timeout", "nan"], extra=["--stall-timeout", "nan"], requests=0),
    ]


def server_cases() -> list[ZooCase]:
    removed = [DOWNLOAD, "the download was removed, run again"]
    slow = ["--stall-timeout", "2"]
    return [
        ZooCase("http-404", "404", ["HTTP 404", DOWNLOAD]),
        ZooCase("http-500", "500", ["HTTP 500", DOWNLOAD]),
        ZooCase("redirect-loop", "redirect-loop", ["HTTP 302", "infinite loop"]),
        ZooCase("redirect-to-ftp", "redirect-ftp", ["redirects to 'ftp://127.0.0.1:1/", "only http:// and https://"]),
        ZooCase("bad-status-line", "bad-status-line", ["not an HTTP answer (BadStatusLine", DOWNLOAD]),
        ZooCase("content-length-abc", "length-abc", ["invalid Content-Length header 'abc'"]),
        ZooCase("content-length-negative", "length-negative", ["invalid Content-Length header '-5'"]),
        ZooCase("content-length-huge", "length-huge", ["announces 1,000,000,000,000 bytes, more than"]),
        ZooCase(
            "byte-every-second",
            "drip",
            ["stalled", "2 s", "run again to resume"],
            extra=slow,
            leaves={PART: None},
            seconds=15,
        ),
        ZooCase("headers-then-silence", "silent-body", ["stalled", "run again"], extra=slow, seconds=15),
        ZooCase("no-answer", "mute", ["no answer within 2 s"], extra=slow, seconds=15),
        ZooCase("endless-body", "endless", ["more than", "largest size allowed", "partial download was removed"]),
        ZooCase(
            "endless-resumed-body",
            "endless-resume",
            ["more than", "announced size", "removed"],
            first_bytes,
            removes=[PART],
        ),
        ZooCase(
            "body-shorter-than-announced",
            "shorter-than-announced",
            ["interrupted at", "run again to resume"],
            leaves={PART: 100_000},
        ),
        ZooCase("body-longer-than-announced", "longer-than-announced", removed),
        ZooCase("corrupted-bytes", "corrupt", removed),
        ZooCase("random-bytes", "garbage", removed),
        ZooCase("html-page", "html", removed),
        ZooCase("empty-body", "empty", ["empty file", "another --mirror"]),
        ZooCase("resumed-at-wrong-offset", "wrong-range", ["resumed at byte 0, not 1000"], first_bytes),
        ZooCase(
            "416-for-everything",
            "416-always",
            ["HTTP 416", "another --mirror"],
            first_bytes,
            removes=[PART],
            requests=2,
        ),
        ZooCase(
            "complete-part-of-garbage",
            "416-total",
            removed,
            write(PART, lambda s: bytes(len(s.data))),
            removes=[PART],
            requests=1,
        ),
        ZooCase("part-is-a-directory", "ok", [f"{DOWNLOAD}.part: is a directory"], make_dir(PART), requests=0),
        ZooCase("download-is-a-directory", "ok", [f"{DOWNLOAD}: is a directory"], make_dir(CACHED), requests=0),
        # a link would have the download written through it (the linked file overwritten) or trusted as the first
        ZooCase("part-is-a-link-out", "ok", [f"{DOWNLOAD}.part: is a symbolic link"], link_outside(PART), requests=0),
        ZooCase("download-is-a-link-out", "ok", [f"{DOWNLOAD}: is a symbolic link"], link_outside(CACHED), requests=0),
        ZooCase(
            "cached-download-is-garbage",
            "ok",
            removed,
            write(CACHED, lambda s: s.data[:5000]),
            removes=[CACHED],
            requests=0,
        ),
    ]


def folder_cases() -> list[ZooCase]:
    garbage = ["exists but is not a valid converted regnetx_200mf", "use --force to replace it"]
    return [
        ZooCase(
            "cache-is-a-file",
            "ok",
            ["REGNET_CACHE", "is not a folder"],
            write("cachefile", lambda s: b"x"),
            env={"REGNET_CACHE": "{folder}/cachefile"},
            requests=0,
        ),
        ZooCase(
            "cache-under-a-file",
            "ok",
            ["REGNET_CACHE", "cannot be created"],
            write("cachefile", lambda s: b"x"),
            env={"REGNET_CACHE": "{folder}/cachefile/sub"},
            requests=0,
        ),
        ZooCase(
            "checkpoints-missing",
            "ok",
            ["REGNET_CHECKPOINTS", "missing: does not exist"],
            cached,
            env={"REGNET_CHECKPOINTS": "{folder}/missing"},
            requests=0,
        ),
        ZooCase(
            "checkpoints-is-a-file",
            "ok",
            ["REGNET_CHECKPOINTS", "is not a folder"],
            both(cached, write("notes", lambda s: b"x")),
            env={"REGNET_CHECKPOINTS": "{folder}/notes"},
            requests=0,
        ),
        ZooCase("output-is-a-directory", "ok", [OUTPUT, "is a directory"], both(cached, make_dir(OUTPUT)), requests=0),
        ZooCase("output-is-a-fifo", "ok", [OUTPUT, "is a FIFO"], both(cached, fifo(OUTPUT)), requests=0),
        ZooCase("output-is-garbage", "ok", [OUTPUT, *garbage], write(OUTPUT, lambda s: b"not weights"), requests=0),
        ZooCase(
            "output-is-truncated", "ok", [OUTPUT, *garbage], write(OUTPUT, lambda s: s.converted[:-100]), requests=0
        ),
        ZooCase(
            "output-is-another-model",
            "ok",
            ["regnetx_400mf.safetensors", "holds regnetx_200mf", "--force"],
            write("checkpoints/regnetx_400mf.safetensors", lambda s: s.converted),
            model="regnetx_400mf",
            requests=0,
        ),
        ZooCase(
            "all-stops-at-garbage-output",
            "ok",
            [OUTPUT, *garbage],
            write(OUTPUT, lambda s: bytes(64)),
            extra=["--all"],
            requests=0,
        ),
    ]


ALL_CASES = mirror_cases() + server_cases() + folder_cases()


def argv(case: ZooCase, base: str, folder: Path) -> list[str]:
    mirror = f"{base}/{case.id}/{case.behaviour}/" if case.behaviour else case.mirror
    assert mirror is not None
    mirror = mirror.format(folder=folder, closed=unused_port())
    models = [] if "--all" in case.extra else [case.model]
    return ["zoo", "fetch", *models, "--mirror", mirror, "-q", *case.extra]


def environment(folder: Path, extra: dict[str, str]) -> dict[str, str]:
    """The case's folders: checkpoints/ and cache/ in its folder, HOME beside them."""
    env = {"REGNET_CHECKPOINTS": "{folder}/checkpoints", "REGNET_CACHE": "{folder}/cache", "HOME": "{folder}/home"}
    return {k: v.format(folder=folder) for k, v in {**env, **extra}.items()}


def run_case(zygote: Zygote, case: ZooCase, base: str, served: Served, folder: Path) -> tuple[Outcome, dict, dict]:
    """Set up, run and snapshot one case."""
    (folder / "checkpoints").mkdir(parents=True)
    case.setup(folder, served)
    before = snapshot(folder)
    outcome = zygote.run(CONVERT, argv(case, base, folder), folder, environment(folder, case.env), case.seconds)
    return outcome, before, snapshot(folder)


def check_zoo_refusal(case: ZooCase, outcome: Outcome, before: dict, after: dict, folder: Path) -> None:
    """`check_refusal`, except for the files the case leaves or removes by design."""
    assert all(name in before for name in case.removes), case.removes
    expected = {k: v for k, v in before.items() if k not in case.removes}
    check_refusal(outcome, expected, {k: v for k, v in after.items() if k not in case.leaves}, 2, case.says)
    for name, size in case.leaves.items():
        assert name in after and name not in before, f"{name} should be left (and new)"
        actual = (folder / name).stat().st_size
        assert actual > 0 if size is None else actual == size, (name, actual, size)


def test_suite_is_large_enough():
    assert len(ALL_CASES) >= 25 and len({case.id for case in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_refused(case: ZooCase, server, served: Served, zoo_zygote: Zygote, tmp_path: Path):
    base, handler = server
    folder = tmp_path / "case"
    outcome, before, after = run_case(zoo_zygote, case, base, served, folder)
    check_zoo_refusal(case, outcome, before, after, folder)
    if case.requests is not None:
        assert len(handler.requests.get(case.id, [])) == case.requests, handler.requests.get(case.id)


# ---- what must work: resumes the server refuses, junk after the body, default folders, --force, list ------


@dataclass
class Recovery:
    """A fetch that must succeed: the converted file lands in `output`; it and the download are all that remain."""

    id: str
    behaviour: str
    setup: Setup = nothing
    ranges: list[str | None] = field(default_factory=lambda: [None])  # the Range headers asked ({size}: the file's)
    env: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    output: str = OUTPUT
    cache: str = CACHED
    says: str = ""


RECOVERIES = [
    Recovery("resume", "ok", first_bytes, ["bytes=1000-"]),
    Recovery("complete-part-416", "416-total", write(PART, lambda s: s.data), ["bytes={size}-"]),
    Recovery("part-416-without-content-range", "416-bare", first_bytes, ["bytes=1000-", None]),
    Recovery("part-416-other-total", "416-other-total", first_bytes, ["bytes=1000-", None]),
    Recovery("junk-after-announced-body", "junk-after-announced"),
    Recovery("force-replaces-garbage-output", "ok", write(OUTPUT, lambda s: b"garbage"), extra=["--force"]),
    Recovery("already-converted", "ok", write(OUTPUT, lambda s: s.converted), [], says="already converted"),
    Recovery("current-checkpoints-folder", "ok", env={"REGNET_CHECKPOINTS": ""}),
    Recovery(
        "per-user-folders",
        "ok",
        lambda folder, _s: (folder / "checkpoints").rmdir(),
        env={"REGNET_CHECKPOINTS": "", "REGNET_CACHE": ""},
        output="home/.cache/regnet-convert/checkpoints/regnetx_200mf.safetensors",
        cache=f"home/.cache/regnet-convert/{DOWNLOAD}",
    ),
]


@pytest.mark.parametrize("case", RECOVERIES, ids=lambda case: case.id)
def test_recovers(case: Recovery, server, served: Served, zoo_zygote: Zygote, tmp_path: Path):
    base, handler = server
    folder = tmp_path / "case"
    (folder / "checkpoints").mkdir(parents=True)
    case.setup(folder, served)
    argv = ["zoo", "fetch", "regnetx_200mf", "--mirror", f"{base}/{case.id}/{case.behaviour}/", *case.extra]
    outcome = zoo_zygote.run(CONVERT, argv, folder, environment(folder, case.env), 30)
    assert outcome.code == 0 and not outcome.stderr, outcome.stderr
    output = folder / case.output
    assert outcome.stdout.startswith("regnetx_200mf: ") and str(case.output) in outcome.stdout
    assert (
        case.says in outcome.stdout and read_metadata(output).source_sha256 == hashlib.sha256(served.data).hexdigest()
    )
    ranges = [r.format(size=len(served.data)) if r else r for r in case.ranges]
    assert handler.requests.get(case.id, []) == ranges
    expected = {case.cache: served.data} if case.ranges else {}
    expected[case.output] = None
    if case.ranges:  # a first download of a pycls file (no published hash) is recorded beside the converted files
        expected[str(Path(case.output).parent / "downloads.json")] = None
    files = snapshot(folder)
    assert set(files) == set(expected), files  # no .part, no temporary file, no other download
    for name, content in expected.items():
        assert content is None or (folder / name).read_bytes() == content


@pytest.mark.parametrize(
    "checkpoints, setup, column",
    [
        ("a-file", write("a-file", lambda s: b"x"), "no"),
        ("missing", nothing, "no"),
        ("without-manifest", make_dir("without-manifest"), "no"),
        ("checkpoints", write(OUTPUT, lambda s: b"garbage"), "invalid"),
        ("checkpoints", write(OUTPUT, lambda s: s.converted), "yes"),
    ],
    ids=["file", "missing", "no-manifest", "garbage-output", "converted"],
)
def test_list_never_crashes(checkpoints, setup, column, served, zoo_zygote: Zygote, tmp_path: Path):
    folder = tmp_path / "case"
    folder.mkdir()
    setup(folder, served)
    before = snapshot(folder)
    env = environment(folder, {"REGNET_CHECKPOINTS": f"{{folder}}/{checkpoints}"})
    outcome = zoo_zygote.run(CONVERT, ["zoo", "list"], folder, env, 30)
    assert outcome.code == 0 and not outcome.stderr, outcome.stderr
    seed, pycls = outcome.stdout.split("\n\n")
    rows = seed.splitlines()[2:] + pycls.splitlines()[2:]
    assert len(rows) == 16 + 24 and next(r for r in rows if r.startswith("regnetx_200mf.pycls_in1k ")).endswith(
        f"  {column}"
    )
    assert all(r.endswith("  no") for r in rows if not r.startswith("regnetx_200mf.pycls_in1k "))
    assert snapshot(folder) == before
