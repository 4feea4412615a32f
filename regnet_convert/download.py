"""Resumable, verified downloads: a partial file is only ever a `.part`, never mistaken for a complete one."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from regnet_convert.errors import ConvertError

CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    """The complete file's size from Content-Range (a resumed download) or Content-Length."""
    if match := re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", "")):
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _verify(url: str, path: Path, size: int | None, sha256: str | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        path.unlink()
        raise ConvertError(url, f"corrupted download: {actual} bytes, expected {size}; removed, run again")
    if sha256 is not None and (digest := _sha256(path)) != sha256:
        path.unlink()
        raise ConvertError(url, f"corrupted download: sha256 {digest}, expected {sha256}; removed, run again")


def download(
    url: str, destination: Path, size: int | None = None, sha256: str | None = None, quiet: bool = False
) -> Path:
    """Fetch `url` to `destination`, resuming `destination.part` when the server allows ranges."""
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        raise ConvertError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConvertError(url, f"download failed: {getattr(exc, 'reason', exc)}") from None
    with response:
        if response.status != 206:  # the server sent the whole file: start over
            offset = 0
        total = _total_size(response, offset)
        if size is not None and total is not None and total != size:
            raise ConvertError(url, f"the server offers {total} bytes, the manifest expects {size}")
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=destination.name, disable=quiet)
        try:
            with open(part, "ab" if offset else "wb") as out, bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise ConvertError(
                url, f"download interrupted at {part.stat().st_size} bytes ({type(exc).__name__}); run again to resume"
            ) from None
    received = part.stat().st_size
    if total is not None and received < total:
        raise ConvertError(url, f"download interrupted at {received} of {total} bytes; run again to resume")
    _verify(url, part, size if size is not None else total, sha256)
    os.replace(part, destination)
    return destination
