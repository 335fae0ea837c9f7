"""TOML tables -> frozen config dataclasses: type checks, unknown keys, dotted overrides (torch-free).

The generic half of `gr_core.config` (and of `sweeps.spec`, `slurm.config`, `scaling.cost`, which
build their dataclasses with `config_from_dict`): every error names the file (`where`) and the
dotted field, so a user sees `spec.toml: model.embedding_dim must be >= 1, got -8`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")
SECTIONS: tuple[str, ...] = ("data", "model", "train")  # the tables of a run config


def check_value(value: Any, annotation: Any, where: str, label: str) -> Any:
    """Check (and lightly coerce int -> float) a TOML value against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ValueError(f"{where}: {label} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors: list[Exception] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_value(value, option, where, label)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        if not errors:
            raise TypeError(f"{where}: {label}: unexpected value {value!r}")
        if len(errors) == 1:
            raise type(errors[0])(str(errors[0]))  # a wrong value stays a ValueError, a wrong type a TypeError
        # Several accepted forms (e.g. an integer or "auto"): name them all.
        wanted = [str(e).split(f"{label} must be ", 1)[-1].rsplit(", got ", 1)[0] for e in errors]
        raise type(errors[0])(f"{where}: {label} must be {' or '.join(wanted)}, got {value!r}")
    if origin is tuple:  # tuple[X, ...] fields take a TOML array
        (item_type, ellipsis) = typing.get_args(annotation)
        assert ellipsis is Ellipsis, f"only tuple[X, ...] config fields are supported, not {annotation}"
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: {label} must be a list, got {value!r}")
        return tuple(check_value(item, item_type, where, f"{label}[{i}]") for i, item in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: {label} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: {label} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: {label} must be a number, got {value!r}")
        if not math.isfinite(value):  # TOML and --set accept inf and nan; no config field means them
            raise ValueError(f"{where}: {label} must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: {label} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: {label} must be a table, got {value!r}")
        return config_from_dict(annotation, value, where=where, prefix=f"{label}.")
    raise TypeError(f"{where}: {label}: unsupported field type {annotation!r}")  # internal: a new field type


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # typing.get_type_hints re-evaluates the string annotations on every call (slow at 10k configs).
    return typing.get_type_hints(cls)


def require(condition: bool, message: str) -> None:
    """A user error (ValueError) with `message` unless `condition`: the config classes' rule checks."""
    if not condition:
        raise ValueError(message)


def require_finite(config: Any, section: str) -> None:
    """Every float field of `config` is finite (or None). Checked first in each `__post_init__`:
    range rules written as `x > 0` let inf through and read oddly for nan (`lr = inf` trained to a
    NaN loss before this), and a config built in Python skips the TOML type check."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{section}.{field.name} must be a finite number, got {value!r}")


def typed_values(cls: type, raw: Mapping[str, Any], *, where: str, prefix: str = "") -> dict[str, Any]:
    """`raw`'s values checked (and lightly coerced) against `cls`'s field annotations; an unknown
    key is a ValueError naming the table and listing the valid keys."""
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        table = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ValueError(f"{where}: unknown key(s) {unknown} in {table}; valid keys are {sorted(fields)}")
    return {name: check_value(value, hints[name], where, f"{prefix}{name}") for name, value in raw.items()}


def construct(cls: type[T], values: Mapping[str, Any], *, where: str) -> T:
    """`cls(**values)`, its rule errors (ValueError from `__post_init__`) prefixed with `where`."""
    try:
        return cls(**values)
    except ValueError as exc:
        if str(exc).startswith(f"{where}:"):
            raise
        raise ValueError(f"{where}: {exc}") from None


def config_from_dict(cls: type[T], raw: dict[str, Any], *, where: str = "config", prefix: str = "") -> T:
    """Build a config dataclass from a plain dict, rejecting unknown keys and wrong types.

    Errors name the dotted field (e.g. ``spec.toml: model.embedding_dim``) and the valid keys;
    `prefix` is the dotted path of `raw` inside a larger file (e.g. ``"base."``). A class whose
    TOML table is flatter than its fields (`gr_core.config.ModelConfig`: the family's options
    sit in the same [model] table) reads its table with its own `from_table` classmethod.
    """
    from_table = getattr(cls, "from_table", None)
    if from_table is not None:
        return from_table(raw, where=where, prefix=prefix)  # type: ignore[no-any-return]
    return construct(cls, typed_values(cls, raw, where=where, prefix=prefix), where=where)


def read_toml(path: str | Path, *, what: str) -> dict[str, Any]:
    """A TOML file's table; a missing, unreadable or malformed file is a ValueError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a directory; give the .toml file inside it") from None
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None


def _split_path(dotted: str) -> tuple[str, str]:
    section, _, name = dotted.partition(".")
    if section not in SECTIONS or not name or "." in name:
        raise ValueError(f"{dotted!r}: expected 'data.<key>', 'model.<key>' or 'train.<key>'")
    return section, name


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    return " ".join(f"--set {key}={value}" for key, value in overrides.items())


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw config table with every dotted override set; nothing is validated here.

    All overrides go in before validation because a valid change can need two fields at once
    (`data.source` and `data.path`; `model.embedding_dim` and `model.num_heads`): checking each
    alone would reject both orders.
    """
    merged: dict[str, Any] = {key: dict(value) if isinstance(value, Mapping) else value for key, value in raw.items()}
    for dotted, value in overrides.items():
        section, name = _split_path(dotted)
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"[{section}] must be a table, got {table!r}")
        table[name] = value
    return merged
