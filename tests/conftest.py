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
