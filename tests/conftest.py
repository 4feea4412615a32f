"""Shared fixtures: a CLI runner and inputs."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def probe_input(resolution: int = 64, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A fixed random image batch."""
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="session")
def converted_200mf(tmp_path_factory):
    """A converted RegNetX-200MF with random weights and BN statistics, and its original."""
    import regnet
    from regnet_convert.conversion.convert import convert_pycls
    from regnet_convert.sources.pycls_format import write_pycls_checkpoint

    folder = tmp_path_factory.mktemp("converted")
    torch.manual_seed(1)
    original = regnet.create_model("regnetx_200mf").eval()
    for bn in (m for m in original.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    source = write_pycls_checkpoint(original, folder / "RegNetX-200MF.pyth", regnet.ZOO["regnetx_200mf"])
    output = folder / "regnetx_200mf.safetensors"
    convert_pycls(source, output)
    return output, original
