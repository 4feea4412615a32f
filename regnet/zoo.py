"""The 24 RegNets of the pycls model zoo, as points of the design space."""

from __future__ import annotations

from regnet.config import RegNetConfig
from regnet.design import RegNetParams

ZOO: dict[str, RegNetParams] = {
    "regnetx_200mf": RegNetParams(depth=13, w0=24, wa=36.44, wm=2.49, group_width=8),
    "regnetx_400mf": RegNetParams(depth=22, w0=24, wa=24.48, wm=2.54, group_width=16),
    "regnetx_600mf": RegNetParams(depth=16, w0=48, wa=36.97, wm=2.24, group_width=24),
    "regnetx_800mf": RegNetParams(depth=16, w0=56, wa=35.73, wm=2.28, group_width=16),
    "regnetx_1.6gf": RegNetParams(depth=18, w0=80, wa=34.01, wm=2.25, group_width=24),
    "regnetx_3.2gf": RegNetParams(depth=25, w0=88, wa=26.31, wm=2.25, group_width=48),
    "regnetx_4.0gf": RegNetParams(depth=23, w0=96, wa=38.65, wm=2.43, group_width=40),
    "regnetx_6.4gf": RegNetParams(depth=17, w0=184, wa=60.83, wm=2.07, group_width=56),
    "regnetx_8.0gf": RegNetParams(depth=23, w0=80, wa=49.56, wm=2.88, group_width=120),
    "regnetx_12gf": RegNetParams(depth=19, w0=168, wa=73.36, wm=2.37, group_width=112),
    "regnetx_16gf": RegNetParams(depth=22, w0=216, wa=55.59, wm=2.1, group_width=128),
    "regnetx_32gf": RegNetParams(depth=23, w0=320, wa=69.86, wm=2.0, group_width=168),
    "regnety_200mf": RegNetParams(depth=13, w0=24, wa=36.44, wm=2.49, group_width=8, se_ratio=0.25),
    "regnety_400mf": RegNetParams(depth=16, w0=48, wa=27.89, wm=2.09, group_width=8, se_ratio=0.25),
    "regnety_600mf": RegNetParams(depth=15, w0=48, wa=32.54, wm=2.32, group_width=16, se_ratio=0.25),
    "regnety_800mf": RegNetParams(depth=14, w0=56, wa=38.84, wm=2.4, group_width=16, se_ratio=0.25),
    "regnety_1.6gf": RegNetParams(depth=27, w0=48, wa=20.71, wm=2.65, group_width=24, se_ratio=0.25),
    "regnety_3.2gf": RegNetParams(depth=21, w0=80, wa=42.63, wm=2.66, group_width=24, se_ratio=0.25),
    "regnety_4.0gf": RegNetParams(depth=22, w0=96, wa=31.41, wm=2.24, group_width=64, se_ratio=0.25),
    "regnety_6.4gf": RegNetParams(depth=25, w0=112, wa=33.22, wm=2.27, group_width=72, se_ratio=0.25),
    "regnety_8.0gf": RegNetParams(depth=17, w0=192, wa=76.82, wm=2.19, group_width=56, se_ratio=0.25),
    "regnety_12gf": RegNetParams(depth=19, w0=168, wa=73.36, wm=2.37, group_width=112, se_ratio=0.25),
    "regnety_16gf": RegNetParams(depth=18, w0=200, wa=106.23, wm=2.48, group_width=112, se_ratio=0.25),
    "regnety_32gf": RegNetParams(depth=20, w0=232, wa=115.89, wm=2.53, group_width=232, se_ratio=0.25),
}


def canonical_name(name: str) -> str:
    """`RegNetX-4.0GF`, `regnetx-4.0gf` and `regnetx_4.0gf` all name `regnetx_4.0gf`."""
    key = name.strip().lower().replace("-", "_")
    if key not in ZOO:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(ZOO)}")
    return key


def pycls_name(name: str) -> str:
    """The model zoo's own spelling: `regnetx_4.0gf` -> `RegNetX-4.0GF`."""
    family, size = canonical_name(name).split("_")
    return f"RegNet{family[-1].upper()}-{size.upper()}"


def zoo_config(name: str, num_classes: int = 1000) -> RegNetConfig:
    """The per-stage config of a zoo model."""
    key = canonical_name(name)
    return ZOO[key].config(num_classes=num_classes, name=key)
