"""Look at a checkpoint's pickle streams before torch unpickles them: protocol, nesting depth, size.

torch's safe unpickler (`weights_only=True`) never runs code, but a deeply nested structure can crash the
process, a few KB of shared references (each tuple holding the previous one twice) unfold into 2**60 objects
for whatever hashes, compares or walks them, and it reads only pickle protocols 2 and 3. The scan walks the
opcodes iteratively (nothing is built) and simulates the stack with a record per object: its nesting depth
and its expanded size (the objects a walk that follows every reference would visit). A memo entry holds the
very record of its object, so items added to a container after it was memoised count wherever it is used.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from typing import IO

MAX_DEPTH = 100  # a pycls or mmcls checkpoint nests about 8 deep
MAX_EXPANDED = 10_000_000  # objects, every shared reference counted: a checkpoint holds a few thousand
MAX_PICKLE_BYTES = 64 << 20  # the pickled structure of any checkpoint is a few hundred KB at most
SAFE_PROTOCOLS = (0, 1, 2, 3)
_MARK = None

# Ops that add items to the container below them (the result is that container, deeper if needed).
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
# Ops that leave the stack as it is, or copy/fetch an object.
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}

Record = list[int]  # [nesting depth, expanded size] of one simulated object, shared by its references


class PickleProblem(ValueError):
    """Why a pickle stream must not reach the unpickler."""


def _atom() -> Record:
    return [1, 1]


def scan(stream: IO[bytes], max_depth: int = MAX_DEPTH, max_expanded: int = MAX_EXPANDED) -> int:
    """The protocol of one pickle (read up to its STOP); PickleProblem when an object nests deeper than
    `max_depth` or expands, through shared references, to more than `max_expanded` objects."""
    stack: list[Record | None] = []
    memo: dict[object, Record] = {}
    protocol = 0
    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if name == "PROTO":
                protocol = int(arg) if arg is not None else 0
            elif name == "MARK":
                stack.append(_MARK)
            elif name in _MEMO_PUT:
                memo[len(memo) if name == "MEMOIZE" else arg] = _top(stack)
            elif name in _MEMO_GET:
                stack.append(memo.get(arg) or _atom())
            elif name == "DUP":
                stack.append(_top(stack))
            elif name == "STOP":
                return protocol
            else:
                _apply(stack, op, name)
            if stack and (top := stack[-1]) is not _MARK:
                _check(top, max_depth, max_expanded)
    except IndexError:
        raise ValueError("malformed pickle (stack underflow)") from None
    raise ValueError("malformed pickle (no STOP)")


def _top(stack: list[Record | None]) -> Record:
    """The object on top of the stack (a stray MARK or an empty stack count as a plain value)."""
    return stack[-1] if stack and stack[-1] is not _MARK else _atom()


def _check(record: Record, max_depth: int, max_expanded: int) -> None:
    if record[0] > max_depth:
        raise PickleProblem(f"its pickled data nests deeper than {max_depth} levels (a crafted file)")
    if record[1] > max_expanded:
        raise PickleProblem(
            f"its pickled data unfolds into more than {max_expanded:,} objects through shared references "
            "(a crafted file)"
        )


def _apply(stack: list[Record | None], op: pickletools.OpcodeInfo, name: str) -> None:
    """Pop what `op` consumes and push what it produces, tracking nesting depth and expanded size."""
    before = op.stack_before
    popped: list[Record] = []
    if pickletools.markobject in before:
        while (item := stack.pop()) is not _MARK:  # down to the MARK, popped too
            popped.append(item)
        for _ in range(before.index(pickletools.markobject)):
            popped.append(_top(stack))
            stack.pop()
    else:
        for _ in before:
            popped.append(_top(stack))
            stack.pop()
    if not op.stack_after:
        return
    if name in _IN_PLACE:
        container, items = popped[-1], popped[:-1]
        container[0] = max([container[0]] + [d + 1 for d, _ in items])
        container[1] += sum(size for _, size in items)
        stack.append(container)
    else:
        stack.append([1 + max((d for d, _ in popped), default=0), 1 + sum(size for _, size in popped)])


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
