"""The CI check of the key mapping: every zoo model, random weights, pycls's logits == ours."""

from __future__ import annotations

import pytest
import torch
from helpers import probe_input, relative_difference, run_convert_cli
from pycls_oracle import build, randomize, save_genuine_checkpoint

import regnet
from regnet.layouts import LAYOUTS

pytestmark = [pytest.mark.oracle, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.mark.parametrize("name", list(regnet.ZOO))
def test_converted_zoo_model_matches_pycls(name, zoo_sources):
    """`regnet-convert pycls --model NAME --quiet` on pycls's own checkpoint (zoo_sources.py): no output, exit 0, and
    the file computes pycls's logits."""
    source = zoo_sources(name)
    assert source.conversion == (0, "")
    converted = regnet.load(source.native)
    assert not converted.training
    assert converted.metadata.model == name
    x = probe_input(resolution=64)
    with torch.inference_mode():
        actual = converted(x)
    assert actual.shape == (2, 1000)
    assert relative_difference(actual, source.logits) <= 1e-5


@pytest.mark.parametrize("name", ["regnetx_200mf", "regnety_200mf"])
def test_converted_tensors_are_bit_exact_and_named_natively(name, tmp_path, runner):
    reference = randomize(build(name), seed=7)
    source = save_genuine_checkpoint(reference, tmp_path)
    output = tmp_path / "out.safetensors"
    run_convert_cli(runner, "pycls", source, output)

    converted = regnet.load(output).state_dict()
    pycls_state = reference.state_dict()
    mapped = {LAYOUTS["pycls"].to_native(k): v for k, v in pycls_state.items() if not k.endswith("num_batches_tracked")}
    assert set(converted) - {k for k in converted if k.endswith("num_batches_tracked")} == set(mapped)
    for key, tensor in mapped.items():
        assert converted[key].dtype == tensor.dtype
        assert torch.equal(converted[key], tensor), key
