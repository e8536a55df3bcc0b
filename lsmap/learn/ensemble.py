"""Ensemble prediction on batches of L4S-scaled images: the core that evaluate, refine and detect share.

Each ensemble member normalises the batch (with the target's own statistics when given, as the
1st-place solution did, else with its training statistics), upsamples it by its scale-promotion
factor, pads to a multiple of 32, runs under autocast (:func:`lsmap.learn.forward.scaled_forward`), and returns landslide probabilities at the
input resolution. The ensemble averages the members' probabilities; ``tta`` averages over flips.
Members may take different band sets: a batch then holds the union of their bands and each member
picks its own, in its card's order (:attr:`Member.inputs`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lsmap.core.bands import BandProfile
from lsmap.core.normalize import BandStats
from lsmap.errors import CheckpointError, NoModelError
from lsmap.learn.device import autocast, inference_channels_last
from lsmap.learn.forward import flip_passes, scaled_forward
from lsmap.learn.models import ModelCard, load_checkpoint, resolve_model


@dataclass
class Member:
    """One loaded ensemble member.

    Attributes:
        module: The model, in eval mode.
        card: Its model card.
        source: Where it was loaded from (for messages).
        inputs: Indices of the member's bands (its card's, in that order) among the bands of the
            batches it is given; ``None``: the batches hold exactly its bands.
    """

    module: Any
    card: ModelCard
    source: str = ""
    inputs: tuple[int, ...] | None = None


def load_ensemble(paths: Sequence[str | os.PathLike], device: Any = "cpu",
                  expect: BandProfile | str | None = None) -> list[Member]:
    """Load checkpoints as ensemble members (refusing any trained on another band profile), their
    weights in the memory format inference runs fastest in on ``device``
    (:func:`lsmap.learn.device.inference_channels_last`: channels-last on CPUs; measured with 16 patches
    of 128 px on the float32 CPU of BENCHMARKS' "Another CPU": tiny U-Net 0.25 -> 0.17 s, ResNet-18 U-Net
    0.54 -> 0.50 s, and 0.58 s with channels-last inputs but contiguous weights)."""
    import torch

    if not paths:
        raise NoModelError()
    members = []
    for p in paths:
        path = resolve_model(p)
        module, card = load_checkpoint(path, device, expect)
        weight = next(module.parameters(), None)
        if inference_channels_last(weight.device if weight is not None else torch.device("cpu")):
            module = module.to(memory_format=torch.channels_last)
        members.append(Member(module, card, str(path)))
    return members


def folded_members(members: Sequence[Member]) -> list[Member]:
    """The members as detection runs them: each model a copy with its batch norms folded into its
    convolutions (:func:`lsmap.learn.fuse.fold_batchnorm`: same logits, less work), where that is
    possible and checked; else the member as given. Domain batch norms are never folded (the domain
    is chosen at run time). The given members are not changed.
    """
    from dataclasses import replace

    from lsmap.learn.fuse import fold_batchnorm

    out = []
    for m in members:
        folded = None if m.card.domain_bn else fold_batchnorm(m.module, len(m.card.bands))
        out.append(m if folded is None else replace(m, module=folded))
    return out


def _normalize(x, stats: BandStats, channels_last: bool = False):
    """``(x - mean) / std`` per band, float32, as one new tensor laid out as the model runs
    (``channels_last``): no temporary, no second copy for the layout (both would stay alive during the
    forward, 2 x 16.6 MB per worker for a 544 px window of 14 bands)."""
    import torch

    mean = torch.as_tensor(stats.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(stats.std, dtype=torch.float32, device=x.device).clamp_min(1e-6).view(1, -1, 1, 1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    z = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=layout)
    torch.sub(x.float(), mean, out=z)
    return z.div_(std)


def member_logits(member: Member, x, stats: BandStats | None = None, amp: bool = True, domain: int | None = None):
    """Logits of one member for L4S-scaled ``x``, at the input resolution.

    Args:
        member: The loaded model and card.
        x: Batch of L4S-scaled images.
        stats: Normalisation statistics of the data (the target's own, for the bands of ``x``);
            ``None`` uses the card's.
        amp: Use the device's autocast dtype where it helps (bfloat16 on AMX CPUs, CUDA AMP).

    Shape:
        ``x``: ``(N, C, H, W)``; returns ``(N, 2, H, W)`` float32.
    """
    import torch

    from lsmap.learn.domain_bn import TARGET, set_domain

    if member.inputs is not None:  # the member's bands, in its order, out of the batch's
        x = x[:, list(member.inputs)]
        stats = stats.take(member.inputs) if stats is not None else None
    stats = stats if stats is not None else member.card.band_stats
    if stats is None:
        raise CheckpointError(f"{member.source}: model card has no normalisation statistics; pass the data's statistics")
    if member.card.domain_bn:  # the data is the target's (a new scene), unless said: e.g. labelled source patches
        set_domain(member.module, TARGET if domain is None else domain)
    channels_last = inference_channels_last(x.device, amp)
    with torch.no_grad():
        return scaled_forward(member.module, _normalize(x, stats, channels_last), member.card.scale, amp,
                              channels_last)


def predict_proba(members: Sequence[Member], x, stats: BandStats | None = None, tta: bool = False, amp: bool = True,
                  domain: int | None = None):
    """Mean landslide probability of the ensemble (and flips, with ``tta``); ``domain``: the batch-norm domain of
    members with domain batch norms (default the target's, :func:`member_logits`).

    Shape:
        ``x``: ``(N, C, H, W)`` L4S-scaled; returns ``(N, H, W)`` float32 in [0, 1].
    """
    total = n = None
    for p in member_passes(members, x, stats, tta, amp, domain):
        total, n = (p, 1) if total is None else (total + p, n + 1)
    return total / n


def member_passes(members: Sequence[Member], x, stats: BandStats | None = None, tta: bool = False,
                  amp: bool = True, domain: int | None = None) -> Iterator:
    """Landslide probability of each member (and each flip, with ``tta``), one pass at a time.

    Shape:
        ``x``: ``(N, C, H, W)`` L4S-scaled; yields ``(N, H, W)`` float32 in [0, 1].
    """
    import torch

    finite = []  # checked once every pass is queued: a check per pass would make a GPU wait after each
    for m in members:
        for p in flip_passes(lambda xi, m=m: torch.softmax(member_logits(m, xi, stats, amp, domain), dim=1)[:, 1],
                             x, tta):
            finite.append((m, torch.isfinite(p).all()))
            yield p
    bad = next((m for m, ok in finite if not bool(ok)), None)
    if bad is not None:  # raised before the caller's loop over the passes ends, so before it returns
        raise _nonfinite_output(bad)


def _nonfinite_output(member: Member) -> CheckpointError:
    """The error for a member whose probabilities hold NaN or inf: finite weights that overflow (about 1e30, a
    damaged or diverged checkpoint) would otherwise map nothing and report success (found by an audit)."""
    import torch

    big = max((float(v.detach().abs().max()) for v in member.module.state_dict().values()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()), default=0.0)
    return CheckpointError(f"{member.source or 'model'}: its output holds NaN or infinite values (largest weight "
                           f"{big:.3g}): the checkpoint is damaged or its training diverged; train again (a lower "
                           f"learning rate) or use another checkpoint")


@contextlib.contextmanager
def inference_context(device, amp: bool = True) -> Iterator[None]:
    """``no_grad`` and the device's autocast, for a thread that runs many batches: inside one
    context the weights are cast to bfloat16/float16 once, not at every call."""
    import torch


    with torch.no_grad(), autocast(device, amp):
        yield
