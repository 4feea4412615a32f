"""What a converted safetensors file says about its weights (stored as string metadata)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

from regnet.config import RegNetConfig
from regnet.layouts import FILE_LAYOUTS

FORMAT = "regnet-convert"
FORMAT_VERSION = "1"
_Choice = TypeVar("_Choice", bound=str)


ChannelOrder = Literal["BGR", "RGB"]
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)
# Where a file's categories came from: the source's own class names, or (a source naming none, 1000 classes)
# ImageNet-1k's, assumed.
CategoriesFrom = Literal["source", "imagenet-1k-assumed"]
CATEGORIES_FROM: tuple[CategoriesFrom, ...] = get_args(CategoriesFrom)
MEAN_RANGE = (0.0, 1.0)  # a mean of pixel values on a 0..1 scale
STD_RANGE = (1e-6, 1e3)  # 1/255 (inputs of 0..255) is the smallest in use
MAX_TEST_SIZE = 1024  # test resize and crop, in pixels (RegNets are evaluated at 224 to 384)
MAX_LABEL_CHARS = 256  # ImageNet's longest class name has 121
MAX_EVIDENCE_CHARS = 1024  # how a file's identity was established, in words


@dataclass(frozen=True)
class Preprocessing:
    """How the network expects its input: channel order and normalisation on a 0..1 scale."""

    channel_order: ChannelOrder = "BGR"
    mean: tuple[float, float, float] = (0.406, 0.456, 0.485)
    std: tuple[float, float, float] = (0.225, 0.224, 0.229)
    resize: int = 256
    crop: int = 224


@dataclass(frozen=True)
class WeightsMetadata:
    """Everything needed to rebuild and use a converted model."""

    config: RegNetConfig
    preprocessing: Preprocessing
    source_format: str
    source_file: str
    source_sha256: str
    converter_version: str
    layout: str = "native"  # tensor names: one of regnet.layouts.FILE_LAYOUTS (ours, timm's or torchvision's)
    # one label per class, in class order: ImageNet-1k's WordNet ids, or the source's own class names
    categories: tuple[str, ...] | None = None
    category_names: tuple[str, ...] | None = None  # readable names in the same order ("tench", "goldfish", ...)
    categories_from: CategoriesFrom | None = None
    # which published weights these are (`regnetx_400mf.mmcls_in1k`), how that was established (sha256, declared,
    # pycls-format, none: see regnet_convert.conversion.identity) and the evidence in words
    zoo_weights: str | None = None
    identified_by: str | None = None
    identity_evidence: str | None = None

    @property
    def model(self) -> str:
        """The zoo name, or `custom` for a RegNet outside the zoo."""
        return self.config.name or "custom"

    def to_strings(self) -> dict[str, str]:
        """The safetensors header metadata (a flat str -> str mapping)."""
        pre = self.preprocessing
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "architecture": json.dumps(self.config.to_dict(), sort_keys=True),
            "num_classes": str(self.config.num_classes),
            "channel_order": pre.channel_order,
            "mean": json.dumps(list(pre.mean)),
            "std": json.dumps(list(pre.std)),
            "test_resize": str(pre.resize),
            "test_crop": str(pre.crop),
            "source_format": self.source_format,
            "source_file": self.source_file,
            "source_sha256": self.source_sha256,
            "converter_version": self.converter_version,
            "layout": self.layout,
            **({"categories": json.dumps(list(self.categories))} if self.categories else {}),
            **({"category_names": json.dumps(list(self.category_names))} if self.category_names else {}),
            **({"categories_from": self.categories_from} if self.categories_from else {}),
            **({"zoo_weights": self.zoo_weights} if self.zoo_weights else {}),
            **({"identified_by": self.identified_by} if self.identified_by else {}),
            **({"identity_evidence": self.identity_evidence} if self.identity_evidence else {}),
        }

    @classmethod
    def from_strings(cls, meta: dict[str, str]) -> WeightsMetadata:
        """Parse `to_strings`'s output; WeightsFileError when it is not ours or not plausible."""
        if meta.get("format") != FORMAT:
            raise WeightsFileError("not a regnet-convert file (no 'format: regnet-convert' in its metadata)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise WeightsFileError(f"unsupported format version {str(meta.get('format_version'))[:20]!r}")
        try:
            preprocessing = Preprocessing(
                channel_order=_choice(meta["channel_order"], CHANNEL_ORDERS),
                mean=_triple(json.loads(meta["mean"]), "mean", MEAN_RANGE),
                std=_triple(json.loads(meta["std"]), "std", STD_RANGE),
                resize=_size(meta["test_resize"]),
                crop=_size(meta["test_crop"]),
            )
            if preprocessing.crop > preprocessing.resize:
                raise ValueError("the test crop is larger than the test resize")
            config = RegNetConfig.from_dict(json.loads(meta["architecture"]))
            if not _float32(config.bn_eps) > 0:
                raise ValueError(f"BN eps {config.bn_eps} is 0 in float32")
            return cls(
                config=config,
                preprocessing=preprocessing,
                source_format=meta["source_format"],
                source_file=meta["source_file"],
                source_sha256=meta["source_sha256"],
                converter_version=meta["converter_version"],
                layout=_choice(meta.get("layout", "native"), FILE_LAYOUTS),
                categories=_categories(meta.get("categories")),
                category_names=_categories(meta.get("category_names")),
                categories_from=_categories_from(meta.get("categories_from")),
                zoo_weights=_short(meta.get("zoo_weights"), "zoo_weights"),
                identified_by=_short(meta.get("identified_by"), "identified_by"),
                identity_evidence=_short(meta.get("identity_evidence"), "identity_evidence", MAX_EVIDENCE_CHARS),
            )
        except KeyError as exc:
            raise WeightsFileError(f"damaged regnet-convert metadata (no {exc.args[0]!r})") from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            detail = " ".join(str(exc).split())[:120]
            raise WeightsFileError(f"damaged regnet-convert metadata ({type(exc).__name__}: {detail})") from None


class WeightsFileError(ValueError):
    """A file that is not a usable converted RegNet; str() says why, in one line."""


def _choice(value: str, choices: tuple[_Choice, ...]) -> _Choice:
    """`value` as one of `choices` (the members of a Literal type); ValueError when it is none."""
    for choice in choices:
        if value == choice:
            return choice
    raise ValueError(f"{value[:20]!r} is not one of {', '.join(choices)}")


def _float32(value: float) -> float:
    """`value` as float32 holds it (inf beyond float32's range)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _triple(value: object, what: str, bounds: tuple[float, float]) -> tuple[float, float, float]:
    """Three numbers within `bounds`, finite in float32 (a mean or std per channel)."""
    if not (isinstance(value, list) and len(value) == 3):
        raise ValueError("mean and std must be three numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{what} must be three numbers")
    try:
        first, second, third = (float(v) for v in value)
    except OverflowError:
        raise ValueError(f"implausible mean or std: {what} holds an integer beyond any float") from None
    numbers = (first, second, third)
    low, high = bounds
    if not all(math.isfinite(_float32(v)) and low <= v <= high for v in numbers):
        shown = ", ".join(f"{v:.4g}" for v in numbers)
        raise ValueError(f"implausible mean or std: {what} [{shown}] (each from {low:g} to {high:g})")
    return numbers


def _label(text: str) -> bool:
    """A class label: one printable line (no newline or terminal control to forge a line of `predict`'s output)."""
    return 0 < len(text) <= MAX_LABEL_CHARS and text.isprintable()


def _categories(text: str | None) -> tuple[str, ...] | None:
    """The class labels, when the file has them: a JSON list of short strings."""
    if text is None:
        return None
    labels = json.loads(text)
    if not (isinstance(labels, list) and all(isinstance(x, str) and _label(x) for x in labels)):  # one line each
        raise ValueError(f"categories must be a list of class labels (1 to {MAX_LABEL_CHARS} printable characters)")
    return tuple(labels)


def _short(text: str | None, what: str, limit: int = MAX_LABEL_CHARS) -> str | None:
    """An optional one-line string of at most `limit` characters."""
    if text is not None and not (0 < len(text) <= limit and text.isprintable()):
        raise ValueError(f"{what} is not a printable string of 1 to {limit} characters")
    return text


def _categories_from(text: str | None) -> CategoriesFrom | None:
    return None if text is None else _choice(text, CATEGORIES_FROM)


def _size(text: str) -> int:
    """A test resize or crop in pixels."""
    value = int(text)
    if not 1 <= value <= MAX_TEST_SIZE:
        raise ValueError(f"implausible test size {value} (1 to {MAX_TEST_SIZE} pixels)")
    return value
