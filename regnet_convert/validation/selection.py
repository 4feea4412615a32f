"""Which zoo weights a `regnet-validate` run covers: `--model` names (`MODEL` for pycls's weights, `MODEL.TAG`) and
the groups `seed`, `starred` and `all`, and where their converted weights are."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from regnet.metadata import WeightsMetadata
from regnet.paths import checkpoints_dir
from regnet.zoo import DEFAULT_TAG, seed_rows, weights_key, zoo_weights
from regnet_convert.conversion.identity import Identity, identity_of
from regnet_convert.errors import InputError

GROUPS = {
    "seed": "the seed table's 16 rows in its order (8 trained by mmclassification, 8 starred)",
    "starred": "the seed table's RegNetX models converted from pycls (mmclassification's starred rows)",
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
    """The seed table's starred rows: pycls's weights it has numbers for, by model name, in the zoo's order."""
    return [w.model for w in zoo_weights().values() if w.row is not None and w.tag == DEFAULT_TAG]


def seed() -> list[str]:
    """The weights of the seed table's 16 rows, in its order (`short` names)."""
    return [short(row.weights) for row in seed_rows()]


def short(key: str) -> str:
    """How a run names weights: `regnetx_400mf` for pycls's (the default tag), else `regnetx_400mf.mmcls_in1k`."""
    return zoo_weights()[key].short


def weights_path(name: str) -> Path:
    """Where converted weights live: `checkpoints/MODEL.safetensors` for pycls's, else `MODEL.TAG.safetensors`."""
    return checkpoints_dir() / zoo_weights()[weights_key(name)].converted_name


def model_of(name: str) -> str:
    """The architecture a `--model` value names: `regnetx_400mf.mmcls_in1k` -> `regnetx_400mf`."""
    return weights_key(name).rsplit(".", 1)[0]


def checked_identity(metadata: WeightsMetadata, path: Path, name: str | None, exact: bool) -> Identity:
    """The weights' identity; InputError where they are identified as other weights than `--model` names (any
    weights found in the checkpoints folder, `exact`; with --weights only where --model names a tag)."""
    identity = identity_of(metadata, path)
    if name is None or identity.weights is None or not (exact or "." in short(weights_key(name))):
        return identity
    if identity.weights != weights_key(name):
        raise InputError(
            path,
            f"holds {identity.weights} ({identity.identified_by}: {identity.evidence}), not the --model {name} weights",
        )
    return identity


def is_group(name: str) -> bool:
    """Whether a `--model` value names a group of models."""
    return name.strip().lower() in GROUPS


def expand(names: Sequence[str]) -> list[str]:
    """Weights in their `short` names, in the order given and each once, the groups expanded."""
    models: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key == "seed":
            group = seed()
        elif key == "starred":
            group = starred()
        elif key == "all":
            group = [short(k) for k in zoo_weights() if weights_path(k).exists()]
            if not group:
                raise InputError(
                    checkpoints_dir(),
                    "holds no converted zoo weights for --model all; get them with: regnet-convert zoo fetch NAME...",
                )
        else:
            try:
                group = [short(weights_key(name))]
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
