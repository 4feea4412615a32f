"""`regnet-convert predict`: the top-k classes of images, with readable names and probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import click

from regnet.preprocess import PRESETS, as_preset
from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import atomic_output, check_output
from regnet_convert.prediction.classify import (
    DEFAULT_BATCH,
    DEFAULT_TOPK,
    Prediction,
    Predictor,
    image_paths,
    predictions,
)
from regnet_convert.process import emit, printable

STDOUT = "-"


def human(prediction: Prediction) -> str:
    """The image, then one line per class: rank, probability, readable name (and its label when that differs).
    Each field is escaped on its own: a newline in a file name cannot start a line of its own."""
    lines = [printable(prediction.image)]
    for rank, score in enumerate(prediction.top, 1):
        label = f" ({printable(score.label)})" if score.label and score.label != score.name else ""
        lines.append(f"  {rank}. {100 * score.probability:6.2f}%  {printable(score.name)}{label}")
    return "\n".join(lines)


def skipped_line(prediction: Prediction) -> None:
    """One line on stderr for an image --skip-bad-images leaves out."""
    click.echo(f"warning: {printable(prediction.error)}; skipped", err=True)


@click.command("predict")
@click.argument("weights", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--topk", type=click.IntRange(1), default=DEFAULT_TOPK, show_default=True,
              help="How many classes to show per image (at most the model's number of classes).")  # fmt: skip
@click.option("--preprocess", type=click.Choice(PRESETS), default="mmcls", show_default=True,
              help="As regnet-validate's: mmcls (uint8 resize) or pycls (float32 resize).")  # fmt: skip
@click.option("--json", "json_path", metavar="FILE",
              help="Write the predictions as JSON to FILE (atomically; - for stdout) instead of text.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--skip-bad-images", is_flag=True, help="Skip images that cannot be read (one line each on stderr).")
def predict(
    weights: Path,
    images: tuple[Path, ...],
    topk: int,
    preprocess: str,
    json_path: str | None,
    batch_size: int,
    device: str,
    skip_bad_images: bool,
) -> None:
    """Classify IMAGES (files, or folders of images) with WEIGHTS: a converted file, a pycls checkpoint or any
    other format regnet-validate reads.

    Each image is preprocessed exactly as regnet-validate does it (same top-1); the top classes are printed with
    their readable names and probabilities. An image that cannot be read ends the run (exit 2) unless
    --skip-bad-images is given; a folder's images are the files directly in it with an image extension.
    """
    if json_path is not None and json_path != STDOUT:
        check_output(json_path, True, [weights, *images], label="--json")
    records: list[dict] = []
    bad = []

    def skip(prediction: Prediction) -> None:
        skipped_line(prediction)
        bad.append(prediction)
        records.append(prediction.to_json())

    paths = image_paths(images, skip if skip_bad_images else None)  # every path given is checked before loading
    predictor = Predictor(weights, as_preset(preprocess), device, label="WEIGHTS")
    predictor.check_topk(topk, "--topk")
    classified = 0
    for prediction in predictions(predictor, paths, topk, batch_size):
        if prediction.error is not None:
            if not skip_bad_images:
                raise InputError(None, f"{prediction.error} (use --skip-bad-images to skip such files)")
            skip(prediction)
            continue
        classified += 1
        if json_path is None:
            emit(human(prediction))
        else:
            records.append(prediction.to_json())
    if not classified:
        raise InputError(None, f"no image could be read ({len(bad)} skipped)")
    if json_path is not None:
        write(json_path, document(predictor, weights, preprocess, topk, records), [weights, *images])


def document(predictor: Predictor, weights: Path, preset: str, topk: int, records: list[dict]) -> dict:
    """The --json document: what classified the images, and each image's top classes (or its error)."""
    meta = predictor.metadata
    return {
        "weights": str(weights),
        "model": meta.model,
        "channel_order": meta.preprocessing.channel_order,
        "preprocess": preset,
        "topk": topk,
        "predictions": records,
    }


def write(json_path: str, record: dict, inputs: list[Path]) -> None:
    """The JSON on stdout (`-`) or in a file, written atomically, never over an input."""
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    if json_path == STDOUT:
        emit(text.rstrip("\n"))
        return
    with atomic_output(Path(json_path), True, inputs, label="--json") as tmp:
        tmp.write_text(text)
