"""Hostile cfg values in pycls checkpoints (REGNET, ANYNET, BN sections; `--model` against the cfg), each run in a
limited child process.

Every case asserts the refusal contract (`hostile.refuse`, `hostile.check_refusal`): the documented exit status,
no traceback, one `error:` line naming the file or option, no leftover or temporary file, every file that existed
before byte-identical, all within the case's time and memory limits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crafted import (
    Fixtures,
)
from hostile import Case, Zygote, refuse
from hostile_setups import (
    cfg_edit,
    convert_case,
    pyth,
    set_key,
)

pytestmark = pytest.mark.hostile


# ---- 4. cfg values ---------------------------------------------------------------------------------------


def cfg_cases() -> list[Case]:
    regnet = [
        ("model-is-5", lambda c: c.__setitem__("MODEL", 5), "MODEL is 5, not a section"),
        ("model-is-string", lambda c: c.__setitem__("MODEL", "regnet"), "not a section"),
        ("regnet-section-string", lambda c: c.__setitem__("REGNET", "deep"), "REGNET is 'deep'"),
        ("depth-null", set_key("REGNET", "DEPTH", None), "REGNET.DEPTH is null"),
        ("depth-string", set_key("REGNET", "DEPTH", "13"), "REGNET.DEPTH is '13'"),
        ("depth-float", set_key("REGNET", "DEPTH", 13.5), "REGNET.DEPTH is 13.5"),
        ("depth-bool", set_key("REGNET", "DEPTH", True), "expected an integer"),
        ("depth-1e8", set_key("REGNET", "DEPTH", 100_000_000), "at most"),
        ("depth-zero", set_key("REGNET", "DEPTH", 0), "must be positive"),
        ("depth-negative", set_key("REGNET", "DEPTH", -3), "must be positive"),
        ("eps-list", set_key("BN", "EPS", [1]), "BN.EPS is [1]"),
        ("eps-zero", set_key("BN", "EPS", 0.0), "BN eps"),
        ("eps-nan", set_key("BN", "EPS", float("nan")), "not a finite number"),
        ("group-w-zero", set_key("REGNET", "GROUP_W", 0), "must be positive"),
        ("bot-mul-zero", set_key("REGNET", "BOT_MUL", 0.0), "must be positive"),
        ("wm-one", set_key("REGNET", "WM", 1.0), "invalid RegNet parameters"),
        ("wa-inf", set_key("REGNET", "WA", float("inf")), "not a finite number"),
        ("wa-huge", set_key("REGNET", "WA", 1e300), "out of range"),
        ("w0-odd", set_key("REGNET", "W0", 25), "invalid RegNet parameters"),
        ("se-on-string", set_key("REGNET", "SE_ON", "yes"), "expected true or false"),
        (
            "se-ratio-negative",
            lambda c: (set_key("REGNET", "SE_ON", True)(c), set_key("REGNET", "SE_R", -1.0)(c)),
            "positive",
        ),
        (
            "se-ratio-rounds-to-no-channel",
            lambda c: (set_key("REGNET", "SE_ON", True)(c), set_key("REGNET", "SE_R", 0.001)(c)),
            "no SE channel",
        ),
        ("missing-depth", lambda c: c["REGNET"].pop("DEPTH"), "its cfg has no REGNET.DEPTH"),
        ("model-type-resnet", set_key("MODEL", "TYPE", "resnet"), "MODEL.TYPE 'resnet'"),
        ("stem-width-1e30", set_key("REGNET", "STEM_W", 10**30), "implausible RegNet"),
        ("classes-1e30", set_key("MODEL", "NUM_CLASSES", 10**30), "implausible RegNet"),
        ("bot-mul-1e308", set_key("REGNET", "BOT_MUL", 1e308), "implausible RegNet"),
        ("stride-1e30", set_key("REGNET", "STRIDE", 10**30), "implausible RegNet"),
        (
            "se-ratio-1e300",
            lambda c: (set_key("REGNET", "SE_ON", True)(c), set_key("REGNET", "SE_R", 1e300)(c)),
            "implausible",
        ),
        ("model-type-list", set_key("MODEL", "TYPE", ["regnet"]), "MODEL.TYPE is ['regnet']"),
        ("stem-type-resnet", set_key("REGNET", "STEM_TYPE", "res_stem_in"), "stem type 'res_stem_in'"),
        ("block-type-vanilla", set_key("REGNET", "BLOCK_TYPE", "vanilla_block"), "block type 'vanilla_block'"),
        ("classes-contradict-tensors", set_key("MODEL", "NUM_CLASSES", 10), "head.fc.weight"),
        ("cfg-of-another-model", set_key("REGNET", "DEPTH", 12), "tensor shapes contradict the checkpoint's cfg"),
    ]
    cases = [convert_case(f"zoo-cfg-{id}", cfg_edit(edit, zoo=True), [text]) for id, edit, text in regnet]
    anynet = [
        ("depths-1e8", set_key("ANYNET", "DEPTHS", [100_000_000, 1]), "at most"),
        ("columns-differ", set_key("ANYNET", "WIDTHS", [16]), "differ in length"),
        ("depths-not-list", set_key("ANYNET", "DEPTHS", 3), "ANYNET.DEPTHS is 3, expected a list"),
        ("width-1e30", set_key("ANYNET", "WIDTHS", [16, 10**30]), "implausible RegNet"),
        ("bot-mul-1e300", set_key("ANYNET", "BOT_MULS", [1e300, 1.0]), "implausible RegNet"),
        ("width-string", set_key("ANYNET", "WIDTHS", [16, "x"]), "ANYNET.WIDTHS[1] is 'x'"),
        ("group-width-zero", set_key("ANYNET", "GROUP_WS", [0, 8]), "must be positive"),
        ("bot-mul-zero", set_key("ANYNET", "BOT_MULS", [0.0, 1.0]), "gives no channels"),
        ("stride-zero", set_key("ANYNET", "STRIDES", [0, 2]), "must be positive"),
    ]
    cases += [convert_case(f"anynet-cfg-{id}", cfg_edit(edit), [text]) for id, edit, text in anynet]
    model_option = [
        ("eps-0.1", set_key("BN", "EPS", 0.1), "--model regnetx_200mf contradicts its cfg: BN eps 1e-05 vs 0.1"),
        ("se-on", lambda c: set_key("REGNET", "SE_ON", True)(c), "SE ratio"),
        ("stem-width", set_key("REGNET", "STEM_W", 24), "stem width"),
    ]
    cases += [
        convert_case(f"model-option-vs-cfg-{id}", cfg_edit(edit, zoo=True), [text], "--model", "regnetx_200mf")
        for id, edit, text in model_option
    ]
    cases += [
        convert_case(
            "model-option-unknown",
            pyth(lambda fx: fx.checkpoint()),
            ["unknown model 'regnetx_1tf'"],
            "--model",
            "regnetx_1tf",
        ),
        convert_case(
            "model-option-wrong-zoo-model",
            pyth(lambda fx: {"model_state": fx.checkpoint(True)["model_state"]}),
            ["tensor shapes contradict --model regnetx_400mf"],
            "--model",
            "regnetx_400mf",
        ),
    ]
    return cases


CASES = cfg_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused(case: Case, fixtures: Fixtures, zygote: Zygote, tmp_path: Path):
    refuse(case, fixtures, zygote, tmp_path)
