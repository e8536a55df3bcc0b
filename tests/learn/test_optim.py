"""Fused optimizer steps over dense aliases of channels-last weights (lsmap.learn.optim)."""

from __future__ import annotations

import copy

import pytest
import torch

from lsmap.learn.models import build_model
from lsmap.learn.optim import AliasedOptimizer, needs_alias

OPTIMIZERS = [
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
]


def twin_models():
    torch.manual_seed(0)
    a = build_model("tiny-unet", 14).to(memory_format=torch.channels_last)
    b = build_model("tiny-unet", 14).to(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    return a, b


def set_grads(params, grads):
    for p, g in zip(params, grads, strict=False):
        p.grad = g.clone(memory_format=torch.preserve_format)


def test_needs_alias_only_for_non_contiguous_channels_last():
    w = torch.zeros(8, 4, 3, 3)
    assert not needs_alias(w) and needs_alias(w.to(memory_format=torch.channels_last))
    assert not needs_alias(torch.zeros(8, 4, 1, 1).to(memory_format=torch.channels_last))  # also contiguous
    assert not needs_alias(torch.zeros(8, 4))


@pytest.mark.parametrize("cls,kw", OPTIMIZERS)
def test_aliased_steps_equal_plain_steps_to_the_bit(cls, kw):
    a, b = twin_models()
    pa, pb = list(a.parameters()), list(b.parameters())
    assert any(needs_alias(p) for p in pb)
    plain = cls(pa, fused=True, **kw)
    aliased = AliasedOptimizer(cls, pb, fused=True, **kw)
    for step in range(4):
        torch.manual_seed(step)
        grads = [torch.randn_like(p) for p in pa]  # channels-last like the parameters
        plain.zero_grad(set_to_none=True)
        aliased.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in pb)
        set_grads(pa, grads)
        set_grads(pb, grads)
        plain.step()
        aliased.step()
        for g in aliased.param_groups:
            g["lr"] *= 0.5  # the schedule writes through param_groups
        for g in plain.param_groups:
            g["lr"] *= 0.5
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=False))


@pytest.mark.parametrize("cls,kw", OPTIMIZERS)
def test_state_dict_is_in_parameter_shapes_and_round_trips(cls, kw):
    """The saved state has the parameters' shapes (so the plain optimizer loads it), and a run that
    resumes from it, with either class, continues exactly like one that never stopped."""
    a, b = twin_models()
    pa, pb = list(a.parameters()), list(b.parameters())
    plain = cls(pa, fused=True, **kw)
    aliased = AliasedOptimizer(cls, pb, fused=True, **kw)
    grads = [[torch.randn_like(p) for p in pa] for _ in range(4)]
    for g in grads[:2]:
        set_grads(pa, g)
        set_grads(pb, g)
        plain.step()
        aliased.step()
    saved = copy.deepcopy(aliased.state_dict())  # as if through a file: no tensor shared with a live optimizer
    for i, st in saved["state"].items():
        for v in st.values():
            if v.dim() > 0:
                assert v.shape == pb[i].shape
    c, d = twin_models()
    d.load_state_dict(b.state_dict())
    c.load_state_dict(b.state_dict())
    pc, pd = list(c.parameters()), list(d.parameters())
    resumed_aliased = AliasedOptimizer(cls, pd, fused=True, **kw)
    resumed_aliased.load_state_dict(copy.deepcopy(plain.state_dict()))
    resumed_c = cls(pc, fused=True, **kw)
    resumed_c.load_state_dict(saved)
    for g in grads[2:]:
        set_grads(pa, g)
        set_grads(pc, g)
        set_grads(pd, g)
        plain.step()
        resumed_c.step()
        resumed_aliased.step()
    assert all(torch.equal(x, y) for x, y in zip(pa, pc, strict=False))
    assert all(torch.equal(x, y) for x, y in zip(pa, pd, strict=False))


def test_training_uses_the_aliased_optimizer_on_cpu_for_channels_last_models():
    from lsmap.learn.train import TrainConfig, _optimizer

    torch.manual_seed(0)
    module = build_model("tiny-unet", 14)
    assert isinstance(_optimizer(module, TrainConfig()), torch.optim.AdamW)  # contiguous: plain
    module = module.to(memory_format=torch.channels_last)
    opt = _optimizer(module, TrainConfig(optimizer="sgd"))
    assert isinstance(opt, AliasedOptimizer) and isinstance(opt.optimizer, torch.optim.SGD)
