"""`regnet-validate --plot`: top-1 against GFLOPs read back from the figure itself (each series' data, the band),
the families told apart, PNG and SVG written atomically, and a one-line refusal without matplotlib."""

from __future__ import annotations

import sys

import pytest

from regnet.zoo import seed_rows, zoo_model
from regnet_convert.cli.validate import main as validate_main
from regnet_convert.conversion.identity import Identity
from regnet_convert.validation.evaluate import Counts
from regnet_convert.validation.plot import figure, points, write_plot
from regnet_convert.validation.report import ValidationResult


def result(model: str, weights: str | None, top1_correct: int, identified_by: str = "declared") -> ValidationResult:
    """A full 50,000-image result of `model` holding `weights` (None: unidentified)."""
    return ValidationResult(
        model=model, weights="w", counts=Counts(50_000, top1_correct, 45_000), expected_images=50_000,
        preprocess="mmcls", channel_order="BGR", amp="off", fast=False, device="cpu", world_size=1, tolerance=0.1,
        wall_seconds=10.0, zoo=zoo_model(model),
        identity=Identity(weights, identified_by if weights else "none", "test"),
    )  # fmt: skip


RESULTS = [
    result("regnetx_4.0gf", "regnetx_4.0gf.pycls_in1k", 39_300, "pycls-format"),  # 78.60 (RegNetX-4.0GF*: 78.72)
    result("regnetx_400mf", "regnetx_400mf.mmcls_in1k", 36_280),  # 72.56 (RegNetX-400MF: 72.56)
    result("regnetx_400mf", "regnetx_400mf.pycls_in1k", 36_275, "pycls-format"),  # 72.55 (RegNetX-400MF*)
    result("regnetx_12gf", "regnetx_12gf.mmcls_in1k", 39_800),  # 79.60 (RegNetX-12GF: 79.67)
    result("regnetx_200mf", "regnetx_200mf.pycls_in1k", 34_000, "pycls-format"),  # no seed row: pycls's 68.912
    result("regnetx_600mf", None, 37_000),  # unidentified: measured only
]


def series(fig) -> dict[str, list[list[float]]]:
    return {line.get_gid(): line.get_xydata().tolist() for line in fig.axes[0].lines}


def test_the_figure_plots_the_results_and_the_published_numbers():
    fig = figure(RESULTS)
    data = series(fig)
    rows = {row.name: row for row in seed_rows()}
    assert data["published:pycls-trained"] == [
        [zoo_model("regnetx_200mf").flops / 1e9, 68.912],  # compared with pycls's numbers: no seed row
        [rows["RegNetX-400MF*"].gflops, 72.55],
        [rows["RegNetX-4.0GF*"].gflops, 78.72],
    ]
    assert data["measured:pycls-trained"] == [[0.19904087200000002, 68.0], [0.41, 72.55], [4.0, 78.6]]
    assert data["published:mmcls-trained"] == [[0.41, 72.56], [12.15, 79.67]]
    assert data["measured:mmcls-trained"] == [[0.41, 72.56], [12.15, 79.6]]
    assert data["measured:unidentified"] == [[zoo_model("regnetx_600mf").flops / 1e9, 74.0]]
    assert "published:unidentified" not in data  # compared with nothing, so nothing published is drawn
    lines = {line.get_gid(): line for line in fig.axes[0].lines}
    styles = {family: (lines[f"measured:{family}"].get_color(), lines[f"measured:{family}"].get_marker())
              for family in ("pycls-trained", "mmcls-trained", "unidentified")}  # fmt: skip
    assert len(set(styles.values())) == 3 and len({colour for colour, _ in styles.values()}) == 3
    bands = {band.get_gid(): band.get_paths()[0].vertices for band in fig.axes[0].collections}
    assert set(bands) == {"band:pycls-trained", "band:mmcls-trained"}
    band = bands["band:mmcls-trained"]  # published ± tolerance at each x
    assert sorted({round(y, 6) for y in band[:, 1]}) == [72.46, 72.66, 79.57, 79.77]
    assert fig.axes[0].get_xscale() == "log" and "GFLOPs" in fig.axes[0].get_xlabel()
    assert [p.label for p in points(RESULTS)][:2] == ["RegNetX-4.0GF*", "RegNetX-400MF"]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".SVG"])
def test_png_and_svg_are_written_from_the_same_figure(tmp_path, suffix):
    path = tmp_path / f"plot{suffix}"
    fig = write_plot(path, RESULTS)
    assert series(fig) == series(figure(RESULTS))
    data = path.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n")
    else:
        assert b'id="measured:mmcls-trained"' in data and b'id="band:pycls-trained"' in data
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_without_matplotlib_plot_is_refused_with_one_line_before_the_run(runner, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    (tmp_path / "val").mkdir()
    argv = ["--weights", str(tmp_path / "missing.safetensors"), "--data", str(tmp_path / "val"), "--quiet"]
    result = runner.invoke(validate_main, [*argv, "--plot", str(tmp_path / "p.png")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0] == "error: --plot: needs matplotlib, which is not installed; install it with: pip install " \
                       "'regnet-convert[plot]'"  # fmt: skip
    assert not (tmp_path / "p.png").exists()
