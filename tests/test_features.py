"""Backbone use as timm offers it: `feature_info`, `forward_intermediates`, `prune_intermediate_layers`.

The oracle is timm's own RegNet: a native model with random weights and BN statistics is saved, exported with
`regnet-convert export --to timm`'s function, and timm's model (`timm.create_model`, and its `features_only`
wrapper) loads the exported tensors strictly. The exported file, read back by `regnet.load`, then computes timm's
feature maps bit for bit; the native model (its stem takes BGR where the export's takes RGB) computes them up to
the stem's summation order.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
from helpers import native_model_with_random_bn, probe_input, relative_difference
from safetensors.torch import load_file
from timm.models import FeatureListNet

import regnet
from regnet import RegNetConfig, StageConfig
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.export.pipeline import export

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (conftest)


MODELS = ["regnetx_200mf", "regnety_200mf"]  # a RegNetX, and a RegNetY (with squeeze-excitation)
# None: all five maps; an int: the last n; sequences: chosen ones, negative from the end, in any order
INDICES: list[int | list[int] | tuple[int, ...] | None] = [None, 1, 3, [0], [0, -1], (1, 3), [4, 2], [-5, 2]]
# Three stages, one of stride 1, and a stem width of its own: reductions 2, 4, 4, 8.
CUSTOM = RegNetConfig(
    stages=(StageConfig(1, 16, 8), StageConfig(2, 24, 8, stride=1), StageConfig(1, 40, 8)),
    se_ratio=0.25,
    stem_width=12,
    num_classes=5,
)


@dataclass
class Pair:
    """One zoo model's weights three ways: native (BGR stem), exported to timm's names and read back by
    `regnet.load` (RGB stem), and in timm's RegNet; `state` is the exported file's tensors."""

    name: str
    native: regnet.RegNet
    exported: regnet.RegNet
    timm_model: torch.nn.Module
    state: dict[str, torch.Tensor]


def timm_name(name: str) -> str:
    return regnet.zoo_model(name).timm_name


def native_metadata(config: RegNetConfig) -> WeightsMetadata:
    return WeightsMetadata(config, Preprocessing(), "test", "x", "0" * 64, "test")


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory) -> Pair:
    name, folder = request.param, tmp_path_factory.mktemp("features")
    native = native_model_with_random_bn(name, seed=3, affine=True)
    regnet.save(folder / "native.safetensors", native.state_dict(), native_metadata(native.config))
    export(folder / "native.safetensors", folder / "timm.safetensors", "timm")
    state = load_file(folder / "timm.safetensors")
    timm_model = timm.create_model(timm_name(name), pretrained=False).eval()
    timm_model.load_state_dict(state, strict=True)
    exported = regnet.load(folder / "timm.safetensors")
    assert exported.metadata is not None and exported.metadata.preprocessing.channel_order == "RGB"
    return Pair(name, native, exported, timm_model, state)


def timm_module(module: str) -> str:
    """timm's name for one of our `feature_info` modules: `stages.0` is timm's `s1`."""
    return f"s{int(module.split('.')[1]) + 1}" if module.startswith("stages.") else module


def assert_equal_maps(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


# ---- against timm ----------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.slow
def test_feature_info_is_timms_for_every_zoo_model():
    for name in regnet.ZOO:
        with torch.device("meta"):  # no weights: only the module tree
            theirs = timm.create_model(timm_name(name), pretrained=False).feature_info
            ours = regnet.RegNet(regnet.zoo_config(name, 1000)).feature_info
        assert [(f["num_chs"], f["reduction"], timm_module(f["module"])) for f in ours] == [
            (f["num_chs"], f["reduction"], f["module"]) for f in theirs
        ], name


@pytest.mark.oracle
@pytest.mark.parametrize("stop_early", [False, True])
def test_forward_intermediates_are_timms_tensor_for_tensor(pair, stop_early):
    rgb = probe_input()
    with torch.inference_mode():
        for indices in INDICES:
            final, ours = pair.exported.forward_intermediates(rgb, indices, stop_early=stop_early)
            theirs_final, theirs = pair.timm_model.forward_intermediates(rgb, indices, stop_early=stop_early)
            assert_equal_maps(ours, theirs)
            assert torch.equal(final, theirs_final), (indices, stop_early)
            only = pair.exported.forward_intermediates(rgb, indices, stop_early=stop_early, intermediates_only=True)
            assert_equal_maps(only, theirs)
        # what the maps are: the stem's and each stage's output, at feature_info's channels and reductions
        every = pair.exported.forward_intermediates(rgb, intermediates_only=True)
        assert [(m.shape[1], rgb.shape[-1] // m.shape[-1]) for m in every] == [
            (f["num_chs"], f["reduction"]) for f in pair.exported.feature_info
        ]


@pytest.mark.oracle
def test_native_model_takes_bgr_where_the_export_takes_rgb(pair):
    bgr = probe_input(seed=1)
    with torch.inference_mode():
        final, ours = pair.native.forward_intermediates(bgr)
        theirs_final, theirs = pair.timm_model.forward_intermediates(bgr.flip(1))
    assert len(ours) == len(theirs) == 5
    for a, b in zip([*ours, final], [*theirs, theirs_final], strict=True):
        assert a.shape == b.shape and relative_difference(a, b) <= 1e-5  # the flipped stem sums in another order


@pytest.mark.oracle
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (1, 2, 3, 4), (2, 4)])
def test_timms_features_only_model_computes_our_intermediates(pair, out_indices):
    features = timm.create_model(timm_name(pair.name), pretrained=False, features_only=True, out_indices=out_indices)
    features.load_state_dict({k: v for k, v in pair.state.items() if not k.startswith("head.")}, strict=True)
    rgb = probe_input(seed=2)
    with torch.inference_mode():
        ours = pair.exported.forward_intermediates(rgb, list(out_indices), intermediates_only=True)
        assert_equal_maps(ours, features.eval()(rgb))
    info = [pair.exported.feature_info[i] for i in out_indices]
    assert features.feature_info.channels() == [f["num_chs"] for f in info]
    assert features.feature_info.reduction() == [f["reduction"] for f in info]
    assert features.feature_info.module_name() == [timm_module(f["module"]) for f in info]


@pytest.mark.oracle
def test_timms_feature_wrapper_runs_our_model_by_its_feature_info(pair):
    """timm's FeatureListNet finds the modules our `feature_info` names and returns forward_intermediates' maps."""
    wrapped = FeatureListNet(copy.deepcopy(pair.exported), out_indices=(0, 1, 2, 3, 4), flatten_sequential=True)
    rgb = probe_input(seed=3)
    with torch.inference_mode():
        assert_equal_maps(wrapped(rgb), pair.exported.forward_intermediates(rgb, intermediates_only=True))
    assert wrapped.feature_info.module_name() == ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("indices", "prune_head"), [([1, 2], True), (2, True), ([0], True), (None, False), ([4], True), ([-1], False)]
)
def test_pruning_drops_what_timm_drops(pair, indices, prune_head):
    ours, theirs = copy.deepcopy(pair.exported), copy.deepcopy(pair.timm_model)
    kept = ours.prune_intermediate_layers(indices, prune_head=prune_head)
    assert kept == theirs.prune_intermediate_layers(indices, prune_head=prune_head)
    assert ours.num_features == theirs.num_features
    assert len(ours.state_dict()) == len(theirs.state_dict())  # the same tensors left (names: tests/test_layouts.py)
    rgb = probe_input(seed=4)
    with torch.inference_mode():
        assert torch.equal(ours(rgb), theirs(rgb))  # logits, or (head pruned) the last map kept
        final, maps = ours.forward_intermediates(rgb, kept)
        theirs_final, theirs_maps = theirs.forward_intermediates(rgb, kept, stop_early=True)
        assert_equal_maps(maps, theirs_maps)
        assert torch.equal(final, theirs_final)


# ---- on their own --------------------------------------------------------------------------------------------


def test_feature_info_follows_each_stages_stride():
    model = regnet.RegNet(CUSTOM).init_weights().eval()
    assert model.feature_info == [
        {"num_chs": 12, "reduction": 2, "module": "stem"},
        {"num_chs": 16, "reduction": 4, "module": "stages.0"},
        {"num_chs": 24, "reduction": 4, "module": "stages.1"},
        {"num_chs": 40, "reduction": 8, "module": "stages.2"},
    ]
    assert all(model.get_submodule(f["module"]) is not None for f in model.feature_info)
    x = probe_input(resolution=32)
    with torch.inference_mode():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and torch.equal(maps[-1], final)
        assert torch.equal(model.forward_head(final), model(x))
    assert [tuple(m.shape[1:]) for m in maps] == [(12, 16, 16), (16, 8, 8), (24, 8, 8), (40, 4, 4)]


def test_stop_early_runs_no_stage_past_the_last_taken():
    model = regnet.RegNet(CUSTOM).init_weights().eval()
    ran: list[int] = []
    for i, stage in enumerate(model.stages):
        stage.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i))
    with torch.inference_mode():
        final, maps = model.forward_intermediates(probe_input(resolution=32), [0, 2], stop_early=True)
    assert ran == [0, 1] and torch.equal(final, maps[-1]) and [m.shape[1] for m in maps] == [12, 24]
    ran.clear()
    with torch.inference_mode():
        model.forward_intermediates(probe_input(resolution=32), [0], stop_early=True, intermediates_only=True)
    assert ran == []


@pytest.mark.parametrize("indices", [0, 5, -1, [4], [-5], []])
def test_indices_out_of_range_are_refused(indices):
    model = regnet.RegNet(CUSTOM)  # four feature maps: 0..3
    with pytest.raises(ValueError, match="range"):
        model.forward_intermediates(probe_input(resolution=32), indices)
    with pytest.raises(ValueError, match="range"):
        model.prune_intermediate_layers(indices)


def test_only_nchw_output_is_offered():
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW', not 'NHWC'"):
        regnet.RegNet(CUSTOM).forward_intermediates(probe_input(resolution=32), output_fmt="NHWC")


def test_a_pruned_or_headless_model_takes_a_new_classifier():
    model = regnet.RegNet(CUSTOM).init_weights().eval()
    x = probe_input(resolution=32)
    assert model.prune_intermediate_layers([1, 2]) == [1, 2] and len(model.stages) == 2 and model.num_features == 24
    with torch.inference_mode():
        assert model(x).shape == (2, 24, 8, 8)  # the head went with the stage: the last map kept
    model.reset_classifier(0)
    assert model(x).shape == (2, 24)  # pooled features
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.config.num_classes == 3


def test_metadata_is_a_declared_attribute_set_by_load(tmp_path):
    assert typing.get_type_hints(regnet.RegNet)["metadata"] == WeightsMetadata | None
    model = regnet.RegNet(CUSTOM).init_weights()
    assert model.metadata is None
    regnet.save(tmp_path / "custom.safetensors", model.state_dict(), native_metadata(CUSTOM))
    loaded = regnet.load(Path(tmp_path / "custom.safetensors"))
    assert loaded.metadata == native_metadata(CUSTOM) and regnet.RegNet(CUSTOM).metadata is None
