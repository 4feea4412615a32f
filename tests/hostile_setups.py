"""Setups the hostile suites share: each writes a case's inputs into its folder (`Setup(folder, fixtures)`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from crafted import Fixtures, edit_architecture, save, with_cfg, with_state
from hostile import Case

Setup = Callable[[Path, Fixtures], object]
CONVERT, VALIDATE = "regnet-convert", "regnet-validate"
OUT = "out.safetensors"
STEM = "stem.conv.weight"


def pyth(contents: Callable[[Fixtures], object], name: str = "bad.pyth", **options) -> Setup:
    """Setup: save what `contents(fixtures)` returns as a checkpoint file."""
    return lambda d, fx: save(contents(fx), d / name, **options)


def cfg_edit(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    return pyth(lambda fx: with_cfg(fx.checkpoint(zoo), edit))


def state_edit(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    return pyth(lambda fx: with_state(fx.checkpoint(zoo), edit))


def set_key(section: str, key: str, value: object) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        cfg.setdefault(section, {})[key] = value

    return edit


def convert_case(id: str, setup: Setup, says: list[str], *options: str, source: str = "bad.pyth") -> Case:
    return Case(id, CONVERT, ["pycls", source, OUT, *options], setup, [source, *says])


def fifo(d: Path, name: str) -> None:
    """A FIFO named `name` in `d` (reading it would block)."""
    os.mkfifo(d / name)


def replace_tensor(key: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    """A state edit: tensor `key` becomes `make(tensor)`."""

    def edit(state: dict) -> None:
        state[key] = make(state[key])

    return edit


def then(*steps: Setup) -> Setup:
    """One setup running `steps` in order."""

    def setup(d: Path, fx: Fixtures) -> None:
        for step in steps:
            step(d, fx)

    return setup


def bytes_file(data: Callable[[Fixtures], bytes]) -> Setup:
    """`bad.safetensors` holding `data(fixtures)`."""
    return lambda d, fx: (d / "bad.safetensors").write_bytes(data(fx))


def architecture_edit(edit: Callable[[dict], None], zoo: bool = False) -> Setup:
    """`bad.safetensors`: the tiny (or zoo) converted file with its architecture metadata edited."""
    return lambda d, fx: edit_architecture(
        fx.zoo_safetensors if zoo else fx.tiny_safetensors, d / "bad.safetensors", edit
    )
