"""Small files that unfold into huge ones: pickled shared references (a DAG) and YAML aliases in a pycls cfg.

A few KB of pickle in which each list or tuple holds the previous one twice is 2**60 paths for any walk that
follows every reference (and for Python's hash of a tuple key): the pickle scan bounds each object's expanded
size before torch unpickles anything, and the walk over the loaded objects visits each object once, at most
MAX_VISITED of them. A cfg's YAML may use no anchors or aliases (pycls's `cfg.dump()` never writes them).
Each case runs in a limited child process (`hostile.Zygote`) under `hostile.check_refusal`'s contract.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from crafted import Fixtures, save, torch_zip
from hostile import Case, Zygote, refuse

from regnet_convert.sources.checkpoint import _storages

pytestmark = pytest.mark.hostile

Setup = Callable[[Path, Fixtures], object]
CONVERT, VALIDATE = "regnet-convert", "regnet-validate"
LEVELS = 60
SECONDS = 20  # each case is refused in well under a second
UNFOLDS = "unfolds into more than"


def _put(i: int) -> bytes:
    return b"q" + struct.pack("<B", i)  # BINPUT


def _get(i: int) -> bytes:
    return b"h" + struct.pack("<B", i)  # BINGET


def list_dag(levels: int = LEVELS) -> bytes:
    """Lists L0..Ln, each L(i) = [L(i-1), L(i-1)], built bottom-up (what pickle itself writes)."""
    data = b"\x80\x02]" + _put(0)
    for i in range(1, levels + 1):
        data += b"]" + _put(i) + b"(" + _get(i - 1) + _get(i - 1) + b"e"
    return data + _get(levels) + b"."


def late_list_dag(levels: int = LEVELS) -> bytes:
    """The same DAG, each list filled only after it was put into the next one: its size is not yet known
    when it is used, so only a walk that visits each object once is bounded."""
    data = b"\x80\x02" + b"".join(b"]" + _put(i) for i in range(levels + 1))
    for i in range(levels, 0, -1):
        data += _get(i) + b"(" + _get(i - 1) + _get(i - 1) + b"e"
    return data + _get(levels) + b"."


def tuple_key_dag(levels: int = LEVELS) -> bytes:
    """A dict whose key is tuples T(i) = (T(i-1), T(i-1)): inserting it hashes 2**levels tuples."""
    data = b"\x80\x02N\x85" + _put(0)
    for i in range(1, levels + 1):
        data += _get(i - 1) + _get(i - 1) + b"\x86" + _put(i)
    return data + b"}" + _get(levels) + b"Ns."


def zipped(data: Callable[[], bytes], name: str = "bad.pyth") -> Setup:
    return lambda d, fx: torch_zip(d / name, data())


def python_dag(levels: int = LEVELS) -> list:
    dag: list = []
    for _ in range(levels):
        dag = [dag, dag]
    return dag


def genuine_with(extra: Callable[[], object], name: str = "bad.pyth") -> Setup:
    """A genuine pycls checkpoint with one more entry, saved by torch.save itself."""
    return lambda d, fx: save({**fx.checkpoint(), "extra": extra()}, d / name)


def cfg(text: str) -> Setup:
    return lambda d, fx: save({**fx.checkpoint(), "cfg": text}, d / "bad.pyth")


def billion_laughs(levels: int = 10) -> str:
    """About 400 bytes of YAML aliases: `levels` levels of nine references, 9**levels nodes once unfolded."""
    names = "abcdefghijklmnop"[:levels]
    text = f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]\n"
    for previous, name in itertools.pairwise(names):
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    return text


def genuine_cfg(fx: Fixtures, edit: Callable[[dict], object]) -> str:
    cfg = yaml.safe_load(fx.checkpoint()["cfg"])
    edit(cfg)
    return yaml.safe_dump(cfg)


def bomb_cfg(fx: Fixtures) -> str:
    """The genuine cfg with its ANYNET.DEPTHS the bomb: any message showing DEPTHS unfolds all of it."""
    text = genuine_cfg(fx, lambda c: c["ANYNET"].update(DEPTHS="BOMB"))
    return billion_laughs() + text.replace("DEPTHS: BOMB", "DEPTHS: *j")


def one_alias_cfg(fx: Fixtures) -> str:
    """The genuine cfg with one list written once and referred to again (pycls never writes this)."""
    text = genuine_cfg(fx, lambda c: c.update(EXTRA={"SAME": "ALIAS"}))
    return "depths: &depths [1, 2]\n" + text.replace("SAME: ALIAS", "SAME: *depths")


def convert(id: str, setup: Setup, says: list[str], tool: str = "pycls") -> Case:
    return Case(id, CONVERT, [tool, "bad.pyth", "out.safetensors"], setup, ["bad.pyth", *says], seconds=SECONDS)


def readers(id: str, setup: Setup, says: list[str]) -> list[Case]:
    """The same file given to every command that reads a torch file."""
    return [
        convert(f"{id}-pycls", setup, says),
        convert(f"{id}-mmcls", setup, says, tool="mmcls"),
        convert(f"{id}-timm", setup, says, tool="timm"),
        Case(f"{id}-inspect", CONVERT, ["inspect", "bad.pyth"], setup, ["bad.pyth", *says], seconds=SECONDS),
        Case(
            f"{id}-validate",
            VALIDATE,
            ["--weights", "bad.pyth", "--data", "val", "--workers", "0", "--quiet"],
            lambda d, fx: (shutil.copytree(fx.val, d / "val"), setup(d, fx)),
            ["bad.pyth", *says],
            seconds=SECONDS,
        ),
    ]


CASES = [
    *readers("list-dag-60", zipped(list_dag), [UNFOLDS]),
    *readers("tuple-key-dag-60", zipped(tuple_key_dag), [UNFOLDS]),
    *readers("late-list-dag-60", zipped(late_list_dag), ["not"]),
    convert("genuine-checkpoint-with-dag", genuine_with(python_dag), [UNFOLDS]),
    convert("cfg-billion-laughs", lambda d, fx: cfg(bomb_cfg(fx))(d, fx), ["'cfg'", "anchors or aliases", "line 1"]),
    convert("cfg-one-alias", lambda d, fx: cfg(one_alias_cfg(fx))(d, fx), ["'cfg'", "anchors or aliases"]),
    convert(
        "cfg-300-kb",
        lambda d, fx: cfg(genuine_cfg(fx, lambda c: c.update(PAD="x" * (300 << 10))))(d, fx),
        ["'cfg'", "characters long"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)


def test_billion_laughs_is_small():
    assert len(billion_laughs()) < 450
    assert len(list_dag()) < 800 and len(tuple_key_dag()) < 800  # "a few KB" in the issue


def test_the_walk_visits_each_object_once():
    """Shared references and cycles are visited once; more objects than the limit are refused."""
    cycle: list = []
    cycle.append(cycle)
    assert _storages([python_dag(), cycle]) == {}
    with pytest.raises(ValueError, match="more than 100 objects"):
        _storages(list(range(200)), limit=100)


def test_genuine_checkpoints_stay_far_below_the_bound(fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    """The genuine checkpoints convert; a short DAG (2**10 paths) inside one is accepted."""
    for name, setup in [
        ("zoo.pyth", lambda d: shutil.copy(fixtures.zoo_pyth, d / "zoo.pyth")),
        ("dag.pyth", lambda d: genuine_with(lambda: python_dag(10), "dag.pyth")(d, fixtures)),
    ]:
        setup(tmp_path)
        outcome = zygote.run(CONVERT, ["pycls", name, f"{name}.safetensors", "-q"], tmp_path)
        assert outcome.code == 0, outcome.stderr
    for name, text in [("bomb", bomb_cfg(fixtures)), ("alias", one_alias_cfg(fixtures))]:
        assert yaml.safe_load(text)["MODEL"]["TYPE"] == "anynet", name  # valid YAML, a cfg but for the aliases


def test_a_cfg_error_shows_a_bounded_part_of_a_shared_list():
    """A cfg given as a dict (no YAML) whose DEPTHS shares itself 2**60 times: the error line shows a few
    items, in a child process that must end within seconds."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_hostile_walks import python_dag\n"
        "from regnet_convert.conversion.architecture import config_from_cfg\n"
        "cfg = {'MODEL': {'TYPE': 'anynet'}, 'ANYNET': {'DEPTHS': python_dag(), 'WIDTHS': [8]}}\n"
        "try:\n    config_from_cfg(cfg, 10)\nexcept ValueError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert "ANYNET.DEPTHS[0] is [[[" in done.stdout and len(done.stdout) < 200, done.stdout
