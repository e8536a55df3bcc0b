"""Pure: pixel and object scores of the landslide class (numpy and scipy only).

Pixel scores follow the Landslide4Sense benchmark: true/false positives and negatives are summed
over the whole split (:class:`Confusion` objects add up), then precision, recall and F1 are
computed once; they are not averaged per image.

Ratios with a zero denominator are 0, never NaN, as in the L4S benchmark code (which adds a tiny
epsilon to each denominator): precision is 0 when nothing is predicted positive, recall is 0 when
nothing is truly positive, and F1 and IoU are 0 when there is neither a true nor a predicted
positive (an empty prediction of an empty split scores 0, not 1).

Object scores count landslides as connected components (8-connectivity) of the predicted and true
masks; see :func:`object_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from lsmap.core.constants import IGNORE_INDEX
from lsmap.errors import InputError

#: Mask value of unlabelled pixels (same as ``lsmap.io.patches.IGNORE_INDEX``).


def _ratio(num: int, den: int) -> float:
    """``num / den``, or 0.0 when ``den`` is 0."""
    return num / den if den else 0.0


@dataclass(frozen=True)
class Confusion:
    """Pixel confusion counts of the landslide class; add them to sum over patches.

    Attributes:
        tp: Landslide pixels predicted landslide.
        fp: Background pixels predicted landslide.
        fn: Landslide pixels predicted background.
        tn: Background pixels predicted background.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        if not isinstance(other, Confusion):
            return NotImplemented
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def __radd__(self, other: object) -> Confusion:
        # Lets sum(confusions) start from 0.
        if other == 0:
            return self
        return NotImplemented

    @property
    def total(self) -> int:
        """Number of counted (not ignored) pixels."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``; 0 when nothing is predicted landslide."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``; 0 when there is no true landslide pixel."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)`` (= harmonic mean of precision and recall); 0 when 0/0."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """``tp / (tp + fp + fn)``; 0 when 0/0."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def miou(self) -> float:
        """Mean IoU of the two classes, ``(iou + tn / (tn + fp + fn)) / 2``, as segmentation papers report it
        (the benchmark ranks by the landslide class's F1); 0 when no pixel was counted."""
        return (self.iou + _ratio(self.tn, self.tn + self.fp + self.fn)) / 2 if self.total else 0.0

    @property
    def accuracy(self) -> float:
        """``(tp + tn) / total``; 0 when no pixel was counted."""
        return _ratio(self.tp + self.tn, self.total)


def _binary(name: str, a: np.ndarray) -> np.ndarray:
    """``a`` as a bool array, refusing values other than 0/1."""
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    if a.size and not np.isin(a, (0, 1)).all():
        raise InputError(f"{name} must hold only 0 and 1 (landslide), found {np.unique(a)[:10]}")
    return a.astype(bool)


def _split_target(
    target: np.ndarray, ignore_index: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """``(is_landslide, is_valid)`` of a target mask, checking shape and values."""
    target = np.asarray(target)
    if target.shape != shape:
        raise InputError(f"prediction shape {shape} differs from target shape {target.shape}")
    valid = target != ignore_index
    truth = target == 1
    if not np.all(truth | (target == 0) | ~valid):
        raise InputError(
            f"target must hold 0, 1 and the ignore index {ignore_index}, found {np.unique(target)[:10]}"
        )
    return truth, valid


def confusion(pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX) -> Confusion:
    """Confusion counts of a predicted mask against a target, summed over all given pixels.

    Args:
        pred: Predicted mask, 1 (or True) = landslide, 0 = background.
        target: True mask, 1 = landslide, 0 = background, ``ignore_index`` = not counted.
        ignore_index: Target value of ignored pixels.

    Returns:
        The counts; add the results of several patches to score a split.

    Raises:
        InputError: On different shapes or values other than 0/1 (and the ignore index).

    Shape:
        Any, the same for ``pred`` and ``target`` (e.g. ``(H, W)`` or ``(N, H, W)``).
    """
    p = _binary("prediction", pred)
    truth, valid = _split_target(target, ignore_index, p.shape)
    p = p & valid
    n_valid = int(np.count_nonzero(valid))
    tp = int(np.count_nonzero(p & truth))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return Confusion(tp=tp, fp=fp, fn=fn, tn=n_valid - tp - fp - fn)


def scores(conf: Confusion) -> dict[str, float | int]:
    """Counts and scores of a confusion as a flat dict (JSON-ready).

    Returns:
        ``tp, fp, fn, tn`` (int) and ``precision, recall, f1, iou, miou, accuracy`` (float in [0, 1]).
    """
    out: dict[str, float | int] = {f.name: getattr(conf, f.name) for f in fields(conf)}
    out.update(
        precision=conf.precision, recall=conf.recall, f1=conf.f1, iou=conf.iou, miou=conf.miou, accuracy=conf.accuracy
    )
    return out


@dataclass(frozen=True)
class ObjectScores:
    """Object (connected component) counts; add them to sum over patches.

    Attributes:
        n_pred: Predicted objects.
        n_true: True objects.
        matched: Matched pairs (each object is matched at most once).
    """

    n_pred: int = 0
    n_true: int = 0
    matched: int = 0

    def __add__(self, other: ObjectScores) -> ObjectScores:
        if not isinstance(other, ObjectScores):
            return NotImplemented
        return ObjectScores(
            self.n_pred + other.n_pred, self.n_true + other.n_true, self.matched + other.matched
        )

    def __radd__(self, other: object) -> ObjectScores:
        if other == 0:
            return self
        return NotImplemented

    @property
    def precision(self) -> float:
        """Matched predicted objects / predicted objects; 0 when none is predicted."""
        return _ratio(self.matched, self.n_pred)

    @property
    def recall(self) -> float:
        """Matched true objects / true objects; 0 when there is none."""
        return _ratio(self.matched, self.n_true)

    @property
    def f1(self) -> float:
        """Harmonic mean of object precision and recall, ``2 m / (n_pred + n_true)``; 0 when 0/0."""
        return _ratio(2 * self.matched, self.n_pred + self.n_true)

    def as_dict(self) -> dict[str, float | int]:
        """Counts and scores as a flat dict (JSON-ready)."""
        return {
            "n_pred": self.n_pred, "n_true": self.n_true, "matched": self.matched,
            "precision": self.precision, "recall": self.recall, "f1": self.f1,
        }


def label_objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (8-connectivity) of a boolean mask, per 2-D image.

    Args:
        mask: Boolean mask; a 3-D mask is a batch of images labelled separately.

    Returns:
        ``(labels, count)``: int32 labels (0 = background, 1..count = objects, unique across the
        batch) and the number of objects.

    Shape:
        - mask: ``(H, W)`` or ``(N, H, W)``
        - labels: same as ``mask``
    """
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=bool)
    if mask.ndim == 3:
        structure = np.stack([np.zeros_like(structure), structure, np.zeros_like(structure)])
    elif mask.ndim != 2:
        raise InputError(f"masks must be 2-D (H, W) or 3-D (N, H, W), got shape {mask.shape}")
    labels, count = ndimage.label(mask, structure=structure, output=np.int32)
    return labels, int(count)


def object_scores(
    pred: np.ndarray,
    target: np.ndarray,
    iou: float = 0.5,
    ignore: np.ndarray | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> ObjectScores:
    """Object-level matches of predicted and true landslides (connected components).

    Ignored pixels (``target == ignore_index``, and ``ignore`` when given) are set to background in
    both masks first, so objects consist of labelled pixels only. Objects are connected components
    with 8-connectivity, per 2-D image. A predicted and a true object match when their IoU (in
    pixels) is at least ``iou`` (``>=``: IoU exactly 0.5 counts at the default). Matching is
    one-to-one, greedy by decreasing IoU (ties: lower predicted label, then lower true label,
    labels numbered in raster order). With ``iou >= 0.5`` an object can have only one candidate
    anyway (two IoUs of 0.5 would need one object to be the union of two touching objects, which
    8-connectivity makes one), so the greedy order matters only below 0.5.

    Args:
        pred: Predicted mask, 1 (or True) = landslide.
        target: True mask, 1 = landslide, 0 = background, ``ignore_index`` = unlabelled.
        iou: Minimum IoU of a match, in ``(0, 1]``.
        ignore: Optional boolean mask of further pixels to ignore.
        ignore_index: Target value of ignored pixels.

    Returns:
        Counts of predicted, true and matched objects; add them over patches (objects cut by
        patch borders count once per patch).

    Raises:
        InputError: On different shapes, bad mask values or ``iou`` outside ``(0, 1]``.

    Shape:
        ``(H, W)`` or ``(N, H, W)`` (a batch of images scored separately), the same for all masks.
    """
    if not 0.0 < iou <= 1.0:
        raise InputError(f"object IoU threshold must be in (0, 1], got {iou}")
    p = _binary("prediction", pred)
    truth, valid = _split_target(target, ignore_index, p.shape)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != p.shape:
            raise InputError(f"ignore mask shape {ignore.shape} differs from prediction shape {p.shape}")
        valid = valid & ~ignore
    plab, n_pred = label_objects(p & valid)
    tlab, n_true = label_objects(truth & valid)
    if n_pred == 0 or n_true == 0:
        return ObjectScores(n_pred, n_true, 0)

    both = (plab > 0) & (tlab > 0)
    pair = plab[both].astype(np.int64) * (n_true + 1) + tlab[both]
    keys, inter = np.unique(pair, return_counts=True)
    pi, ti = keys // (n_true + 1), keys % (n_true + 1)
    parea = np.bincount(plab.ravel(), minlength=n_pred + 1)
    tarea = np.bincount(tlab.ravel(), minlength=n_true + 1)
    union = parea[pi] + tarea[ti] - inter
    ok = inter >= iou * union  # no division: IoU exactly at the threshold counts
    pi, ti, inter, union = pi[ok], ti[ok], inter[ok], union[ok]
    order = sorted(range(len(pi)), key=lambda k: (-inter[k] / union[k], pi[k], ti[k]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    for k in order:
        if pi[k] not in used_p and ti[k] not in used_t:
            used_p.add(int(pi[k]))
            used_t.add(int(ti[k]))
    return ObjectScores(n_pred, n_true, len(used_p))
