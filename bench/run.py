"""`make bench`: throughput ratios against peers, all measured in this run on this machine.

Sections: forward images/s (ours reference and fast path vs pycls 0.1.1 eager, and timm where it
installs); end-to-end validation vs the straightforward reference pipeline; conversion of a
RegNetY-32GF checkpoint vs a bare torch.load + safetensors save. Medians of several repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import regnet
from regnet.fast import fast_model, fold_batchnorm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the peers: pycls oracle and OpenCV reference pipeline
import processes  # noqa: E402  (bench/ is the script's folder, on the path when run as bench/run.py)


def report(section: str, what: str, value: str) -> None:
    print(f"{section:12} {what:58} {value}", flush=True)


def images_per_second(model, x: torch.Tensor, repeats: int, warmup: int = 2) -> float:
    """Median images/s of `repeats` timed forward passes."""
    return interleaved_images_per_second({"": (model, x)}, repeats, warmup)[""]


def interleaved_images_per_second(models: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median images/s of each (model, input) over `repeats` rounds that time every model once in turn, so that
    load from other processes on the machine falls on all of them alike."""
    times: dict[str, list[float]] = {label: [] for label in models}
    with torch.inference_mode():
        for model, x in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(repeats):
            for label, (model, x) in models.items():
                start = time.perf_counter()
                model(x)
                times[label].append(time.perf_counter() - start)
    return {label: models[label][1].shape[0] / statistics.median(t) for label, t in times.items()}


def pycls_model(name: str):
    """pycls 0.1.1's own RegNet (installed by the Makefile as the test oracle)."""
    from pycls_oracle import build

    return build(name).eval()


def timm_model(name: str):
    """timm's RegNet of the same architecture, or None with the reason it is unavailable."""
    try:
        import timm

        return timm.create_model(regnet.zoo_model(name).timm_name, pretrained=False).eval(), ""
    except Exception as exc:  # ImportError, or torchvision failing to load beside this torch
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"


def torchscript(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The CPU fast path before issue 11: the folded channels-last model traced and frozen with TorchScript
    (deprecated, hence the filtered warnings)."""
    folded = fold_batchnorm(model).to(memory_format=torch.channels_last).eval()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarnings: trace, trace_method and freeze are deprecated
        return torch.jit.freeze(torch.jit.trace(folded, x, check_trace=False).eval())


CACHED_PREPARATION = """
import sys, time, torch
import regnet
from regnet.fast import fast_model, fold_batchnorm
model = regnet.create_model(sys.argv[1]).eval()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
start = time.perf_counter()
fast_model(model)
print(time.perf_counter() - start)
"""


def bench_preparation(name: str, model: torch.nn.Module, tmp: Path) -> torch.nn.Module:
    """`fast_model` on CPU with an empty cache (compilation) and, in a new process, with the cached package.

    The new process has imported torch and regnet; its clock covers `fast_model` alone, which includes the
    first import of torch._inductor (about half of it here), folding, hashing the weights and the package,
    and loading the package."""
    from regnet import fast_cache

    builds, env = fast_cache.stats.builds, {**os.environ, "REGNET_CACHE": str(tmp / "cache")}
    previous, os.environ["REGNET_CACHE"] = os.environ.get("REGNET_CACHE"), env["REGNET_CACHE"]
    try:
        start = time.perf_counter()
        fast = fast_model(model)
        cold = time.perf_counter() - start
    finally:
        os.environ.pop("REGNET_CACHE")
        if previous is not None:
            os.environ["REGNET_CACHE"] = previous
    torch.save(model.state_dict(), tmp / "weights.pt")
    script = [sys.executable, "-c", CACHED_PREPARATION, name, str(tmp / "weights.pt")]
    run = subprocess.run
    cached = [float(run(script, check=True, capture_output=True, text=True, env=env).stdout) for _ in range(3)]
    report("prepare", f"{name}: fast_model, empty cache (compiles)", f"{cold:7.1f} s")
    report("prepare", f"{name}: fast_model, cached, new process", f"{statistics.median(cached):7.2f} s")
    assert fast_cache.stats.builds == builds + 1, fast_cache.stats
    return fast


def bench_forward(batch: int, repeats: int, names: tuple[str, ...] = ("regnetx_400mf", "regnety_4.0gf")) -> None:
    for name in names:
        x = torch.randn(batch, 3, 224, 224)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        model = regnet.create_model(name).eval()
        with tempfile.TemporaryDirectory() as tmp:
            fast = bench_preparation(name, model, Path(tmp))
        models = {"pycls 0.1.1 eager": (pycls_model(name), x)}
        timm, why = timm_model(name)
        if timm is not None:
            models["timm eager"] = (timm, x)
            models["timm eager, channels-last"] = (timm.to(memory_format=torch.channels_last), x_cl)
        else:
            report("forward", f"{name}: timm", f"not measured ({why})")
        models["ours reference (eager fp32)"] = (model, x)
        models["ours fast, previous (TorchScript)"] = (torchscript(model, x_cl), x_cl)
        models["ours fast (AOTInductor package)"] = (fast, x_cl)
        models["ours fast, eager fallback"] = (fast_model(model, backend="eager"), x_cl)
        rates = interleaved_images_per_second(models, repeats)
        base, previous = rates["pycls 0.1.1 eager"], rates["ours fast, previous (TorchScript)"]
        for label, value in rates.items():
            report(
                "forward",
                f"{name} b{batch}: {label}",
                f"{value:7.1f} img/s  {value / base:5.2f}x pycls  {value / previous:5.2f}x TorchScript",
            )


def reference_pipeline(weights: Path, samples: list, workers: int, batch: int) -> tuple[float, list[int]]:
    """What a user would otherwise write: OpenCV preprocessing in a DataLoader, eager fp32 model."""
    from opencv_reference import reference_input

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(samples)

        def __getitem__(self, i: int):
            return torch.from_numpy(reference_input(samples[i][0], "mmcls")), samples[i][1]

    model = regnet.load(weights)
    loader = torch.utils.data.DataLoader(Images(), batch_size=batch, num_workers=workers)
    predictions = []
    start = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            predictions += model(x).argmax(1).tolist()
    return len(samples) / (time.perf_counter() - start), predictions


def bench_input(count: int, repeats: int) -> None:
    """Decode + resize + crop of one ImageNet-sized JPEG: ours vs the OpenCV reference pipeline."""
    from opencv_reference import reference_crop

    from regnet_convert.demo import make_images
    from regnet_convert.validation.preprocess import load_crop

    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp) / "val", count, seed=3)
        timed = {}
        for label, crop in (("OpenCV reference", lambda p: reference_crop(p, "mmcls")), ("ours", load_crop)):
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                for path in images:
                    crop(path)
                runs.append((time.perf_counter() - start) / count)
            timed[label] = statistics.median(runs)
        base = timed["OpenCV reference"]
        for label, seconds in timed.items():
            report(
                "input", f"decode+resize+crop, 1 thread: {label}", f"{seconds * 1e3:6.2f} ms/img {seconds / base:5.2f}x"
            )


def bench_validation(count: int, workers: int, batch: int, repeats: int) -> None:
    from regnet_convert.conversion.pipeline import convert
    from regnet_convert.demo import make_images
    from regnet_convert.sources.pycls_format import write_pycls_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = regnet.create_model("regnetx_400mf").eval()
        source = write_pycls_checkpoint(model, tmp / "RegNetX-400MF.pyth", regnet.ZOO["regnetx_400mf"])
        weights = tmp / "regnetx_400mf.safetensors"
        convert(source, weights)
        images = make_images(tmp / "val", count)
        rates, predictions = [], []
        for _ in range(repeats):
            rate, predictions = reference_pipeline(weights, [(p, 0) for p in images], workers, batch)
            rates.append(rate)
        reference_rate = statistics.median(rates)
        labels = tmp / "val.txt"  # the reference's own predictions: a faithful pipeline scores 100%
        labels.write_text("".join(f"{p.name} {c}\n" for p, c in zip(images, predictions, strict=True)))
        results = {}
        for label, extra in (("regnet-validate", []), ("regnet-validate --fast", ["--fast"])):
            runs = []
            for _ in range(repeats):
                out = tmp / "result.json"
                args = ["--weights", weights, "--data", tmp / "val", "--labels", labels, "--json", out]
                args += ["--workers", workers, "--batch-size", batch, "--quiet", *extra]
                cmd = [sys.executable, "-m", "regnet_convert.cli.validate", *map(str, args)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                runs.append(json.loads(out.read_text()))
            results[label] = (statistics.median(r["images_per_second"] for r in runs), runs[-1]["top1"])
        report(
            "validate",
            f"{count} JPEGs, regnetx_400mf: reference pipeline",
            f"{reference_rate:7.1f} img/s  top-1 100.00",
        )
        for label, (rate, top1) in results.items():
            report(
                "validate",
                f"{count} JPEGs: {label}",
                f"{rate:7.1f} img/s  {rate / reference_rate:5.2f}x  top-1 {top1:.2f}",
            )


def peak_rss_of(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes, VmRSS: anonymous and file-backed pages) of a command.

    Sampled from /proc every 5 ms: Linux's own high-water mark (ru_maxrss) is inherited across
    fork and exec and leaves out the pages of memory-mapped files.
    """
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(status.split("VmRSS:")[1].split()[0]) * 1024)
        except (OSError, IndexError):  # the process ended between poll() and the read
            pass
        time.sleep(0.005)
    if process.returncode != 0:
        raise RuntimeError(f"{cmd} failed")
    return time.perf_counter() - start, peak


BARE_CONVERSION = """
import sys, torch
from safetensors.torch import save_file
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["model_state"]
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[2])
"""


def bench_conversion(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "RegNetY-32GF.pyth"
        write = "import regnet, sys; from regnet_convert.sources.pycls_format import write_pycls_checkpoint as w; "
        write += "w(regnet.create_model('regnety_32gf'), sys.argv[1], regnet.ZOO['regnety_32gf'])"
        subprocess.run([sys.executable, "-c", write, str(source)], check=True)
        size = source.stat().st_size
        measured = {}
        for label, cmd in {
            "bare torch.load + save_file": [sys.executable, "-c", BARE_CONVERSION, str(source), str(tmp / "bare.st")],
            "regnet-convert pycls": [sys.executable, "-m", "regnet_convert.cli.convert", "pycls", str(source),
                                     str(tmp / "ours.st"), "--quiet", "--force"],
        }.items():  # fmt: skip
            runs = [peak_rss_of(cmd) for _ in range(repeats)]
            measured[label] = (statistics.median(t for t, _ in runs), max(m for _, m in runs))
        bare_time = measured["bare torch.load + save_file"][0]
        for label, (seconds, peak) in measured.items():
            report(
                "convert",
                f"RegNetY-32GF ({size / 1e6:.0f} MB): {label}",
                f"{seconds:6.2f} s {seconds / bare_time:5.2f}x  peak {peak / 1e6:5.0f} MB = {peak / size:.2f}x file",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{threads} torch threads, torch {torch.__version__}, python {platform.python_version()}")  # fmt: skip
    bench_forward(batch=32, repeats=args.repeats)
    bench_input(200, repeats=args.repeats)
    bench_validation(args.images, args.workers, batch=32, repeats=max(1, args.repeats // 2))
    bench_conversion(repeats=max(1, args.repeats // 2))
    processes.run_all(max(1, args.repeats // 2), args.workers)


if __name__ == "__main__":
    main()
