"""The validation result: comparison with the published numbers, a table, and a JSON record."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from regnet.zoo import Accuracy, SeedRow, ZooModel, ZooWeights
from regnet_convert.conversion.identity import Identity
from regnet_convert.fs.outputs import atomic_output
from regnet_convert.validation.dataset import FULL_VALIDATION_SET
from regnet_convert.validation.evaluate import Counts
from regnet_convert.validation.preprocess import Preset, arithmetic
from regnet_convert.validation.selfcheck import PipelineCheck

# which published numbers each preprocessing preset reproduces
PRESET_REFERENCE: dict[Preset, str] = {"mmcls": "seed_table", "pycls": "pycls"}
REFERENCE_LABELS = {"seed_table": "the seed table", "pycls": "pycls"}


@dataclass
class ValidationResult:
    """Everything the report shows."""

    model: str
    weights: str
    counts: Counts
    expected_images: int
    preprocess: Preset
    channel_order: str
    amp: str
    fast: bool
    device: str
    world_size: int
    tolerance: float
    wall_seconds: float
    zoo: ZooModel | None = None  # the architecture's facts (complexity)
    identity: Identity | None = None  # which published weights these are: their numbers are the references
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
            and self.expected_images == FULL_VALIDATION_SET
            and self.counts.images == FULL_VALIDATION_SET
            and not self.counts.bad_images
        )

    @property
    def zoo_weights(self) -> ZooWeights | None:
        """The published weights these are, if identified."""
        return self.identity.zoo if self.identity is not None else None

    @property
    def row(self) -> SeedRow | None:
        """The seed table's row of these weights, if it has one."""
        return self.zoo_weights.row if self.zoo_weights else None

    def references(self) -> dict[str, Accuracy | None]:
        """The identified weights' published numbers: their seed row's, and pycls's for pycls's own weights."""
        weights = self.zoo_weights
        if weights is None:
            return {}
        return {"seed_table": weights.row.accuracy if weights.row else None, "pycls": weights.pycls}

    @property
    def compared_with(self) -> str | None:
        """The reference the pass/fail verdict uses: the preset's own, else pycls's."""
        refs = self.references()
        name = PRESET_REFERENCE[self.preprocess]
        return name if refs.get(name) else next((other for other, ref in refs.items() if ref), None)

    @property
    def passed(self) -> bool | None:
        if not self.comparable or self.compared_with is None:
            return None
        ref = self.references()[self.compared_with]
        if ref is None:  # compared_with names a reference that has numbers
            raise RuntimeError(f"the {self.compared_with} reference has no numbers")
        return abs(self.top1 - ref.top1) <= self.tolerance and abs(self.top5 - ref.top5) <= self.tolerance

    @property
    def images_per_second(self) -> float:
        return (self.counts.images + len(self.counts.bad_images)) / max(self.wall_seconds, 1e-9)

    def verdict(self) -> str:
        if not self.pipeline.exact:
            steps = ", ".join(self.pipeline.differs)
            return f"NOT COMPARABLE (preprocessing is not bit-exact with the reference pipeline: {steps} differs)"
        if self.counts.bad_images:
            return f"NOT COMPARABLE ({len(self.counts.bad_images)} undecodable image(s) skipped)"
        if self.counts.images != FULL_VALIDATION_SET:
            return f"SUBSET ({self.counts.images:,} of {FULL_VALIDATION_SET:,} images): not comparable"
        if self.passed is None:
            return f"NO REFERENCE ({self.no_reference_reason()})"
        return f"{'PASS' if self.passed else 'FAIL'} (within ±{self.tolerance} pp of {self.reference_name()})"

    def reference_name(self) -> str:
        """The numbers the verdict uses, in words: `the seed table's RegNetX-400MF row` or `pycls`."""
        if self.compared_with == "seed_table" and self.row is not None:
            return f"the seed table's {self.row.name} row"
        return REFERENCE_LABELS.get(self.compared_with or "", "nothing")

    def no_reference_reason(self) -> str:
        if self.identity is None or self.identity.weights is None:
            return "weights not identified: no published file has their sha256; declare them when converting"
        return f"{self.identity.weights} has no published numbers"

    def identity_line(self) -> str:
        """Which weights these are and how that is known."""
        if self.identity is None:
            return "not identified"
        if self.identity.weights is None:
            return f"not identified ({self.identity.evidence})"
        return f"{self.identity.weights}, identified by {self.identity.identified_by} ({self.identity.evidence})"

    def short_verdict(self) -> str:
        """The verdict's first words: PASS, FAIL, SUBSET, NOT COMPARABLE or NO REFERENCE."""
        return self.verdict().split(" (")[0]

    def table(self) -> str:
        lines = [
            f"model       {self.model}   weights {self.weights}",
            f"identity    {self.identity_line()}",
            f"setup       preprocess {self.preprocess} ({arithmetic(self.preprocess)}), {self.channel_order} input, "
            f"amp {self.amp}, "
            f"{'fast path' if self.fast else 'reference path'}, "
            f"{self.device} x{self.world_size}",
            f"precision   weights stored as {self.weights_dtype}, computed in {self.computed_in}",
            f"pipeline    {self.pipeline_line()}",
            f"{'':24}{'top-1':>8}{'top-5':>8}{'Δtop-1':>9}{'Δtop-5':>9}",
            f"{'measured':24}{self.top1:8.2f}{self.top5:8.2f}",
        ]
        labels = {"seed_table": f"seed {self.row.name}" if self.row else "seed table", "pycls": "pycls"}
        for name, ref in self.references().items():
            label = labels[name]
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
        refs = self.references()
        row, pycls = refs.get("seed_table"), refs.get("pycls")
        reference = {
            "weights": self.identity.weights if self.identity else None,
            "row": self.row.name if self.row else None,
            "top1": row.top1 if row else None,
            "top5": row.top5 if row else None,
            "identified_by": self.identity.identified_by if self.identity else None,
            "evidence": self.identity.evidence if self.identity else None,
            "pycls": vars(pycls) if pycls else None,
            "compared_with": self.compared_with,
        }
        return {
            "model": self.model,
            "weights": self.weights,
            "weights_format": self.weights_format,
            "images": self.counts.images,
            "skipped_images": len(self.counts.bad_images),
            "subset": self.counts.images != FULL_VALIDATION_SET,
            "top1": self.top1,
            "top5": self.top5,
            "reference": reference,
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


def _name(result: ValidationResult) -> str:
    """A row's Model cell: the seed row's name, else the weights, else the architecture, unidentified; with the
    format the weights were read in, where it is not a converted file (a sweep of exports)."""
    if result.row is not None:
        name = result.row.name
    elif result.identity is not None and result.identity.weights is not None:
        name = result.identity.weights
    else:
        name = f"{result.model} (unidentified)"
    return name if result.weights_format == "native" else f"{name} [{result.weights_format}]"


def _complexity(result: ValidationResult) -> list[str]:
    """Params (M) and GFLOPs: as the seed table prints them, else pycls's counts at 224x224."""
    if result.row is not None:
        return [str(result.row.params_m), str(result.row.gflops)]
    zoo = result.zoo
    return [f"{zoo.params / 1e6:.2f}", f"{zoo.flops / 1e9:.2f}"] if zoo else ["-", "-"]


def _files(result: ValidationResult) -> list[str]:
    """The Config and Download cells: the seed row's, else pycls's file of pycls's weights."""
    if result.row is not None:
        return [result.row.config, result.row.file]
    weights = result.zoo_weights
    return ["-", weights.primary_file.name if weights else "-"]


def _row(result: ValidationResult) -> list[str]:
    """One model's row of the table: the seed table's cells, measured numbers and differences beside the published."""
    row = result.row.accuracy if result.row else None
    cells = [_name(result), *_complexity(result)]
    for published, measured in ((row.top1 if row else None, result.top1), (row.top5 if row else None, result.top5)):
        cells += [f"{published:.2f}" if published is not None else "-", f"{measured:.2f}"]
        cells.append(f"{measured - published:+.2f}" if published is not None else "-")
    pycls = result.references().get("pycls")
    cells += _files(result)
    cells += (
        [_pair(pycls.top1, pycls.top5), _pair(result.top1 - pycls.top1, result.top5 - pycls.top5, True)]
        if pycls
        else ["-", "-"]
    )
    return [*cells, result.short_verdict()]


SWEEP_COLUMNS = [
    "Model", "Params(M)", "Flops(G)", "Top-1 (%)", "Measured top-1", "Δ top-1", "Top-5 (%)", "Measured top-5",
    "Δ top-5", "Config", "Download", "pycls top-1 / top-5", "Δ pycls", "Result",
]  # fmt: skip


def sweep_table(results: list[ValidationResult]) -> str:
    """The results as a markdown table in the seed table's layout (its rows' names, params, flops, published
    numbers, config and file; measured numbers and differences beside the published), pycls's numbers for pycls's
    own weights, with a line on the setup above and one on the verdicts below."""
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
        f"the weights' own reference ({REFERENCE_LABELS[PRESET_REFERENCE[first.preprocess]]} for the "
        f"{first.preprocess} preset, where it has them); only a full, clean 50,000-image run is judged; "
        "unidentified weights are compared with nothing."
    )
    return "\n".join([setup, "", line(SWEEP_COLUMNS), rule, *(line(row) for row in rows[1:]), "", verdicts])


def write_json(path: str | Path, record: dict | list, inputs: Iterable[str | Path] = ()) -> None:
    """Write `record` atomically (a temporary file renamed into place), never over one of `inputs`."""
    with atomic_output(path, True, inputs, label="--json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")


def write_table(path: str | Path, results: list[ValidationResult], inputs: Iterable[str | Path] = ()) -> None:
    """Write the markdown sweep table atomically, never over one of `inputs`."""
    with atomic_output(path, True, inputs, label="--table") as tmp:
        tmp.write_text(sweep_table(results) + "\n")
