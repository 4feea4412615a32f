"""What a converted safetensors file says about its weights (stored as string metadata)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from regnet.config import RegNetConfig

FORMAT = "regnet-convert"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class Preprocessing:
    """How the network expects its input: channel order and normalisation on a 0..1 scale."""

    channel_order: str = "BGR"
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
    layout: str = "native"  # tensor names: "native", or "timm" for timm's RegNet

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
        }

    @classmethod
    def from_strings(cls, meta: dict[str, str]) -> WeightsMetadata:
        """Parse `to_strings`'s output; raises ValueError when it is not ours."""
        if meta.get("format") != FORMAT:
            raise ValueError("not a regnet-convert file (no 'format: regnet-convert' in its metadata)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {meta.get('format_version')!r}")
        try:
            preprocessing = Preprocessing(
                channel_order=meta["channel_order"],
                mean=tuple(json.loads(meta["mean"])),
                std=tuple(json.loads(meta["std"])),
                resize=int(meta["test_resize"]),
                crop=int(meta["test_crop"]),
            )
            return cls(
                config=RegNetConfig.from_dict(json.loads(meta["architecture"])),
                preprocessing=preprocessing,
                source_format=meta["source_format"],
                source_file=meta["source_file"],
                source_sha256=meta["source_sha256"],
                converter_version=meta["converter_version"],
                layout=meta.get("layout", "native"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged regnet-convert metadata ({type(exc).__name__}: {exc})") from None
