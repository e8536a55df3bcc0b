"""Pseudo labels for self-training: confidence thresholds, MC-dropout uncertainty, class-balanced selection.

Two ways to turn a model's view of unlabelled target patches into training labels:

- **Threshold** (1st place): a pixel whose ensemble landslide probability is at least ``pos``
  becomes landslide, one at most ``neg`` background, everything between is ignored (255).
- **Uncertainty** (3rd place): Monte-Carlo dropout (dropout kept active on the feature map after
  the first convolution, several forward passes) gives a per-pixel variance of the landslide
  probability; each pixel is labelled with its predicted class, and over the whole target set only
  the given fraction of each class with the lowest variance is kept (class-balanced selection).

:class:`ClassBalancedSelector` computes that selection exactly while streaming: uncertainties are
stored as float16 (the maps ``lsmap refine`` writes), and a float16 value's bit pattern orders
non-negative values, so a histogram over the 31,745 finite non-negative float16 bit patterns is an
exact sorted summary of any number of pixels in 250 kB per class. Ties at the cut-off value are
broken by visiting order (patch order, then row-major), so exactly the requested number of
pixels is kept.

Pseudo labels never come from pixels a patch did not observe (nodata, clouds and shadows masked
by ``lsmap tile``, padding; :func:`lsmap.io.patches.read_observed`): :func:`ignore_unobserved` sets
them to 255, and the class-balanced selection leaves them out of its counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsmap.core.constants import IGNORE_INDEX
from lsmap.errors import CheckpointError, InputError
from lsmap.learn.ensemble import member_logits

BACKGROUND, LANDSLIDE = 0, 1
CLASS_NAMES = ("background", "landslide")
#: Number of float16 bit patterns of finite non-negative values (0x0000 .. 0x7BFF).
_F16_FINITE = 0x7C00


def check_thresholds(pos: float, neg: float) -> None:
    """Raise :class:`InputError` unless ``0 <= neg < pos <= 1``."""
    if not (0.0 <= neg < pos <= 1.0):
        raise InputError(f"pseudo-label thresholds need 0 <= `neg_thresh` < `pos_thresh` <= 1; got neg={neg}, pos={pos}")


def threshold_labels(prob: np.ndarray, pos: float = 0.7, neg: float = 0.3) -> np.ndarray:
    """Hard pseudo labels from landslide probabilities.

    Args:
        prob: Landslide probability per pixel.
        pos: Pixels with ``prob >= pos`` become landslide (1).
        neg: Pixels with ``prob <= neg`` become background (0); the rest are ignored (255).

    Returns:
        uint8 mask, same shape as ``prob``. Non-finite probabilities are ignored.

    Raises:
        InputError: thresholds out of order (see :func:`check_thresholds`).
    """
    check_thresholds(pos, neg)
    prob = np.asarray(prob, np.float32)
    out = np.full(prob.shape, IGNORE_INDEX, np.uint8)
    out[prob <= neg] = BACKGROUND
    out[prob >= pos] = LANDSLIDE
    return out


def ignore_unobserved(mask: np.ndarray, observed: np.ndarray | None) -> np.ndarray:
    """``mask`` with the pixels that are not ``observed`` set to ignored (255), in place; ``None``: all observed."""
    if observed is not None:
        mask[~np.asarray(observed, bool)] = IGNORE_INDEX
    return mask


def confidence(prob: np.ndarray) -> np.ndarray:
    """Confidence of the predicted class, ``max(p, 1 - p)`` (0.5 = undecided, 1 = certain)."""
    prob = np.asarray(prob, np.float32)
    return np.maximum(prob, 1.0 - prob)


def first_conv(module: Any):
    """The first ``Conv2d`` of ``module`` in registration order (the stem of smp encoders, TinyUNet's enc1)."""
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise CheckpointError(f"{type(module).__name__}: no Conv2d layer to apply Monte-Carlo dropout after")


@contextlib.contextmanager
def first_conv_dropout(module: Any, p: float) -> Iterator[Any]:
    """Apply dropout (always active, also in eval mode) to the output of ``module``'s first convolution.

    Implemented as a forward hook, so it works for any model with a ``Conv2d`` (smp models,
    :class:`lsmap.learn.tiny_unet.TinyUNet`); the hook is removed on exit. Yields the hooked layer.

    Raises:
        InputError: ``p`` outside [0, 1).
    """
    import torch.nn.functional as F

    if not 0.0 <= p < 1.0:
        raise InputError(f"MC dropout probability must be in [0, 1); got {p}")
    conv = first_conv(module)
    handle = conv.register_forward_hook(lambda _m, _inp, out: F.dropout(out, p, training=True))
    try:
        yield conv
    finally:
        handle.remove()


def mc_dropout_proba(members: Sequence[Any], x, stats=None, passes: int = 10, p: float = 0.3, amp: bool = True):
    """Monte-Carlo dropout: mean and variance of the landslide probability over passes (and members).

    Every member runs ``passes`` forward passes with dropout ``p`` on its first feature map
    (:func:`first_conv_dropout`); the variance is taken over all ``passes * len(members)``
    probabilities (so with several members it also holds their disagreement). Passes are
    shifted by the first one before the variance is taken, so identical passes give exactly 0.

    Args:
        members: Loaded ensemble members (:func:`lsmap.learn.ensemble.load_ensemble`).
        x: L4S-scaled batch.
        stats: Normalisation statistics of the data (the target's own); ``None``: the cards'.
        passes: Forward passes per member.
        p: Dropout probability.
        amp: Autocast where it helps.

    Returns:
        ``(mean, var)`` float32 tensors.

    Shape:
        ``x``: ``(N, C, H, W)``; ``mean``, ``var``: ``(N, H, W)``.
    """
    import torch


    if passes < 1:
        raise InputError(f"MC dropout needs at least one pass; got {passes}")
    probs = []
    for m in members:
        with first_conv_dropout(m.module, p):
            for _ in range(passes):
                probs.append(torch.softmax(member_logits(m, x, stats, amp), dim=1)[:, 1])
    stack = torch.stack(probs)
    shifted = stack - stack[:1]
    return stack.mean(0), shifted.var(0, unbiased=False)


def to_float16_nonneg(values: np.ndarray) -> np.ndarray:
    """``values`` as float16, with negatives and ``-0.0`` set to ``+0.0`` and NaN to the largest finite value."""
    v = np.asarray(values, np.float32)
    v = np.where(np.isnan(v), np.float32(np.finfo(np.float16).max), v)
    return np.where(v > 0, v, np.float32(0.0)).astype(np.float16)


@dataclass
class _ClassCut:
    n: int = 0
    keep: int = 0
    cutoff_bits: int = -1  # keep values below this bit pattern ...
    ties: int = 0  # ... plus this many pixels equal to it (in visiting order)


@dataclass
class ClassBalancedSelector:
    """Keep, per predicted class, the fraction of pixels with the lowest uncertainty over a whole set.

    Use in two passes over the same maps in the same order: :meth:`add` every map, then
    :meth:`select` every map (:meth:`finalize` is called on the first :meth:`select`). Memory is
    one float16 histogram per class, whatever the number of pixels.

    Attributes:
        keep: Fraction of the pixels to keep per class index (0 background, 1 landslide); the
            number kept is ``round(keep * n)``.
    """

    keep: tuple[float, float] = (0.9, 0.7)
    hist: np.ndarray = field(default_factory=lambda: np.zeros((2, _F16_FINITE), np.int64))
    _cuts: list[_ClassCut] | None = None
    _taken: list[int] = field(default_factory=lambda: [0, 0])

    def __post_init__(self) -> None:
        for name, f in zip(CLASS_NAMES, self.keep, strict=False):
            if not 0.0 <= f <= 1.0:
                raise InputError(f"fraction of {name} pixels to keep must be in [0, 1]; got {f}")

    @staticmethod
    def _bits(uncertainty: np.ndarray) -> np.ndarray:
        u = np.asarray(uncertainty)
        if u.dtype != np.float16:
            u = to_float16_nonneg(u)
        bits = u.view(np.uint16)
        if bits.size and int(bits.max()) >= _F16_FINITE:
            raise InputError("uncertainties must be finite and non-negative (use to_float16_nonneg)")
        return bits

    def add(self, uncertainty: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Count the pixels of one map.

        Args:
            uncertainty: Per-pixel uncertainty (float16 as stored, or any float: converted).
            pred: Predicted class per pixel (0 background, 1 landslide).
            valid: Optional bool map; pixels where it is false are never selected.
        """
        if self._cuts is not None:
            raise InputError("ClassBalancedSelector: add() after select(); use a new selector")
        bits = self._bits(uncertainty)
        pred = np.asarray(pred)
        for c in (BACKGROUND, LANDSLIDE):
            sel = pred == c
            if valid is not None:
                sel &= np.asarray(valid, bool)
            self.hist[c] += np.bincount(bits[sel].ravel(), minlength=_F16_FINITE)

    def finalize(self) -> list[dict]:
        """Fix the cut-offs; returns per class ``n``, ``keep`` (pixels) and ``cutoff`` (uncertainty)."""
        if self._cuts is None:
            cuts = []
            for c in (BACKGROUND, LANDSLIDE):
                cum = np.cumsum(self.hist[c])
                n = int(cum[-1])
                k = min(n, int(np.floor(self.keep[c] * n + 0.5)))
                cut = _ClassCut(n=n, keep=k)
                if k > 0:
                    b = int(np.searchsorted(cum, k))  # first bit pattern where the count reaches k
                    cut.cutoff_bits = b
                    cut.ties = k - (int(cum[b - 1]) if b > 0 else 0)
                cuts.append(cut)
            self._cuts = cuts
        return [
            {"class": CLASS_NAMES[c], "predicted": cut.n, "keep_fraction": self.keep[c], "kept": cut.keep,
             "cutoff_uncertainty": (float(np.uint16(cut.cutoff_bits).view(np.float16)) if cut.cutoff_bits >= 0 else None)}
            for c, cut in enumerate(self._cuts)
        ]

    def select(self, uncertainty: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Bool map of the pixels kept (call for the same maps, in the same order, as :meth:`add`)."""
        self.finalize()
        bits = self._bits(uncertainty)
        pred = np.asarray(pred)
        keep = np.zeros(bits.shape, bool)
        for c, cut in enumerate(self._cuts):
            if cut.keep == 0:
                continue
            sel = pred == c
            if valid is not None:
                sel &= np.asarray(valid, bool)
            keep |= sel & (bits < cut.cutoff_bits)
            tie = (sel & (bits == cut.cutoff_bits)).ravel()
            room = cut.ties - self._taken[c]
            if room > 0 and tie.any():
                idx = np.flatnonzero(tie)[:room]
                keep.ravel()[idx] = True  # keep is C-contiguous: ravel() is a view
                self._taken[c] += idx.size
        return keep


def uncertainty_labels(pred: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Pseudo labels: the predicted class where ``keep``, else ignored (255), as uint8."""
    out = np.full(np.shape(pred), IGNORE_INDEX, np.uint8)
    keep = np.asarray(keep, bool)
    out[keep] = np.asarray(pred, np.uint8)[keep]
    return out
