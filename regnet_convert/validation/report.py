"""The validation result: comparison with the published numbers, a table, and a JSON record."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from regnet.zoo import Accuracy, ZooModel
from regnet_convert.fs.outputs import atomic_output
from regnet_convert.validation.dataset import FULL_VALIDATION_SET
from regnet_convert.validation.evaluate import Counts
from regnet_convert.validation.preprocess import arithmetic
from regnet_convert.validation.selfcheck import PipelineCheck

# which published numbers each preprocessing preset reproduces
PRESET_REFERENCE = {"mmcls": "seed_table", "pycls": "pycls"}


@dataclass
class ValidationResult:
    """Everything the report shows."""

    model: str
    weights: str
    counts: Counts
    expected_images: int
    preprocess: str
    channel_order: str
    amp: str
    fast: bool
    device: str
    world_size: int
    tolerance: float
    wall_seconds: float
    demo: bool = False
    zoo: ZooModel | None = None
    weights_dtype: str = "float32"
    weights_format: str = "native"  # what --weights was: native, pycls, mmcls, timm, torchvision, hf, timm-hub, onnx
    pipeline: PipelineCheck = field(default_factory=PipelineCheck)

    @property
    def computed_in(self) -> str:
        """The arithmetic of the forward pass: float32, or the --amp autocast dtype."""
        return "float32" if self.amp == "off" else f"{self.amp} autocast (float32 weights)"

    @property
    def top1(self) -> float:
        return self.counts.accuracy()[0]

    @property
    def top5(self) -> float:
        return self.counts.accuracy()[1]

    @property
    def comparable(self) -> bool:
        """A full, clean 50,000-image run of a zoo model: the only kind that can pass or fail."""
        return (
            self.zoo is not None
            and self.pipeline.exact
            and not self.demo
            and self.expected_images == FULL_VALIDATION_SET
            and self.counts.images == FULL_VALIDATION_SET
            and not self.counts.bad_images
        )

    def references(self) -> dict[str, Accuracy | None]:
        if self.zoo is None:
            return {}
        return {"seed_table": self.zoo.seed_table, "pycls": self.zoo.pycls}

    @property
    def compared_with(self) -> str | None:
        """The reference the pass/fail verdict uses: the preset's own, else pycls's."""
        refs = self.references()
        name = PRESET_REFERENCE[self.preprocess]
        return name if refs.get(name) else ("pycls" if refs.get("pycls") else None)

    @property
    def passed(self) -> bool | None:
        if not self.comparable or self.compared_with is None:
            return None
        ref = self.references()[self.compared_with]
        return abs(self.top1 - ref.top1) <= self.tolerance and abs(self.top5 - ref.top5) <= self.tolerance

    @property
    def images_per_second(self) -> float:
        return (self.counts.images + len(self.counts.bad_images)) / max(self.wall_seconds, 1e-9)

    def verdict(self) -> str:
        if self.demo:
            return "DEMO (random weights on generated images; not comparable with any published number)"
        if not self.pipeline.exact:
            steps = ", ".join(self.pipeline.differs)
            return f"NOT COMPARABLE (preprocessing is not bit-exact with the reference pipeline: {steps} differs)"
        if self.counts.bad_images:
            return f"NOT COMPARABLE ({len(self.counts.bad_images)} undecodable image(s) skipped)"
        if self.counts.images != FULL_VALIDATION_SET:
            return f"SUBSET ({self.counts.images:,} of {FULL_VALIDATION_SET:,} images): not comparable"
        if self.passed is None:
            return "NO REFERENCE (not a zoo model)"
        return f"{'PASS' if self.passed else 'FAIL'} (within ±{self.tolerance} pp of {self.compared_with})"

    def short_verdict(self) -> str:
        """The verdict's first words: PASS, FAIL, SUBSET, NOT COMPARABLE, NO REFERENCE or DEMO."""
        return self.verdict().split(" (")[0]

    def table(self) -> str:
        lines = [
            f"model       {self.model}   weights {self.weights}",
            f"setup       preprocess {self.preprocess} ({arithmetic(self.preprocess)}), {self.channel_order} input, "
            f"amp {self.amp}, "
            f"{'fast path' if self.fast else 'reference path'}, "
            f"{self.device} x{self.world_size}",
            f"precision   weights stored as {self.weights_dtype}, computed in {self.computed_in}",
            f"pipeline    {self.pipeline_line()}",
            f"{'':24}{'top-1':>8}{'top-5':>8}{'Δtop-1':>9}{'Δtop-5':>9}",
            f"{'measured':24}{self.top1:8.2f}{self.top5:8.2f}",
        ]
        for name, ref in self.references().items():
            label = {"seed_table": "seed table (mmcls)", "pycls": "pycls"}[name]
            if ref is None:
                lines.append(f"{label:24}{'-':>8}{'-':>8}")
            else:
                lines.append(
                    f"{label:24}{ref.top1:8.2f}{ref.top5:8.2f}{self.top1 - ref.top1:+9.2f}{self.top5 - ref.top5:+9.2f}"
                )
        skipped = f" (+{len(self.counts.bad_images)} skipped)" if self.counts.bad_images else ""
        lines += [
            f"images      {self.counts.images:,}{skipped}",
            f"result      {self.verdict()}",
            f"throughput  {self.images_per_second:,.1f} images/s, wall time {self.wall_seconds:.1f} s",
        ]
        return "\n".join(lines)

    def pipeline_line(self) -> str:
        """What the self-check found: every preprocessing step bit-exact with the reference, or which are not."""
        if self.pipeline.exact:
            return "bit-exact with the reference arithmetic (self-check: decode, resize, crop, normalize)"
        return f"NOT bit-exact with the reference arithmetic: {', '.join(self.pipeline.differs)} differs"

    def to_json(self) -> dict:
        refs = {k: (vars(v) if v else None) for k, v in self.references().items()}
        return {
            "model": self.model,
            "weights": self.weights,
            "weights_format": self.weights_format,
            "images": self.counts.images,
            "skipped_images": len(self.counts.bad_images),
            "subset": self.counts.images != FULL_VALIDATION_SET,
            "demo": self.demo,
            "top1": self.top1,
            "top5": self.top5,
            "reference": {**refs, "compared_with": self.compared_with},
            "tolerance": self.tolerance,
            "passed": self.passed,
            "verdict": self.verdict(),
            "preprocess": self.preprocess,
            "preprocess_arithmetic": arithmetic(self.preprocess),
            "pipeline": self.pipeline.to_json(),
            "channel_order": self.channel_order,
            "amp": self.amp,
            "weights_dtype": self.weights_dtype,
            "computed_in": self.computed_in,
            "fast": self.fast,
            "device": self.device,
            "world_size": self.world_size,
            "images_per_second": self.images_per_second,
            "wall_seconds": self.wall_seconds,
        }


def _pair(a: float, b: float, signed: bool = False) -> str:
    return f"{a:+.2f} / {b:+.2f}" if signed else f"{a:.2f} / {b:.2f}"


def _row(result: ValidationResult) -> list[str]:
    """One model's row of the sweep table."""
    zoo = result.zoo
    row = [
        result.model,
        f"{zoo.params / 1e6:.2f}" if zoo else "-",
        f"{zoo.flops / 1e9:.2f}" if zoo else "-",
        f"{result.top1:.2f}",
        f"{result.top5:.2f}",
    ]
    for name in ("seed_table", "pycls"):
        ref = result.references().get(name)
        row += (
            [_pair(ref.top1, ref.top5), _pair(result.top1 - ref.top1, result.top5 - ref.top5, True)]
            if ref
            else ["-"] * 2
        )
    return [*row, result.short_verdict()]


SWEEP_COLUMNS = [
    "Model", "Params (M)", "Flops (G)", "Top-1 (%)", "Top-5 (%)", "Seed table top-1 / top-5", "Δ seed table",
    "pycls top-1 / top-5", "Δ pycls", "Result",
]  # fmt: skip


def sweep_table(results: list[ValidationResult]) -> str:
    """The results as a markdown table in the seed table's shape (params and flops are pycls's counts at 224x224,
    flops as multiply-adds), with a line on the setup above and one on the verdicts below."""
    first = results[0]
    rows = [SWEEP_COLUMNS, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SWEEP_COLUMNS))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * w if i == 0 else "-" * (w - 1) + ":") for i, w in enumerate(widths)) + " |"
    skipped = sum(len(r.counts.bad_images) for r in results) // len(results)
    images = f"{first.counts.images:,} images" + (f" (+{skipped} skipped)" if skipped else "")
    setup = (
        f"ImageNet validation: {images}, preprocess {first.preprocess} ({arithmetic(first.preprocess)}), "
        f"amp {first.amp}, {'fast path' if first.fast else 'reference path'}, {first.device} x{first.world_size}, "
        f"{first.images_per_second:,.1f} images/s for all {len(results)} model(s) together."
    )
    passed = sum(r.passed is True for r in results)
    failed = sum(r.passed is False for r in results)
    verdicts = (
        f"{passed} PASS, {failed} FAIL of {len(results)}: PASS means top-1 and top-5 within ±{first.tolerance} pp of "
        f"the reference ({PRESET_REFERENCE[first.preprocess].replace('_', ' ')} for the {first.preprocess} preset); "
        "only a full, clean 50,000-image run is judged."
    )
    return "\n".join([setup, "", line(SWEEP_COLUMNS), rule, *(line(row) for row in rows[1:]), "", verdicts])


def write_json(path: Path, record: dict | list, inputs: Iterable[Path] = ()) -> None:
    """Write `record` atomically (a temporary file renamed into place), never over one of `inputs`."""
    with atomic_output(path, True, inputs, label="--json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")


def write_table(path: Path, results: list[ValidationResult], inputs: Iterable[Path] = ()) -> None:
    """Write the markdown sweep table atomically, never over one of `inputs`."""
    with atomic_output(path, True, inputs, label="--table") as tmp:
        tmp.write_text(sweep_table(results) + "\n")
