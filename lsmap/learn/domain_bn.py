"""Domain-specific batch norm ("cross-sensor normalisation" of the 1st-place solution).

Every ``BatchNorm2d`` is replaced by :class:`DomainBatchNorm2d`, which shares its affine weight
and bias across domains but keeps separate running mean/variance per domain (0 = source/labelled
data, 1 = target data). :func:`set_domain` chooses the domain for the next forward passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SOURCE, TARGET = 0, 1


class DomainBatchNorm2d(nn.Module):
    """Batch norm with shared affine parameters and per-domain running statistics.

    Shape:
        ``(N, C, H, W)`` in and out.
    """

    def __init__(self, num_features: int, domains: int = 2, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.domains, self.eps, self.momentum = num_features, domains, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(domains, num_features))
        self.register_buffer("running_var", torch.ones(domains, num_features))
        self.domain = SOURCE

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, domains: int = 2) -> DomainBatchNorm2d:
        """Copy ``bn``'s affine parameters and running statistics into every domain."""
        new = cls(bn.num_features, domains, bn.eps, bn.momentum if bn.momentum is not None else 0.1)
        with torch.no_grad():
            if bn.affine:
                new.weight.copy_(bn.weight)
                new.bias.copy_(bn.bias)
            if bn.running_mean is not None:
                new.running_mean.copy_(bn.running_mean.expand(domains, -1))
                new.running_var.copy_(bn.running_var.expand(domains, -1))
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean[self.domain], self.running_var[self.domain], self.weight, self.bias,
            self.training, self.momentum, self.eps,
        )


def convert_domain_bn(module: nn.Module, domains: int = 2) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` (in place) by :class:`DomainBatchNorm2d`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, DomainBatchNorm2d.from_bn(child, domains))
        else:
            convert_domain_bn(child, domains)
    return module


def set_domain(module: nn.Module, domain: int) -> None:
    """Make every :class:`DomainBatchNorm2d` in ``module`` use ``domain``'s statistics."""
    for m in module.modules():
        if isinstance(m, DomainBatchNorm2d):
            if not 0 <= domain < m.domains:
                raise ValueError(f"domain {domain} outside [0, {m.domains})")
            m.domain = domain
