"""The fast inference path agrees with the reference path (agreement, not speed)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import relative_difference

import regnet
from regnet.fast import fast_model, fold_batchnorm
from regnet_convert.cli.validate import main


def with_random_statistics(name: str) -> regnet.RegNet:
    torch.manual_seed(0)
    model = regnet.create_model(name).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.1)
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize(
    "name, backend", [("regnetx_400mf", "jit"), ("regnety_800mf", "jit"), ("regnety_200mf", "compile")]
)
def test_fast_fp32_agrees_with_reference(name, backend):
    model = with_random_statistics(name)
    x = torch.randn(64, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    fast = fast_model(model, "cpu", backend)
    with torch.inference_mode():
        expected = model(x)
        actual = fast(x.contiguous(memory_format=torch.channels_last))
    assert relative_difference(actual, expected) <= 1e-4
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() >= 0.999


def test_folding_removes_every_batchnorm_and_keeps_the_original():
    model = with_random_statistics("regnety_200mf")
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        assert relative_difference(folded(x), model(x)) <= 1e-5


def test_validate_fast_gives_the_reference_counts(runner, tmp_path, converted_200mf):
    from regnet_convert.demo import make_images
    from regnet_convert.validation.imagenet import wnids

    weights, _ = converted_200mf
    for i, path in enumerate(make_images(tmp_path / "staging", 12, seed=9)):
        (tmp_path / "val" / wnids()[i % 4]).mkdir(parents=True, exist_ok=True)
        path.rename(tmp_path / "val" / wnids()[i % 4] / path.name)
    records = []
    for extra in ([], ["--fast"]):
        out = tmp_path / f"r{len(records)}.json"
        args = ["--weights", weights, "--data", tmp_path / "val", "--workers", "0", "--quiet", "--json", out, *extra]
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        records.append(json.loads(out.read_text()))
    assert records[1]["fast"] is True
    assert (records[0]["top1"], records[0]["top5"]) == (records[1]["top1"], records[1]["top5"])
