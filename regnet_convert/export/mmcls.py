"""Export for mmclassification 0.25: a `.pth` checkpoint for its `ImageClassifier` with a `RegNet` backbone.

mmcls builds a RegNet only from an arch dict (w0, wa, wm, depth, group_w, bot_mul: one group width and
bottleneck ratio for every stage, widths from the quantized linear rule, at most 4 stages) and has no
squeeze-excitation. A converted file stores the per-stage architecture, not its design parameters, and those
cannot be recovered from it in general (many arch dicts give the same stages, most per-stage RegNets come from
none): so the architectures exported are pycls's 12 RegNetX models (any number of classes), whose arch dicts are
known, and mmcls's generator reproduces their stages. The file is what mmcv's `save_checkpoint` writes
(`state_dict`, `meta`), BGR input as mmcls's RegNet configs normalise it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import torch

from regnet import RegNetConfig, zoo_models
from regnet.layouts import LAYOUTS
from regnet.metadata import Preprocessing, WeightsMetadata
from regnet_convert.export.target import Target

MMCLS_VERSION = "0.25.0"
MAX_STAGES = 4  # mmcls's RegNet asserts 1 <= num_stages <= 4


def arch_dict(config: RegNetConfig) -> dict[str, int | float] | None:
    """The mmcls arch dict of a pycls RegNetX zoo architecture (any number of classes), or None."""
    for model in zoo_models().values():
        if model.design.se_ratio is None and model.config(config.num_classes) == config:
            d = model.design
            return {"w0": d.w0, "wa": d.wa, "wm": d.wm, "group_w": d.group_width, "depth": d.depth,
                    "bot_mul": d.bottleneck_multiplier}  # fmt: skip
    return None


def refuse(config: RegNetConfig) -> str | None:
    """Why mmcls's RegNet cannot be built with this architecture, or None."""
    if config.se_ratio is not None:
        return "mmclassification's RegNet has no squeeze-excitation (it builds RegNetX only), this one has SE"
    if len(config.stages) > MAX_STAGES:
        return f"mmclassification's RegNet has at most {MAX_STAGES} stages, this one has {len(config.stages)}"
    if len({stage.bottleneck_multiplier for stage in config.stages}) > 1:
        return "mmclassification's RegNet has one bottleneck ratio for all stages, this one's differ"
    if arch_dict(config) is None:
        return (
            "mmclassification builds a RegNet only from design parameters (w0, wa, wm, depth, group_w, bot_mul); "
            "this per-stage architecture is none of pycls's 12 RegNetX models, whose parameters are known"
        )
    return None


def _scaled(values: tuple[float, float, float]) -> list[float]:
    """mean or std on mmcls's 0..255 scale (255 * 0.229 is 58.395 there, not 58.39500000000001)."""
    return [round(255 * v, 9) for v in values]


def config_text(config: RegNetConfig, pre: Preprocessing) -> str:
    """An mmcls config (model and test pipeline): `mmcv.Config.fromstring(text, ".py")` builds the classifier."""
    backbone: dict[str, object] = {"type": "RegNet", "arch": arch_dict(config)}
    if config.stem_width != 32:
        backbone["stem_channels"] = backbone["base_channels"] = config.stem_width
    head = {"type": "LinearClsHead", "num_classes": config.num_classes, "in_channels": config.stages[-1].width,
            "loss": {"type": "CrossEntropyLoss", "loss_weight": 1.0},
            "topk": (1, 5) if config.num_classes >= 5 else (1,)}  # fmt: skip
    model = {"type": "ImageClassifier", "backbone": backbone, "neck": {"type": "GlobalAveragePooling"}, "head": head}
    norm = {"mean": _scaled(pre.mean), "std": _scaled(pre.std), "to_rgb": pre.channel_order == "RGB"}
    pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "size": (pre.resize, -1)},
        {"type": "CenterCrop", "crop_size": pre.crop},
        {"type": "Normalize", **norm},
        {"type": "ImageToTensor", "keys": ["img"]},
        {"type": "Collect", "keys": ["img"]},
    ]
    return f"model = {model!r}\ntest_pipeline = {pipeline!r}\ndata = {{'test': {{'pipeline': test_pipeline}}}}\n"


def meta(metadata: WeightsMetadata) -> dict:
    """What mmcls's own checkpoints carry that is of use: readable CLASSES (`init_model` reads them), the
    version, the config; and where the weights came from."""
    config = metadata.config
    classes = metadata.category_names or metadata.categories or tuple(str(i) for i in range(config.num_classes))
    return {
        "CLASSES": list(classes),
        "mmcls_version": MMCLS_VERSION,
        "config": config_text(config, metadata.preprocessing),
        "model": metadata.model,
        **({"wnids": list(metadata.categories)} if metadata.categories else {}),
        "source_format": metadata.source_format,
        "source_file": metadata.source_file,
        "source_sha256": metadata.source_sha256,
        "converter_version": metadata.converter_version,
    }


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor, or a copy where it is a view into a larger storage (torch.save would write all of it)."""
    whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor if whole else tensor.clone(memory_format=torch.contiguous_format)


class _WriteErrors:
    """The file torch.save writes to, keeping the OSError of a failed write (a full disk): torch itself reports
    only "unexpected pos", a RuntimeError."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def write(path: Path, state: dict[str, torch.Tensor], metadata: WeightsMetadata) -> None:
    """`{"state_dict": ..., "meta": ...}` in mmcls's names, plain data only (loadable with weights_only); a failed
    write raises its OSError (the atomic output reports it)."""
    state_dict = {LAYOUTS["mmcls"].from_native(key): _own_storage(tensor) for key, tensor in state.items()}
    with open(path, "wb") as file:
        stream = _WriteErrors(file)
        try:
            # torch.save takes any object with write and flush; its stubs ask for IO[bytes]
            torch.save({"state_dict": state_dict, "meta": meta(metadata)}, stream)  # type: ignore[arg-type]
        except RuntimeError:
            if stream.error is not None:
                raise stream.error from None
            raise


TARGET = Target(
    "mmcls",
    "a .pth checkpoint for mmclassification 0.25's ImageClassifier (RegNet backbone), BGR;\n"
    "pycls's 12 RegNetX models only (mmcls has no SE and builds from design parameters);\n"
    "meta['config'] is an mmcls config that builds the classifier",
    "BGR",
    write,
    "mmcls",
    refuse=refuse,
)
