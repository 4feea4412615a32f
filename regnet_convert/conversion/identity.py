"""Which published weights a source holds, and how that is known: by its sha256, by declaration, or by format.

- `sha256`: the file's sha256 is that of a published file (the whole hash where the manifest has it, else the
  8 hex digits OpenMMLab's file name carries, as torch.hub's `check_hash` verifies);
- `declared`: no hash identifies it, and the user declared which weights it holds (`--declare-weights`);
- `pycls-format`: a pycls checkpoint of a zoo architecture: pycls publishes one set of weights per model (and
  no hashes), so a pycls checkpoint of `regnetx_400mf` is taken for `regnetx_400mf.pycls_in1k`;
- `none`: nothing says which weights these are; they are compared with no published numbers.

A name that promises a published file (OpenMMLab's names carry their hash) must keep its promise, and a
declaration must agree with the file's hash and architecture: otherwise the conversion is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from regnet.metadata import WeightsMetadata
from regnet.zoo import ZooWeights, file_named, identify, weights_key, zoo_weights
from regnet_convert.errors import InputError

IdentifiedBy = Literal["sha256", "declared", "pycls-format", "none"]
IDENTIFIED_BY: tuple[IdentifiedBy, ...] = get_args(IdentifiedBy)
DECLARE_OPTION = "--declare-weights"


@dataclass(frozen=True)
class Identity:
    """The weights a file holds (a zoo key, or None), how that was established, and the evidence in words."""

    weights: str | None
    identified_by: IdentifiedBy
    evidence: str

    @property
    def zoo(self) -> ZooWeights | None:
        return zoo_weights().get(self.weights) if self.weights else None


def declared_weights(value: str | None) -> str | None:
    """A `--declare-weights` value as a zoo key (`regnetx_400mf.mmcls_in1k`); InputError for unknown weights."""
    if value is None:
        return None
    try:
        return weights_key(value)
    except KeyError as exc:
        raise InputError(f"{DECLARE_OPTION} {value[:60]!r}", exc.args[0]) from None


def _check_name(source: Path, sha256: str) -> None:
    """A source named like a published file whose name carries a hash must have that hash."""
    named = file_named(source.name)
    if named is not None and named.hash_prefix is not None and not named.matches(sha256):
        raise InputError(
            source,
            f"is named like OpenMMLab's {named.name}, whose sha256 starts {named.hash_prefix}, but its own starts "
            f"{sha256[:8]}: not that file (damaged or replaced); fetch it anew, or rename it to convert it as"
            " unidentified weights",
        )


def identify_source(
    source: Path, sha256: str, source_format: str, model: str | None, declared: str | None = None
) -> Identity:
    """The identity of a source being converted: its sha256 first, then a declaration, then its format.

    `model` is the architecture found (a zoo name, or None for a custom RegNet); `declared` a zoo key.
    """
    _check_name(source, sha256)
    return _identity(str(source), sha256, source_format, model, declared, f"{DECLARE_OPTION} {declared}")


def _identity(
    where: str, sha256: str, source_format: str, model: str | None, declared: str | None, declared_by: str
) -> Identity:
    """The identity from the hash, else the declaration (`declared_by` names who made it), else the format."""
    known = identify(sha256)
    if known is not None:
        if known.model != model:
            raise InputError(
                where, f"has the sha256 of {known.name} ({known.weights}), but holds {model or 'a custom RegNet'}"
            )
        if declared is not None and declared != known.weights:
            raise InputError(
                declared_by,
                f"declares {declared}, but the file's sha256 identifies it as {known.weights} ({known.name})",
            )
        return Identity(known.weights, "sha256", f"sha256 {sha256[:8]}... is that of {known.name}")
    if declared is not None:
        declared_model = declared.rsplit(".", 1)[0]
        if declared_model != model:
            raise InputError(
                declared_by, f"declares {declared_model} weights, but the file holds {model or 'a custom RegNet'}"
            )
        return Identity(
            declared, "declared", f"declared as {declared} when converted; no published file has its sha256"
        )
    if source_format == "pycls" and model is not None and f"{model}.pycls_in1k" in zoo_weights():
        return Identity(
            f"{model}.pycls_in1k",
            "pycls-format",
            "a pycls checkpoint of a zoo architecture: pycls publishes one set of weights per model",
        )
    return Identity(None, "none", "no published file has its sha256 and no weights were declared")


def identity_of(metadata: WeightsMetadata, path: str | Path) -> Identity:
    """A converted file's identity, established again from what its metadata records (its source's sha256 and
    format, a declaration); InputError where the metadata claims what its source's hash contradicts.

    Files converted before identities were recorded are identified the same way."""
    claimed, declared = metadata.zoo_weights, None
    if metadata.identified_by not in (None, *IDENTIFIED_BY):
        shown = str(metadata.identified_by)[:40]
        raise InputError(path, f"says it was identified by {shown!r}, not one of {', '.join(IDENTIFIED_BY)}")
    if metadata.identified_by == "declared":
        if claimed is None or claimed not in zoo_weights():
            raise InputError(path, f"declares weights {str(claimed)[:60]!r}, which the zoo does not know")
        declared = claimed
    identity = _identity(
        str(path), metadata.source_sha256, metadata.source_format, metadata.config.name, declared, str(path)
    )
    if metadata.identified_by == "sha256" and identity.identified_by != "sha256":
        raise InputError(path, f"says its sha256 identifies it as {claimed}, but no published file has that sha256")
    if claimed is not None and identity.weights is not None and claimed != identity.weights:
        raise InputError(
            path, f"says it holds {claimed}, but is identified as {identity.weights} ({identity.evidence})"
        )
    return identity
