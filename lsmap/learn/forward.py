"""One forward pass of a model as training, evaluation, refinement and detection all run it.

:func:`scaled_forward` is the pad-and-scale forward: normalised inputs are upsampled by the
model's scale-promotion factor, padded to a multiple of :data:`lsmap.core.constants.PAD_MULTIPLE`,
run under the device's autocast, cropped and resized back, so a model sees the same geometry when
it is trained as when it maps. :func:`flip_passes` is the test-time-augmentation loop over flips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from lsmap.core.constants import PAD_MULTIPLE
from lsmap.learn.device import autocast

#: Flip axes of test-time augmentation (none, horizontal, vertical, both) of an ``(N, C, H, W)``
#: batch; negative axes are the same axes of the ``(N, H, W)`` probabilities.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def scaled_forward(module, z, scale: float = 1.0, amp: bool = True, channels_last: bool = False):
    """Logits of ``module`` for normalised ``z`` with scale promotion, at ``z``'s resolution.

    ``z`` is upsampled bilinearly by ``scale``, padded to a multiple of
    :data:`~lsmap.core.constants.PAD_MULTIPLE` (reflect, or replicate when the input is too small to
    reflect), run under the device's autocast, cropped, and the logits are resized back to the
    input size.

    Shape:
        ``z`` ``(N, C, H, W)`` float32; returns ``(N, classes, H, W)`` float32.
    """
    import torch
    import torch.nn.functional as F


    h, w = z.shape[-2:]
    if scale != 1:
        z = F.interpolate(z, scale_factor=scale, mode="bilinear", align_corners=False)
    zh, zw = z.shape[-2:]
    ph, pw = (-zh) % PAD_MULTIPLE, (-zw) % PAD_MULTIPLE
    if ph or pw:
        z = F.pad(z, (0, pw, 0, ph), mode="reflect" if min(zh, zw) > max(ph, pw) else "replicate")
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    with autocast(z.device, amp):
        logits = module(z)
    logits = logits[..., :zh, :zw].float()
    if (zh, zw) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


def flip_passes(prob: Callable, x, tta: bool) -> Iterator:
    """Yield ``prob(x)`` for ``x`` and, with ``tta``, for each flip of it, flipped back.

    Args:
        prob: Maps an ``(N, C, H, W)`` batch to ``(N, H, W)`` probabilities.
        x: The batch.
        tta: Also the three flips of :data:`TTA_FLIPS`.
    """
    import torch

    for dims in TTA_FLIPS if tta else TTA_FLIPS[:1]:
        p = prob(torch.flip(x, dims) if dims else x)
        yield torch.flip(p, dims) if dims else p
