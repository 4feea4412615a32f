"""Which zoo models a `regnet-validate` run covers: `--model` names and the groups `starred` and `all`, and
where their converted weights are."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import regnet
from regnet.paths import checkpoints_dir
from regnet.zoo import zoo_models
from regnet_convert.errors import InputError

GROUPS = {
    "starred": "the seed table's RegNetX models (mmclassification's starred rows)",
    "all": "every zoo model with converted weights in the checkpoints folder",
}


class MissingWeights(InputError):
    """Zoo models without converted weights; `details` has one line per model (printed before the error)."""

    def __init__(self, path: Path | None, problem: str, details: list[str]) -> None:
        super().__init__(path, problem)
        self.details = details

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.problem, self.details)


def starred() -> list[str]:
    """The seed table's models: the zoo models it has numbers for, in the zoo's order."""
    return [name for name, entry in zoo_models().items() if entry.seed_table is not None]


def weights_path(name: str) -> Path:
    """Where a zoo model's converted weights live: `checkpoints/NAME.safetensors`."""
    return checkpoints_dir() / f"{name}.safetensors"


def is_group(name: str) -> bool:
    """Whether a `--model` value names a group of models."""
    return name.strip().lower() in GROUPS


def expand(names: Sequence[str]) -> list[str]:
    """Canonical zoo names, in the order given and each once, `starred` and `all` expanded."""
    models: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key == "starred":
            group = starred()
        elif key == "all":
            group = [model for model in zoo_models() if weights_path(model).exists()]
            if not group:
                raise InputError(
                    checkpoints_dir(),
                    "holds no converted zoo weights for --model all; get them with: regnet-convert zoo fetch NAME...",
                )
        else:
            try:
                group = [regnet.canonical_name(name)]
            except KeyError as exc:
                raise InputError(None, f"--model: {exc.args[0]}; or a group: {', '.join(GROUPS)}") from None
        models += [model for model in group if model not in models]
    return models


def weights_paths(names: list[str]) -> list[Path]:
    """Each model's converted weights; `MissingWeights` naming every model without them, and the one
    `regnet-convert zoo fetch` command that gets them all, before anything runs."""
    paths = [weights_path(name) for name in names]
    missing = [(name, path) for name, path in zip(names, paths, strict=True) if not path.exists()]
    if not missing:
        return paths
    fetch = "regnet-convert zoo fetch " + " ".join(name for name, _ in missing)
    if len(names) == 1:
        name, path = missing[0]
        raise MissingWeights(path, f"no converted weights for {name}; get them with: {fetch}", [])
    details = [f"{name}: no converted weights at {path} (regnet-convert zoo fetch {name})" for name, path in missing]
    raise MissingWeights(
        checkpoints_dir(),
        f"{len(missing)} of {len(names)} models have no converted weights here; get them with: {fetch}",
        details,
    )


@contextmanager
def blamed_on_model(name: str, path: Path) -> Iterator[None]:
    """Errors about `path`, a zoo model's weights found in the checkpoints folder, name it and the `--model` option
    that chose it (no --weights was given)."""
    try:
        yield
    except MissingWeights:
        raise
    except InputError as error:
        if error.path != str(path):
            raise
        raise InputError(f"{path} (the weights of --model {name})", error.problem) from None
