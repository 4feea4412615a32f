"""`regnet-validate --plot`: top-1 against GFLOPs, published and measured, per family, with the tolerance band.

Matplotlib is an optional extra (`pip install 'regnet-convert[plot]'`): imported only when a plot is asked for,
checked before the run. The figure is drawn without pyplot (no global state, no display) and written atomically.
Each series carries a gid (`published:pycls-trained`, `measured:mmcls-trained`, `band:...`), so the figure's own
data can be read back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regnet_convert.errors import InputError
from regnet_convert.fs.outputs import atomic_output
from regnet_convert.validation.report import ValidationResult

FORMATS = (".png", ".svg")
FAMILIES = ("pycls-trained", "mmcls-trained", "unidentified")
STYLE = {  # colour and marker of each family
    "pycls-trained": ("tab:blue", "o"),
    "mmcls-trained": ("tab:orange", "s"),
    "unidentified": ("tab:gray", "X"),
}
INSTALL = "pip install 'regnet-convert[plot]'"


@dataclass(frozen=True)
class Point:
    """One model of the run on the plot."""

    label: str
    family: str
    gflops: float
    measured: float  # top-1, %
    published: float | None  # the top-1 the verdict compares with, if the weights have one


def check_plot_path(path: str | Path) -> None:
    """Before the run: a .png or .svg name, and matplotlib installed; InputError naming --plot otherwise."""
    if Path(path).suffix.lower() not in FORMATS:
        raise InputError(f"--plot {path}", "is not a .png or .svg file name; give FILE.png or FILE.svg")
    _matplotlib()


def _matplotlib() -> Any:
    """matplotlib's Figure and Agg canvas (quietly: no font-cache notices), or InputError when it is missing."""
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("--plot", f"needs matplotlib, which is not installed; install it with: {INSTALL}") from None
    return Figure, FigureCanvasAgg


def points(results: Iterable[ValidationResult]) -> list[Point]:
    """The run's models with a FLOPs count (zoo architectures): x from the seed row where there is one."""
    found = []
    for result in results:
        if result.row is not None:
            gflops = result.row.gflops
        elif result.zoo is not None:
            gflops = result.zoo.flops / 1e9
        else:
            continue
        weights = result.zoo_weights
        reference = result.references().get(result.compared_with or "")
        label = result.row.name if result.row else (weights.key if weights else result.model)
        family = weights.family if weights else "unidentified"
        found.append(Point(label, family, gflops, result.top1, reference.top1 if reference else None))
    return found


def figure(results: list[ValidationResult]) -> Any:
    """The figure: per family, published top-1 (open markers, dashed) with the ±tolerance band around it, and
    measured top-1 (filled markers); x is GFLOPs on a log scale."""
    Figure, _ = _matplotlib()
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    tolerance = results[0].tolerance if results else 0.0
    shown = points(results)
    for family in FAMILIES:
        members = sorted((p for p in shown if p.family == family), key=lambda p: p.gflops)
        if not members:
            continue
        colour, marker = STYLE[family]
        published = [(p.gflops, p.published) for p in members if p.published is not None]
        if published:
            x, y = [gflops for gflops, _ in published], [top1 for _, top1 in published]
            band = ax.fill_between(x, [v - tolerance for v in y], [v + tolerance for v in y], color=colour, alpha=0.15)
            band.set_gid(f"band:{family}")
            band.set_label(f"{family}: ±{tolerance:g} pp")
            (line,) = ax.plot(x, y, linestyle="--", marker=marker, markerfacecolor="none", color=colour)
            line.set_gid(f"published:{family}")
            line.set_label(f"{family}: published")
        (line,) = ax.plot(
            [p.gflops for p in members], [p.measured for p in members], linestyle="none", marker=marker, color=colour
        )
        line.set_gid(f"measured:{family}")
        line.set_label(f"{family}: measured")
        for p in members:
            ax.annotate(p.label, (p.gflops, p.measured), textcoords="offset points", xytext=(4, -10), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs (multiply-adds at 224x224)")
    ax.set_ylabel("ImageNet-1k top-1 (%)")
    left_out = len(results) - len(shown)
    note = f"; {left_out} model(s) without a FLOPs count left out" if left_out else ""
    ax.set_title(f"RegNet top-1 against GFLOPs: published and measured ({len(shown)} model(s){note})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if shown:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def write_plot(path: str | Path, results: list[ValidationResult], inputs: Iterable[str | Path] = ()) -> Any:
    """Draw and write the figure atomically (PNG or SVG by the name's suffix), never over one of `inputs`."""
    _, FigureCanvasAgg = _matplotlib()
    fig = figure(results)
    FigureCanvasAgg(fig)
    kind = Path(path).suffix.lower().lstrip(".")
    with atomic_output(Path(path), True, inputs, label="--plot") as tmp:
        fig.savefig(tmp, format=kind, dpi=150, metadata={"Date": None} if kind == "svg" else None)
    return fig
