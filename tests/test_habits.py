"""Habits users expect: `--version` on both tools, `python -m regnet_convert`, "did you mean" for a mistyped model."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import regnet
from regnet_convert import __version__
from regnet_convert.cli.convert import main as convert_main
from regnet_convert.cli.validate import main as validate_main
from regnet_convert.sources.pycls_format import write_pycls_checkpoint


@pytest.mark.parametrize("command, name", [(convert_main, "regnet-convert"), (validate_main, "regnet-validate")])
def test_version(command, name):
    result = CliRunner().invoke(command, ["--version"])
    assert result.exit_code == 0 and result.output == f"{name}, version {__version__}\n"


def test_python_dash_m_runs_regnet_convert():
    module = [sys.executable, "-m", "regnet_convert"]
    done = subprocess.run([*module, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Usage: python -m regnet_convert [OPTIONS] COMMAND")
    assert "predict" in done.stdout and done.stderr == ""
    done = subprocess.run([*module, "nonsense"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: No such command 'nonsense'")


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("regnetx_4gf", "regnetx_4.0gf"),  # the same size spelled otherwise: one suggestion
        ("RegNetY-8GF", "regnety_8.0gf"),
        ("regnetx_0.4gf", "regnetx_400mf"),
        ("regnetx_400m", "regnetx_400mf"),  # a near miss: similar names
    ],
)
def test_a_mistyped_model_gets_a_suggestion(typed, meant):
    with pytest.raises(KeyError, match=rf"unknown model '{typed}' \(did you mean {meant}[ ?]"):
        regnet.canonical_name(typed)


def test_a_name_like_no_model_lists_them_all():
    with pytest.raises(KeyError, match="unknown model 'resnet50'; known models: regnetx_200mf, "):
        regnet.canonical_name("resnet50")


@pytest.mark.parametrize(
    "command, args",
    [
        (validate_main, ["--model", "regnetx_4gf", "--data", "."]),
        (convert_main, ["zoo", "fetch", "regnetx_4gf"]),
        (convert_main, ["pycls", "in.pyth", "out.safetensors", "--model", "regnetx_4gf"]),
    ],
)
def test_each_tool_passes_the_suggestion_on(command, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "in.pyth" in args:
        write_pycls_checkpoint(regnet.create_model("regnetx_200mf"), tmp_path / "in.pyth", regnet.ZOO["regnetx_200mf"])
    result = CliRunner().invoke(command, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "did you mean regnetx_4.0gf?" in lines[0] and lines[0].startswith("error: ")
