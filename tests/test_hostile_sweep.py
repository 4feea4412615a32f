"""Hostile inputs to regnet-validate's sweep options (`--model` expansion, `--table`) and `--cache`, each run in a
limited child process (`hostile.Zygote`).

Refusals satisfy `hostile.check_refusal` (exit 2, one `error:` line naming the option or file, no traceback,
nothing left behind or changed, not even an empty folder); missing weights for several models add one line per
model before that error line. Damaged cache entries are not refusals: they are rebuilt, within the time and
memory limits (a FIFO, a sparse 300 MB index, 200,000 nested brackets).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from crafted import Fixtures, copy_val
from hostile import Case, Zygote, check_refusal, snapshot

from regnet_convert.validation.crop_cache import DATA, INDEX, CropCache, Stale
from regnet_convert.validation.dataset import find_samples
from regnet_convert.validation.loader import CropSettings
from regnet_convert.validation.selection import starred

pytestmark = pytest.mark.hostile

Setup = Callable[[Path, Fixtures], object]
VALIDATE = "regnet-validate"
W = ["--weights", "w.safetensors", "--data", "val"]
CK = {"REGNET_CHECKPOINTS": "ck"}


def _base(d: Path, fx: Fixtures) -> None:
    copy_val(fx, d)
    shutil.copy(fx.tiny_safetensors, d / "w.safetensors")
    (d / "ck").mkdir()


def _then(*steps: Setup) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        _base(d, fx)
        for step in steps:
            step(d, fx)

    return setup


def entry(d: Path) -> Path:
    """The cache entry `--cache cache --data val` uses in the case folder `d`."""
    return CropCache(d / "cache", find_samples(d / "val"), CropSettings()).entry


def _entry_as(make: Callable[[Path], object]) -> Setup:
    def setup(d: Path, fx: Fixtures) -> None:
        (d / "cache").mkdir()
        make(entry(d))

    return setup


def _foreign_file(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("mine\n")


def _checkpoint(name: str, contents: Callable[[Fixtures], bytes]) -> Setup:
    return lambda d, fx: (d / "ck" / f"{name}.safetensors").write_bytes(contents(fx))


def _broken_image(d: Path, fx: Fixtures) -> None:
    good = sorted((d / "val").rglob("*.JPEG"))[0]
    (good.parent / "broken.JPEG").write_bytes(good.read_bytes()[:1500])


def case(id: str, argv: list[str], says: list[str], *steps: Setup, env: dict | None = None) -> Case:
    return Case(id, VALIDATE, [*argv, "--workers", "0", "--quiet"], _then(*steps), says, env=env or CK)


def _zoo_file(fx: Fixtures) -> bytes:
    return fx.zoo_safetensors.read_bytes()


CASES = [
    # --cache
    case("cache-is-a-file", [*W, "--cache", "c"], ["--cache c", "is a file"], lambda d, fx: (d / "c").write_text("x")),
    case("cache-is-a-fifo", [*W, "--cache", "c"], ["--cache c", "is a FIFO"], lambda d, fx: os.mkfifo(d / "c")),
    case("cache-is-dev-null", [*W, "--cache", "/dev/null"], ["--cache /dev/null", "character device"]),
    case("cache-is-weights", [*W, "--cache", "w.safetensors"], ["--cache w.safetensors", "is a file"]),
    case("cache-parent-missing", [*W, "--cache", "nodir/c"], ["--cache nodir/c", "does not exist"]),
    case("cache-empty-name", [*W, "--cache", ""], ["--cache", "not a folder name"]),
    case("cache-is-the-data", [*W, "--cache", "val"], ["--cache val", "inside the --data folder"]),
    case("cache-inside-the-data", [*W, "--cache", "val/cache"], ["--cache val/cache", "inside the --data folder"]),
    case("cache-unwritable", [*W, "--cache", "/sys"], ["/sys", "cannot write in '/sys'"]),
    case("cache-uncreatable", [*W, "--cache", "/sys/rc"], ["--cache /sys/rc", "cannot be created", "not permitted"]),
    case(
        "cache-entry-is-a-file",
        [*W, "--cache", "cache"],
        ["--cache", "is a file, not a cache entry"],
        _entry_as(lambda p: p.write_text("x")),
    ),
    case(
        "cache-entry-is-a-symlink",
        [*W, "--cache", "cache"],
        ["--cache", "is a symbolic link, not a cache entry"],
        _entry_as(lambda p: p.symlink_to(p.parent.parent / "val")),
    ),
    case(
        "cache-entry-holds-a-foreign-file",
        [*W, "--cache", "cache"],
        ["--cache", "holds 'notes.txt', not a cache file"],
        _entry_as(_foreign_file),
    ),
    case("cache-bad-image", [*W, "--cache", "cache"], ["broken.JPEG", "truncated JPEG"], _broken_image),
    # --table
    case("table-is-directory", [*W, "--table", "val"], ["--table val", "is a directory"]),
    case("table-is-weights", [*W, "--table", "w.safetensors"], ["--table", "is the input file"]),
    case("table-is-dev-null", [*W, "--table", "/dev/null"], ["--table /dev/null", "character device"]),
    case("table-is-a-fifo", [*W, "--table", "t.md"], ["--table t.md", "FIFO"], lambda d, fx: os.mkfifo(d / "t.md")),
    case("table-dir-missing", [*W, "--table", "nodir/t.md"], ["--table nodir/t.md", "does not exist"]),
    case("table-empty-name", [*W, "--table", ""], ["--table", "not a file name"]),
    case("table-trailing-slash", [*W, "--table", "t.md/"], ["--table t.md/", "not a file name"]),
    case("table-is-the-json", [*W, "--json", "r.md", "--table", "r.md"], ["--table r.md", "is the --json file"]),
    case(
        "table-is-the-json-by-symlink",
        [*W, "--json", "r.md", "--table", "l.md"],
        ["--table l.md", "is the --json file"],
        lambda d, fx: (d / "l.md").symlink_to("r.md"),
    ),
    case("table-bad-image", [*W, "--table", "t.md"], ["broken.JPEG"], _broken_image),
    # --model expansion
    case("model-unknown", ["--model", "regnetz_9gf", "--data", "val"], ["--model", "unknown model", "starred"]),
    case("model-group-typo", ["--model", "starrred", "--data", "val"], ["--model", "'starrred'"]),
    case("model-empty-name", ["--model", "", "--data", "val"], ["--model", "unknown model ''"]),
    case("model-unknown-after-starred", ["--model", "starred", "--model", "x", "--data", "val"], ["unknown model 'x'"]),
    case("model-all-none-converted", ["--model", "all", "--data", "val"], ["ck", "no converted zoo weights"]),
    case(
        "model-all-checkpoints-missing",
        ["--model", "all", "--data", "val"],
        ["nowhere", "no converted zoo weights"],
        env={"REGNET_CHECKPOINTS": "nowhere"},
    ),
    case(
        "model-all-damaged-file",
        ["--model", "all", "--data", "val"],
        ["regnetx_200mf.safetensors", "not a converted RegNet"],
        _checkpoint("regnetx_200mf", lambda fx: _zoo_file(fx)[:5000]),
    ),
    case(
        "model-all-wrong-architecture",
        ["--model", "all", "--data", "val"],
        ["regnetx_400mf.safetensors", "not the --model regnetx_400mf architecture"],
        _checkpoint("regnetx_400mf", _zoo_file),
    ),
    case(
        "model-all-a-directory",
        ["--model", "all", "--data", "val"],
        ["regnetx_200mf.safetensors", "is a directory"],
        lambda d, fx: (d / "ck" / "regnetx_200mf.safetensors").mkdir(),
    ),
    case("model-weights-with-starred", [*W, "--model", "starred"], ["--weights", "goes with one --model"]),
    case("model-weights-with-all", [*W, "--model", "all"], ["--weights", "goes with one --model"]),
    case(
        "model-weights-with-two",
        [*W, "--model", "regnetx_200mf", "--model", "regnety_200mf"],
        ["--weights", "goes with one --model"],
    ),
    case(
        "model-one-missing",
        ["--model", "regnetx_4.0gf", "--data", "val"],
        ["regnetx_4.0gf.safetensors", "get them with: regnet-convert zoo fetch regnetx_4.0gf"],
    ),
    case(
        "model-sweep-json-is-weights",
        ["--model", "all", "--data", "val", "--json", "ck/regnetx_200mf.safetensors"],
        ["--json", "is the input file"],
        _checkpoint("regnetx_200mf", _zoo_file),
    ),
    case(
        "model-sweep-table-is-weights",
        ["--model", "all", "--data", "val", "--table", "ck/regnetx_200mf.safetensors"],
        ["--table", "is the input file"],
        _checkpoint("regnetx_200mf", _zoo_file),
    ),
]


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, folders included (an empty folder left behind counts)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_case(zygote: Zygote, fixtures: Fixtures, tmp_path: Path, setup: Setup, argv, env) -> tuple:
    folder = tmp_path / "case"
    folder.mkdir()
    setup(folder, fixtures)
    before, paths = snapshot(folder), tree(folder)
    outcome = zygote.run(VALIDATE, argv, folder, env)
    return folder, before, paths, outcome


def test_suite_covers_each_option():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 35
    assert {i.split("-")[0] for i in ids} == {"cache", "table", "model"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    folder, before, paths, outcome = run_case(zygote, fixtures, tmp_path, case.setup, case.argv, case.env)
    check_refusal(outcome, before, snapshot(folder), case.code, case.says)
    assert tree(folder) == paths


@pytest.mark.parametrize(
    "models, present, missing",
    [
        (
            ["starred"],
            ["regnetx_800mf", "regnetx_4.0gf"],
            [n for n in starred() if n not in ("regnetx_800mf", "regnetx_4.0gf")],
        ),
        (["all", "regnetx_4.0gf"], ["regnetx_200mf"], ["regnetx_4.0gf"]),
        (
            ["regnetx_4.0gf", "RegNetX-4.0GF", "regnetx_8.0gf", "starred"],
            [],
            ["regnetx_4.0gf", "regnetx_8.0gf", *(n for n in starred() if n not in ("regnetx_4.0gf", "regnetx_8.0gf"))],
        ),
    ],
    ids=["starred-some-present", "all-and-one-missing", "duplicates-named-once"],
)
def test_missing_weights_one_line_each_before_anything_runs(models, present, missing, fixtures, zygote, tmp_path):
    def setup(d: Path, fx: Fixtures) -> None:
        _base(d, fx)
        for name in present:
            (d / "ck" / f"{name}.safetensors").write_bytes(b"never read")  # reported before any file is loaded

    argv = [*(a for m in models for a in ("--model", m)), "--data", "val", "--json", "r.json", "--table", "t.md"]
    folder, before, paths, outcome = run_case(zygote, fixtures, tmp_path, setup, argv, CK)
    assert outcome.code == 2 and "Traceback" not in outcome.stderr, outcome.stderr
    *details, error = outcome.stderr.strip().splitlines()
    assert details == [
        f"{name}: no converted weights at ck/{name}.safetensors (regnet-convert zoo fetch {name})" for name in missing
    ]
    assert error.startswith("error: ck: ") and f"{len(missing)} of {len(missing) + len(present)} models" in error
    assert error.endswith("get them with: regnet-convert zoo fetch " + " ".join(missing))
    assert snapshot(folder) == before and tree(folder) == paths


def test_duplicates_validate_each_model_once(fixtures, zygote, tmp_path):
    def setup(d: Path, fx: Fixtures) -> None:
        _base(d, fx)
        shutil.copy(fx.zoo_safetensors, d / "ck" / "regnetx_200mf.safetensors")

    models = ["regnetx_200mf", "RegNetX-200MF", "all", " regnetx-200mf "]
    argv = [*(a for m in models for a in ("--model", m)), "--data", "val", "--workers", "0", "-q", "--json", "r.json"]
    folder, _, _, outcome = run_case(zygote, fixtures, tmp_path, setup, argv, CK)
    assert outcome.code == 0, outcome.stderr
    assert [r["model"] for r in json.loads((folder / "r.json").read_text())] == ["regnetx_200mf"]


def _sparse_index(e: Path) -> None:
    with open(e / INDEX, "r+b") as f:
        f.truncate(300 << 20)


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


DAMAGED = {
    "index-a-fifo": lambda e: _replace_with_fifo(e / INDEX),
    "data-a-fifo": lambda e: _replace_with_fifo(e / DATA),
    "index-sparse-300-megabytes": _sparse_index,
    "index-nested-200000": lambda e: (e / INDEX).write_text("[" * 200_000 + "]" * 200_000),
    "index-random-bytes": lambda e: (e / INDEX).write_bytes(os.urandom(5000)),
    "data-truncated": lambda e: os.truncate(e / DATA, 1000),
    "data-symlink-to-dev-zero": lambda e: ((e / DATA).unlink(), (e / DATA).symlink_to("/dev/zero")),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_entry_is_rebuilt_within_limits(damage, fixtures, zygote, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    _base(folder, fixtures)
    argv = [*W, "--workers", "0", "--quiet", "--cache", "cache", "--json", "r.json"]
    first = zygote.run(VALIDATE, argv, folder, seconds=60)
    assert first.code == 0, first.stderr
    record = json.loads((folder / "r.json").read_text())
    cache = CropCache(folder / "cache", find_samples(folder / "val"), CropSettings())
    cache.open()
    DAMAGED[damage](cache.entry)
    with pytest.raises(Stale):
        cache.open()
    again = zygote.run(VALIDATE, argv, folder, seconds=60)
    assert again.code == 0 and not again.stderr, again.stderr
    assert json.loads((folder / "r.json").read_text())["top1"] == record["top1"]
    cache.open()  # rebuilt, valid
    assert sorted(p.name for p in (folder / "cache").iterdir()) == [cache.entry.name]
