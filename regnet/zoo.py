"""The pycls RegNet zoo and mmclassification's RegNet table: one packaged table (`zoo.json`) holds every fact.

Three kinds of things live there:

- models: the 24 architectures of the pycls zoo (`regnetx_400mf`), with pycls's numbers for pycls's own weights;
- weights, named as timm names them, `MODEL.TAG`: `regnetx_400mf.pycls_in1k` (pycls's, the default tag) and
  `regnetx_400mf.mmcls_in1k` (trained by mmclassification); each reproduces at most one row of the seed table;
- files: every published file of those weights (pycls's 24 `.pyth`, OpenMMLab's 8 trained and 8 converted `.pth`),
  with the first 8 hex digits of its sha256 where its name carries them (`...-89bfc226.pth`).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from regnet.config import RegNetConfig
from regnet.design import RegNetParams

DEFAULT_TAG = "pycls_in1k"
TRAINED_BY = {"pycls_in1k": "pycls", "mmcls_in1k": "mmcls"}  # tag -> who trained the weights
FAMILIES = {"pycls": "pycls-trained", "mmcls": "mmcls-trained"}
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.pth")  # the end of OpenMMLab's file names: torch.hub's convention
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-5 in percent."""

    top1: float
    top5: float


@dataclass(frozen=True)
class SeedRow:
    """One row of mmclassification's RegNet table, as printed there, and the weights it measured."""

    name: str  # RegNetX-400MF (trained by mmcls) or RegNetX-400MF* (converted from pycls)
    weights: str  # regnetx_400mf.mmcls_in1k
    params_m: float
    gflops: float
    accuracy: Accuracy
    config: str  # mmcls's config file
    file: str  # the download, relative to the table's base URL

    @property
    def family(self) -> str:
        """`pycls-trained` (a starred row) or `mmcls-trained`."""
        return FAMILIES[TRAINED_BY[self.weights.rsplit(".", 1)[1]]]


@dataclass(frozen=True)
class ZooFile:
    """One published file: where it is, its format, the weights it holds and what is known of its bytes."""

    url: str
    format: str  # pycls or mmcls
    weights: str
    hash_prefix: str | None  # the first 8 hex digits of its sha256, carried by its name
    size: int | None  # once measured
    sha256: str | None

    @property
    def name(self) -> str:
        """The file's own name, e.g. `RegNetX-4.0GF_dds_8gpu.pyth`."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def model(self) -> str:
        return self.weights.rsplit(".", 1)[0]

    def matches(self, sha256: str) -> bool:
        """Whether a file with this sha256 is this one: the whole hash where known, else the name's prefix."""
        if self.sha256 is not None:
            return sha256 == self.sha256
        return self.hash_prefix is not None and sha256.startswith(self.hash_prefix)

    @property
    def identity(self) -> str:
        """What the file's bytes are checked against, in words."""
        if self.sha256 is not None:
            return f"sha256 {self.sha256[:16]}... (the manifest)"
        return f"sha256 starting {self.hash_prefix} (its name)" if self.hash_prefix else "nothing published"


@dataclass(frozen=True)
class ZooModel:
    """One zoo model: its design point, complexity, pycls's numbers and its names elsewhere."""

    name: str  # ours: regnetx_4.0gf
    pycls_name: str  # RegNetX-4.0GF
    design: RegNetParams
    params: int  # pycls's complexity at 224x224; flops are multiply-adds
    flops: int
    acts: int
    pycls: Accuracy  # pycls's model_error.json: the numbers of pycls's own weights
    timm_name: str  # timm.create_model name
    torchvision_builder: str | None  # torchvision.models builder with pycls's widths, if any
    hf_id: str  # transformers checkpoint

    @property
    def weights(self) -> str:
        """The default weights: pycls's own (`regnetx_4.0gf.pycls_in1k`)."""
        return f"{self.name}.{DEFAULT_TAG}"

    @property
    def pycls_file(self) -> ZooFile:
        """pycls's own `.pyth` file of the model."""
        return next(f for f in zoo_files() if f.weights == self.weights and f.format == "pycls")

    @property
    def weights_url(self) -> str:
        return self.pycls_file.url

    @property
    def file_name(self) -> str:
        """The pycls file's own name, e.g. `RegNetX-4.0GF_dds_8gpu.pyth`."""
        return self.pycls_file.name

    @property
    def seed_table(self) -> Accuracy | None:
        """The seed table's numbers for pycls's weights (its starred row), where it has them."""
        row = zoo_weights()[self.weights].row
        return row.accuracy if row else None

    def config(self, num_classes: int = 1000) -> RegNetConfig:
        """The buildable per-stage architecture."""
        return self.design.config(num_classes=num_classes, name=self.name)


@dataclass(frozen=True)
class ZooWeights:
    """One set of weights of a zoo model (`MODEL.TAG`), the seed row it reproduces and its published files."""

    key: str  # regnetx_400mf.mmcls_in1k
    model: str
    tag: str
    row: SeedRow | None
    files: tuple[ZooFile, ...]

    @property
    def trained_by(self) -> str:
        """`pycls` or `mmcls`."""
        return TRAINED_BY[self.tag]

    @property
    def family(self) -> str:
        return FAMILIES[self.trained_by]

    @property
    def pycls(self) -> Accuracy | None:
        """pycls's numbers: for pycls's own weights only."""
        return zoo_models()[self.model].pycls if self.trained_by == "pycls" else None

    @property
    def short(self) -> str:
        """How commands name the weights: `regnetx_400mf` for pycls's (the default tag), else the key."""
        return self.model if self.tag == DEFAULT_TAG else self.key

    @property
    def converted_name(self) -> str:
        """The converted file's name: `MODEL.safetensors` for the default tag, else `MODEL.TAG.safetensors`."""
        return f"{self.model}.safetensors" if self.tag == DEFAULT_TAG else f"{self.key}.safetensors"

    @property
    def primary_file(self) -> ZooFile:
        """The file `zoo fetch` downloads by default: pycls's `.pyth` for pycls's weights, else the first."""
        return self.files[0]


def _accuracy(item: dict) -> Accuracy:
    return Accuracy(item["top1"], item["top5"])


@cache
def _table() -> dict:
    return json.loads(resources.files("regnet").joinpath("zoo.json").read_text())


@cache
def zoo_models() -> dict[str, ZooModel]:
    """Every zoo model by canonical name, in the table's order (RegNetX, then RegNetY, by size)."""
    return {
        item["name"]: ZooModel(
            name=item["name"],
            pycls_name=item["pycls_name"],
            design=RegNetParams(**item["design"]),
            **item["complexity"],
            pycls=_accuracy(item["pycls"]),
            timm_name=item["timm"],
            torchvision_builder=item["torchvision"],
            hf_id=item["hf"],
        )
        for item in _table()["models"]
    }


@cache
def seed_rows() -> tuple[SeedRow, ...]:
    """The seed table's 16 rows in its order: the 8 trained by mmclassification, then the 8 starred."""
    return tuple(
        SeedRow(r["row"], r["weights"], r["params_m"], r["gflops"], _accuracy(r), r["config"], r["file"])
        for r in _table()["seed_table"]["rows"]
    )


def seed_base_url() -> str:
    """Where the seed table's files are, `file` of each row relative to it."""
    return _table()["seed_table"]["base_url"]


@cache
def zoo_files() -> tuple[ZooFile, ...]:
    """The 40 published files: pycls's 24 `.pyth`, then OpenMMLab's 8 trained and 8 converted `.pth`."""
    return tuple(
        ZooFile(f["url"], f["format"], f["weights"], f["hash_prefix"], f["size"], f["sha256"])
        for f in _table()["files"]
    )


@cache
def zoo_weights() -> dict[str, ZooWeights]:
    """Every known set of weights by key, pycls's 24 then mmclassification's 8."""
    rows = {row.weights: row for row in seed_rows()}
    keys = list(dict.fromkeys(f.weights for f in zoo_files()))
    return {key: _zoo_weights(key, rows.get(key), tuple(f for f in zoo_files() if f.weights == key)) for key in keys}


def _zoo_weights(key: str, row: SeedRow | None, files: tuple[ZooFile, ...]) -> ZooWeights:
    model, tag = key.rsplit(".", 1)
    return ZooWeights(key, model, tag, row, files)


ZOO: dict[str, RegNetParams] = {name: model.design for name, model in zoo_models().items()}


def _size(name: str) -> tuple[str, float] | None:
    """(family, megaflops) a name spells (`regnetx_4gf` -> ("regnetx", 4000.0)), or None."""
    if match := re.fullmatch(r"(regnet[xy])_?(\d+(?:\.\d*)?)(mf|gf)", name):
        return match[1], float(match[2]) * (1000 if match[3] == "gf" else 1)
    return None


def _close_names(key: str) -> list[str]:
    """Zoo names a mistyped one may mean: the same family and size spelled otherwise, else similar strings."""
    size = _size(key)
    return [name for name in ZOO if size and _size(name) == size] or difflib.get_close_matches(key, ZOO, n=3)


def canonical_name(name: str) -> str:
    """`RegNetX-4.0GF`, `regnetx-4.0gf` and `regnetx_4.0gf` all name `regnetx_4.0gf`."""
    key = name.strip().lower().replace("-", "_")
    if key not in ZOO:
        if close := _close_names(key):
            raise KeyError(f"unknown model {name[:40]!r} (did you mean {' or '.join(close)}?)")
        raise KeyError(f"unknown model {name[:40]!r}; known models: {', '.join(ZOO)}")
    return key


def weights_key(name: str) -> str:
    """`regnetx_400mf` -> `regnetx_400mf.pycls_in1k` (the default tag); `RegNetX-400MF.mmcls_in1k` ->
    `regnetx_400mf.mmcls_in1k`; KeyError for an unknown model or a tag the model has no weights for."""
    try:
        return f"{canonical_name(name)}.{DEFAULT_TAG}"
    except KeyError:
        if "." not in name:
            raise
    model, tag = name.strip().rsplit(".", 1)
    key = f"{canonical_name(model)}.{tag.strip().lower()}"
    if key not in zoo_weights():
        known = [w.key for w in zoo_weights().values() if w.model == key.rsplit(".", 1)[0]]
        raise KeyError(f"no weights {name[:60]!r} in the zoo; {key.rsplit('.', 1)[0]} has: {', '.join(known)}")
    return key


def file_named(name: str) -> ZooFile | None:
    """The published file with this exact name, if any."""
    return next((f for f in zoo_files() if f.name == name), None)


def identify(sha256: str) -> ZooFile | None:
    """The published file whose sha256 this is (the whole hash where the manifest has it, else the 8 hex digits
    its name carries), or None."""
    if not SHA256.fullmatch(sha256):
        return None
    return next((f for f in zoo_files() if f.matches(sha256)), None)


def zoo_model(name: str) -> ZooModel:
    """One zoo model's facts; KeyError for a name outside the zoo."""
    return zoo_models()[canonical_name(name)]


def pycls_name(name: str) -> str:
    """The model zoo's own spelling: `regnetx_4.0gf` -> `RegNetX-4.0GF`."""
    return zoo_model(name).pycls_name


def zoo_config(name: str, num_classes: int = 1000) -> RegNetConfig:
    """The per-stage config of a zoo model."""
    return zoo_model(name).config(num_classes)
