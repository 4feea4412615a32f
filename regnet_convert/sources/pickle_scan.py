"""Look at a checkpoint's pickle streams before torch unpickles them: protocol, nesting depth, size.

torch's safe unpickler (`weights_only=True`) never runs code, but a deeply nested structure can crash the
process, and it reads only pickle protocols 2 and 3. The scan walks the opcodes iteratively (nothing is
built) and simulates the stack with the nesting depth of each object.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from typing import IO

MAX_DEPTH = 100  # a pycls or mmcls checkpoint nests about 8 deep
MAX_PICKLE_BYTES = 64 << 20  # the pickled structure of any checkpoint is a few hundred KB at most
SAFE_PROTOCOLS = (0, 1, 2, 3)
_MARK = -1

# Ops that add items to the container below them (the result is that container, deeper if needed).
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
# Ops that leave the stack as it is, or copy/fetch an object.
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


class PickleProblem(ValueError):
    """Why a pickle stream must not reach the unpickler."""


def scan(stream: IO[bytes], max_depth: int = MAX_DEPTH) -> int:
    """The protocol of one pickle (read up to its STOP); PickleProblem when it nests deeper than `max_depth`."""
    stack: list[int] = []
    memo: dict[object, int] = {}
    protocol = 0
    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if name == "PROTO":
                protocol = int(arg)
            elif name == "MARK":
                stack.append(_MARK)
            elif name in _MEMO_PUT:
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else 1
            elif name in _MEMO_GET:
                stack.append(memo.get(arg, 1))
            elif name == "DUP":
                stack.append(stack[-1] if stack else 1)
            elif name == "STOP":
                return protocol
            else:
                _apply(stack, op, name)
            if stack and max(stack[-1], 0) > max_depth:
                raise PickleProblem(f"its pickled data nests deeper than {max_depth} levels (a crafted file)")
    except IndexError:
        raise ValueError("malformed pickle (stack underflow)") from None
    raise ValueError("malformed pickle (no STOP)")


def _apply(stack: list[int], op: pickletools.OpcodeInfo, name: str) -> None:
    """Pop what `op` consumes and push what it produces, tracking nesting depth."""
    before = op.stack_before
    popped: list[int] = []
    if pickletools.markobject in before:
        while stack[-1] != _MARK:
            popped.append(stack.pop())
        stack.pop()
        for _ in range(before.index(pickletools.markobject)):
            popped.append(stack.pop())
    else:
        for _ in before:
            popped.append(stack.pop())
    if not op.stack_after:
        return
    if name in _IN_PLACE:
        container, items = popped[-1], popped[:-1]
        stack.append(max([container] + [d + 1 for d in items]))
    else:
        stack.append(1 + max(popped, default=0))


def check_checkpoint(path: str) -> int:
    """Scan the pickles of a torch checkpoint (zip or legacy); returns the main pickle's protocol.

    PickleProblem for a crafted structure; ValueError/EOFError/zipfile errors when the file is not a
    readable checkpoint (left for torch to describe).
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if any(info.compress_type != zipfile.ZIP_STORED for info in infos):
                raise PickleProblem("its zip archive holds compressed members (torch never writes them)")
            pickles = [info for info in infos if info.filename.endswith("/data.pkl") or info.filename == "data.pkl"]
            if not pickles:
                raise ValueError("no data.pkl in its zip archive")
            protocol = 2
            for info in pickles:
                if info.file_size > MAX_PICKLE_BYTES:
                    raise PickleProblem(f"its pickled structure is {info.file_size:,} bytes (a crafted file)")
                with archive.open(info) as stream:
                    protocol = scan(stream)
            return protocol
    with open(path, "rb") as f:
        # legacy format: magic number, protocol, system info, the object, storage keys; then raw data. Read from
        # memory: a crafted length field then asks for bytes that are not there instead of allocating them.
        stream = io.BytesIO(f.read(MAX_PICKLE_BYTES))
    protocols = [scan(stream) for _ in range(5)]
    return max(protocols)
