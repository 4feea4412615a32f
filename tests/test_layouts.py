"""The one table of tensor names (regnet/layouts.py) against the libraries themselves: for every layout and every zoo
model (and custom RegNets with SE and a bottleneck multiplier where the library builds them), native -> library ->
native is the identity on names, and the library's names are exactly the state_dict keys the library itself gives
(BN counters included). Models are built on the meta device: names only, no memory, no weights."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import pytest
import timm
import torch
import torchvision.models
import transformers
from pycls_oracle import build, configure_regnet
from timm.models.regnet import RegNetCfg
from torch import nn
from torchvision.models.regnet import BlockParams

import regnet
from regnet.layouts import FILE_LAYOUTS, LAYOUTS, LayoutError
from regnet.metadata import WeightsFileError, WeightsMetadata
from regnet_convert.export import hf

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mmcls_oracle import classifier, config

pytestmark = pytest.mark.oracle

# A RegNetY with a bottleneck multiplier and a stem width no zoo model has (four stages, as timm's RegNet needs);
# its RegNetX twin for mmcls (no SE there), and one without bottleneck multiplier for transformers (none there).
SE_BOTTLENECK = regnet.RegNetParams(
    depth=10, w0=16, wa=16.0, wm=2.0, group_width=8, bottleneck_multiplier=0.5, se_ratio=0.25, stem_width=24
)
X_BOTTLENECK = regnet.RegNetParams(depth=13, w0=24, wa=36.0, wm=2.5, group_width=8, bottleneck_multiplier=0.5)
SE_ONLY = regnet.RegNetParams(depth=6, w0=16, wa=12.0, wm=2.2, group_width=8, se_ratio=0.25, stem_width=24)
CUSTOM = {"custom-se-bottleneck": SE_BOTTLENECK, "custom-x-bottleneck": X_BOTTLENECK, "custom-se": SE_ONLY}


def native_config(model: str) -> regnet.RegNetConfig:
    return CUSTOM[model].config() if model in CUSTOM else regnet.zoo_config(model)


def pycls_model(model: str) -> nn.Module:
    if model in CUSTOM:
        configure_regnet(CUSTOM[model])
        return build()
    return build(model)


def mmcls_model(model: str) -> nn.Module:
    cfg = config(model if model in regnet.ZOO else "regnetx_400mf")
    if model in CUSTOM:
        p = CUSTOM[model]
        cfg.model.backbone.arch = {"w0": p.w0, "wa": p.wa, "wm": p.wm, "group_w": p.group_width, "depth": p.depth,
                                   "bot_mul": p.bottleneck_multiplier}  # fmt: skip
    return classifier(cfg)


def timm_model(model: str) -> nn.Module:
    if model not in CUSTOM:
        return timm.create_model(regnet.zoo_model(model).timm_name, pretrained=False)
    p = CUSTOM[model]
    cfg = RegNetCfg(
        depth=p.depth,
        w0=p.w0,
        wa=p.wa,
        wm=p.wm,
        group_size=p.group_width,
        bottle_ratio=p.bottleneck_multiplier,
        se_ratio=p.se_ratio or 0.0,
        stem_width=p.stem_width,
    )
    return timm.models.regnet.RegNet(cfg)


def torchvision_model(model: str) -> nn.Module:
    config = native_config(model)
    stages = config.stages
    params = BlockParams(
        depths=[s.depth for s in stages],
        widths=[s.width for s in stages],
        group_widths=[s.group_width for s in stages],
        bottleneck_multipliers=[s.bottleneck_multiplier for s in stages],
        strides=[s.stride for s in stages],
        se_ratio=config.se_ratio,
    )
    norm = partial(nn.BatchNorm2d, eps=config.bn_eps)
    return torchvision.models.RegNet(params, stem_width=config.stem_width, norm_layer=norm)


def hf_model(model: str) -> nn.Module:
    config = native_config(model)
    hf_config = transformers.RegNetConfig(
        embedding_size=config.stem_width,
        hidden_sizes=[s.width for s in config.stages],
        depths=[s.depth for s in config.stages],
        groups_width=hf.groups_width(config),
        layer_type="y" if config.se_ratio else "x",
        downsample_in_first_stage=config.stages[0].stride == 2,
        num_labels=config.num_classes,
    )
    return transformers.RegNetForImageClassification(hf_config)


def builds(layout: str, model: str) -> bool:
    """Whether the library builds this RegNet (mmcls: RegNetX only; transformers: see its export's refusals)."""
    config = native_config(model)
    if layout == "mmcls":
        return config.se_ratio is None and model.startswith(("regnetx", "custom"))
    if layout == "hf":
        return hf.refuse(config) is None
    if layout == "timm":  # timm's RegNet has exactly four stages (every zoo model has)
        return len(config.stages) == 4
    return True


ORACLES: dict[str, Callable[[str], nn.Module]] = {
    "native": lambda model: regnet.RegNet(native_config(model)),
    "pycls": pycls_model,
    "mmcls": mmcls_model,
    "timm": timm_model,
    "torchvision": torchvision_model,
    "hf": hf_model,
}
CASES = [(layout, model) for layout in LAYOUTS for model in [*regnet.ZOO, *CUSTOM] if builds(layout, model)]
# the fast tier (make test-fast) maps the custom RegNets, the smallest X and Y and regnetx_8.0gf (the one zoo model
# whose stages differ in group width); make test maps all
FAST_MODELS = {"regnetx_200mf", "regnety_200mf", "regnetx_8.0gf", *CUSTOM}
TIERED_CASES = [pytest.param(*case, marks=() if case[1] in FAST_MODELS else pytest.mark.slow) for case in CASES]


def test_every_layout_has_an_oracle_and_the_cases_cover_the_zoo():
    assert set(ORACLES) == set(LAYOUTS) == {"native", "pycls", "mmcls", "timm", "torchvision", "hf"}
    counts = {layout: sum(1 for name, _ in CASES if name == layout) for layout in LAYOUTS}
    assert counts == {"native": 27, "pycls": 27, "mmcls": 13, "timm": 26, "torchvision": 27, "hf": 25}


@pytest.mark.parametrize("layout, model", TIERED_CASES)
def test_native_to_library_to_native_is_the_identity_and_gives_the_librarys_own_names(layout, model):
    table = LAYOUTS[layout]
    config = native_config(model)
    se = config.se_ratio is not None
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = list(regnet.RegNet(config).state_dict())
        library = set(ORACLES[layout](model).state_dict())
    names = [table.from_native(key, se) for key in native]
    assert [table.to_native(name, se) for name in names] == native
    assert [table.to_native(name) for name in names] == native  # read without knowing whether it has SE
    assert set(names) == library and len(names) == len(library)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_name_no_regnet_has_is_an_error_naming_it(layout):
    table = LAYOUTS[layout]
    stem = table.from_native("stem.conv.weight", se=False)
    module, _, leaf = table.from_native("stages.0.0.conv1.conv.weight", se=False).rpartition(".")
    for key in (stem.replace("weight", "gamma"), "extra." + stem, "stem.conv", "", f"{module}.extra.{leaf}"):
        with pytest.raises(LayoutError, match="no RegNet tensor") as error:
            table.to_native(key)
        assert error.value.key == key
    with pytest.raises(LayoutError, match=r"'stages\.0\.0\.extra\.weight'"):
        table.from_native("stages.0.0.extra.weight", se=False)


def test_each_library_reads_back_only_what_it_writes_save_the_spellings_its_files_hold():
    # pycls and mmcls readers took any spelling of a number: `s01` is `s1` (then caught as a duplicate tensor)
    assert LAYOUTS["pycls"].to_native("s01.b001.f.a.weight") == "stages.0.0.conv1.conv.weight"
    assert LAYOUTS["mmcls"].to_native("layer1.00.conv1.weight") == "stages.0.0.conv1.conv.weight"
    # mmcls backbone checkpoints have no `backbone.`, converted ones call the classifier `fc`
    for key in ("fc.bias", "backbone.fc.bias", "head.fc.bias", "backbone.head.fc.bias"):
        assert LAYOUTS["mmcls"].to_native(key) == "head.fc.bias"
    assert LAYOUTS["mmcls"].to_native("conv1.weight") == LAYOUTS["mmcls"].to_native("backbone.conv1.weight")
    for layout, key in [
        ("timm", "s01.b1.conv1.conv.weight"),
        ("timm", "s0.b1.conv1.conv.weight"),  # numbered from 1
        ("pycls", "s1.b0.f.a.weight"),
        ("torchvision", "trunk_output.block2.block1-0.f.a.0.weight"),  # the stage twice, once wrong
        ("torchvision", "trunk_output.block1.block1-00.f.a.0.weight"),
        ("hf", "regnet.encoder.stages.00.layers.0.layer.0.convolution.weight"),
        ("native", "stages.0.01.conv1.conv.weight"),
        ("pycls", "s1.b1234567890123.f.a.weight"),  # longer than any RegNet's numbers
        ("mmcls", "backbone.layer1.0.se.fc1.weight"),
    ]:
        assert LAYOUTS[layout].native_name(key) is None, (layout, key)
    with pytest.raises(LayoutError):
        LAYOUTS["mmcls"].from_native("stages.0.0.se.reduce.weight")  # mmcls has no SE


def test_transformers_names_depend_on_se():
    hf_layout, y_conv = LAYOUTS["hf"], "regnet.encoder.stages.0.layers.0.layer.3.convolution.weight"
    assert hf_layout.from_native("stages.0.0.conv3.conv.weight", se=True) == y_conv
    assert hf_layout.to_native(y_conv, se=True) == hf_layout.to_native(y_conv) == "stages.0.0.conv3.conv.weight"
    assert hf_layout.native_name(y_conv, se=False) is None
    with pytest.raises(ValueError, match="squeeze-excitation"):
        hf_layout.from_native("stages.0.0.conv3.conv.weight")


def test_converted_files_come_in_the_layouts_regnet_load_reads(tmp_path):
    assert FILE_LAYOUTS == ("native", "timm", "torchvision")
    model = regnet.RegNet(SE_ONLY.config(num_classes=3)).init_weights().eval()
    for layout in FILE_LAYOUTS:
        metadata = WeightsMetadata(model.config, regnet.metadata.Preprocessing(), "t", "x", "0" * 64, "t", layout)
        regnet.save(tmp_path / f"{layout}.safetensors", model.state_dict(), metadata)
        header = regnet.read_header(tmp_path / f"{layout}.safetensors")
        assert set(header.tensors) == {LAYOUTS[layout].from_native(k, True) for k in model.state_dict()} - {
            LAYOUTS[layout].from_native(k, True) for k in model.state_dict() if k.endswith("num_batches_tracked")
        }
        loaded = regnet.load(tmp_path / f"{layout}.safetensors")
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(WeightsFileError, match="not one of native, timm, torchvision"):
        WeightsMetadata.from_strings({**metadata.to_strings(), "layout": "hf"})
