"""Every zoo model once per test run: a genuine pycls 0.1.1 checkpoint with random weights and BN statistics,
converted by `regnet-convert pycls --model NAME`, and pycls's own logits on the probe batch.

The files that check a library against pycls (timm, torchvision, transformers, mmcls, ONNX, the zoo equivalence)
share these instead of each building, saving and converting all 24 models again. The store is a folder that all
pytest-xdist workers of a run see; a model is built under a file lock by whichever worker asks first, into a
temporary folder renamed into place, and read by the others; a worker that finds a model being built builds
the next ones nobody has started meanwhile (so no core sits waiting). pycls's logits are computed on one thread,
as the test modules that compare with them bit for bit run (the `one_thread` fixture). The controller process
removes the store when the run ends (`conftest.pytest_sessionfinish`).
"""

from __future__ import annotations

import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from click.testing import CliRunner
from filelock import FileLock, Timeout
from helpers import one_torch_thread, probe_input
from pycls_oracle import build_random, save_genuine_checkpoint

import regnet
from regnet_convert.cli.convert import main as convert_main

STORE = "zoo-sources"  # the store's folder name, beside the workers' own temporary folders
ZOO_ORDER = list(regnet.ZOO)  # the order the suites ask for the models in


@dataclass(frozen=True)
class ZooSource:
    """One zoo model's converted file and what pycls computed on `probe_input()` from the same checkpoint."""

    name: str
    native: Path  # `regnet-convert pycls` output: shared, read it, never write it
    conversion: tuple[int, str]  # that command's exit code and output (`--quiet`: none)
    logits: torch.Tensor  # pycls, float32, on probe_input()
    logits64: torch.Tensor  # pycls in float64 on probe_input().double()


class ZooSources:
    """`sources(name)`: the model's ZooSource, built on first use in this run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)

    def __call__(self, name: str) -> ZooSource:
        done = self.folder / name
        while not self._built(name):  # another worker builds it: build a model after it meanwhile
            if not self._build_one_after(name):
                with FileLock(self._lock(name)):  # nothing left to build: wait for it
                    pass
        record = torch.load(done / "record.pt", weights_only=True)
        return ZooSource(name, done / f"{name}.safetensors", record["conversion"], record["logits"], record["logits64"])

    def _lock(self, name: str) -> str:
        return str(self.folder / f"{name}.lock")

    def _has(self, name: str) -> bool:
        return (self.folder / name).is_dir()

    def _build_one_after(self, name: str) -> bool:
        """Build the first model after `name` (zoo order) that nobody has built or started; False if none is left."""
        later = ZOO_ORDER[ZOO_ORDER.index(name) + 1 :]
        return any(self._built(other) for other in later if not self._has(other))

    def _built(self, name: str) -> bool:
        """True when `name` is in the store, built now by this worker if need be; False while another builds it."""
        try:
            with FileLock(self._lock(name), timeout=0):
                if not self._has(name):
                    self._build(name, self.folder / name)
        except Timeout:
            return False
        return True

    @staticmethod
    def _build(name: str, done: Path) -> None:
        staging = done.with_name(f".{name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        with one_torch_thread():
            reference = build_random(name, seed=zlib.crc32(name.encode()))
            source = save_genuine_checkpoint(reference, staging / "train")
            native = staging / f"{name}.safetensors"
            argv = ["pycls", str(source), str(native), "--model", name, "--quiet"]
            result = CliRunner().invoke(convert_main, argv)
            source.unlink()
            logits, logits64 = pycls_logits(reference)
        record = {"conversion": (result.exit_code, result.output), "logits": logits, "logits64": logits64}
        torch.save(record, staging / "record.pt")
        shutil.rmtree(staging / "train")
        staging.rename(done)


def pycls_logits(reference: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 pycls model's logits on `probe_input()`, in float32 and in float64 (the model is left as it was:
    float32 -> float64 -> float32 is exact)."""
    x = probe_input()
    with torch.inference_mode():
        logits, logits64 = reference(x), reference.double()(x.double())
    reference.float()
    return logits, logits64


def run_folder(basetemp: Path) -> Path:
    """The folder of the run whose (worker's) temporary folder is `basetemp`: one for all xdist workers, where
    the run's shared stores live."""
    return basetemp.parent if basetemp.name.startswith("popen-gw") else basetemp
