"""Inference copies of models with each batch norm folded into the convolution before it.

In eval mode a ``BatchNorm2d`` is an affine map per channel, so it can be folded into the weights
and bias of the convolution that feeds it (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same
function, one pass over the activations fewer per layer. On a CPU those passes are memory-bound,
and for lsmap's small U-Nets they are a large share of the forward (measured in BENCHMARKS.md:
bench/detect_throughput.py). Detection runs folded copies; training and refinement keep the models
as they are (their batch norms still learn).

The folding is done by ``torch.fx`` (it follows the data flow, so it folds only a convolution whose
output feeds nothing but the batch norm) and checked before use: the copy must give the original's
logits in float32 on random inputs of two sizes. A model that cannot be traced, or whose copy
disagrees, is run as it is.
"""

from __future__ import annotations

import copy
from typing import Any

#: Input sizes (px) the folded copy is checked at, both multiples of the pad multiple (32).
CHECK_SIZES = (64, 96)
#: Largest difference of logits (absolute, and relative to their magnitude) accepted in float32.
CHECK_TOLERANCE = 1e-4


def fold_batchnorm(module: Any, in_channels: int) -> Any | None:
    """A copy of ``module`` (in eval mode) with its batch norms folded into their convolutions.

    Args:
        module: A model in eval mode (not changed).
        in_channels: Its input bands, for the check inputs.

    Returns:
        The folded copy in eval mode, in the original's memory format (channels-last stays so), or ``None`` when there is nothing to fold, the model cannot be
        traced, or the copy's logits differ from the original's (see :data:`CHECK_TOLERANCE`).
    """
    import torch
    from torch import nn

    if module.training or not any(type(m) is nn.BatchNorm2d for m in module.modules()):
        return None
    try:
        from torch.fx.experimental.optimization import fuse

        folded = fuse(copy.deepcopy(module).float(), inplace=True)  # in the original's layout: no copy for another
    except Exception:  # untraceable control flow, custom modules: run the original
        return None
    if sum(type(m) is nn.BatchNorm2d for m in folded.modules()) >= sum(
            type(m) is nn.BatchNorm2d for m in module.modules()):
        return None
    folded.eval()
    gen = torch.Generator().manual_seed(0)
    params = list(module.parameters())
    device = params[0].device if params else torch.device("cpu")
    reference = module if all(p.dtype == torch.float32 for p in params) else copy.deepcopy(module).float()
    with torch.no_grad():
        for size in CHECK_SIZES:
            x = torch.randn(1, in_channels, size, size, generator=gen).to(device)
            want, got = reference(x), folded(x)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE):
                return None
    kernels = [p for p in params if p.dim() == 4]
    if kernels and kernels[0].is_contiguous(memory_format=torch.channels_last) and not kernels[0].is_contiguous():
        folded = folded.to(memory_format=torch.channels_last)  # laid out as the original runs (inference on CPUs)
    return folded
