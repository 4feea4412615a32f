"""Whole-process benchmarks for `make bench`: loop efficiency, whole-process speed, sweep, crop cache, timm peer.

Every number is measured in this run, on this machine: ratios against peers run beside ours, and the loop's
rate against this machine's limit for the same work, computed from its parts measured just before.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import regnet

HERE = Path(__file__).resolve().parent
REFERENCE_SCRIPT = HERE / "reference_validate.py"
TIMM_SCRIPT = HERE / "timm_validate.py"


def report(section: str, what: str, value: str) -> None:
    print(f"{section:12} {what:58} {value}", flush=True)


def timed_process(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from start to exit of one new process (its output discarded; a failure stops the bench)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def median_of(repeats: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeats))


class Workspace:
    """A converted RegNetX-400MF (and a second model for the sweep), JPEGs and their labels in a temp folder."""

    def __init__(self, root: Path, count: int) -> None:
        from regnet_convert.conversion.pipeline import convert
        from regnet_convert.demo import make_images
        from regnet_convert.sources.pycls_format import write_pycls_checkpoint

        self.root = root
        self.checkpoints = root / "checkpoints"
        self.checkpoints.mkdir(parents=True)
        torch.manual_seed(0)
        for name in ("regnetx_400mf", "regnetx_200mf"):
            model = regnet.create_model(name).eval()
            source = write_pycls_checkpoint(model, root / f"{name}.pyth", regnet.ZOO[name])
            convert(source, self.checkpoints / f"{name}.safetensors")
        self.pyth = root / "regnetx_400mf.pyth"
        self.weights = self.checkpoints / "regnetx_400mf.safetensors"
        self.images = make_images(root / "val", count, seed=11)
        self.labels = root / "val.txt"  # any labels: the rates do not depend on them
        self.labels.write_text("".join(f"{p.name} {i % 1000}\n" for i, p in enumerate(self.images)))
        os.environ["REGNET_CACHE"] = str(root / "cache")  # this process's fast path fills the cache the runs use
        self.env = {**os.environ, "REGNET_CHECKPOINTS": str(self.checkpoints), "REGNET_CACHE": str(root / "cache")}

    def validate(self, *args: object, json_out: Path | None = None) -> list[str]:
        """A `regnet-validate` command line over the workspace's images."""
        cmd = [sys.executable, "-m", "regnet_convert.cli.validate", "--data", self.root / "val", "--labels"]
        cmd += [self.labels, "--quiet", *args] + (["--json", json_out] if json_out else [])
        return [str(c) for c in cmd]


def fast_forward_rate(weights: Path, batch: int, repeats: int) -> float:
    """images/s of the `--fast` model alone on a batch in memory, on all of torch's threads."""
    from regnet.fast import fast_model

    model = fast_model(regnet.load(weights).float())
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(max(repeats, 3)):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def decode_seconds(images: list[Path]) -> float:
    """One core's seconds per image for the mmcls preset's decode + resize + crop (OpenCV on one thread)."""
    from regnet_convert.validation.preprocess import load_crop, to_chw_tensor

    for path in images[:5]:
        load_crop(path)
    start = time.perf_counter()
    for path in images:
        to_chw_tensor(load_crop(path))
    return (time.perf_counter() - start) / len(images)


def bench_loop_efficiency(ws: Workspace, batch: int, workers: int, repeats: int) -> None:
    """images/s of `--fast`'s loop against limit = 1 / (1/forward + decode/cores), all measured here."""
    cores = os.cpu_count() or 1
    forward = fast_forward_rate(ws.weights, batch, repeats)
    decode = decode_seconds(ws.images[:200])
    limit = 1 / (1 / forward + decode / cores)
    warm_up = ws.validate("--weights", ws.weights, "--fast", "--limit", 32)  # the compiled package is cached first
    subprocess.run(warm_up, check=True, stdout=subprocess.DEVNULL, env=ws.env)
    rates = []
    for _ in range(repeats):
        out = ws.root / "loop.json"
        cmd = ws.validate("--weights", ws.weights, "--fast", "--batch-size", batch, "--workers", workers, json_out=out)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=ws.env)
        rates.append(json.loads(out.read_text())["images_per_second"])
    rate = statistics.median(rates)
    report("loop", f"forward alone, fast path, b{batch}, {torch.get_num_threads()} threads", f"{forward:7.1f} img/s")
    report("loop", "decode+resize+crop, one core (mmcls preset)", f"{decode * 1e3:7.2f} ms/img")
    report("loop", f"limit on {cores} cores = 1/(1/forward + decode/cores)", f"{limit:7.1f} img/s")
    report("loop", f"{len(ws.images)} JPEGs: regnet-validate --fast, {workers} workers", f"{rate:7.1f} img/s")
    report("loop", "efficiency = loop / limit (goal >= 0.90)", f"{rate / limit:7.2f}")


def bench_whole_process(ws: Workspace, repeats: int) -> None:
    """Whole processes, imports and preparation included: ours `--fast` vs the reference pipeline and timm's."""
    count = len(ws.images)
    warm_up = ws.validate("--weights", ws.weights, "--fast", "--limit", 32)  # the compiled package is cached first
    subprocess.run(warm_up, check=True, stdout=subprocess.DEVNULL, env=ws.env)
    commands = {
        "reference (OpenCV DataLoader, 2 workers, pycls eager, b32)": [
            sys.executable, str(REFERENCE_SCRIPT), str(ws.pyth), str(ws.root / "val"), "2", "32"],
        "timm's pipeline (PIL, create_transform, DataLoader, b32)": [
            sys.executable, str(TIMM_SCRIPT), str(ws.weights), str(ws.root / "val"), "2", "32"],
        "regnet-validate": ws.validate("--weights", ws.weights, "--workers", 2, "--batch-size", 32),
        "regnet-validate --fast": ws.validate("--weights", ws.weights, "--fast", "--workers", 2, "--batch-size", 32),
    }  # fmt: skip
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeats):  # interleaved: load from elsewhere falls on all alike
        for label, cmd in commands.items():
            times[label].append(timed_process(cmd, ws.env))
    base = statistics.median(times["reference (OpenCV DataLoader, 2 workers, pycls eager, b32)"])
    for label, runs in times.items():
        seconds = statistics.median(runs)
        report("process", f"{count} JPEGs: {label}", f"{seconds:6.2f} s  {base / seconds:5.2f}x reference")


def bench_sweep(ws: Workspace, repeats: int) -> None:
    """A two-model `--fast` sweep against the two single-model runs it replaces (goal: <= 0.8 of their time)."""
    names = ("regnetx_400mf", "regnetx_200mf")
    for name in names:  # compiled packages cached first, as a user's second run finds them
        warm_up = ws.validate("--model", name, "--fast", "--limit", 32)
        subprocess.run(warm_up, check=True, stdout=subprocess.DEVNULL, env=ws.env)
    sweep, singles = [], []
    for _ in range(repeats):
        sweep.append(timed_process(ws.validate("--model", names[0], "--model", names[1], "--fast"), ws.env))
        singles.append(sum(timed_process(ws.validate("--model", name, "--fast"), ws.env) for name in names))
    s, t = statistics.median(sweep), statistics.median(singles)
    report("sweep", f"{len(ws.images)} JPEGs, 2 models --fast: two runs", f"{t:6.2f} s")
    report("sweep", f"{len(ws.images)} JPEGs, 2 models --fast: one sweep", f"{s:6.2f} s  {s / t:5.2f} of two runs")


def bench_crop_cache(ws: Workspace, repeats: int) -> None:
    """`--cache DIR`: the run that fills it, and later runs that skip decoding, against no cache (whole processes)."""
    plain = median_of(repeats, lambda: timed_process(ws.validate("--weights", ws.weights, "--fast"), ws.env))
    fills = []
    for i in range(repeats):
        folder = ws.root / f"crops-{i}"
        fills.append(timed_process(ws.validate("--weights", ws.weights, "--fast", "--cache", folder), ws.env))
    cached = ws.validate("--weights", ws.weights, "--fast", "--cache", ws.root / "crops-0")
    hit = median_of(repeats, lambda: timed_process(cached, ws.env))
    count = len(ws.images)
    report("cache", f"{count} JPEGs --fast: no cache", f"{plain:6.2f} s")
    report("cache", f"{count} JPEGs --fast: --cache, first run (fills it)", f"{statistics.median(fills):6.2f} s")
    report("cache", f"{count} JPEGs --fast: --cache, later runs", f"{hit:6.2f} s  {plain / hit:5.2f}x no cache")


def bench_gpu(images: int, workers: int) -> None:
    """CUDA only: RegNetX-4.0GF `--fast` (bf16 channels-last) on `images` JPEGs, and the 8 starred models in one
    sweep; each rate extrapolated to ImageNet's 50,000 images (goals: under 30 s, and under 3 minutes)."""
    from regnet_convert.conversion.pipeline import convert
    from regnet_convert.sources.pycls_format import write_pycls_checkpoint
    from regnet_convert.validation.selection import starred

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "gpu", images)
        for name in starred():
            source = write_pycls_checkpoint(
                regnet.create_model(name).eval(), ws.root / f"{name}.pyth", regnet.ZOO[name]
            )
            convert(source, ws.checkpoints / f"{name}.safetensors", force=True)
        runs = {
            "regnetx_4.0gf --fast --amp bf16": ["--model", "regnetx_4.0gf", "--fast", "--amp", "bf16"],
            "8 starred models, one sweep, --fast --amp bf16": ["--model", "starred", "--fast", "--amp", "bf16"],
        }
        for label, args in runs.items():
            out = ws.root / "gpu.json"
            cmd = ws.validate(*args, "--device", "cuda", "--workers", workers, "--batch-size", 256, json_out=out)
            seconds = timed_process(cmd, ws.env)
            report("gpu", f"{images} JPEGs: {label}", f"{seconds:6.1f} s  = {seconds * 50_000 / images:6.0f} s/50k")


def run_all(repeats: int, workers: int) -> None:
    if torch.cuda.is_available():
        bench_gpu(5000, max(workers, 16))
    else:
        report("gpu", "RegNetX-4.0GF 50,000 images; 8-model sweep", "not measured (no CUDA device)")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "960", 960)
        bench_loop_efficiency(ws, batch=64, workers=workers, repeats=repeats)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "320", 320)
        bench_whole_process(ws, repeats)
        bench_sweep(ws, repeats)
        bench_crop_cache(ws, repeats)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "tests"))
    run_all(int(sys.argv[1]) if len(sys.argv) > 1 else 3, os.cpu_count() or 2)
