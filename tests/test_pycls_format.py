"""Our pycls-format writer produces checkpoints pycls itself loads (used by the demo and benchmarks)."""

from __future__ import annotations

import pytest
import torch
from helpers import probe_input
from pycls.core.checkpoint import load_checkpoint
from pycls_oracle import build

import regnet
from regnet_convert.sources.pycls_format import write_pycls_checkpoint

pytestmark = pytest.mark.oracle


def test_pycls_loads_our_checkpoint_and_computes_the_same_logits(tmp_path):
    ours = regnet.create_model("regnety_400mf").eval()
    path = write_pycls_checkpoint(ours, tmp_path / "model.pyth", regnet.ZOO["regnety_400mf"])
    reference = build("regnety_400mf").eval()
    assert load_checkpoint(str(path), reference) == 0
    x = probe_input()
    with torch.inference_mode():
        assert torch.equal(reference(x), ours(x))
