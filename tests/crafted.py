"""Crafted inputs for the hostile-input suite: small genuine files and ways to damage them."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

TINY = {"depths": [1, 2], "widths": [16, 32], "group_widths": [8, 8], "bot_muls": [1.0, 1.0]}


@dataclass(frozen=True)
class Fixtures:
    """Genuine files every case starts from (built once per session, a few MB in all)."""

    folder: Path
    tiny_pyth: Path  # pycls 0.1.1's own checkpoint of a small AnyNet RegNet, 1000 classes
    zoo_pyth: Path  # pycls 0.1.1's own checkpoint of RegNetX-200MF (no optimizer state)
    tiny_safetensors: Path  # tiny_pyth converted
    zoo_safetensors: Path  # zoo_pyth converted
    val: Path  # two class folders, three JPEGs each

    def checkpoint(self, zoo: bool = False) -> dict:
        """A fresh copy of a genuine checkpoint's contents."""
        return torch.load(self.zoo_pyth if zoo else self.tiny_pyth, weights_only=True)


def build_fixtures(folder: Path) -> Fixtures:
    """Write the genuine files with pycls's own model and checkpoint code, and convert them."""
    from helpers import class_folder, convert_file
    from pycls_oracle import build, configure_anynet, randomize, save_genuine_checkpoint

    configure_anynet(**TINY, num_classes=1000)
    tiny = save_genuine_checkpoint(randomize(build(), seed=1), folder / "tiny-train")
    zoo = save_genuine_checkpoint(randomize(build("regnetx_200mf"), seed=2), folder / "zoo-train")
    paths = {"tiny": folder / "tiny.pyth", "zoo": folder / "regnetx_200mf.pyth"}
    for source, target in ((tiny, paths["tiny"]), (zoo, paths["zoo"])):
        contents = torch.load(source, weights_only=True)
        contents.pop("optimizer_state")  # keeps every copy small
        torch.save(contents, target)
    tiny_safetensors = convert_file(paths["tiny"], folder / "tiny.safetensors")
    zoo_safetensors = convert_file(paths["zoo"], folder / "regnetx_200mf.safetensors")
    val = folder / "val"
    rng = np.random.default_rng(0)
    for c in range(2):
        class_dir = class_folder(val, c)
        for i in range(3):
            pixels = rng.integers(0, 256, (300 + 20 * i, 260 + 30 * c, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(class_dir / f"img_{c}_{i}.JPEG", quality=85)
    return Fixtures(folder, paths["tiny"], paths["zoo"], tiny_safetensors, zoo_safetensors, val)


def save(obj: object, path: Path, **options) -> Path:
    torch.save(obj, path, **options)
    return path


def copy_val(fx: Fixtures, folder: Path) -> Path:
    return Path(shutil.copytree(fx.val, folder / "val"))


def with_cfg(contents: dict, edit) -> dict:
    """The checkpoint with its YAML cfg parsed, edited and dumped again."""
    cfg = yaml.safe_load(contents["cfg"])
    edit(cfg)
    return {**contents, "cfg": yaml.safe_dump(cfg)}


def with_state(contents: dict, edit) -> dict:
    state = dict(contents["model_state"])
    edit(state)
    return {**contents, "model_state": state}


# ---- pickles and zip archives -------------------------------------------------------------------------


def deep_pickle(depth: int, protocol: int = 2) -> bytes:
    """A pickle of `depth` nested one-tuples (never built in memory)."""
    return bytes([0x80, protocol]) + b"N" + b"\x85" * depth + b"."


def deep_list_pickle(depth: int) -> bytes:
    """`depth` nested lists, built with MARK/LIST and APPEND."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def torch_zip(path: Path, data_pkl: bytes, compress: bool = False) -> Path:
    """A zip laid out like torch.save's, holding `data_pkl` as its pickle."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


class RunsCode:
    """An object whose unpickling would run a shell command that creates `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("1+1",))


def code_running_checkpoint(path: Path, marker: str) -> Path:
    return save({"model_state": {"stem.conv.weight": torch.zeros(1)}, "cfg": RunsCode(marker)}, path)


def raw_pickle(path: Path, obj: object, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ---- safetensors ----------------------------------------------------------------------------------------


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def join_safetensors(path: Path, header: object, data: bytes, length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def edit_header(source: Path, target: Path, edit) -> Path:
    header, data = split_safetensors(source)
    edit(header)
    return join_safetensors(target, header, data)


def edit_metadata(source: Path, target: Path, **changes: str) -> Path:
    def edit(header: dict) -> None:
        header["__metadata__"].update(changes)

    return edit_header(source, target, edit)


def edit_architecture(source: Path, target: Path, edit) -> Path:
    def edit_header_arch(header: dict) -> None:
        arch = json.loads(header["__metadata__"]["architecture"])
        edit(arch)
        header["__metadata__"]["architecture"] = json.dumps(arch)

    return edit_header(source, target, edit_header_arch)


def edit_tensors(source: Path, target: Path, edit, metadata: dict | None = None) -> Path:
    """The file re-saved with its tensors edited (edit(state) mutates a dict of tensors)."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        meta = dict(f.metadata())
    edit(state)
    save_file(state, str(target), {**meta, **(metadata or {})})
    return target


def nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def shortened_record(source: Path, target: Path, record: str = "/data/0") -> Path:
    """A well-formed zip whose storage `record` holds half its bytes (its tensor would borrow the next record's)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as out:
        for info in original.infolist():
            data = original.read(info.filename)
            out.writestr(info, data[: len(data) // 2] if info.filename.endswith(record) else data)
    return target


def hdr_image(width: int, height: int) -> bytes:
    """A Radiance HDR picture: OpenCV decodes it, Pillow cannot read its header."""
    import cv2

    ok, data = cv2.imencode(".hdr", np.full((height, width, 3), 0.5, np.float32))
    assert ok
    return data.tobytes()


def zero_size_tensors(source: Path, target: Path, count: int) -> Path:
    """The file's metadata and tensors, plus `count` empty tensors and an architecture that many blocks deep."""
    header, data = split_safetensors(source)
    arch = json.loads(header["__metadata__"]["architecture"])
    arch["stages"][-1]["depth"] = count // 15
    header["__metadata__"]["architecture"] = json.dumps(arch)
    for i in range(count):
        header[f"stages.9.{i}.conv1.bn.bias"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    return join_safetensors(target, header, data)
