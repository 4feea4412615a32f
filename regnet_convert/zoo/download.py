"""Resumable, verified downloads: a partial file is only ever a `.part`, never mistaken for a complete one.

`download` keeps an interrupted or stalled download as `NAME.part` and resumes it on the next call. A
`.part` that already holds the expected number of bytes is verified without asking the server; one that
is longer than expected, or that the server refuses to resume (HTTP 416) at a size other than the file's,
is discarded and the download starts over once. The body may not exceed the expected size (the caller's,
else the announced one, else `max_size`) and must keep arriving: fewer than `MIN_PROGRESS` bytes within
the stall timeout abort it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path

from tqdm import tqdm

from regnet_convert.errors import InputError
from regnet_convert.fs.inputs import check_input_file, file_kind

CHUNK = 1 << 20
MIN_PROGRESS = 64 << 10  # bytes that must arrive within each stall-timeout window
HARD_LIMIT = 4 << 30  # bytes: no download may be larger when nothing says how large it should be
STALL_TIMEOUT = 60.0


class _RangeNotSatisfiable(Exception):
    """HTTP 416: the server will not send bytes from the requested offset; `total` from `bytes */TOTAL`."""

    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


def part_path(destination: Path) -> Path:
    """The resumable partial download of `destination`."""
    return destination.with_name(destination.name + ".part")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _regular_or_absent(path: Path) -> bool:
    """Whether `path` exists (as a regular file); InputError if it is a directory, special file or symbolic link
    (a link would have the download written through it, wherever it points)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if kind := file_kind(mode):
        raise InputError(path, f"is {kind}, not a download; remove it and run again")
    return True


def _check_local_source(url: str) -> None:
    """A `file://` source must be a readable regular file (opening a FIFO would hang)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        check_input_file(Path(urllib.request.url2pathname(parts.path)), "file")


def _header_int(url: str, response: http.client.HTTPResponse, name: str, pattern: str) -> int | None:
    """The number a header holds (the last group of `pattern`); None if absent, InputError if malformed."""
    value = response.headers.get(name)
    if value is None:
        return None
    if not (match := re.fullmatch(pattern, value.strip())):
        raise InputError(url, f"the server sent an invalid {name} header {value[:40]!r}; try another --mirror")
    return int(match.groups()[-1])


def _range_total(headers: Message | None) -> int | None:
    """TOTAL from a 416 answer's `Content-Range: bytes */TOTAL`, or None."""
    value = headers.get("Content-Range", "") if headers is not None else ""
    match = re.fullmatch(r"bytes \*/(\d+)", value.strip())
    return int(match.group(1)) if match else None


class _WebRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http:// and https:// only (urllib's own would follow one to ftp:// too)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
            fp.close()
            shown = " ".join(target.split())[:80]
            raise InputError(req.full_url, f"download failed: the server redirects to {shown!r}; only http:// and "
                                           "https:// are followed, try another --mirror")  # fmt: skip
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_WebRedirectsOnly)


def _request(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """The server's answer to a GET from byte `offset`; `_RangeNotSatisfiable` for HTTP 416."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:
            raise _RangeNotSatisfiable(_range_total(exc.headers)) from None
        raise InputError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise InputError(url, f"download failed: {_failure(exc, timeout)}") from None


def _failure(exc: Exception, timeout: float) -> str:
    """Why a request failed, and what to do."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s; run again later"
    if isinstance(reason, http.client.HTTPException):
        return f"not an HTTP answer ({type(reason).__name__}: {str(reason)[:80]}); try another --mirror"
    return f"{reason or type(reason).__name__}; check the address"


def _whole_file_refused(url: str) -> InputError:
    return InputError(url, "download failed: HTTP 416 for the whole file; the server misbehaves, try another --mirror")


def _open(url: str, part: Path, offset: int, timeout: float) -> tuple[http.client.HTTPResponse | None, int]:
    """The response and the offset it continues from; None when the server says the part is complete.

    A 416 answer for a part of another size than the file's (or of unstated size) removes the part and
    starts over, once.
    """
    try:
        return _request(url, offset, timeout), offset
    except _RangeNotSatisfiable as refused:
        if not offset:
            raise _whole_file_refused(url) from None
        if refused.total == offset:
            return None, offset
    part.unlink(missing_ok=True)
    try:
        return _request(url, 0, timeout), 0
    except _RangeNotSatisfiable:
        raise _whole_file_refused(url) from None


def _resume_offset(url: str, response: http.client.HTTPResponse, offset: int) -> int:
    """Where the response's body starts: `offset` for a matching 206, 0 for a whole file."""
    if response.status != 206:
        return 0
    start = _header_int(url, response, "Content-Range", r"bytes (\d+)-\d+/(?:\d+|\*)")
    if start != offset:
        raise InputError(url, f"the server resumed at byte {start}, not {offset}; run again, or try another --mirror")
    return offset


def _announced_total(url: str, response: http.client.HTTPResponse, offset: int) -> int | None:
    """The complete file's size from Content-Range (a resumed download) or Content-Length."""
    if offset and (total := _header_int(url, response, "Content-Range", r"bytes \d+-\d+/(\d+)")) is not None:
        return total
    length = _header_int(url, response, "Content-Length", r"(\d+)")
    return offset + length if length is not None else None


def _limit(url: str, size: int | None, total: int | None, max_size: int) -> tuple[int, str]:
    """The most bytes the file may have, and where that bound comes from."""
    if size is not None:
        if total is not None and total != size:
            raise InputError(url, f"the server offers {total} bytes, the manifest expects {size}; try another --mirror")
        return size, "the manifest's size"
    if total is not None:
        if total > max_size:
            raise InputError(url, f"the server announces {total:,} bytes, more than the {max_size:,} allowed")
        return total, "the announced size"
    return max_size, "the largest size allowed"


class _StallWatch:
    """Whether fewer than MIN_PROGRESS bytes arrived within the last `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._restart()

    def _restart(self) -> None:
        self.start, self.count = time.monotonic(), 0

    def stalled(self, received: int) -> bool:
        """Count `received` more bytes; True when the window ran out before MIN_PROGRESS bytes arrived."""
        self.count += received
        if self.count >= MIN_PROGRESS:
            self._restart()
            return False
        return time.monotonic() - self.start > self.seconds


def _kept_bytes(part: Path) -> int:
    """The size of the part kept for resuming; an empty part is removed."""
    size = part.stat().st_size
    if size == 0:
        part.unlink()
    return size


def _stalled(url: str, part: Path, seconds: float) -> InputError:
    kept = f"{size} bytes are kept in {part}, run again to resume" if (size := _kept_bytes(part)) else "run again"
    return InputError(
        url,
        f"download stalled: less than {MIN_PROGRESS >> 10} KiB in {seconds:g} s; {kept}"
        " (or give a longer --stall-timeout)",
    )


def _read(url: str, read: Callable[[int], bytes], part: Path, stall_timeout: float) -> bytes:
    """The next piece of the body; a timeout is a stall, a broken connection an interruption."""
    try:
        return read(CHUNK)
    except TimeoutError:
        raise _stalled(url, part, stall_timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        received = _kept_bytes(part)
        raise InputError(
            url, f"download interrupted at {received} bytes ({type(exc).__name__}); run again to resume"
        ) from None


def _oversized(url: str, part: Path, limit: tuple[int, str]) -> InputError:
    part.unlink(missing_ok=True)  # garbage, not a resumable download
    return InputError(
        url,
        f"the server sent more than {limit[0]:,} bytes ({limit[1]}); the partial download was removed,"
        " run again later or try another --mirror",
    )


def _receive(
    url: str,
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    limit: tuple[int, str],
    stall_timeout: float,
    bar: tqdm,
) -> None:
    """Append the body to `part` (from `offset`), refusing more than `limit` bytes and a stalled transfer."""
    read = getattr(response, "read1", response.read)
    watch = _StallWatch(stall_timeout)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if offset else os.O_TRUNC)
    try:  # never through a link planted after the check
        out = open(os.open(part, flags, 0o644), "wb")  # noqa: SIM115 - the part is kept, closed, on any error
    except OSError as exc:
        raise InputError(part, f"cannot be written ({exc.strerror or exc})") from None
    received = offset
    with out:
        while chunk := _read(url, read, part, stall_timeout):
            if received + len(chunk) > limit[0]:
                out.close()
                raise _oversized(url, part, limit)
            try:
                out.write(chunk)
                out.flush()  # the part's size on disk is what was received
            except OSError as exc:
                raise InputError(part, f"cannot be written ({exc.strerror or exc}); free space, run again") from None
            received += len(chunk)
            bar.update(len(chunk))
            if watch.stalled(len(chunk)):
                raise _stalled(url, part, stall_timeout)


def _verify(url: str, path: Path, size: int | None, sha256: str | None, expected_from: str) -> None:
    """Remove `path` and raise if it is empty or has another size or sha256 than `expected_from` says."""
    actual = path.stat().st_size
    if actual == 0:
        path.unlink()
        raise InputError(url, "the server sent an empty file; try again later or another --mirror")
    if size is not None and actual != size:
        path.unlink()
        raise InputError(url, f"not the expected file: {actual} bytes, {expected_from} says {size}; removed")
    if sha256 is not None and not (digest := file_sha256(path)).startswith(sha256):
        path.unlink()
        shown = f"{sha256[:16]}..." if len(sha256) > 16 else sha256
        raise InputError(url, f"not the expected file: sha256 {digest[:16]}..., {expected_from} says {shown}; removed")


def _complete(
    url: str, part: Path, destination: Path, size: int | None, sha256: str | None, expected_from: str
) -> Path:
    """Verify a complete `part` and move it into place."""
    _verify(url, part, size, sha256, expected_from)
    os.replace(part, destination)
    return destination


def _usable_offset(part: Path, size: int | None, max_size: int) -> int:
    """How many bytes of `part` to resume from; a part longer than the file can be is removed."""
    if not _regular_or_absent(part):
        return 0
    offset = part.stat().st_size
    if offset > (size if size is not None else max_size):
        part.unlink()
        return 0
    return offset


def download(
    url: str,
    destination: Path,
    size: int | None = None,
    sha256: str | None = None,
    quiet: bool = False,
    stall_timeout: float = STALL_TIMEOUT,
    max_size: int = HARD_LIMIT,
    expected_from: str = "the manifest",
) -> Path:
    """Fetch `url` to `destination`, resuming `destination.part` when the server allows ranges.

    `size`/`sha256` (when known; `expected_from` says who knows them) are checked, for a file already in place too:
    `sha256` is the whole hash or its first hex digits (at least 8, as a file name carries them, torch.hub's
    `check_hash` convention); `max_size` bounds a file whose size nothing announces.
    """
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", sha256):
        raise ValueError(f"not a sha256 or a prefix of one: {sha256[:70]!r}")
    if _regular_or_absent(destination):
        _verify(str(destination), destination, size, sha256, expected_from)
        return destination
    _check_local_source(url)
    part = part_path(destination)
    offset = _usable_offset(part, size, max_size)
    if size is not None and offset == size:
        return _complete(url, part, destination, size, sha256, expected_from)
    response, offset = _open(url, part, offset, stall_timeout)
    if response is None:  # the server says the part already holds the whole file
        return _complete(url, part, destination, size if size is not None else offset, sha256, expected_from)
    with response:
        offset = _resume_offset(url, response, offset)
        total = _announced_total(url, response, offset)
        limit = _limit(url, size, total, max_size)
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=destination.name,
            disable=True if quiet else None,
        )
        with bar:
            _receive(url, response, part, offset, limit, stall_timeout, bar)
    received = part.stat().st_size
    if total is not None and received < total:
        _kept_bytes(part)
        raise InputError(url, f"download interrupted at {received} of {total} bytes; run again to resume")
    return _complete(url, part, destination, size if size is not None else total, sha256, expected_from)
