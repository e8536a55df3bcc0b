"""Pure: argument checks shared by the public functions, with the messages the command line shows.

Each check names the Python argument in backticks (```threshold```), which the command line
shows as its flag (:func:`lsmap.cli.options.cli_message`), so a script calling
``lsmap.detect(..., threshold=2.0)`` and a shell user typing ``--threshold 2`` read the same line.
NaN never passes a range check (every comparison with NaN is false, so ``not lo <= x <= hi`` is
the test, never ``x < lo``), and booleans are not numbers here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from lsmap.errors import InputError


def _name(option: str) -> str:
    """The argument as library messages name it: ```min_area``` (the CLI shows ``--min-area``)."""
    return f"`{option.lstrip('-').replace('-', '_')}`"


def check_number(option: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float, finite and inside ``[lo, hi]`` (open ends with ``lo_open``/``hi_open``).

    Raises:
        InputError: not a real number (a string, a bool, None), NaN/inf, or out of range.
    """
    name = _name(option)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name} must be a number (got {value!r} of type {type(value).__name__})")
    v = float(value)
    ok = math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        if lo is None and hi is None:
            raise InputError(f"{name} must be a finite number (got {value!r})")
        if hi is None:
            raise InputError(f"{name} must be a finite number {'above' if lo_open else 'of at least'} {lo:g} "
                             f"(got {value!r})")
        if lo is None:
            raise InputError(f"{name} must be a finite number {'below' if hi_open else 'of at most'} {hi:g} "
                             f"(got {value!r})")
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise InputError(f"{name} must be a number in {left}{lo:g}, {hi:g}{right} (got {value!r})")
    return v


def check_threshold(value: Any, option: str = "threshold") -> float:
    """A landslide probability threshold, in (0, 1) for every command: a pixel is a landslide where p > it, so 0
    maps every observed pixel and 1 none.

    Raises:
        InputError: not a number in (0, 1); the message says why the ends are refused.
    """
    try:
        return check_number(option, value, 0, 1, lo_open=True, hi_open=True)
    except InputError as e:
        raise InputError(f"{e}: a pixel is a landslide where its probability is above it, so 0 would map every "
                         f"pixel and 1 none; leave it out for the models' own") from None


def check_int(option: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int inside ``[lo, hi]``.

    Raises:
        InputError: not an integer (floats, strings and bools are refused), or out of range.
    """
    name = _name(option)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{name} must be an integer (got {value!r} of type {type(value).__name__})")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        if hi is None:
            raise InputError(f"{name} must be an integer of at least {lo} (got {v})")
        if lo is None:
            raise InputError(f"{name} must be an integer of at most {hi} (got {v})")
        raise InputError(f"{name} must be an integer in [{lo}, {hi}] (got {v})")
    return v


def check_bool(option: str, value: Any) -> bool:
    """``value`` must be a bool (a string "False" is truthy: refused).

    Raises:
        InputError: not a bool.
    """
    if not isinstance(value, bool):
        raise InputError(f"{_name(option)} must be True or False (got {value!r} of type {type(value).__name__})")
    return value


def check_choice(option: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``.

    Raises:
        InputError: another value, listing the choices.
    """
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{_name(option)}: unknown value {value!r}; choose one of: {', '.join(choices)}")
    return value


def check_path(option: str, value: Any, *, optional: bool = True) -> Any:
    """``value`` must be a path (str or ``os.PathLike``), or ``None`` when ``optional``.

    Raises:
        InputError: another type.
    """
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise InputError(f"{_name(option)} must be a file path (got {value!r} of type {type(value).__name__})")
    return value


def is_empty_path(value: Any) -> bool:
    """Whether ``value`` is an empty (or blank) path: ``Path("")`` is the current folder, so an empty argument was
    read as '.' (a folder's patches, band files or "raster is a folder") instead of being refused."""
    return isinstance(value, (str, os.PathLike)) and not os.fspath(value).strip()


def check_input_path(option: str, value: Any, what: str) -> Any:
    """``value`` unless it is an empty path (:func:`is_empty_path`).

    Raises:
        InputError: an empty path, named as ``option`` with ``what`` to give instead.
    """
    if is_empty_path(value):
        raise InputError(f"{_name(option)} is an empty path; give {what}")
    return value


def as_list(option: str, value: Any) -> list | None:
    """A sequence argument as a list; a single path (``"model.safetensors"``) becomes ``[path]``.

    ``None`` stays ``None``. Strings are never iterated character by character.

    Raises:
        InputError: neither a path, nor an iterable of items.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)):
        return [os.fsdecode(value) if isinstance(value, bytes) else value]
    try:
        return list(value)
    except TypeError:
        return [value]  # one object (e.g. a loaded model): the callee checks its type


def as_settings(value: Any, cls: type, option: str) -> Any:
    """``value`` as the settings dataclass ``cls``: an instance as it is, a mapping of its fields made into one
    (``None`` stays ``None``).

    Raises:
        InputError: a mapping with names ``cls`` does not have, or another type.
    """
    from collections.abc import Mapping
    from dataclasses import fields

    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(value) - known)
        if unknown:
            raise InputError(f"{_name(option)}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**value)
    raise InputError(f"{_name(option)} must be a {cls.__name__} or a dict of its fields (got {type(value).__name__})")
