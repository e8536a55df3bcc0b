"""Pure loss functions for two-class segmentation, ignore-index aware, plus a small factory.

Every loss takes ``logits`` of shape ``(N, C, H, W)`` (``C = 2`` in lsmap: background, landslide)
and a ``target`` in one of two forms:

- class indices ``(N, H, W)`` int64, where pixels equal to ``ignore_index`` (default 255,
  :data:`lsmap.io.patches.IGNORE_INDEX`) are ignored by every loss;
- class probabilities ``(N, C, H, W)`` float (soft or mixed-up labels), accepted by
  :func:`cross_entropy`, :func:`soft_cross_entropy`, :func:`jaccard_loss` and :func:`dice_loss`.
  There is no ignore index in this form: ignore pixels with a zero ``weight``.
  :func:`soft_targets` turns an index target into this form (with its weight map).

Every loss also takes an optional per-pixel ``weight`` map ``(N, H, W)`` float: 0 ignores a
pixel, other values weight it (pseudo-label refinement uses it to drop uncertain pixels).
Ignored pixels (``ignore_index`` or zero weight) have no effect on the value or the gradient; a
batch with no valid pixel gives a loss of 0 (still attached to the graph), never NaN.
Losses are computed in float32 whatever the logits' dtype (safe under autocast).

Mix-up (3rd place) can be done two ways: mix the targets, ``soft_targets(y_a)`` and
``soft_targets(y_b)`` weighted by ``lam`` and ``1 - lam``, and pass the probabilities (CE, soft
CE, Jaccard, Dice); or, for any loss, ``lam * loss(logits, y_a) + (1 - lam) * loss(logits, y_b)``.
For cross entropy the two are equal.

:func:`build_loss` composes the registered losses (:data:`LOSSES`) from a spec such as
``"softce+lovasz+ohem"`` or ``"lovasz*0.5+ohem"``.

Torch is imported inside the functions so that importing this module (the CLI does, for the
names of the losses) stays instant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from lsmap.core.constants import IGNORE_INDEX
from lsmap.errors import InputError

if TYPE_CHECKING:
    from torch import Tensor

#: Target value of pixels that every loss ignores (same as ``lsmap.io.patches.IGNORE_INDEX``).
#: Index of the landslide class in the logits.
LANDSLIDE = 1


class _Targets(NamedTuple):
    """A target brought to one form: indices or probabilities, and a per-pixel weight."""

    index: Tensor | None  # (N, H, W) int64, ignored pixels set to 0; None for probability targets
    probs: Tensor | None  # (N, C, H, W) float32; None for index targets
    weight: Tensor  # (N, H, W) float32, 0 where ignored


def _prepare(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    *,
    loss: str,
    allow_probs: bool = True,
) -> tuple[Tensor, _Targets]:
    """Check shapes and bring the target to :class:`_Targets` form; logits become float32."""
    import torch

    if logits.ndim != 4 or logits.shape[1] < 2:
        raise InputError(
            f"{loss}: logits must have shape (N, C, H, W) with C >= 2, got {tuple(logits.shape)}; "
            f"pass the raw network output"
        )
    n, c, h, w = logits.shape
    logits = logits.float()
    if weight is not None and tuple(weight.shape) != (n, h, w):
        raise InputError(
            f"{loss}: weight must have shape (N, H, W) = {(n, h, w)}, got {tuple(weight.shape)}"
        )
    if target.is_floating_point():
        if not allow_probs:
            raise InputError(
                f"{loss}: this loss needs class-index targets (N, H, W); probability targets are "
                f"accepted by {', '.join(_PROB_LOSSES)}; for mix-up, mix this loss's values instead"
            )
        if tuple(target.shape) != (n, c, h, w):
            raise InputError(
                f"{loss}: probability targets must have the logits' shape {(n, c, h, w)}, "
                f"got {tuple(target.shape)}"
            )
        wt = torch.ones((n, h, w), device=logits.device) if weight is None else weight.float()
        return logits, _Targets(None, target.float(), wt)
    if tuple(target.shape) != (n, h, w):
        raise InputError(
            f"{loss}: index targets must have shape (N, H, W) = {(n, h, w)}, got {tuple(target.shape)}"
        )
    target = target.long()
    valid = target != ignore_index
    if bool((valid & ((target < 0) | (target >= c))).any()):
        raise InputError(
            f"{loss}: target holds values other than 0..{c - 1} and the ignore index {ignore_index}; "
            f"check the masks or pass the right ignore_index"
        )
    index = torch.where(valid, target, torch.zeros_like(target))
    wt = valid.float() if weight is None else valid.float() * weight.float()
    return logits, _Targets(index, None, wt)


def _class_probs(t: _Targets, num_classes: int) -> Tensor:
    """Target as probabilities ``(N, C, H, W)`` (one-hot for index targets)."""
    if t.probs is not None:
        return t.probs
    import torch.nn.functional as F

    return F.one_hot(t.index, num_classes).permute(0, 3, 1, 2).float()


def _weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``sum(values * weight) / sum(weight)``; 0 (not NaN) when every weight is 0."""
    import torch

    total = weight.sum()
    return (values * weight).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def soft_targets(
    target: Tensor, num_classes: int = 2, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """One-hot probabilities and a weight map from an index target, e.g. to mix labels.

    Args:
        target: Class indices, ``ignore_index`` where unlabelled.
        num_classes: Number of classes ``C``.
        ignore_index: Target value of ignored pixels.

    Returns:
        ``(probs, weight)``: one-hot class probabilities (all zero at ignored pixels) and a
        weight map, 1 at labelled pixels and 0 at ignored ones.

    Shape:
        - target: ``(N, H, W)`` int64
        - probs: ``(N, C, H, W)`` float32
        - weight: ``(N, H, W)`` float32
    """
    import torch
    import torch.nn.functional as F

    valid = target != ignore_index
    index = torch.where(valid, target.long(), torch.zeros_like(target, dtype=torch.long))
    if bool((index < 0).any() or (index >= num_classes).any()):
        raise InputError(
            f"soft_targets: target holds values other than 0..{num_classes - 1} and the ignore "
            f"index {ignore_index}"
        )
    probs = F.one_hot(index, num_classes).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
    return probs, valid.float()


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross entropy averaged over the valid pixels (weighted mean with a weight map).

    ``sum_i w_i * (-sum_c q_ic log p_ic) / sum_i w_i`` where ``p = softmax(logits)`` and ``q`` is
    the target (one-hot for index targets).

    Args:
        logits: Raw network output.
        target: Class indices or class probabilities (see the module docstring).
        weight: Optional per-pixel weight, 0 = ignored.
        ignore_index: Index-target value of ignored pixels.

    Returns:
        Scalar loss.

    Raises:
        InputError: On mismatched shapes or target values outside the classes.

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64 or ``(N, C, H, W)`` float
        - weight: ``(N, H, W)`` float
    """
    import torch.nn.functional as F

    logits, t = _prepare(logits, target, weight, ignore_index, loss="ce")
    logp = F.log_softmax(logits, dim=1)
    if t.index is not None:
        nll = -logp.gather(1, t.index.unsqueeze(1)).squeeze(1)
    else:
        nll = -(t.probs * logp).sum(dim=1)
    return _weighted_mean(nll, t.weight)


def soft_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    smoothing: float = 0.1,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Label-smoothed cross entropy, for noisy (pseudo) labels.

    Cross entropy against ``q' = (1 - smoothing) * q + smoothing / C``; for index targets this is
    ``(1 - smoothing) * nll + smoothing / C * sum_c(-log p_c)`` as in
    segmentation_models_pytorch's ``SoftCrossEntropyLoss``.

    Args:
        logits: Raw network output.
        target: Class indices or class probabilities.
        smoothing: Label smoothing epsilon in ``[0, 1]``.
        weight: Optional per-pixel weight, 0 = ignored.
        ignore_index: Index-target value of ignored pixels.

    Returns:
        Scalar loss.

    Raises:
        InputError: On mismatched shapes, bad target values or a smoothing outside ``[0, 1]``.

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64 or ``(N, C, H, W)`` float
        - weight: ``(N, H, W)`` float
    """
    import torch.nn.functional as F

    if not 0.0 <= smoothing <= 1.0:
        raise InputError(f"softce: smoothing must be in [0, 1], got {smoothing}")
    logits, t = _prepare(logits, target, weight, ignore_index, loss="softce")
    c = logits.shape[1]
    logp = F.log_softmax(logits, dim=1)
    q = (1.0 - smoothing) * _class_probs(t, c) + smoothing / c
    return _weighted_mean(-(q * logp).sum(dim=1), t.weight)


#: OHEM's floor of kept pixels as a share of a batch's valid pixels: the 1st place's ``min_kept`` of 100,000 over its
#: batches of 16 patches of 128 x 128 px (the loss is taken at the patch size, whatever the scale promotion). An
#: absolute 100,000 turned OHEM into plain cross entropy at batch 4 or below (found by an audit).
OHEM_KEEP_SHARE = 100_000 / (16 * 128 * 128)


def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    thresh: float = 0.7,
    min_kept: int | None = None,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross entropy over the hard pixels only (online hard example mining).

    Keeps the valid pixels whose predicted probability of their true class is below ``thresh``;
    when fewer than ``k = min(min_kept, number of valid pixels)`` are that hard (``min_kept`` by default
    :data:`OHEM_KEEP_SHARE` of the valid pixels: 100,000 at the recipe's batch of 16 patches), keeps the ``k``
    pixels of lowest true-class probability instead (ties broken by ``torch.topk``). The loss is the
    (weighted) mean cross entropy of the kept pixels. This is the OHEM of HRNet/mmseg used by the
    1st-place solution, except that ``min_kept`` is honoured exactly (their strict ``<`` against
    the ``min_kept``-th probability can keep fewer pixels on ties) and that no kept pixel gives 0,
    not NaN. The selection itself carries no gradient.

    Args:
        logits: Raw network output.
        target: Class indices (probability targets are refused).
        thresh: Probability of the true class below which a pixel is hard.
        min_kept: Minimum number of pixels kept per batch (capped at the valid count); ``None``:
            :data:`OHEM_KEEP_SHARE` of the valid pixels, rounded up.
        weight: Optional per-pixel weight, 0 = ignored (never kept).
        ignore_index: Target value of ignored pixels.

    Returns:
        Scalar loss.

    Raises:
        InputError: On mismatched shapes, bad target values, probability targets or
            ``min_kept < 0``.

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64
        - weight: ``(N, H, W)`` float
    """
    import torch
    import torch.nn.functional as F

    if min_kept is not None and min_kept < 0:
        raise InputError(f"ohem: min_kept must be >= 0, got {min_kept}")
    logits, t = _prepare(logits, target, weight, ignore_index, loss="ohem", allow_probs=False)
    nll = -F.log_softmax(logits, dim=1).gather(1, t.index.unsqueeze(1)).squeeze(1)
    valid = (t.weight > 0).reshape(-1)
    p_true = torch.exp(-nll.detach()).reshape(-1)
    keep = valid & (p_true < thresh)
    n_valid = int(valid.sum())
    k = min(int(min_kept) if min_kept is not None else math.ceil(OHEM_KEEP_SHARE * n_valid), n_valid)
    if int(keep.sum()) < k:
        score = torch.where(valid, p_true, torch.full_like(p_true, float("inf")))
        keep = torch.zeros_like(valid)
        keep[torch.topk(score, k, largest=False).indices] = True
    return _weighted_mean(nll, t.weight * keep.reshape(t.weight.shape))


def _lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. errors sorted decreasingly.

    Entry ``i`` is ``Delta(first i+1 pixels wrong) - Delta(first i pixels wrong)`` where ``Delta`` is
    1 - IoU of the class (Berman et al. 2018, Alg. 1).
    """
    import torch

    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _lovasz_flat(probs: Tensor, labels: Tensor, classes: str) -> Tensor | None:
    """Lovasz-softmax of flattened valid pixels ``probs (P, C)``, ``labels (P,)``; None if no class."""
    import torch

    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).float()
        if classes == "present" and not bool(fg.any()):
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
    if not losses:
        return None
    return torch.stack(losses).mean()


def lovasz_softmax(
    logits: Tensor,
    target: Tensor,
    *,
    per_image: bool = False,
    classes: str = "present",
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Lovasz-softmax loss (Berman et al. 2018), a convex surrogate of 1 - IoU per class.

    For each class ``c``, the errors ``|[y = c] - p_c|`` of the valid pixels are sorted
    decreasingly and dotted with the Lovasz gradient of the class's Jaccard loss; the loss is the
    mean over classes (only classes present in the target with ``classes="present"``, as in the
    reference implementation). With ``per_image`` the loss is computed per image and averaged over
    the images that have valid pixels; otherwise over the whole batch at once.

    Args:
        logits: Raw network output.
        target: Class indices (probability targets are refused).
        per_image: Compute per image and average, instead of over the batch.
        classes: ``"present"`` (classes in the target) or ``"all"``.
        weight: Optional per-pixel weight map; only its zeros matter (those pixels are ignored),
            since the Lovasz extension has no per-pixel weights.
        ignore_index: Target value of ignored pixels.

    Returns:
        Scalar loss.

    Raises:
        InputError: On mismatched shapes, bad target values, probability targets or an unknown
            ``classes``.

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64
        - weight: ``(N, H, W)`` float
    """
    import torch

    if classes not in ("present", "all"):
        raise InputError(f"lovasz: classes must be 'present' or 'all', got {classes!r}")
    logits, t = _prepare(logits, target, weight, ignore_index, loss="lovasz", allow_probs=False)
    c = logits.shape[1]
    probs = torch.softmax(logits, dim=1).permute(0, 2, 3, 1)  # (N, H, W, C)
    valid = t.weight > 0
    groups = [(probs[i], t.index[i], valid[i]) for i in range(len(probs))] if per_image else [
        (probs, t.index, valid)
    ]
    losses = []
    for p, y, v in groups:
        loss = _lovasz_flat(p[v].reshape(-1, c), y[v].reshape(-1), classes)
        if loss is not None:
            losses.append(loss)
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


def lovasz_softmax_per_image(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Lovasz-softmax computed per image and averaged (:func:`lovasz_softmax`, ``per_image=True``).

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64
        - weight: ``(N, H, W)`` float
    """
    return lovasz_softmax(logits, target, per_image=True, weight=weight, ignore_index=ignore_index)


def _soft_overlap(
    logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, loss: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted soft intersection, predicted sum and target sum of the landslide class."""
    import torch

    logits, t = _prepare(logits, target, weight, ignore_index, loss=loss)
    p = torch.softmax(logits, dim=1)[:, LANDSLIDE]
    q = _class_probs(t, logits.shape[1])[:, LANDSLIDE]
    w = t.weight
    return (p * q * w).sum(), (p * w).sum(), (q * w).sum()


def jaccard_loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """1 - soft IoU of the landslide class over the whole batch.

    ``1 - (I + smooth) / (U + smooth)`` with ``I = sum w p q``, ``U = sum w p + sum w q - I``, where
    ``p`` is the predicted landslide probability, ``q`` the target's (0/1 for index targets) and
    ``w`` the pixel weight (0 at ignored pixels). ``smooth`` keeps a batch without landslides
    finite: its loss falls to 0 as the predicted probabilities do.

    Args:
        logits: Raw network output.
        target: Class indices or class probabilities.
        smooth: Added to intersection and union (> 0 avoids 0/0).
        weight: Optional per-pixel weight, 0 = ignored.
        ignore_index: Index-target value of ignored pixels.

    Returns:
        Scalar loss in ``[0, 1]``.

    Raises:
        InputError: On mismatched shapes or bad target values.

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64 or ``(N, C, H, W)`` float
        - weight: ``(N, H, W)`` float
    """
    inter, psum, qsum = _soft_overlap(logits, target, weight, ignore_index, "jaccard")
    union = psum + qsum - inter
    return 1.0 - (inter + smooth) / (union + smooth).clamp_min(1e-12)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """1 - soft Dice of the landslide class over the whole batch.

    ``1 - (2 I + smooth) / (sum w p + sum w q + smooth)`` with the notation of
    :func:`jaccard_loss`.

    Args:
        logits: Raw network output.
        target: Class indices or class probabilities.
        smooth: Added to numerator and denominator (> 0 avoids 0/0).
        weight: Optional per-pixel weight, 0 = ignored.
        ignore_index: Index-target value of ignored pixels.

    Returns:
        Scalar loss in ``[0, 1]``.

    Raises:
        InputError: On mismatched shapes or bad target values.

    Shape:
        - logits: ``(N, C, H, W)``
        - target: ``(N, H, W)`` int64 or ``(N, C, H, W)`` float
        - weight: ``(N, H, W)`` float
    """
    inter, psum, qsum = _soft_overlap(logits, target, weight, ignore_index, "dice")
    return 1.0 - (2.0 * inter + smooth) / (psum + qsum + smooth).clamp_min(1e-12)


#: Losses by the names :func:`build_loss` understands. Each is called as
#: ``fn(logits, target, weight=..., ignore_index=...)``.
LOSSES: dict[str, Callable[..., Tensor]] = {
    "ce": cross_entropy,
    "softce": soft_cross_entropy,
    "ohem": ohem_cross_entropy,
    "lovasz": lovasz_softmax,
    "lovasz_img": lovasz_softmax_per_image,
    "jaccard": jaccard_loss,
    "dice": dice_loss,
}
_PROB_LOSSES = ("ce", "softce", "jaccard", "dice")
_TERM = re.compile(
    r"^\s*(?:(?P<w1>[0-9.eE-]+)\s*\*\s*)?(?P<name>[A-Za-z_]\w*)\s*(?:\*\s*(?P<w2>[0-9.eE-]+))?\s*$"
)


@dataclass(frozen=True)
class CompositeLoss:
    """A weighted sum of registered losses, as built by :func:`build_loss`.

    Attributes:
        terms: ``(name, factor)`` pairs, in spec order.
        ignore_index: Target value of ignored pixels, passed to every term.
    """

    terms: tuple[tuple[str, float], ...]
    ignore_index: int = IGNORE_INDEX

    def parts(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> dict[str, Tensor]:
        """Each term's unweighted value by its name (repeated names get ``#2``, ``#3``...)."""
        out: dict[str, Tensor] = {}
        for name, _ in self.terms:
            key, i = name, 2
            while key in out:
                key, i = f"{name}#{i}", i + 1
            out[key] = LOSSES[name](logits, target, weight=weight, ignore_index=self.ignore_index)
        return out

    def __call__(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Sum of ``factor * loss`` over the terms.

        Shape:
            - logits: ``(N, C, H, W)``
            - target: ``(N, H, W)`` int64 or, when every term accepts them, ``(N, C, H, W)`` float
            - weight: ``(N, H, W)`` float
        """
        values = self.parts(logits, target, weight).values()
        return sum(f * v for (_, f), v in zip(self.terms, values, strict=True))

    def __str__(self) -> str:
        return "+".join(name if f == 1.0 else f"{name}*{f:g}" for name, f in self.terms)


def build_loss(spec: str, ignore_index: int = IGNORE_INDEX) -> CompositeLoss:
    """Build a loss from a spec naming registered losses joined by ``+``, each optionally weighted.

    Examples: ``"ce"``, ``"lovasz+ohem"``, ``"softce+lovasz+ohem"``, ``"lovasz*0.5+ohem"``,
    ``"0.5*lovasz+ohem"``.

    Args:
        spec: The loss spec; names are keys of :data:`LOSSES` (case-insensitive).
        ignore_index: Target value of ignored pixels.

    Returns:
        A callable ``loss(logits, target, weight=None) -> Tensor``.

    Raises:
        InputError: On an unknown name (the message lists the valid ones) or a malformed term.
    """
    terms: list[tuple[str, float]] = []
    valid = ", ".join(LOSSES)
    for raw in spec.split("+") if spec.strip() else [""]:
        m = _TERM.match(raw)
        if m is None or (m["w1"] and m["w2"]):
            raise InputError(
                f"loss spec {spec!r}: cannot read term {raw.strip()!r}; write name or name*factor "
                f"joined by '+', names: {valid}"
            )
        name = m["name"].lower()
        if name not in LOSSES:
            raise InputError(f"loss spec {spec!r}: unknown loss {m['name']!r}; valid names: {valid}")
        try:
            factor = float(m["w1"] or m["w2"] or 1.0)
        except ValueError:
            raise InputError(f"loss spec {spec!r}: bad factor in {raw.strip()!r}") from None
        terms.append((name, factor))
    return CompositeLoss(tuple(terms), ignore_index)
