"""What a converted safetensors file says about its weights (stored as string metadata)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal, get_args

from regnet.config import RegNetConfig

FORMAT = "regnet-convert"
FORMAT_VERSION = "1"


ChannelOrder = Literal["BGR", "RGB"]
Layout = Literal["native", "timm", "torchvision"]  # tensor names: ours, timm's RegNet or torchvision's
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)
LAYOUTS: tuple[Layout, ...] = get_args(Layout)


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
    layout: Layout = "native"
    categories: tuple[str, ...] | None = None  # one label per class: ImageNet-1k's WordNet ids, in class order
    category_names: tuple[str, ...] | None = None  # readable names in the same order ("tench", "goldfish", ...)

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
                mean=_triple(json.loads(meta["mean"]), low=0.0),
                std=_triple(json.loads(meta["std"]), low=1e-6),
                resize=_size(meta["test_resize"]),
                crop=_size(meta["test_crop"]),
            )
            if preprocessing.crop > preprocessing.resize:
                raise ValueError("the test crop is larger than the test resize")
            return cls(
                config=RegNetConfig.from_dict(json.loads(meta["architecture"])),
                preprocessing=preprocessing,
                source_format=meta["source_format"],
                source_file=meta["source_file"],
                source_sha256=meta["source_sha256"],
                converter_version=meta["converter_version"],
                layout=_choice(meta.get("layout", "native"), LAYOUTS),
                categories=_categories(meta.get("categories")),
                category_names=_categories(meta.get("category_names")),
            )
        except KeyError as exc:
            raise WeightsFileError(f"damaged regnet-convert metadata (no {exc.args[0]!r})") from None
        except (TypeError, ValueError, RecursionError) as exc:
            detail = " ".join(str(exc).split())[:120]
            raise WeightsFileError(f"damaged regnet-convert metadata ({type(exc).__name__}: {detail})") from None


class WeightsFileError(ValueError):
    """A file that is not a usable converted RegNet; str() says why, in one line."""


def _choice(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{value[:20]!r} is not one of {', '.join(choices)}")
    return value


def _triple(value: object, low: float) -> tuple[float, float, float]:
    """Three finite numbers >= `low` (a mean or std per channel)."""
    if not (isinstance(value, list) and len(value) == 3):
        raise ValueError("mean and std must be three numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= low for v in value):
        raise ValueError(f"implausible mean or std {value}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _categories(text: str | None) -> tuple[str, ...] | None:
    """The class labels, when the file has them: a JSON list of short strings."""
    if text is None:
        return None
    labels = json.loads(text)
    if not (isinstance(labels, list) and all(isinstance(x, str) and 0 < len(x) <= 100 for x in labels)):
        raise ValueError("categories must be a list of class labels")
    return tuple(labels)


def _size(text: str) -> int:
    """A test resize or crop in pixels."""
    value = int(text)
    if not 1 <= value <= 4096:
        raise ValueError(f"implausible test size {value}")
    return value
