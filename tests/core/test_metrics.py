"""Pixel confusion scores and object-level matches against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lsmap.core.metrics import Confusion, ObjectScores, confusion, label_objects, object_scores, scores
from lsmap.errors import InputError

# --- pixel confusion -------------------------------------------------------------------------


def test_confusion_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 1]])
    target = np.array([[1, 0, 0], [1, 1, 255]], dtype=np.uint8)
    # (0,0) tp, (0,1) fp, (0,2) tn, (1,0) fn, (1,1) tp, (1,2) ignored
    c = confusion(pred, target)
    assert c == Confusion(tp=2, fp=1, fn=1, tn=1)
    assert (c.precision, c.recall, c.f1, c.iou, c.accuracy) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 2 / 4, 3 / 5))
    s = scores(c)
    assert s == pytest.approx(
        {"tp": 2, "fp": 1, "fn": 1, "tn": 1, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
         "iou": 0.5, "miou": (0.5 + 1 / 3) / 2, "accuracy": 0.6}  # background IoU: tn 1 / (1 + fp 1 + fn 1)
    )
    assert Confusion().miou == 0.0
    assert isinstance(s["tp"], int)


def test_confusion_accepts_bool_and_custom_ignore():
    pred = np.array([True, False, True])
    target = np.array([1, 7, 0])
    assert confusion(pred, target, ignore_index=7) == Confusion(tp=1, fp=1, fn=0, tn=0)


def test_split_is_summed_not_averaged():
    """L4S scores a split from summed counts: here 4/7, where the per-image mean F1 would be 0.7."""
    a_pred, a_true = np.array([[1, 0, 0, 0]]), np.array([[1, 0, 0, 0]])  # tp 1: F1 1
    b_pred, b_true = np.array([[1, 1, 1, 1]]), np.array([[1, 0, 0, 0]])  # tp 1, fp 3: F1 2/5
    ca, cb = confusion(a_pred, a_true), confusion(b_pred, b_true)
    assert (ca.f1, cb.f1) == pytest.approx((1.0, 0.4))
    total = ca + cb
    assert total == Confusion(tp=2, fp=3, fn=0, tn=3)
    assert total == sum([ca, cb])
    assert total == confusion(np.stack([a_pred, b_pred]), np.stack([a_true, b_true]))
    assert total.f1 == pytest.approx(4 / 7)
    assert total.f1 != pytest.approx((ca.f1 + cb.f1) / 2)


def test_empty_cases_are_zero_not_nan():
    background = np.zeros((3, 3), dtype=np.uint8)
    c = confusion(background, background)
    assert c == Confusion(tn=9)
    assert (c.precision, c.recall, c.f1, c.iou) == (0.0, 0.0, 0.0, 0.0)
    ignored = np.full((3, 3), 255, dtype=np.uint8)
    c = confusion(np.ones((3, 3)), ignored)
    assert c == Confusion() and c.total == 0
    assert all(not math.isnan(v) for v in scores(c).values())
    # predictions only: precision 0; truth only: recall 0
    assert confusion(np.ones((2, 2)), np.zeros((2, 2))).precision == 0.0
    assert confusion(np.zeros((2, 2)), np.ones((2, 2))).recall == 0.0


def test_confusion_refuses_bad_input():
    with pytest.raises(InputError, match="shape"):
        confusion(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(InputError, match="prediction"):
        confusion(np.full((2, 2), 2), np.zeros((2, 2)))
    with pytest.raises(InputError, match="target"):
        confusion(np.zeros((2, 2)), np.full((2, 2), 3))


masks = arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
               elements=st.sampled_from([0, 1, 255]))


@settings(max_examples=60, deadline=None)
@given(target=masks)
@example(target=np.array([[[1]]], dtype=np.uint8))
@example(target=np.array([[[0, 255]]], dtype=np.uint8))
def test_perfect_prediction_scores_one(target):
    """Predicting the target exactly gives precision = recall = F1 = IoU = 1 when any pixel is positive."""
    c = confusion(target == 1, target)
    if c.tp:
        assert (c.precision, c.recall, c.f1, c.iou) == (1.0, 1.0, 1.0, 1.0)
    else:
        assert c.f1 == 0.0
    assert c.fp == c.fn == 0


@settings(max_examples=60, deadline=None)
@given(target=masks, data=st.data())
def test_confusion_is_additive_over_splits(target, data):
    """Confusion of a whole batch = sum of the confusions of any split of it into parts."""
    pred = data.draw(arrays(np.uint8, target.shape, elements=st.sampled_from([0, 1])))
    cut = data.draw(st.integers(0, target.shape[0]))
    whole = confusion(pred, target)
    assert whole == confusion(pred[:cut], target[:cut]) + confusion(pred[cut:], target[cut:])
    assert whole.total == int(np.count_nonzero(target != 255))


# --- objects ---------------------------------------------------------------------------------


def row(*cols: int, width: int = 6) -> np.ndarray:
    """A 1 x width mask with ones at ``cols``."""
    m = np.zeros((1, width), dtype=np.uint8)
    m[0, list(cols)] = 1
    return m


def test_label_objects_uses_8_connectivity_per_image():
    diagonal = np.array([[1, 0], [0, 1]], dtype=bool)
    assert label_objects(diagonal)[1] == 1
    # the same pixel in two images of a batch: two objects, not one across the batch axis
    labels, n = label_objects(np.stack([diagonal, diagonal]))
    assert n == 2 and set(np.unique(labels)) == {0, 1, 2}


def test_iou_exactly_half_matches():
    true = row(0, 1, 2)
    assert object_scores(row(1, 2, 3), true) == ObjectScores(1, 1, 1)  # inter 2, union 4
    assert object_scores(row(2, 3, 4), true) == ObjectScores(1, 1, 0)  # inter 1, union 5
    square = np.zeros((3, 3), dtype=np.uint8)
    square[:2, :2] = 1  # 4 pixels
    half = np.zeros((3, 3), dtype=np.uint8)
    half[0, :2] = 1  # 2 of them: IoU 2 / 4
    assert object_scores(half, square) == ObjectScores(1, 1, 1)
    assert object_scores(half, square, iou=0.51) == ObjectScores(1, 1, 0)


def test_object_scores_by_hand():
    # true objects: cols 0-4 (5 px); predictions: cols 0-2 (IoU 3/5) and col 4 (IoU 1/5)
    pred, true = row(0, 1, 2, 4), row(0, 1, 2, 3, 4)
    s = object_scores(pred, true)
    assert s == ObjectScores(n_pred=2, n_true=1, matched=1)
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.5, 1.0, 2 / 3))
    # below 0.5 both predictions qualify, but matching stays one-to-one
    assert object_scores(pred, true, iou=0.1).matched == 1
    # one prediction spanning two true objects: IoU 2/5 with each, no match
    assert object_scores(row(0, 1, 2, 3, 4), row(0, 1, 3, 4)) == ObjectScores(1, 2, 0)
    assert object_scores(row(0, 1, 2, 3, 4), row(0, 1, 3, 4), iou=0.4) == ObjectScores(1, 2, 1)


def test_ignored_pixels_are_background_for_objects():
    pred = row(0, 1, 2, 3, 4)
    target = np.array([[1, 1, 255, 0, 0, 0]], dtype=np.uint8)
    # the ignored pixel splits the prediction: cols 0-1 (matches exactly) and cols 3-4
    assert object_scores(pred, target) == ObjectScores(2, 1, 1)
    extra = np.zeros_like(pred, dtype=bool)
    extra[0, 3:] = True
    assert object_scores(pred, target, ignore=extra) == ObjectScores(1, 1, 1)


def test_object_scores_empty_cases():
    empty = np.zeros((4, 4), dtype=np.uint8)
    s = object_scores(empty, empty)
    assert s == ObjectScores(0, 0, 0) and (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    one = empty.copy()
    one[1, 1] = 1
    assert object_scores(one, empty) == ObjectScores(1, 0, 0)
    assert object_scores(empty, one).recall == 0.0


def test_object_scores_sum_over_patches():
    a = object_scores(row(0, 1, 2, 4), row(0, 1, 2, 3, 4))
    b = object_scores(row(0), row(0))
    total = sum([a, b])
    assert total == ObjectScores(3, 2, 2)
    assert total.as_dict()["recall"] == 1.0
    # a batch is scored per image, and equals the sum of its images
    batch = object_scores(np.stack([row(0, 1, 2, 4), row(0)]), np.stack([row(0, 1, 2, 3, 4), row(0)]))
    assert batch == total


def test_object_scores_refuse_bad_input():
    with pytest.raises(InputError, match="IoU"):
        object_scores(row(0), row(0), iou=0.0)
    with pytest.raises(InputError, match="shape"):
        object_scores(row(0), row(0, width=5))
    with pytest.raises(InputError, match="2-D"):
        object_scores(np.zeros(3), np.zeros(3))


@settings(max_examples=60, deadline=None)
@given(target=masks, iou=st.floats(0.05, 1.0))
def test_perfect_prediction_matches_every_object(target, iou):
    """Predicting the target exactly matches every object one-to-one, at any IoU threshold."""
    s = object_scores(target == 1, target, iou=iou)
    assert s.matched == s.n_pred == s.n_true
    assert s.f1 == (1.0 if s.n_true else 0.0)


@settings(max_examples=60, deadline=None)
@given(target=masks, data=st.data())
def test_object_matches_are_bounded(target, data):
    """Matched pairs never exceed the objects on either side (one-to-one)."""
    pred = data.draw(arrays(np.uint8, target.shape, elements=st.sampled_from([0, 1])))
    s = object_scores(pred, target, iou=data.draw(st.floats(0.05, 1.0)))
    assert 0 <= s.matched <= min(s.n_pred, s.n_true)
