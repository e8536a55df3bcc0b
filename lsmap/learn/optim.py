"""Fused optimizer steps over channels-last weights, through dense aliases.

On CPUs with bfloat16 units lsmap trains in channels-last memory format, weights included (the
U-Nets' forward and backward run faster that way). PyTorch's fused CPU AdamW/SGD kernels, though,
take a slow path for tensors that are not contiguous, and a channels-last convolution weight is not,
although its memory is one dense block: the step takes about twice as long on channels-last
weights as on contiguous aliases of the same memory (measured: BENCHMARKS.md, training throughput).

:class:`AliasedOptimizer` builds the optimizer over such aliases: each channels-last 4-D
parameter ``(O, I, kH, kW)`` is seen as the contiguous ``(O, kH, kW, I)`` tensor its memory holds,
and before each step the alias's gradient is pointed at the parameter's gradient, seen the same
way. The update is elementwise, so the parameters come out identical, to the bit, to those of the
optimizer over the parameters themselves. Its ``state_dict`` holds the state in the parameters'
own shapes, so checkpoints load into either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: Axes from a 4-D (N, C, H, W) tensor to the (N, H, W, C) order of its channels-last memory, and back.
TO_DENSE, FROM_DENSE = (0, 2, 3, 1), (0, 3, 1, 2)


def needs_alias(t) -> bool:
    """Whether ``t`` is a 4-D channels-last tensor that is not also contiguous (a 1 x 1 kernel is both)."""
    import torch

    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class AliasedOptimizer:
    """A ``torch.optim`` optimizer over contiguous aliases of channels-last parameters.

    Use it as the optimizer itself: ``zero_grad``, ``step``, ``param_groups`` (e.g. to set the
    learning rate), ``state_dict`` and ``load_state_dict``. Not for a ``GradScaler`` that unscales
    gradients (CUDA float16), which reads the gradients before ``step``; lsmap uses it on CPUs.

    Args:
        cls: Optimizer class, e.g. ``torch.optim.AdamW``.
        params: The parameters to optimise.
        **kwargs: Passed to ``cls`` (e.g. ``lr``, ``fused=True``).
    """

    def __init__(self, cls: Callable, params: Sequence, **kwargs: Any) -> None:
        self.params = list(params)
        self.aliased = [needs_alias(p) for p in self.params]
        views = [p.detach().permute(*TO_DENSE) if a else p for p, a in zip(self.params, self.aliased, strict=False)]
        self.optimizer = cls(views, **kwargs)
        self.views = views

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the parameters' gradients (and the aliases' links to them)."""
        for p, v, a in zip(self.params, self.views, self.aliased, strict=False):
            if a:
                v.grad = None
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def step(self, closure: Callable | None = None):
        """One optimizer step with the parameters' current gradients."""
        for p, v, a in zip(self.params, self.views, self.aliased, strict=False):
            if a:
                v.grad = None if p.grad is None else p.grad.permute(*TO_DENSE)
        return self.optimizer.step(closure)

    def state_dict(self) -> dict:
        """The wrapped optimizer's state, its tensors in the parameters' own shapes."""
        sd = self.optimizer.state_dict()
        return {**sd, "state": {i: self._reshape(i, s, FROM_DENSE) for i, s in sd["state"].items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state saved by this class or by the plain optimizer over the same parameters."""
        state = {i: self._reshape(int(i), s, TO_DENSE, contiguous=True) for i, s in state_dict["state"].items()}
        self.optimizer.load_state_dict({**state_dict, "state": state})

    def _reshape(self, index: int, state: dict, dims: tuple, contiguous: bool = False) -> dict:
        if not self.aliased[index]:
            return state
        import torch

        out = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.dim() == 4:
                v = v.permute(*dims)
                v = v.contiguous() if contiguous else v
            out[k] = v
        return out
