"""`regnet-validate`: ImageNet top-1/top-5 of a converted RegNet, compared with the published numbers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import torch.distributed as dist

from regnet_convert.errors import ConvertError
from regnet_convert.evaluate import AMP_DTYPES
from regnet_convert.preprocess import PRESETS
from regnet_convert.report import write_json
from regnet_convert.validate import ValidationOptions, validate

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model", metavar="NAME", help="Zoo model (regnetx_4.0gf); weights default to checkpoints/NAME.safetensors."
)
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="ImageNet val: 1000 WordNet-id folders, or flat."
)
@click.option("--weights", type=click.Path(path_type=Path), help="A converted .safetensors (or a pycls .pyth).")
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Labels for a flat folder: meta/val.txt or LOC_val_solution.csv."
)
@click.option("--preprocess", type=click.Choice(PRESETS), default="mmcls", show_default=True,
              help="mmcls reproduces the seed table's numbers, pycls pycls's own.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=min(8, os.cpu_count() or 1), show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--amp", type=click.Choice(list(AMP_DTYPES)), default="off", show_default=True,
              help="Mixed precision; the reference numbers are fp32.")  # fmt: skip
@click.option("--channels-last", is_flag=True, help="Run the model in channels-last memory format.")
@click.option("--fast", is_flag=True, help="Fast path: BN folded, channels-last, torch.compile (fp32 agrees to 1e-4).")
@click.option(
    "--limit", type=click.IntRange(1), help="Quick check on a deterministic, evenly spread subset of N images."
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the result as JSON (atomically)."
)
@click.option("--tolerance", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Allowed |difference| in percentage points for PASS.")  # fmt: skip
@click.option("--skip-bad-images", is_flag=True, help="Skip undecodable images (the result is then not comparable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--demo", is_flag=True, hidden=True)
def main(json_path: Path | None, quiet: bool, **kwargs) -> None:
    """Validate a converted RegNet on ImageNet and compare with the seed table and pycls.

    Exit status: 0 pass (or nothing to judge), 1 fail, 2 bad usage or data.
    """
    options = ValidationOptions(**kwargs, progress=not quiet)
    try:
        result = validate(options)
        is_main = not dist.is_initialized() or dist.get_rank() == 0
        if is_main:
            click.echo(result.table())
            if json_path:
                write_json(json_path, result.to_json())
    except ConvertError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(EXIT_FAIL if result.passed is False else EXIT_PASS)


if __name__ == "__main__":
    main()
