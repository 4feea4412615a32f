"""The fast inference path agrees with the reference path (agreement, not speed)."""

from __future__ import annotations

import pytest
import torch
from helpers import generated_val_set, native_model_with_random_bn, relative_difference, validation_record

from regnet.fast import fast_model, fold_batchnorm


@pytest.mark.parametrize(
    "name, backend", [("regnetx_400mf", "jit"), ("regnety_800mf", "jit"), ("regnety_200mf", "compile")]
)
def test_fast_fp32_agrees_with_reference(name, backend):
    model = native_model_with_random_bn(name, seed=0, affine=True)
    x = torch.randn(64, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    fast = fast_model(model, "cpu", backend)
    with torch.inference_mode():
        expected = model(x)
        actual = fast(x.contiguous(memory_format=torch.channels_last))
    assert relative_difference(actual, expected) <= 1e-4
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() >= 0.999


def test_folding_removes_every_batchnorm_and_keeps_the_original():
    model = native_model_with_random_bn("regnety_200mf", seed=0, affine=True)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        assert relative_difference(folded(x), model(x)) <= 1e-5


def test_validate_fast_gives_the_reference_counts(runner, tmp_path, converted_200mf):
    weights, _ = converted_200mf
    val = generated_val_set(tmp_path, 12, seed=9, class_of=lambda i: i % 4)
    records = [
        validation_record(runner, tmp_path / f"r{i}.json", "--weights", weights, "--data", val, *extra)
        for i, extra in enumerate([[], ["--fast"]])
    ]
    assert records[1]["fast"] is True
    assert (records[0]["top1"], records[0]["top5"]) == (records[1]["top1"], records[1]["top5"])
