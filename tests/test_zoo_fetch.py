"""`regnet-convert zoo`: list, and fetch from a local HTTP server (success, resume, 404, corruption, output-side
failures that keep the download, complete and oversized `.part` files, the per-user folder, SIGTERM)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from helpers import probe_input
from pycls_oracle import build, randomize, save_genuine_checkpoint
from zoo_manifest import overridden

import regnet
from regnet.zoo import zoo_weights
from regnet_convert.cli.convert import main
from regnet_convert.errors import InputError
from regnet_convert.zoo import fetch as zoo_fetch
from regnet_convert.zoo.download import download

ZOO_PATH = "dds_baselines/160905981/RegNetX-200MF_dds_8gpu.pyth"
DOWNLOAD = "RegNetX-200MF_dds_8gpu.pyth"


class ZooServer(http.server.BaseHTTPRequestHandler):
    """Serves files under `root`, honouring Range; can cut the first response short, drip or corrupt bytes."""

    root: Path
    cut_after: int | None = None
    corrupt = False
    drip = False  # one byte per 0.2 s
    ranges: ClassVar[list[str]] = []
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        if self.corrupt:
            data = data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:]
        start = 0
        if header := self.headers.get("Range"):
            type(self).ranges.append(header)
            start = int(header.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.drip:
            self.drip_body(data[start:])
            return
        if self.cut_after is not None:
            self.wfile.write(data[start : start + self.cut_after])
            type(self).cut_after = None  # only the first response is cut
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def drip_body(self, data: bytes) -> None:
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A pycls RegNetX-200MF with random weights and its checkpoint, written by pycls once for the module."""
    reference = randomize(build("regnetx_200mf"), seed=12)
    return reference, save_genuine_checkpoint(reference, tmp_path_factory.mktemp("train"))


@pytest.fixture
def zoo(tmp_path, monkeypatch, genuine):
    """A served zoo holding one genuine pycls file (a fresh copy), and empty checkpoints/cache folders."""
    reference, checkpoint = genuine
    served = tmp_path / "www" / ZOO_PATH
    served.parent.mkdir(parents=True)
    shutil.copy(checkpoint, served)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    monkeypatch.setenv("REGNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("REGNET_CACHE", str(tmp_path / "cache"))
    handler = type("Handler", (ZooServer,), {"root": tmp_path / "www", "ranges": [], "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        "reference": reference,
        "served": served,
        "checkpoints": checkpoints,
        "cache": tmp_path / "cache",
        "mirror": f"http://127.0.0.1:{server.server_address[1]}/",
        "handler": handler,
    }
    server.shutdown()


def fetch(runner, zoo, *args):
    return runner.invoke(main, ["zoo", "fetch", *args, "--mirror", zoo["mirror"], "--quiet"])


def one_error_line(result) -> str:
    """The refusal contract in-process: exit 2 and one `error: ` line."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def known_size(zoo):
    """The manifest entry of regnetx_200mf's file with the served file's size and sha256 recorded."""
    served = zoo["served"].read_bytes()
    with overridden({DOWNLOAD: {"size": len(served), "sha256": hashlib.sha256(served).hexdigest()}}):
        yield zoo_weights()["regnetx_200mf.pycls_in1k"].primary_file


def listed(output: str) -> tuple[dict[str, str], dict[str, str]]:
    """`zoo list`'s two sections: seed rows by row name and pycls's models by weights, each a whole line."""
    seed, pycls = output.split("\n\n")
    rows = seed.splitlines()[2:]
    models = pycls.splitlines()[2:]
    assert len(rows) == 16 and len(models) == 24, output
    return {r.split()[0]: r for r in rows}, {m.split()[0]: m for m in models}


def test_fetch_downloads_converts_and_lists(runner, zoo):
    result = fetch(runner, zoo, "RegNetX-200MF")
    assert result.exit_code == 0, result.output
    output = zoo["checkpoints"] / "regnetx_200mf.safetensors"
    assert result.stdout == f"regnetx_200mf: {output}\n"  # where it went, even with --quiet
    converted = regnet.load(output)
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(converted(x), zoo["reference"](x))
    assert sorted(p.name for p in zoo["cache"].iterdir()) == [DOWNLOAD]
    rows, models = listed(runner.invoke(main, ["zoo", "list"]).output)
    recorded = hashlib.sha256(zoo["served"].read_bytes()).hexdigest()
    mine = models["regnetx_200mf.pycls_in1k"]
    assert f"sha256 {recorded[:12]}" in mine and mine.endswith("yes")
    model = models["regnetx_4.0gf.pycls_in1k"]
    assert "22.12M" in model and "78.64/94.26" in model and model.split()[-3:] == ["RegNetX-4.0GF*", "-", "no"]
    assert rows["RegNetX-4.0GF*"].split() == [
        "RegNetX-4.0GF*", "22.12", "4.00", "78.72", "94.22", "regnetx_4.0gf.pycls_in1k",
        "convert/RegNetX-4.0GF-ef8bb32c.pth", "no",
    ]  # fmt: skip  # the seed table's numbers and file
    assert rows["RegNetX-4.0GF"].split()[3:] == [
        "78.60", "94.17", "regnetx_4.0gf.mmcls_in1k", "regnetx-4.0gf_8xb64_in1k_20211213-efed675c.pth", "no"
    ]  # fmt: skip
    again = fetch(runner, zoo, "regnetx_200mf")
    assert again.exit_code == 0 and "already converted" in again.output
    assert zoo["handler"].requests == [f"/{ZOO_PATH}"]  # the second fetch asked for nothing


def test_interrupted_download_resumes(runner, zoo):
    zoo["handler"].cut_after = 100_000
    result = fetch(runner, zoo, "regnetx_200mf")
    line = one_error_line(result)
    assert "interrupted at 100000" in line and "resume" in line
    part = zoo["cache"] / f"{DOWNLOAD}.part"
    assert part.stat().st_size == 100_000
    assert not (zoo["cache"] / DOWNLOAD).exists()
    assert not (zoo["checkpoints"] / "regnetx_200mf.safetensors").exists()

    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 0, result.output
    assert zoo["handler"].ranges == ["bytes=100000-"]
    downloaded = (zoo["cache"] / DOWNLOAD).read_bytes()
    assert downloaded == zoo["served"].read_bytes() and not part.exists()
    assert (zoo["checkpoints"] / "regnetx_200mf.safetensors").exists()


def test_missing_file_404(runner, zoo):
    line = one_error_line(fetch(runner, zoo, "regnety_200mf"))
    assert "HTTP 404" in line and "RegNetY-200MF" in line
    assert not zoo["cache"].exists() or not list(zoo["cache"].iterdir())
    assert not list(zoo["checkpoints"].iterdir())


def test_corrupted_download_with_known_sha256(runner, zoo, known_size):
    zoo["handler"].corrupt = True
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert "not the expected file: sha256" in line and "the manifest says" in line and "removed" in line
    assert not list(zoo["cache"].iterdir())
    assert not list(zoo["checkpoints"].iterdir())


def test_corrupted_download_without_checksum_is_caught_by_conversion(runner, zoo):
    zoo["handler"].corrupt = True
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert DOWNLOAD in line and "the download was removed" in line
    assert not list(zoo["cache"].iterdir())  # the bad file is not kept for reuse
    assert not list(zoo["checkpoints"].iterdir())


def test_output_failure_during_conversion_keeps_the_download(runner, zoo, monkeypatch):
    def disk_full(output, *args, **kwargs):
        raise InputError(output, "writing failed (No space left on device); nothing was written")

    with monkeypatch.context() as patch:
        patch.setattr("regnet_convert.conversion.pipeline.write_converted", disk_full)
        line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert "regnetx_200mf.safetensors: writing failed" in line
    assert (zoo["cache"] / DOWNLOAD).read_bytes() == zoo["served"].read_bytes()  # 1.2 GB need not come again
    assert fetch(runner, zoo, "regnetx_200mf").exit_code == 0
    assert zoo["handler"].requests == [f"/{ZOO_PATH}"]


def test_output_checked_before_downloading(runner, zoo, monkeypatch):
    monkeypatch.setenv("REGNET_CHECKPOINTS", str(zoo["checkpoints"] / "missing"))
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert "REGNET_CHECKPOINTS" in line and "missing: does not exist" in line
    assert zoo["handler"].requests == []


def test_unwritable_cache_is_refused_before_downloading(runner, zoo, monkeypatch):
    monkeypatch.setattr(zoo_fetch.os, "access", lambda path, mode: Path(path) != zoo["cache"])  # as root, chmod can't
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert f"REGNET_CACHE {zoo['cache']}: cannot be written (permission denied)" in line
    assert zoo["handler"].requests == []


def test_complete_part_of_known_size_is_verified_without_a_request(runner, zoo, known_size):
    part = zoo["cache"] / f"{DOWNLOAD}.part"
    part.parent.mkdir()
    shutil.copy(zoo["served"], part)
    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 0, result.output
    assert zoo["handler"].requests == [] and not part.exists()
    assert (zoo["cache"] / DOWNLOAD).read_bytes() == zoo["served"].read_bytes()


def test_oversized_part_is_discarded_and_the_download_restarts(runner, zoo, known_size):
    part = zoo["cache"] / f"{DOWNLOAD}.part"
    part.parent.mkdir()
    part.write_bytes(zoo["served"].read_bytes() + b"trailing garbage")
    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 0, result.output
    assert zoo["handler"].ranges == [] and zoo["handler"].requests == [f"/{ZOO_PATH}"]
    assert (zoo["cache"] / DOWNLOAD).read_bytes() == zoo["served"].read_bytes()


def test_complete_part_of_unknown_size_is_recognised_from_416(runner, zoo):
    class Refusing(zoo["handler"]):
        def do_GET(self) -> None:
            type(self).requests.append(self.path)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{self.root.joinpath(ZOO_PATH).stat().st_size}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    part = zoo["cache"] / f"{DOWNLOAD}.part"
    part.parent.mkdir()
    shutil.copy(zoo["served"], part)
    mirror = f"http://127.0.0.1:{server.server_address[1]}/"
    result = runner.invoke(main, ["zoo", "fetch", "regnetx_200mf", "--mirror", mirror, "-q"])
    server.shutdown()
    assert result.exit_code == 0, result.output
    assert Refusing.requests == [f"/{ZOO_PATH}"] and not part.exists()
    assert (zoo["checkpoints"] / "regnetx_200mf.safetensors").exists()


def test_size_limit_without_any_announced_size(tmp_path, zoo):
    destination = tmp_path / "file.pyth"
    url = f"file://{zoo['served']}"  # a file:// response announces its size: a tight max_size still applies
    with pytest.raises(InputError, match=r"announces .* more than the 1,000 allowed"):
        download(url, destination, quiet=True, max_size=1000)
    assert not list(tmp_path.glob("file.pyth*"))


def test_default_per_user_folder_is_created(runner, zoo, tmp_path, monkeypatch):
    monkeypatch.delenv("REGNET_CHECKPOINTS")
    monkeypatch.delenv("REGNET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "www")  # no ./checkpoints here
    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 0, result.output
    output = tmp_path / "home/.cache/regnet-convert/checkpoints/regnetx_200mf.safetensors"
    assert result.stdout == f"regnetx_200mf: {output}\n" and regnet.read_metadata(output).model == "regnetx_200mf"
    assert (tmp_path / "home/.cache/regnet-convert" / DOWNLOAD).exists()


def test_sigterm_during_download_leaves_only_the_part(zoo, tmp_path):
    zoo["handler"].drip = True
    command = [sys.executable, "-m", "regnet_convert.cli.convert", "zoo", "fetch", "regnetx_200mf"]
    child = subprocess.Popen(
        [*command, "--mirror", zoo["mirror"], "-q"], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    part = zoo["cache"] / f"{DOWNLOAD}.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 128 + signal.SIGTERM and "terminated by SIGTERM" in stderr, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in zoo["cache"].iterdir()) == [f"{DOWNLOAD}.part"]
    assert part.stat().st_size > 0 and not list(zoo["checkpoints"].iterdir())


def test_list_without_a_usable_checkpoints_folder(runner, zoo, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    for folder in [tmp_path / "a-file", tmp_path / "missing", tmp_path / "www"]:
        monkeypatch.setenv("REGNET_CHECKPOINTS", str(folder))
        result = runner.invoke(main, ["zoo", "list"])
        assert result.exit_code == 0 and not result.stderr, result.output
        rows, models = listed(result.stdout)
        assert all(line.endswith("no") for line in [*rows.values(), *models.values()])


def test_list_marks_an_unreadable_folder(runner, zoo, monkeypatch):
    def denied(self) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "is_file", denied)
    result = runner.invoke(main, ["zoo", "list"])
    rows, models = listed(result.stdout)
    assert result.exit_code == 0 and all(line.endswith("?") for line in [*rows.values(), *models.values()])


def test_fetch_needs_names(runner):
    assert runner.invoke(main, ["zoo", "fetch"]).exit_code == 2
    assert "unknown model" in runner.invoke(main, ["zoo", "fetch", "regnetq_1gf"]).output


def first_fetch(runner, zoo) -> tuple[Path, bytes]:
    """A first download, converted and recorded; returns the record and its bytes."""
    assert fetch(runner, zoo, "regnetx_200mf").exit_code == 0
    record = zoo["checkpoints"] / "downloads.json"
    entry = json.loads(record.read_text())["files"][DOWNLOAD]
    served = zoo["served"].read_bytes()
    assert entry["size"] == len(served) and entry["sha256"] == hashlib.sha256(served).hexdigest()
    return record, record.read_bytes()


def test_a_later_download_that_differs_from_the_first_is_refused(runner, zoo):
    record, recorded = first_fetch(runner, zoo)
    (zoo["checkpoints"] / "regnetx_200mf.safetensors").unlink()
    (zoo["cache"] / DOWNLOAD).unlink()
    zoo["handler"].corrupt = True  # a tampered mirror: same name, same size, other bytes
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert "not the expected file: sha256" in line and "the first download" in line and "downloads.json" in line
    assert not list(zoo["cache"].iterdir())  # nothing kept
    assert sorted(p.name for p in zoo["checkpoints"].iterdir()) == ["downloads.json"]
    assert record.read_bytes() == recorded  # the record is never rewritten by a refused download


def test_a_tampered_cached_copy_is_refused_and_removed(runner, zoo):
    record, recorded = first_fetch(runner, zoo)
    (zoo["checkpoints"] / "regnetx_200mf.safetensors").unlink()
    cached = zoo["cache"] / DOWNLOAD
    data = bytearray(cached.read_bytes())
    data[-5] ^= 0xFF
    cached.write_bytes(bytes(data))
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert "not the expected file" in line and str(cached) in line
    assert not cached.exists() and record.read_bytes() == recorded
    assert fetch(runner, zoo, "regnetx_200mf").exit_code == 0  # the genuine file, fetched anew, matches the record


def test_a_matching_second_download_is_accepted(runner, zoo):
    record, recorded = first_fetch(runner, zoo)
    (zoo["checkpoints"] / "regnetx_200mf.safetensors").unlink()
    (zoo["cache"] / DOWNLOAD).unlink()
    assert fetch(runner, zoo, "regnetx_200mf").exit_code == 0
    assert record.read_bytes() == recorded


GOOD_SHA = "ab" * 32
DAMAGED_RECORDS = {
    "not-json": b"{not json",
    "not-utf8": b"\xff\xfe{}",
    "other-format": json.dumps({"format": "something-else", "files": {}}).encode(),
    "extra-key": json.dumps({"format": "regnet-convert-downloads", "files": {}, "trust": True}).encode(),
    "files-a-list": json.dumps({"format": "regnet-convert-downloads", "files": []}).encode(),
    "short-sha": json.dumps({"format": "regnet-convert-downloads", "files": {DOWNLOAD: {
        "size": 10, "sha256": "abc", "first_downloaded": ""}}}).encode(),
    "size-a-string": json.dumps({"format": "regnet-convert-downloads", "files": {DOWNLOAD: {
        "size": "10", "sha256": GOOD_SHA, "first_downloaded": ""}}}).encode(),
    "size-a-bool": json.dumps({"format": "regnet-convert-downloads", "files": {DOWNLOAD: {
        "size": True, "sha256": GOOD_SHA, "first_downloaded": ""}}}).encode(),
    "path-as-name": json.dumps({"format": "regnet-convert-downloads", "files": {"../../etc/passwd": {
        "size": 10, "sha256": GOOD_SHA, "first_downloaded": ""}}}).encode(),
    "huge": b'{"format": "regnet-convert-downloads", "files": {}}' + b" " * (2 << 20),
}  # fmt: skip


@pytest.mark.parametrize("content", DAMAGED_RECORDS.values(), ids=DAMAGED_RECORDS.keys())
def test_a_damaged_record_is_refused_before_anything_is_fetched(runner, zoo, content):
    record = zoo["checkpoints"] / "downloads.json"
    record.write_bytes(content)
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert str(record) in line and "not trusted" in line
    assert zoo["handler"].requests == [] and record.read_bytes() == content
    assert sorted(p.name for p in zoo["checkpoints"].iterdir()) == ["downloads.json"]
    listed = runner.invoke(main, ["zoo", "list"])
    assert one_error_line(listed) == line


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_a_record_that_is_not_a_regular_file_is_refused_without_blocking(runner, zoo, kind):
    record = zoo["checkpoints"] / "downloads.json"
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "folder":
        record.mkdir()
    else:
        (zoo["checkpoints"] / "elsewhere.json").write_text('{"format": "regnet-convert-downloads", "files": {}}')
        record.symlink_to("elsewhere.json")
    line = one_error_line(fetch(runner, zoo, "regnetx_200mf"))
    assert "downloads.json" in line and "not trusted" in line and zoo["handler"].requests == []
