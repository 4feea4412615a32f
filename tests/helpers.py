"""Helpers the test files share (plain functions; the fixtures are in conftest.py).

Converting: `run_convert_cli` runs `regnet-convert` in-process and asserts it succeeded; `convert_file` calls the
library's `convert` directly (no command line, no exit status). Validating: `validation_record` runs
`regnet-validate` in-process and returns its JSON record. pycls models and checkpoints: pycls_oracle.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
from click.testing import CliRunner, Result
from safetensors.torch import load_file

import regnet
from regnet.imagenet import wnids
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.cli.validate import main as validate_main
from regnet_convert.conversion.pipeline import convert
from regnet_convert.demo import make_images

# ---- tensors and models -------------------------------------------------------------------------------------


def probe_input(resolution: int = 64, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A fixed random image batch."""
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def native_model_with_random_bn(name: str, seed: int, affine: bool = False) -> regnet.RegNet:
    """`regnet.create_model(name)` in eval mode after `torch.manual_seed(seed)`, with random BN running statistics
    (and, with `affine`, random BN scales and shifts), so that no BN layer is the identity.

    For a pycls model with random weights *and* statistics from its own generator: `pycls_oracle.randomize`.
    """
    torch.manual_seed(seed)
    model = regnet.create_model(name).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            if affine:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0, 0.1)
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def aligned_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of `state`'s tensors in memory of their own: safetensors and transformers hand out views of a file at
    offsets only 8-byte aligned, where the CPU kernels may sum in another order (bit-for-bit checks then fail).
    Loaded with `assign=True` into a model built on the meta device, no random initialisation is spent."""
    return {k: v.clone() for k, v in state.items()}


def compiling_by_copy(package: Path) -> Callable[[object, object, Path], object]:
    """A stand-in for `regnet.fast_cache._compile` that copies `package`, a genuine one of the same model: the
    cache, trust and probe logic all still run, without the seconds of a compilation."""
    return lambda folded, example, path: shutil.copy(package, path)


@contextlib.contextmanager
def without_random_init() -> Iterator[None]:
    """Modules built inside keep uninitialised tensors (torch.nn.init's fills do nothing): for a model whose
    shapes are read, or whose every tensor is then loaded, where a builder cannot run on the meta device."""
    fills = (
        "uniform_",
        "normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "trunc_normal_",
        "zeros_",
        "ones_",
        "constant_",
    )
    with mock.patch.multiple(torch.nn.init, **{name: lambda tensor, *_, **__: tensor for name in fills}):
        yield


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside the block, the previous count restored after it (the `one_thread` fixture; the
    fast-path cache's key holds the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---- the command-line tools, in-process ---------------------------------------------------------------------


def run_convert_cli(runner: CliRunner, *args: object) -> Result:
    """`regnet-convert ARGS...` (subcommand included) in-process; asserts it succeeded and returns its result."""
    result = runner.invoke(convert_main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def assert_imports_back_bit_identical(command: str, exported: Path, native: Path, back: Path) -> None:
    """`regnet-convert COMMAND EXPORTED BACK` (an import: timm, torchvision, hf) gives back every tensor of `native`,
    the stem reversed twice (the one tensor an RGB export changes), the same architecture, RGB recorded."""
    result = CliRunner().invoke(convert_main, [command, str(exported), str(back), "--quiet"])
    assert result.exit_code == 0 and not result.output, result.output
    again, metadata = load_file(back), regnet.read_metadata(back)
    assert metadata.preprocessing.channel_order == "RGB" and metadata.config == regnet.read_metadata(native).config
    original = {k: v for k, v in load_file(native).items() if "num_batches" not in k}
    again["stem.conv.weight"] = again["stem.conv.weight"].flip(1)
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in original)


def convert_file(source: str | Path, output: str | Path, **options: object) -> Path:
    """Convert through the library call `regnet_convert.conversion.pipeline.convert` (no CLI); returns `output`."""
    convert(source, output, **options)
    return Path(output)


def validation_record(runner: CliRunner, out: Path, *args: object) -> dict:
    """`regnet-validate ARGS... --workers 0 --quiet --json OUT` in-process; asserts it succeeded and returns the
    JSON record it wrote."""
    result = runner.invoke(validate_main, [*map(str, args), "--workers", "0", "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


# ---- ImageNet-style folders ---------------------------------------------------------------------------------


def class_folder(val: Path, index: int) -> Path:
    """`val/<wnid>`: the folder of ImageNet class `index` (its position in the sorted WordNet ids), created."""
    folder = val / wnids()[index]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def generated_val_set(root: Path, count: int, seed: int, class_of: Callable[[int], int] = lambda i: i) -> Path:
    """`count` generated JPEGs (`regnet_convert.demo.make_images`, written to `root/staging`) moved into the
    ImageNet class folders of `root/val`, the i-th image into class `class_of(i)`; returns `root/val`."""
    val = root / "val"
    for i, path in enumerate(make_images(root / "staging", count, seed=seed)):
        path.rename(class_folder(val, class_of(i)) / path.name)
    return val


# ---- network ------------------------------------------------------------------------------------------------


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
