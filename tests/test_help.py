"""Every `--help` of both tools, rendered, against what the commands do: help texts that cannot drift."""

from __future__ import annotations

import inspect
import re

import click
import pytest
from click.testing import CliRunner

from regnet_convert.cli import convert as convert_cli
from regnet_convert.cli import validate as validate_cli
from regnet_convert.export.targets import TARGETS
from regnet_convert.sources.formats import FORMATS
from regnet_convert.validation.runner import MAX_WORKERS, ValidationOptions

SOURCES = ("pycls", "mmcls", "timm", "torchvision", "hf")


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command of a group, nested groups included, with its path of names."""
    found = []
    for name, command in group.commands.items():
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
    return found


ALL = [((), convert_cli.main), *commands(convert_cli.main)]
HELPS = {" ".join(path): CliRunner().invoke(convert_cli.main, [*path, "--help"]) for path, _ in ALL}
HELPS["regnet-validate"] = CliRunner().invoke(validate_cli.main, ["--help"])


@pytest.mark.parametrize("name", HELPS)
def test_every_help_renders_and_says_nothing_stale(name):
    result = HELPS[name]
    assert result.exit_code == 0 and result.output.startswith("Usage: "), result.output
    assert "TorchScript" not in result.output and "trace+freeze" not in result.output


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) or "regnet-convert" for p, _ in ALL])
def test_help_paragraphs_have_no_stray_indentation(path, command):
    """A paragraph click re-wraps must not carry indentation (it renders as runs of spaces); \\b blocks may."""
    text = inspect.cleandoc(command.help or "")
    for paragraph in text.split("\n\n"):
        if not paragraph.startswith("\b"):
            assert not any(line.startswith(" ") for line in paragraph.splitlines()), paragraph


def test_the_top_level_help_names_every_source_target_and_command():
    text = HELPS[""].output
    assert set(FORMATS) == set(SOURCES)
    for name in (*SOURCES, *TARGETS, "zoo", "inspect", "export"):
        assert re.search(rf"\b{re.escape(name)}\b", text.split("Options:")[0]), name
    assert "pycls (and mmclassification)" not in text


def test_each_import_command_has_its_own_help():
    texts = {source: HELPS[source].output.split("Options:")[0] for source in SOURCES}
    assert len(set(texts.values())) == len(SOURCES)
    for source in ("mmcls", "timm", "torchvision", "hf"):
        assert "checkpoint's cfg" not in texts[source], source  # only pycls checkpoints carry a cfg
    assert "checkpoint's cfg" in texts["pycls"]
    for source in SOURCES:
        order = FORMATS[source].channel_order
        assert f"takes {order} input" in " ".join(texts[source].split()), source


@pytest.mark.parametrize("source", [s for s in SOURCES if FORMATS[s].channel_order == "RGB"])
def test_rgb_on_an_rgb_source_is_refused_with_the_reason(tmp_path, source):
    result = CliRunner().invoke(convert_cli.main, [source, str(tmp_path / "in"), str(tmp_path / "out"), "--rgb"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --rgb: ") and "already take RGB input" in lines[0]
    assert not list(tmp_path.iterdir())


def test_export_help_names_every_target():
    text = HELPS["export"].output
    for target in TARGETS:
        assert f"--to {target}" in text


def test_validate_help_states_the_defaults_the_options_use():
    text = " ".join(HELPS["regnet-validate"].output.split())
    defaults = ValidationOptions(data=".")
    assert f"[default: {defaults.workers}; 0<=x<={MAX_WORKERS}]" in text and MAX_WORKERS >= 32
    assert f"[default: {defaults.batch_size}; x>=1]" in text
    assert "AOTInductor" in text and "--preprocess [mmcls|pycls]" in text
    assert f"[default: {defaults.preprocess}]" in text
