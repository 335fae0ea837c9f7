"""The model families, one module each, and `FAMILIES`: the one place that lists them.

`model.family` names an entry of `FAMILIES` (a `contract.Family`); `gr_core.config` takes each
family's [model] options from it, `gr_core.encoder.build_model` builds through it, and
`scaling` counts parameters and FLOPs through it, so no code outside the family modules compares
family names. A new family: a module here (its options, formulas and `build`), its torch module,
and a line in each of `FAMILIES`, `FamilyName` and `FamilyOptions` below (docs/architecture.md).

Torch-free: every family module imports its torch module only inside `build`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from gr_core.families import fuxi, hstu, sasrec
from gr_core.families.contract import Family
from gr_core.families.fuxi import FuXiOptions
from gr_core.families.hstu import HSTUOptions
from gr_core.families.sasrec import SASRecOptions

# Spelled out (not derived from FAMILIES) so type checkers and the TOML type check see the names;
# tests/unit/test_families.py checks that the three agree.
FamilyName = Literal["hstu", "sasrec", "fuxi"]
FamilyOptions = HSTUOptions | SASRecOptions | FuXiOptions

FAMILIES: dict[str, Family] = {
    "hstu": hstu.FAMILY,
    "sasrec": sasrec.FAMILY,
    "fuxi": fuxi.FAMILY,
}

# Every family's option keys, each with the defaults it has in the families that declare it:
# `gr_core.config` accepts a key of another family only at such a default (and drops it).
OPTION_DEFAULTS: dict[str, list[Any]] = {}
for _family in FAMILIES.values():
    for _field in dataclasses.fields(_family.options):
        OPTION_DEFAULTS.setdefault(_field.name, []).append(_field.default)

__all__ = [
    "FAMILIES", "OPTION_DEFAULTS", "Family", "FamilyName", "FamilyOptions", "FuXiOptions", "HSTUOptions", "SASRecOptions",
]
