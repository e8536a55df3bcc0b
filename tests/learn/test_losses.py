"""Losses against hand-computed values, ignore handling, gradients and the factory."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmap.errors import InputError
from lsmap.learn.losses import (
    LOSSES,
    CompositeLoss,
    build_loss,
    cross_entropy,
    dice_loss,
    jaccard_loss,
    lovasz_softmax,
    ohem_cross_entropy,
    soft_cross_entropy,
    soft_targets,
)

PROB_LOSSES = ["ce", "softce", "jaccard", "dice"]


def logits_for(p1: list[list[float]]) -> torch.Tensor:
    """Logits (1, 2, H, W) whose softmax gives landslide probability ``p1`` (background 0)."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))]).unsqueeze(0).float()


# The 2x2 example used throughout: landslide probabilities and the target (255 = ignored).
P1 = [[0.8, 0.3], [0.6, 0.1]]
Y = torch.tensor([[[1, 0], [1, 255]]])
# Probability of the true class at the three valid pixels: 0.8, 1 - 0.3, 0.6.
P_TRUE = [0.8, 0.7, 0.6]


def random_case(seed: int, n: int = 2, h: int = 6, w: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 2, h, w, generator=g) * 2
    target = torch.randint(0, 2, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < 0.25] = 255
    target[0, 0, 0], target[0, 0, 1] = 0, 1  # both classes present
    return logits, target


# --- hand-computed values --------------------------------------------------------------------


def test_cross_entropy_by_hand():
    expected = -sum(math.log(p) for p in P_TRUE) / 3
    assert cross_entropy(logits_for(P1), Y).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_weighted_by_hand():
    weight = torch.tensor([[[2.0, 1.0], [0.0, 5.0]]])  # (1,1) is ignored by index anyway
    expected = (2 * -math.log(0.8) + 1 * -math.log(0.7)) / 3
    assert cross_entropy(logits_for(P1), Y, weight=weight).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_probability_targets_by_hand():
    q1 = torch.tensor([[[0.7, 0.2], [1.0, 0.0]]])
    target = torch.stack([1 - q1, q1], dim=1)
    p = [[0.8, 0.3], [0.6, 0.1]]
    expected = -sum(
        q * math.log(pp) + (1 - q) * math.log(1 - pp)
        for q, pp in zip([0.7, 0.2, 1.0, 0.0], sum(p, []), strict=True)
    ) / 4
    assert cross_entropy(logits_for(P1), target).item() == pytest.approx(expected, rel=1e-6)


def test_mixed_targets_equal_mixed_losses():
    """CE of lambda-mixed one-hot labels = lambda-mix of the two CE values (3rd-place mix-up)."""
    logits, ya = random_case(1)
    _, yb = random_case(2)
    lam = 0.3
    pa, wa = soft_targets(ya)
    pb, wb = soft_targets(yb)
    weight = wa * wb
    mixed = cross_entropy(logits, lam * pa + (1 - lam) * pb, weight=weight)
    separate = lam * cross_entropy(logits, ya, weight=weight) + (1 - lam) * cross_entropy(
        logits, yb, weight=weight
    )
    assert mixed.item() == pytest.approx(separate.item(), rel=1e-5)


def test_soft_cross_entropy_by_hand():
    eps = 0.1  # smoothed target: 0.95 on the true class, 0.05 on the other
    expected = -sum(0.95 * math.log(p) + 0.05 * math.log(1 - p) for p in P_TRUE) / 3
    got = soft_cross_entropy(logits_for(P1), Y, smoothing=eps).item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert soft_cross_entropy(logits_for(P1), Y, smoothing=0.0).item() == pytest.approx(
        cross_entropy(logits_for(P1), Y).item(), rel=1e-6
    )


def test_ohem_by_hand():
    x = logits_for(P1)
    nll = [-math.log(p) for p in P_TRUE]
    # thresh 0.75: pixels with true-class probability 0.7 and 0.6 are hard
    assert ohem_cross_entropy(x, Y, thresh=0.75, min_kept=1).item() == pytest.approx(
        (nll[1] + nll[2]) / 2, rel=1e-6
    )
    # thresh 0.65: only 0.6 is hard, but min_kept=2 adds the next hardest (0.7)
    assert ohem_cross_entropy(x, Y, thresh=0.65, min_kept=2).item() == pytest.approx(
        (nll[1] + nll[2]) / 2, rel=1e-6
    )
    assert ohem_cross_entropy(x, Y, thresh=0.65, min_kept=1).item() == pytest.approx(nll[2], rel=1e-6)
    # min_kept beyond the 3 valid pixels keeps them all: plain CE
    assert ohem_cross_entropy(x, Y, thresh=0.1, min_kept=100_000).item() == pytest.approx(
        sum(nll) / 3, rel=1e-6
    )
    # nothing hard and nothing required: 0, not NaN
    assert ohem_cross_entropy(x, Y, thresh=0.5, min_kept=0).item() == 0.0


def test_ohem_keeps_the_recipes_share_at_any_batch():
    """An absolute min_kept of 100,000 made OHEM plain cross entropy at batch 4 of 128 px patches (found by an
    audit); the floor is now the recipe's share, 100,000 at its batch of 16."""
    import math

    from lsmap.learn.losses import OHEM_KEEP_SHARE, cross_entropy

    torch.manual_seed(0)
    for batch in (4, 16):
        logits, target = torch.randn(batch, 2, 128, 128) * 3, (torch.rand(batch, 128, 128) < 0.03).long()
        kept = math.ceil(OHEM_KEEP_SHARE * target.numel())
        assert kept == (100_000 if batch == 16 else 25_000)
        assert ohem_cross_entropy(logits, target).item() == pytest.approx(
            ohem_cross_entropy(logits, target, min_kept=kept).item())
        assert ohem_cross_entropy(logits, target).item() > 1.05 * cross_entropy(logits, target).item()


def test_ohem_ignored_pixels_never_count_as_hard():
    # the ignored pixel has p1 = 0.95, i.e. 0.05 for class 0 (what a 0-filled ignore would read)
    x = logits_for([[0.8, 0.3], [0.6, 0.95]])
    nll = [-math.log(p) for p in P_TRUE]
    assert ohem_cross_entropy(x, Y, thresh=0.65, min_kept=2).item() == pytest.approx(
        (nll[1] + nll[2]) / 2, rel=1e-6
    )


def test_lovasz_by_hand():
    """Two pixels: A (label 1, p1 = 0.8) and B (label 0, p1 = 0.3).

    Class 1: errors A 0.2, B 0.3; order B, A. Delta({B}) = 1 - 1/2 (B turns positive),
    Delta({B, A}) = 1 - 0/2. Loss = 0.3 * 0.5 + 0.2 * 0.5 = 0.25.
    Class 0: errors A 0.2, B 0.3; order B, A. Delta({B}) = 1 - 0/1, Delta({B, A}) = 1.
    Loss = 0.3 * 1 + 0.2 * 0 = 0.3. Mean over the two present classes: 0.275.
    """
    x = logits_for([[0.8, 0.3]])
    y = torch.tensor([[[1, 0]]])
    assert lovasz_softmax(x, y).item() == pytest.approx(0.275, rel=1e-6)


def test_lovasz_only_present_classes_by_hand():
    """One background pixel with p0 = 0.7: class 0 only, error 0.3 * Delta({B}) = 1 -> 0.3."""
    x = logits_for([[0.3]])
    y = torch.tensor([[[0]]])
    assert lovasz_softmax(x, y).item() == pytest.approx(0.3, rel=1e-6)
    # with all classes, class 1 (absent) adds error 0.3 * Delta = 1 (no fg: IoU 0/1) -> mean 0.3
    assert lovasz_softmax(x, y, classes="all").item() == pytest.approx(0.3, rel=1e-6)


def naive_lovasz(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Lovasz-softmax from its definition: sum_i m_(i) * (Delta(S_i) - Delta(S_{i-1})).

    ``Delta(S) = 1 - |fg minus S| / |fg union S|`` is the Jaccard loss when the pixels in S are wrong;
    computed with Python sets, independent of the cumulative-sum formula.
    """
    per_class = []
    for c in range(probs.shape[1]):
        fg = {i for i, y in enumerate(labels.tolist()) if y == c}
        if not fg:
            continue
        errors = [abs((1.0 if i in fg else 0.0) - probs[i, c].item()) for i in range(len(labels))]
        order = sorted(range(len(errors)), key=lambda i: -errors[i])

        def delta(s: set[int], fg: set[int] = fg) -> float:
            return 1.0 - len(fg - s) / len(fg | s)

        total, prev, wrong = 0.0, 0.0, set()
        for i in order:
            wrong.add(i)
            d = delta(wrong)
            total += errors[i] * (d - prev)
            prev = d
        per_class.append(total)
    return sum(per_class) / len(per_class)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_matches_naive_definition(seed):
    logits, target = random_case(seed)
    probs = torch.softmax(logits, 1).permute(0, 2, 3, 1)
    valid = target != 255
    batch = naive_lovasz(probs[valid], target[valid])
    assert lovasz_softmax(logits, target).item() == pytest.approx(batch, rel=1e-5)
    per_image = [naive_lovasz(probs[i][valid[i]], target[i][valid[i]]) for i in range(len(target))]
    got = lovasz_softmax(logits, target, per_image=True).item()
    assert got == pytest.approx(sum(per_image) / len(per_image), rel=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_smp_reference(per_image):
    """Agrees with segmentation_models_pytorch's port of Berman's reference code."""
    smp_lovasz = pytest.importorskip("segmentation_models_pytorch.losses.lovasz")
    logits, target = random_case(12, n=3)
    ref = smp_lovasz._lovasz_softmax(torch.softmax(logits, 1), target, per_image=per_image, ignore=255)
    got = lovasz_softmax(logits, target, per_image=per_image)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_lovasz_per_image_skips_fully_ignored_images():
    logits, target = random_case(3)
    target[1] = 255
    one = lovasz_softmax(logits[:1], target[:1], per_image=True)
    assert lovasz_softmax(logits, target, per_image=True).item() == pytest.approx(one.item())


def test_jaccard_and_dice_by_hand():
    # valid pixels: p = 0.8, 0.3, 0.6 against q = 1, 0, 1
    inter, psum, qsum = 0.8 + 0.6, 0.8 + 0.3 + 0.6, 2.0
    union = psum + qsum - inter
    x = logits_for(P1)
    assert jaccard_loss(x, Y, smooth=0.0).item() == pytest.approx(1 - inter / union, rel=1e-6)
    assert jaccard_loss(x, Y, smooth=1.0).item() == pytest.approx(1 - (inter + 1) / (union + 1), rel=1e-6)
    assert dice_loss(x, Y, smooth=0.0).item() == pytest.approx(1 - 2 * inter / (psum + qsum), rel=1e-6)
    assert dice_loss(x, Y, smooth=1.0).item() == pytest.approx(
        1 - (2 * inter + 1) / (psum + qsum + 1), rel=1e-6
    )


def test_jaccard_probability_targets_by_hand():
    q1 = torch.tensor([[[0.7, 0.2], [1.0, 0.0]]])
    target = torch.stack([1 - q1, q1], dim=1)
    weight = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # ignore the last pixel by weight
    inter = 0.8 * 0.7 + 0.3 * 0.2 + 0.6 * 1.0
    union = (0.8 + 0.3 + 0.6) + (0.7 + 0.2 + 1.0) - inter
    got = jaccard_loss(logits_for(P1), target, smooth=0.0, weight=weight).item()
    assert got == pytest.approx(1 - inter / union, rel=1e-6)


def test_jaccard_empty_target_is_finite_and_small_for_empty_prediction():
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    x = torch.zeros(1, 2, 4, 4)
    x[:, 0] = 10.0  # confident background
    value = jaccard_loss(x, y).item()
    assert math.isfinite(value) and value < 1e-3


# --- ignore index, weights, gradients --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_change_neither_loss_nor_gradient(name):
    logits, target = random_case(4)
    fn = LOSSES[name]
    ignored = (target == 255).unsqueeze(1).expand_as(logits)

    def run(x):
        x = x.clone().requires_grad_(True)
        loss = fn(x, target)
        loss.backward()
        return loss.detach(), x.grad

    loss_a, grad_a = run(logits)
    other = torch.where(ignored, torch.randn_like(logits) * 50, logits)
    loss_b, grad_b = run(other)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6, abs=1e-7)
    torch.testing.assert_close(grad_a, grad_b)
    assert torch.all(grad_a[ignored] == 0)
    assert grad_a[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_weight_is_ignore(name):
    logits, target = random_case(5)
    weight = torch.ones(target.shape)
    weight[:, :2] = 0.0
    masked = target.clone()
    masked[:, :2] = 255
    a = LOSSES[name](logits, target, weight=weight)
    b = LOSSES[name](logits, masked)
    assert a.item() == pytest.approx(b.item(), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ignored_gives_zero_with_finite_gradient(name):
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    target = torch.full((2, 3, 3), 255)
    loss = LOSSES[name](logits, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # Jaccard/Dice: 1 - smooth / smooth
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", PROB_LOSSES)
def test_one_hot_probability_targets_equal_index_targets(name):
    logits, target = random_case(6)
    probs, weight = soft_targets(target)
    a = LOSSES[name](logits, target)
    b = LOSSES[name](logits, probs, weight=weight)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["ohem", "lovasz", "lovasz_img"])
def test_probability_targets_refused_where_unsupported(name):
    logits, target = random_case(7)
    probs, _ = soft_targets(target)
    with pytest.raises(InputError, match="index targets"):
        LOSSES[name](logits, probs)


def test_bad_inputs_raise():
    logits, target = random_case(8)
    bad = target.clone()
    bad[0, 0, 0] = 3
    with pytest.raises(InputError, match="values other than"):
        cross_entropy(logits, bad)
    with pytest.raises(InputError, match="shape"):
        cross_entropy(logits, target[:, :-1])
    with pytest.raises(InputError, match="weight"):
        cross_entropy(logits, target, weight=torch.ones(3))
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        cross_entropy(logits[0], target)


def test_half_precision_logits():
    logits, target = random_case(9)
    a = build_loss("softce+lovasz+ohem")(logits, target)
    b = build_loss("softce+lovasz+ohem")(logits.half(), target)
    assert b.dtype == torch.float32
    assert b.item() == pytest.approx(a.item(), rel=1e-2)


# --- factory ---------------------------------------------------------------------------------


def test_build_loss_sums_weighted_parts():
    logits, target = random_case(10)
    loss = build_loss("lovasz*0.5+ohem")
    assert isinstance(loss, CompositeLoss)
    assert loss.terms == (("lovasz", 0.5), ("ohem", 1.0))
    expected = 0.5 * lovasz_softmax(logits, target) + ohem_cross_entropy(logits, target)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert build_loss(" 0.5 * LOVASZ + ohem ").terms == loss.terms
    assert str(loss) == "lovasz*0.5+ohem"
    three = build_loss("softce+lovasz+ohem")
    parts = three.parts(logits, target)
    assert list(parts) == ["softce", "lovasz", "ohem"]
    assert three(logits, target).item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)


def test_build_loss_passes_ignore_index():
    logits, target = random_case(11)
    shifted = torch.where(target == 255, torch.full_like(target, -1), target)
    a = build_loss("ce+jaccard", ignore_index=-1)(logits, shifted)
    b = build_loss("ce+jaccard")(logits, target)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("spec", ["focal", "ce+bce", "ce++ohem", "", "ce*x", "2*ce*3", "ce ohem"])
def test_build_loss_refuses_bad_specs(spec):
    with pytest.raises(InputError) as err:
        build_loss(spec)
    assert "lovasz" in str(err.value)  # the message lists the valid names


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.0, 1.0))
def test_losses_are_finite_and_bounded(seed, lam):
    """Every loss is finite and non-negative; Jaccard and Dice stay within [0, 1] for mixed targets."""
    logits, ya = random_case(seed, n=2, h=4, w=4)
    _, yb = random_case(seed + 1, n=2, h=4, w=4)
    for name, fn in LOSSES.items():
        value = fn(logits, ya).item()
        assert math.isfinite(value) and value >= -1e-6, name
    pa, wa = soft_targets(ya)
    pb, wb = soft_targets(yb)
    mixed = lam * pa + (1 - lam) * pb
    for fn in (jaccard_loss, dice_loss):
        assert -1e-6 <= fn(logits, mixed, weight=wa * wb).item() <= 1 + 1e-6
