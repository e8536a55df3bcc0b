"""Pure, no numpy: the one vocabulary of normalisation choices (a command line's start imports it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from lsmap.errors import InputError

#: How a domain (a validation split, a target region, a scene) is normalised, in every stage: by
#: its ``own`` per-band statistics (the 1st place's separated normalisation) or by the ``model``'s
#: training statistics (one global normalisation, the baseline). Evaluation also takes ``auto``:
#: each model as it was trained.
NORMS = ("own", "model")
#: Earlier words for the same two choices, still accepted (train's separated/global, evaluate's
#: target, detect's scene).
NORM_ALIASES = MappingProxyType({"separated": "own", "target": "own", "scene": "own", "global": "model"})


def norm_mode(value: str, *, auto: bool = False) -> str:
    """The normalisation named ``value``: ``"own"`` or ``"model"`` (or ``"auto"`` when allowed).

    Raises:
        InputError: an unknown name; the message lists the valid ones.
    """
    choices = NORMS + (("auto",) if auto else ())
    mode = NORM_ALIASES.get(value, value)
    if mode not in choices:
        raise InputError(f"unknown normalisation '{value}'; choose one of: {', '.join(choices)}")
    return mode


def norm_choices(auto: bool = False) -> list[str]:
    """Every accepted name (canonical first, then the aliases): a command line's Choice list."""
    return [*(("auto",) if auto else ()), *NORMS, *NORM_ALIASES]


def trained_norm(train: Mapping | None) -> str:
    """How a model expects its inputs normalised: the ``norm`` of its card's training settings (``own``
    for a card without them: lsmap's recipe, separated normalisation)."""
    return norm_mode(str((train or {}).get("norm", "own")))


def ensemble_norm(norm: str, trains: Sequence[Mapping | None]) -> str:
    """``norm`` for one ensemble normalised with one set of statistics: ``auto`` is ``model`` when every
    member was trained with one global normalisation (:func:`trained_norm`), else ``own``."""
    mode = norm_mode(norm, auto=True)
    if mode != "auto":
        return mode
    return "model" if trains and all(trained_norm(t) == "model" for t in trains) else "own"
