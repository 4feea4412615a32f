"""The native model: design space, complexity and structure against pycls's own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import without_random_init
from pycls.models.regnet import RegNet as PyclsRegNet
from pycls_oracle import configure_regnet

import regnet
from regnet import RegNetConfig, RegNetParams, StageConfig

MANIFEST = json.loads((Path(__file__).parents[1] / "regnet" / "zoo.json").read_text())["models"]


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] for e in MANIFEST])
def test_complexity_equals_pycls_published_numbers(entry):
    with torch.device("meta"):
        model = regnet.create_model(entry["name"])
    assert model.complexity(224) == entry["complexity"]


@pytest.mark.parametrize("name", list(regnet.ZOO))
@pytest.mark.oracle
def test_stages_equal_pycls_design_rule(name):
    configure_regnet(regnet.ZOO[name])
    args = PyclsRegNet.get_args()
    stages = regnet.zoo_config(name).stages
    assert [s.depth for s in stages] == args["ds"]
    assert [s.width for s in stages] == args["ws"]
    assert [s.group_width for s in stages] == args["gws"]
    assert [s.stride for s in stages] == args["ss"]


@pytest.mark.oracle
def test_complexity_at_other_resolution_matches_pycls():
    from pycls.core.config import cfg
    from pycls.core.net import complexity as pycls_complexity

    configure_regnet(regnet.ZOO["regnety_800mf"])
    cfg.TRAIN.IM_SIZE = 160
    with torch.device("meta"):
        ours = regnet.create_model("regnety_800mf").complexity(160)
    assert ours == pycls_complexity(PyclsRegNet)


def test_names_accept_pycls_spelling():
    assert regnet.canonical_name("RegNetX-4.0GF") == "regnetx_4.0gf"
    assert regnet.pycls_name("regnety_12gf") == "RegNetY-12GF"
    with pytest.raises(KeyError, match="unknown model"):
        regnet.canonical_name("regnetz_1gf")


def test_any_number_of_classes_and_custom_stages():
    config = RegNetConfig(
        stages=(StageConfig(1, 24, 8), StageConfig(2, 48, 8, stride=1), StageConfig(1, 64, 16, 0.5)),
        se_ratio=0.5,
        num_classes=7,
    )
    model = regnet.RegNet(config).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.stages[1][0].shortcut is not None  # width changes, so the first block projects
    assert model.stages[1][1].shortcut is None
    assert model.stages[0][0].se.reduce.out_channels == round(32 * 0.5)  # SE width from the block input width


def test_invalid_designs_are_rejected():
    with pytest.raises(ValueError, match="multiple of the group width"):
        RegNetConfig(stages=(StageConfig(1, 24, 16),))
    with pytest.raises(ValueError, match="invalid RegNet parameters"):
        RegNetParams(depth=10, w0=20, wa=5.0, wm=2.5, group_width=8).stages()
    stages = (StageConfig(1, 24, 8),)
    with pytest.raises(ValueError, match=r"^stem width, classes and input channels must be positive$"):
        RegNetConfig(stages, se_ratio=0.25, stem_width=0)  # named before the SE width it would round to 0
    for ratio in (-0.25, float("nan"), 17.0):
        with pytest.raises(ValueError, match="a bottleneck or SE ratio outside 0 to 16"):
            RegNetConfig(stages, se_ratio=ratio)


def test_config_round_trips_through_dict():
    config = regnet.zoo_config("regnety_4.0gf", num_classes=10)
    assert RegNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.oracle
def test_create_model_uses_pycls_initialisation():
    """pycls's own `init_weights`, applied to our modules with the same seed, gives the very same tensors."""
    from pycls.core.net import init_weights

    torch.manual_seed(7)
    ours = regnet.create_model("regnety_400mf")
    torch.manual_seed(7)
    theirs = regnet.RegNet(regnet.zoo_config("regnety_400mf"))
    theirs.apply(init_weights)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert ours.training  # a fresh model is for training


def test_backbone_api():
    model = regnet.create_model("regnetx_200mf").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        features = model.forward_features(x)
        assert features.shape == (2, 368, 2, 2)
        assert torch.equal(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (2, 368)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10) and model.config.num_classes == 10
    assert float(model.head.fc.bias.detach().abs().max()) == 0.0
    model.reset_classifier(0)
    assert model(x).shape == (2, 368)


@pytest.mark.parametrize("name", list(regnet.ZOO))
@pytest.mark.oracle
@pytest.mark.slow
def test_torchvision_builder_in_the_table_has_pycls_widths(name):
    """The table names a torchvision builder exactly when torchvision's RegNet has the same tensors."""
    import torchvision.models

    from regnet.model import expected_shapes

    family, size = name.split("_")
    candidates = {f"regnet_{family[-1]}_{size.replace('.0gf', 'gf').replace('.', '_')}"}
    builders = [b for b in candidates if hasattr(torchvision.models, b)]
    ours = sorted(expected_shapes(regnet.zoo_config(name)).values())
    with without_random_init():  # only the shapes are compared
        models = {b: getattr(torchvision.models, b)() for b in builders}
    matching = [
        b
        for b, model in models.items()
        if sorted(tuple(t.shape) for k, t in model.state_dict().items() if "num_batches" not in k) == ours
    ]
    assert regnet.zoo_model(name).torchvision_builder == (matching[0] if matching else None)


def test_save_beside_load_round_trip(tmp_path, converted_200mf):
    path, _ = converted_200mf
    model = regnet.load(path)
    regnet.save(tmp_path / "copy.safetensors", model.state_dict(), model.metadata)
    again = regnet.load(tmp_path / "copy.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))
    assert again.metadata == model.metadata


def test_all_finite_finds_every_nan_and_infinity_and_passes_sums_that_overflow():
    from regnet.weights import all_finite

    big = torch.full((4,), 3e38)  # finite values whose sum overflows float32: the exact check decides
    assert all_finite(big) and all_finite(big.half().clamp(-6e4, 6e4)) and all_finite(torch.empty(0))
    assert all_finite(torch.arange(5)) and all_finite(torch.zeros(3, dtype=torch.bfloat16))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            t = torch.randn(1000, generator=torch.Generator().manual_seed(0)).to(dtype)
            t[417] = bad
            assert not all_finite(t) and not all_finite(torch.cat([big.to(dtype), t]))
    both = torch.tensor([float("inf"), float("-inf"), 1.0])  # their sum is NaN
    assert not all_finite(both) and not all_finite(torch.tensor([1 + 1j, complex("nan")]))
    assert all_finite(torch.tensor([1 + 1j, 2 - 3j]))
