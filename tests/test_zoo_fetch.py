"""`regnet-convert zoo`: list, and fetch from a local HTTP server (success, resume, 404, corruption)."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import probe_input
from pycls_oracle import build, randomize, save_genuine_checkpoint

import regnet
from regnet_convert.cli_convert import main
from regnet_convert.manifest import checkpoints_dir

ZOO_PATH = "dds_baselines/160905981/RegNetX-200MF_dds_8gpu.pyth"


class ZooServer(http.server.BaseHTTPRequestHandler):
    """Serves files under `root`, honouring Range; can cut the first response short or corrupt bytes."""

    root: Path
    cut_after: int | None = None
    corrupt = False
    ranges: ClassVar[list[str]] = []

    def do_GET(self) -> None:
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
        if self.cut_after is not None:
            self.wfile.write(data[start : start + self.cut_after])
            type(self).cut_after = None  # only the first response is cut
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A served zoo holding one genuine pycls file, and empty checkpoints/cache folders."""
    reference = randomize(build("regnetx_200mf"), seed=12)
    served = tmp_path / "www" / ZOO_PATH
    served.parent.mkdir(parents=True)
    shutil.move(save_genuine_checkpoint(reference, tmp_path / "train"), served)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    shutil.copy(checkpoints_dir() / "zoo.json", checkpoints / "zoo.json")
    monkeypatch.setenv("REGNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("REGNET_CACHE", str(tmp_path / "cache"))
    handler = type("Handler", (ZooServer,), {"root": tmp_path / "www", "ranges": []})
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


def fetch(runner, zoo, *names):
    return runner.invoke(main, ["zoo", "fetch", *names, "--mirror", zoo["mirror"], "--quiet"])


def test_fetch_downloads_converts_and_lists(runner, zoo):
    result = fetch(runner, zoo, "RegNetX-200MF")
    assert result.exit_code == 0, result.output
    converted = regnet.load(zoo["checkpoints"] / "regnetx_200mf.safetensors")
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(converted(x), zoo["reference"](x))
    assert sorted(p.name for p in zoo["cache"].iterdir()) == ["RegNetX-200MF_dds_8gpu.pyth"]
    listing = runner.invoke(main, ["zoo", "list"]).output.splitlines()
    assert len(listing) == 25
    assert next(line for line in listing if line.startswith("regnetx_200mf")).endswith("yes")
    row = next(line for line in listing if line.startswith("regnetx_4.0gf"))
    assert "22.12M" in row and "78.72/94.22" in row and row.endswith("no")  # seed table numbers
    again = fetch(runner, zoo, "regnetx_200mf")
    assert again.exit_code == 0 and "already converted" in again.output


def test_interrupted_download_resumes(runner, zoo):
    zoo["handler"].cut_after = 100_000
    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 1 and "interrupted at 100000" in result.stderr and "resume" in result.stderr
    part = zoo["cache"] / "RegNetX-200MF_dds_8gpu.pyth.part"
    assert part.stat().st_size == 100_000
    assert not (zoo["cache"] / "RegNetX-200MF_dds_8gpu.pyth").exists()
    assert not (zoo["checkpoints"] / "regnetx_200mf.safetensors").exists()

    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 0, result.output
    assert zoo["handler"].ranges == ["bytes=100000-"]
    downloaded = (zoo["cache"] / "RegNetX-200MF_dds_8gpu.pyth").read_bytes()
    assert downloaded == zoo["served"].read_bytes() and not part.exists()
    assert (zoo["checkpoints"] / "regnetx_200mf.safetensors").exists()


def test_missing_file_404(runner, zoo):
    result = fetch(runner, zoo, "regnety_200mf")
    assert result.exit_code == 1 and "HTTP 404" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not zoo["cache"].exists() or not list(zoo["cache"].iterdir())
    assert sorted(p.name for p in zoo["checkpoints"].iterdir()) == ["zoo.json"]


def test_corrupted_download_with_known_sha256(runner, zoo):
    manifest = json.loads((zoo["checkpoints"] / "zoo.json").read_text())
    entry = next(m for m in manifest["models"] if m["name"] == "regnetx_200mf")
    entry["sha256"] = hashlib.sha256(zoo["served"].read_bytes()).hexdigest()
    entry["size"] = zoo["served"].stat().st_size
    (zoo["checkpoints"] / "zoo.json").write_text(json.dumps(manifest))
    zoo["handler"].corrupt = True
    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 1 and "corrupted download: sha256" in result.stderr
    assert not list(zoo["cache"].iterdir())
    assert sorted(p.name for p in zoo["checkpoints"].iterdir()) == ["zoo.json"]


def test_corrupted_download_without_checksum_is_caught_by_conversion(runner, zoo):
    zoo["handler"].corrupt = True
    result = fetch(runner, zoo, "regnetx_200mf")
    assert result.exit_code == 1 and "RegNetX-200MF_dds_8gpu.pyth" in result.stderr
    assert not list(zoo["cache"].iterdir())  # the bad file is not kept for reuse
    assert sorted(p.name for p in zoo["checkpoints"].iterdir()) == ["zoo.json"]


def test_fetch_needs_names(runner):
    assert runner.invoke(main, ["zoo", "fetch"]).exit_code == 2
    assert "unknown model" in runner.invoke(main, ["zoo", "fetch", "regnetq_1gf"]).output
