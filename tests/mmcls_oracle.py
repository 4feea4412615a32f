"""mmclassification 0.25.0 (on mmcv 1.7.2 lite) as the oracle: its bundled RegNet configs, classifier, test pipeline.

Importing mmcv warns about mmcv 2.0 and about mmcv-full's ops: silenced here, as are init_model's warnings.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mmcls
    import mmcv
    from mmcls.apis import inference_model, init_model
    from mmcls.datasets.pipelines import Compose
    from mmcls.models import build_classifier
    from mmcv.runner import load_checkpoint

import regnet

CONFIGS = Path(mmcls.__file__).parent / ".mim" / "configs" / "regnet"
BASE_CONFIG = "regnetx_400mf"  # its test pipeline is the mmcls preset's oracle
VERSIONS = (mmcls.__version__, mmcv.__version__)


def bundled_config_file(name: str) -> Path | None:
    """mmcls's own config for a zoo model (`regnetx-400mf_8xb128_in1k.py`), or None (8 of the 12 RegNetX have one)."""
    found = sorted(CONFIGS.glob(name.replace("_", "-") + "_*.py"))
    return found[0] if found else None


def config(name: str = BASE_CONFIG) -> mmcv.Config:
    """The bundled config of `name`; for a RegNetX without one, the 400MF config with that model's arch dict."""
    path = bundled_config_file(name)
    cfg = mmcv.Config.fromfile(str(path or bundled_config_file(BASE_CONFIG)))
    if path is None:
        design, config = regnet.ZOO[name], regnet.zoo_config(name)
        cfg.model.backbone.arch = {"w0": design.w0, "wa": design.wa, "wm": design.wm, "group_w": design.group_width,
                                   "depth": design.depth, "bot_mul": design.bottleneck_multiplier}  # fmt: skip
        cfg.model.head.in_channels = config.stages[-1].width
    return cfg


def classifier(cfg: mmcv.Config) -> torch.nn.Module:
    """mmcls's `ImageClassifier` built from a config, in eval mode (no weights loaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_classifier(copy.deepcopy(cfg.model)).eval()


def load_model(cfg: mmcv.Config, checkpoint: Path) -> torch.nn.Module:
    """mmcls's own `init_model` (mmcv's `load_checkpoint`) on CPU: what a user of mmcls 0.25 gets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return init_model(copy.deepcopy(cfg), str(checkpoint), device="cpu")


def load_strictly(model: torch.nn.Module, checkpoint: Path) -> None:
    """mmcv's `load_checkpoint` (what `init_model` calls), with `strict=True`: a missing or extra key raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_checkpoint(model, str(checkpoint), map_location="cpu", strict=True)


@torch.inference_mode()
def predict(model: torch.nn.Module, image: Path) -> int:
    """mmcls's own `inference_model` (the model config's test pipeline, then the classifier): its top-1 class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(inference_model(model, str(image))["pred_label"])


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's scores before softmax, through mmcls's own `simple_test`."""
    return model.simple_test(x, softmax=False, post_process=False)


def _pipeline(steps: list[dict], path: Path) -> dict:
    return Compose(copy.deepcopy(steps))({"img_info": {"filename": str(path)}, "img_prefix": None})


def bundled_test_pipeline() -> list[dict]:
    """`data.test.pipeline` of the bundled RegNetX-400MF config."""
    return config().data.test.pipeline


def mmcls_crop(path: Path, size: int = 256, crop: int = 224) -> np.ndarray:
    """mmcls's HWC BGR uint8 crop: its test pipeline's LoadImageFromFile, Resize and CenterCrop (the bundled steps,
    their sizes set to `size` and `crop`: 256 and 224 there)."""
    steps = copy.deepcopy(bundled_test_pipeline()[:3])
    assert [s["type"] for s in steps] == ["LoadImageFromFile", "Resize", "CenterCrop"]
    assert steps[1]["size"] == (256, -1) and steps[2]["crop_size"] == 224
    steps[1]["size"], steps[2]["crop_size"] = (size, -1), crop
    return _pipeline(steps, path)["img"]


def mmcls_input(path: Path) -> np.ndarray:
    """mmcls's float32 CHW network input: the whole test pipeline (Normalize, ImageToTensor, Collect)."""
    return _pipeline(bundled_test_pipeline(), path)["img"].numpy()
