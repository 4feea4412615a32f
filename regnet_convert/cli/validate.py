"""`regnet-validate`: ImageNet top-1/top-5 of a converted RegNet, compared with the published numbers."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from regnet_convert import __version__
from regnet_convert.cli.common import ReportingCommand, console_script
from regnet_convert.errors import EXIT_FAIL, EXIT_OK
from regnet_convert.process import emit, printable
from regnet_convert.validation.distributed import process_group
from regnet_convert.validation.evaluate import AMP_DTYPES
from regnet_convert.validation.plot import check_plot_path, write_plot
from regnet_convert.validation.preprocess import PRESETS
from regnet_convert.validation.report import sweep_table, write_json, write_table
from regnet_convert.validation.runner import DEFAULT_WORKERS, MAX_WORKERS, ValidationOptions, json_inputs, validate
from regnet_convert.validation.selection import MissingWeights


class FiniteFloat(click.ParamType):
    """A finite, non-negative number (nan and inf are refused)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a finite number >= 0", param, ctx)
        return number


def checked_plot(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a .png or .svg name, matplotlib installed (before any weights are read)."""
    if value is not None:
        check_plot_path(value)
    return value


@click.command(cls=ReportingCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regnet-validate")
@click.option(
    "--model",
    metavar="NAME",
    multiple=True,
    help="Zoo weights: MODEL (regnetx_4.0gf: pycls's) or MODEL.TAG (regnetx_4.0gf.mmcls_in1k: mmclassification's);"
    " weights default to MODEL.safetensors (MODEL.TAG.safetensors) in $REGNET_CHECKPOINTS, else ./checkpoints/ if it"
    " exists, else ~/.cache/regnet-convert/checkpoints/. Repeat it, or give seed (the seed table's 16 rows), starred"
    " (its 8 rows converted from pycls) or all (every converted zoo model), for a sweep: each image decoded once for"
    " every model. Each is compared with its own weights' published numbers.",
)
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="ImageNet val: 1000 WordNet-id folders, or flat."
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Weights in any format the tool reads or writes: a converted .safetensors, a pycls .pyth, an mmcls .pth,"
    " timm or torchvision files, an hf or timm-hub folder, an .onnx file (the onnx extra); told apart by content."
    " Repeat it for one sweep (one table) over several files, e.g. one model's exports.",
)
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Labels for a flat folder: meta/val.txt or LOC_val_solution.csv."
)
@click.option("--preprocess", type=click.Choice(PRESETS), default="mmcls", show_default=True,
              help="mmcls (uint8 resize) reproduces the seed table's numbers; pycls (float32 resize, "
                   "bit-exact with pycls 0.1.1's test loader) pycls's own.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0, MAX_WORKERS), default=DEFAULT_WORKERS, show_default=True,
              help="DataLoader worker processes (default: one per CPU core, at most 8; at most 32, or 4 per core"
                   " where that is more).")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--amp", type=click.Choice(list(AMP_DTYPES)), default="off", show_default=True,
              help="Mixed precision; the reference numbers are fp32.")  # fmt: skip
@click.option("--channels-last", is_flag=True, help="Run the model in channels-last memory format.")
@click.option("--fast", is_flag=True,
              help="Fast path: BN folded, channels-last; on CPU compiled ahead of time (torch.export + "
                   "AOTInductor, cached in $REGNET_CACHE/aoti), where fp32 agrees with the reference to 1e-4; "
                   "eager on CUDA.")  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(1), help="Quick check on a deterministic, evenly spread subset of N images."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(),
    help="Also write the result as JSON (atomically); a sweep writes a list, one record per model.",
)
@click.option(
    "--table",
    "table_path",
    type=click.Path(),
    metavar="FILE.md",
    help="Also write the results as a markdown table in the seed table's layout, measured numbers and differences"
    " beside the published ones (atomically).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(),
    metavar="FILE.png|FILE.svg",
    callback=checked_plot,
    help="Also draw top-1 against GFLOPs, published and measured, per family (pycls- or mmcls-trained), with the"
    " tolerance band (needs matplotlib: pip install 'regnet-convert[plot]').",
)
@click.option(
    "--cache",
    type=click.Path(),
    metavar="DIR",
    help="Keep the crops in DIR (memory-mapped): later runs on the same files skip decoding.",
)
@click.option("--tolerance", type=FiniteFloat(), default=0.1, show_default=True,
              help="Allowed |difference| in percentage points for PASS.")  # fmt: skip
@click.option("--skip-bad-images", is_flag=True, help="Skip undecodable images (the result is then not comparable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def main(json_path: str | None, quiet: bool, **kwargs) -> None:
    """Validate converted RegNets on ImageNet, each compared with its own published numbers.

    A converted file records which published weights it holds (identified by its source's sha256, declared at
    conversion, or a pycls checkpoint's model): they are compared with their seed-table row, and pycls's weights
    with pycls's numbers too; weights nothing identifies are compared with nothing (NO REFERENCE).

    \b
    Exit status: 0 pass (or nothing to judge), 1 accuracy outside the tolerance (any model of a sweep),
    2 bad usage, input, data or output, 3 unexpected error, 130 interrupted (128+N for signal N), whichever
    process gets the signal (a worker, a torchrun rank); a closed stdout leaves the status as it is.
    """
    options = ValidationOptions(**kwargs, progress=not quiet, json_path=json_path)
    try:
        with process_group(options.device) as placement:  # a failure on any rank ends every rank with it
            results = validate(options, placement)
    except MissingWeights as missing:
        for line in missing.details:
            click.echo(printable(line), err=True)
        raise
    if placement.is_main:  # printed first (a closed stdout is no error): a late error must not lose the results
        emit(sweep_table(results) if options.sweep else results[0].table())
        inputs = json_inputs(options, [Path(r.weights) for r in results])
        if json_path:
            records = [r.to_json() for r in results]
            write_json(json_path, records if options.sweep else records[0], inputs)
        if options.table_path:
            write_table(options.table_path, results, inputs)
        if options.plot_path:
            write_plot(options.plot_path, results, inputs)
    sys.exit(EXIT_FAIL if any(r.passed is False for r in results) else EXIT_OK)


run = console_script(main)  # the console script

if __name__ == "__main__":
    run()
