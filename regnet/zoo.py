"""The 24 RegNets of the pycls model zoo: one packaged table (`zoo.json`) holds every fact about each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from regnet.config import RegNetConfig
from regnet.design import RegNetParams


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-5 in percent."""

    top1: float
    top5: float


@dataclass(frozen=True)
class ZooModel:
    """One zoo model: its design point, published numbers, the pycls file and its names elsewhere."""

    name: str  # ours: regnetx_4.0gf
    pycls_name: str  # RegNetX-4.0GF
    design: RegNetParams
    params: int  # pycls's complexity at 224x224; flops are multiply-adds
    flops: int
    acts: int
    pycls: Accuracy  # pycls's model_error.json
    seed_table: Accuracy | None  # mmclassification's RegNet table (starred rows), where it has the model
    weights_url: str
    size: int | None  # of the pycls file, once measured
    sha256: str | None
    timm_name: str  # timm.create_model name
    torchvision_builder: str | None  # torchvision.models builder with pycls's widths, if any
    hf_id: str  # transformers checkpoint

    @property
    def file_name(self) -> str:
        """The pycls file's own name, e.g. `RegNetX-4.0GF_dds_8gpu.pyth`."""
        return self.weights_url.rsplit("/", 1)[-1]

    def config(self, num_classes: int = 1000) -> RegNetConfig:
        """The buildable per-stage architecture."""
        return self.design.config(num_classes=num_classes, name=self.name)


def _accuracy(item: dict | None) -> Accuracy | None:
    return Accuracy(item["top1"], item["top5"]) if item else None


@cache
def zoo_models() -> dict[str, ZooModel]:
    """Every zoo model by canonical name, in the table's order (RegNetX, then RegNetY, by size)."""
    table = json.loads(resources.files("regnet").joinpath("zoo.json").read_text())
    return {
        item["name"]: ZooModel(
            name=item["name"],
            pycls_name=item["pycls_name"],
            design=RegNetParams(**item["design"]),
            **item["complexity"],
            pycls=_accuracy(item["pycls"]),
            seed_table=_accuracy(item["seed_table"]),
            weights_url=item["weights_url"],
            size=item["size"],
            sha256=item["sha256"],
            timm_name=item["timm"],
            torchvision_builder=item["torchvision"],
            hf_id=item["hf"],
        )
        for item in table["models"]
    }


ZOO: dict[str, RegNetParams] = {name: model.design for name, model in zoo_models().items()}


def canonical_name(name: str) -> str:
    """`RegNetX-4.0GF`, `regnetx-4.0gf` and `regnetx_4.0gf` all name `regnetx_4.0gf`."""
    key = name.strip().lower().replace("-", "_")
    if key not in ZOO:
        raise KeyError(f"unknown model {name[:40]!r}; known models: {', '.join(ZOO)}")
    return key


def zoo_model(name: str) -> ZooModel:
    """One zoo model's facts; KeyError for a name outside the zoo."""
    return zoo_models()[canonical_name(name)]


def pycls_name(name: str) -> str:
    """The model zoo's own spelling: `regnetx_4.0gf` -> `RegNetX-4.0GF`."""
    return zoo_model(name).pycls_name


def zoo_config(name: str, num_classes: int = 1000) -> RegNetConfig:
    """The per-stage config of a zoo model."""
    return zoo_model(name).config(num_classes)
