"""`regnet-convert`: RegNet weights from pycls, mmcls, timm, torchvision and transformers to native safetensors
files, exports to those libraries and ONNX, and the pycls zoo."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from regnet_convert import __version__
from regnet_convert.cli.common import ReportingGroup, console_script
from regnet_convert.cli.inspect import describe
from regnet_convert.cli.predict import predict
from regnet_convert.cli.zoo import zoo
from regnet_convert.conversion.identity import declared_weights
from regnet_convert.conversion.pipeline import DTYPES, convert
from regnet_convert.export.model_card import torchvision_lines
from regnet_convert.export.pipeline import export
from regnet_convert.export.targets import TARGETS
from regnet_convert.process import emit, printable


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regnet-convert")
def main() -> None:
    """Convert RegNet weights into native PyTorch RegNets in safetensors, and back out to other libraries.

    \b
    Sources:  pycls (.pyth), mmcls (.pth), timm, torchvision (safetensors or torch files), hf (a folder)
    Exports:  export SOURCE OUTPUT --to timm|torchvision|hf|timm-hub|onnx|mmcls
    Zoo:      zoo list, zoo fetch NAME... (the seed table's 16 rows, pycls's 24 models: verify, convert)
    Inspect:  inspect PATH (any weights the tool reads or writes, a folder or an .onnx included)
    Predict:  predict WEIGHTS IMAGE... (top-k classes, preprocessed as regnet-validate does)

    \b
    Examples:
      regnet-convert pycls RegNetX-4.0GF_dds_8gpu.pyth checkpoints/regnetx_4.0gf.safetensors
      regnet-convert mmcls RegNetX-4.0GF-ef8bb32c.pth regnetx_4.0gf.safetensors
      regnet-convert export checkpoints/regnetx_4.0gf.safetensors regnetx_4.0gf-hf --to hf
      regnet-convert inspect checkpoints/regnetx_4.0gf.safetensors
      regnet-convert zoo list

    \b
    Exit status: 0 done, 2 bad usage, input or output (one line on stderr),
    3 unexpected error, 130 interrupted (128+N for signal N); nothing partial is left behind.
    """


CHECKED = (
    "Every tensor is mapped (or the conversion fails), loaded strictly and run once before OUTPUT is written, "
    "atomically."
)
FROM_SHAPES = "the zoo model or per-stage structure its tensor shapes imply"
RGB_SOURCE = "The result takes RGB input, as the source does (--rgb is refused: there is nothing to reverse)."
BGR_SOURCE = "The result takes BGR input, as the source does; --rgb reverses the stem's channels."


def declared_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A click callback: the zoo key a --declare-weights value names (InputError for unknown weights)."""
    return declared_weights(value)


def conversion_command(source_format: str, *paragraphs: str) -> Callable:
    """A `regnet-convert FORMAT SOURCE OUTPUT` command; the formats share every option, each has its own help."""

    @click.argument("source", type=click.Path(path_type=Path))
    @click.argument("output", type=click.Path())  # a str: a trailing "/" must reach the output check
    @click.option("--model", metavar="NAME", help="Zoo model the weights must be (e.g. regnetx_4.0gf).")
    @click.option("--dtype", type=click.Choice(sorted(DTYPES)), help="Cast floating tensors (default: keep).")
    @click.option(
        "--rgb",
        is_flag=True,
        help="Make the model take RGB (reverses a BGR stem, as timm's copies of pycls weights do).",
    )
    @click.option("--declare-weights", "declare", metavar="MODEL.TAG", callback=declared_option,
                  help="Which published weights SOURCE holds when no hash identifies it (e.g. "
                       "regnetx_400mf.mmcls_in1k); recorded as declared. Refused if its hash or "
                       "architecture says otherwise.")  # fmt: skip
    @click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
    @click.option("-v", "--verbose", is_flag=True, help="Say how the architecture was found and what was dropped.")
    @click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
    def command(source: Path, output: Path, verbose: bool, quiet: bool, **options) -> None:
        log = (lambda line: click.echo(printable(line), err=True)) if verbose and not quiet else (lambda _: None)
        result = convert(source, output, source_format=source_format, quiet=quiet, log=log, **options)
        if not quiet:
            meta = result.metadata
            weights = f"{meta.zoo_weights} ({meta.identified_by})" if meta.zoo_weights else "not identified"
            emit(f"{source} -> {output}: {meta.model}, {result.tensors} tensors ({result.found_by}), weights {weights}")

    command.__doc__ = "\n\n".join(paragraphs)
    return main.command(source_format)(command)


conversion_command(
    "pycls",
    "Convert a pycls checkpoint SOURCE (.pyth training checkpoint, or a bare state dict) into OUTPUT.",
    f"The architecture comes from --model, else the checkpoint's cfg, else {FROM_SHAPES}. {CHECKED}",
    BGR_SOURCE,
)
conversion_command(
    "mmcls",
    "Convert an mmclassification RegNetX checkpoint SOURCE (.pth, as mmcv's save_checkpoint writes it) into OUTPUT.",
    f"The architecture comes from --model, else {FROM_SHAPES} (mmcls files carry no cfg). The class names of "
    f"meta.CLASSES are kept. {CHECKED}",
    BGR_SOURCE,
)
conversion_command(
    "timm",
    "Convert timm RegNet weights SOURCE (.safetensors, or a torch file read with weights_only) into OUTPUT.",
    f"The architecture comes from --model, else {FROM_SHAPES}. {CHECKED}",
    RGB_SOURCE,
)
conversion_command(
    "torchvision",
    "Convert torchvision RegNet weights SOURCE (.safetensors, or a torch file read with weights_only) into OUTPUT.",
    f"The architecture comes from --model, else {FROM_SHAPES}. {CHECKED}",
    RGB_SOURCE,
)
conversion_command(
    "hf",
    "Convert a Hugging Face transformers RegNet folder SOURCE (config.json with model.safetensors or "
    "pytorch_model.bin) into OUTPUT.",
    f"The architecture comes from config.json (every field checked) and must agree with --model when given; the "
    f"class names of id2label are kept. {CHECKED}",
    RGB_SOURCE,
)
main.add_command(zoo)
main.add_command(predict)


@main.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
def inspect_command(file: Path) -> None:
    """Show the model, layout, size, complexity, input channel order and source of FILE: a converted file, a pycls,
    mmcls, timm or torchvision checkpoint, an hf or timm-hub folder, or an .onnx export (told apart by content)."""
    emit("\n".join(describe(file)))


@main.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path())
@click.option("--to", "target", type=click.Choice(list(TARGETS)), required=True, help="The library to write for.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists (never the SOURCE).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def export_command(source: Path, output: str, target: str, force: bool, quiet: bool) -> None:
    metadata = export(source, output, target, force)
    if not quiet:
        order = metadata.preprocessing.channel_order
        emit(f"{source} -> {output}: {metadata.model} for {target}, {order} input")
        if target == "torchvision":  # torchvision has no builder for an arbitrary RegNet: the lines that load it
            emit("\n".join(["load it with:", *torchvision_lines(metadata, output)]))


export_command.help = (
    """Write a converted file (any layout) or a pycls checkpoint SOURCE for another library.

    Every export is mapped back, loaded strictly into the native model and run once before OUTPUT is
    written, atomically; a folder OUTPUT is replaced (--force) only if it holds nothing but an earlier export.

    \b
"""
    + "\n".join(
        f"    --to {name:<12} " + target.summary.replace("\n", "\n" + " " * 22) for name, target in TARGETS.items()
    )
    + "\n"
)


run = console_script(main)  # the console script

if __name__ == "__main__":
    run()
