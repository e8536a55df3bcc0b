"""Batch norms folded into convolutions for inference: the same logits, the originals untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lsmap.learn.domain_bn import convert_domain_bn
from lsmap.learn.ensemble import folded_members, predict_proba
from lsmap.learn.fuse import fold_batchnorm
from lsmap.learn.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detect_fixtures import member  # noqa: E402


def _trained_like(name: str, bands: int, seed: int = 0) -> nn.Module:
    """A registry model with non-trivial batch-norm statistics and affine parameters (as after training)."""
    torch.manual_seed(seed)
    m = build_model(name, bands)
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def _count_bn(m: nn.Module) -> int:
    return sum(type(x) is nn.BatchNorm2d for x in m.modules())


@pytest.mark.parametrize("name", ["tiny-unet", "unet-resnet18"])
def test_folded_copy_gives_the_same_logits_without_batch_norms(name):
    m = _trained_like(name, 5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    folded = fold_batchnorm(m, 5)
    assert folded is not None and _count_bn(folded) == 0 and _count_bn(m) > 0
    x = torch.randn(3, 5, 128, 160)  # another size than the check's
    with torch.no_grad():
        torch.testing.assert_close(folded(x), m(x), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # the original is untouched


def test_nothing_to_fold_or_not_in_eval_mode_gives_none():
    assert fold_batchnorm(nn.Conv2d(3, 2, 1).eval(), 3) is None
    assert fold_batchnorm(_trained_like("tiny-unet", 3).train(), 3) is None


class _ShapeBranch(nn.Module):
    """A model whose forward branches on the input's size: ``torch.fx`` cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * 2 if x.shape[-1] > 80 else y


class _Shared(nn.Module):
    """The convolution's output feeds the batch norm and the output: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.bn.running_mean.fill_(0.3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_untraceable_models_run_as_they_are():
    assert fold_batchnorm(_ShapeBranch().eval(), 3) is None


def test_a_convolution_with_other_users_is_not_folded():
    """fx folds only a convolution whose sole user is the batch norm; with nothing folded, no copy."""
    assert fold_batchnorm(_Shared().eval(), 3) is None


def test_folded_members_leave_domain_bn_and_the_given_members_alone():
    plain = member(_trained_like("tiny-unet", 14))
    domain = member(convert_domain_bn(_trained_like("tiny-unet", 14, seed=1)), domain_bn=True)
    out = folded_members([plain, domain])
    assert out[0] is not plain and _count_bn(out[0].module) == 0 and _count_bn(plain.module) == 10
    assert out[1] is domain
    x = 1.0 + 0.3 * torch.randn(2, 14, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(predict_proba(out[:1], x, amp=False), predict_proba([plain], x, amp=False),
                                   rtol=1e-4, atol=1e-4)


def test_folded_copy_keeps_the_channels_last_layout():
    """A model loaded channels-last for CPU inference folds into a channels-last copy (a contiguous copy fed
    channels-last inputs ran slower than the unfolded model), and a contiguous one stays contiguous."""
    m = _trained_like("unet-resnet18", 4).to(memory_format=torch.channels_last)
    folded = fold_batchnorm(m, 4)
    kernels = [p for p in folded.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in kernels)
    plain = fold_batchnorm(_trained_like("unet-resnet18", 4), 4)
    assert all(p.is_contiguous() for p in plain.parameters())
