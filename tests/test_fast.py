"""The fast inference path agrees with the reference path (agreement, not speed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import generated_val_set, native_model_with_random_bn, relative_difference, validation_record

from regnet import fast_cache
from regnet.fast import PackagedModel, fast_model, fold_batchnorm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def package_cache(tmp_path_factory, compile_once):
    """Compiled packages go to a folder of this module's (one compilation of RegNetX-200MF, shared with
    test_sweep.py's through compile_once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGNET_CACHE", str(tmp_path_factory.mktemp("regnet-cache")))
        patch.setattr(fast_cache, "_compile", compile_once.compile)
        yield


def test_default_cpu_path_agrees_with_reference_at_every_batch_size(converted_200mf):
    """The AOTInductor package (the CPU default) against the eager model, batch 64 and a last partial batch."""
    _, model = converted_200mf
    warnings: list[str] = []
    fast = fast_model(model, "cpu", warn=warnings.append)
    assert warnings == []  # no unusable cache, no failed compilation
    assert isinstance(fast, PackagedModel) and isinstance(fast.runners[(3, 224, 224)], Callable)
    assert not isinstance(fast.runners[(3, 224, 224)], torch.nn.Module)  # compiled, not the eager fallback
    x = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
        actual = fast(x.contiguous(memory_format=torch.channels_last))
        partial = fast(x[:7])  # contiguous input is made channels-last, not misread
    assert relative_difference(actual, expected) <= 1e-4
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() >= 0.999
    assert relative_difference(partial, expected[:7]) <= 1e-4


@pytest.mark.parametrize("name, backend", [("regnety_200mf", "compile"), ("regnety_800mf", "eager")])
def test_other_backends_agree_with_reference(name, backend):
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
    """13 images in batches of 8: the last batch is a partial one. The package is this module's, of the same
    tensors: compiled by the first test, or here when this test runs without it (a worker of its own)."""
    weights, model = converted_200mf
    val = generated_val_set(tmp_path, 13, seed=9, class_of=lambda i: i % 4)
    fast_model(model, "cpu")  # in this module's cache now, whichever test ran first
    hits = fast_cache.stats.hits
    records = [
        validation_record(runner, tmp_path / f"r{i}.json", "--weights", weights, "--data", val, *extra)
        for i, extra in enumerate([["--batch-size", "8"], ["--batch-size", "8", "--fast"]])
    ]
    assert records[1]["fast"] is True
    assert records[0]["images"] == records[1]["images"] == 13
    assert (records[0]["top1"], records[0]["top5"]) == (records[1]["top1"], records[1]["top5"])
    assert fast_cache.stats.hits == hits + 1  # the weights file holds the same tensors as the model above
