"""Outputs are reproducible: the same input gives the same bytes (safetensors writes its metadata in hash-map
order, which changes from run to run; `regnet.weights.write_safetensors` sorts it)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import regnet
from regnet.weights import write_safetensors

ROUNDS = 4


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_safetensors_is_byte_reproducible_and_readable(tmp_path):
    import torch
    from safetensors import safe_open

    tensors = {"b": torch.ones(2, dtype=torch.float16), "a": torch.arange(3.0)}
    metadata = {f"key{i}": f"value {i} é" for i in range(12)}
    metadata["json"] = '{"quoted": "tab\there", "control": "\u0001", "line": "\u2028", "path": "a/b\\c"}'
    metadata["raw"] = 'new\nline "quote" \x01 \x7f \u2028 / back\\slash'  # JSON escapes (the header is rewritten)
    digests = set()
    for i in range(ROUNDS):
        write_safetensors(tmp_path / f"{i}.safetensors", tensors, metadata)
        digests.add(digest(tmp_path / f"{i}.safetensors"))
    assert len(digests) == 1
    with safe_open(tmp_path / "0.safetensors", "pt") as f:
        assert f.metadata() == metadata and f.get_tensor("a").tolist() == [0.0, 1.0, 2.0]
    length = int.from_bytes((tmp_path / "0.safetensors").read_bytes()[:8], "little")
    assert length % 8 == 0
    write_safetensors(tmp_path / "bare.safetensors", tensors, None)  # no metadata at all: none is written
    with safe_open(tmp_path / "bare.safetensors", "pt") as f:
        assert f.metadata() is None and f.get_tensor("b").tolist() == [1.0, 1.0]
    assert list(json.loads((tmp_path / "0.safetensors").read_bytes()[8 : 8 + length])["__metadata__"]) == sorted(
        metadata
    )


@pytest.mark.slow
def test_conversions_and_hf_exports_are_byte_reproducible(tmp_path, converted_200mf):
    """Each in a new process: hash-map order is seeded per process."""
    weights, _ = converted_200mf
    digests: dict[str, set[str]] = {"native": set(), "hf": set()}
    for i in range(ROUNDS):
        model = regnet.load(weights)
        regnet.save(tmp_path / f"n{i}.safetensors", model.state_dict(), model.metadata)
        digests["native"].add(digest(tmp_path / f"n{i}.safetensors"))
        command = [
            sys.executable,
            "-m",
            "regnet_convert",
            "export",
            str(weights),
            str(tmp_path / f"hf{i}"),
            "--to",
            "hf",
        ]
        subprocess.run([*command, "--quiet"], check=True, timeout=300)
        digests["hf"].add(digest(tmp_path / f"hf{i}" / "model.safetensors"))
    assert {name: len(found) for name, found in digests.items()} == {"native": 1, "hf": 1}
