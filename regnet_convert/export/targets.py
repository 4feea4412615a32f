"""Every `--to` choice of `regnet-convert export`, by name."""

from __future__ import annotations

from regnet_convert.export import hf, layouts, mmcls, onnx_graph, timm_hub
from regnet_convert.export.target import Target

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (layouts.TIMM, layouts.TORCHVISION, hf.TARGET, timm_hub.TARGET, onnx_graph.TARGET, mmcls.TARGET)
}
