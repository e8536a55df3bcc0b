"""The shared percentile stretch and probability classes (lsmap.core.display), and the CRF's use of them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import lsmap.learn.crf
from lsmap.core.display import PROB_CLASSES, percentile_stretch, prob_class, to_uint8
from lsmap.learn.crf import crf_refine, to_rgb8


def _to_rgb8_before(image, rgb=(0, 1, 2), percentiles=(2, 98)):
    """lsmap.learn.crf.to_rgb8 as it was before the stretch moved to lsmap.core.display (the reference)."""
    image = np.asarray(image, np.float32)
    out = np.empty(image.shape[1:] + (3,), np.uint8)
    for k, b in enumerate(rgb):
        band = np.nan_to_num(image[b], nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = np.percentile(band, percentiles)
        scaled = (band - lo) / (hi - lo) if hi > lo else np.zeros_like(band)
        out[..., k] = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


images = arrays(np.float32, st.tuples(st.integers(3, 5), st.integers(1, 9), st.integers(1, 9)),
                elements=st.one_of(st.floats(-10, 10, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 0.0])))


@settings(max_examples=200, deadline=None)
@given(images, st.permutations([0, 1, 2]), st.sampled_from([(2, 98), (0, 100), (10, 60)]))
@example(np.ones((3, 4, 4), np.float32), [0, 1, 2], (2, 98))  # constant bands
@example(np.full((3, 2, 2), np.nan, np.float32), [2, 1, 0], (2, 98))
def test_crf_colour_image_unchanged_by_the_shared_stretch(image, rgb, percentiles):
    """to_rgb8 through percentile_stretch equals, to the bit, the CRF's own per-band stretch it replaced."""
    rgb = tuple(rgb)
    np.testing.assert_array_equal(to_rgb8(image, rgb, percentiles), _to_rgb8_before(image, rgb, percentiles))


@pytest.mark.skipif(not lsmap.learn.crf.available(), reason="needs the crf extra (pydensecrf2)")
def test_crf_result_unchanged(rng, monkeypatch):
    """crf_refine gives the same probabilities as with the stretch it had before."""
    image = rng.normal(1, 0.3, (5, 48, 40)).astype(np.float32)
    image[:, 10:20, 5:25] += 1.5
    prob = np.clip(rng.normal(0.5, 0.2, (48, 40)), 0, 1).astype(np.float32)
    now = crf_refine(prob, image, rgb=(3, 2, 1))
    monkeypatch.setattr(lsmap.learn.crf, "to_rgb8", _to_rgb8_before)
    np.testing.assert_array_equal(now, crf_refine(prob, image, rgb=(3, 2, 1)))


def test_joint_stretch_keeps_colour_balance():
    """One pair of limits for all bands: a grey pixel stays grey, ratios between bands keep their order."""
    rng = np.random.default_rng(1)
    grey = rng.uniform(100, 1000, (40, 40))
    bands = np.stack([grey * 0.6, grey * 0.8, grey * 1.0])  # a bluish surface
    bands[:, :10, :10] = 500  # a grey patch
    joint = percentile_stretch(bands, joint=True)
    assert np.allclose(joint[0, :10, :10], joint[2, :10, :10])  # grey stays grey
    inner = (joint > 0.02).all(0) & (joint < 0.98).all(0)
    inner[:10, :10] = False
    assert (joint[0][inner] < joint[2][inner]).all()  # still bluish
    per_band = percentile_stretch(bands)
    assert abs(per_band[0].mean() - per_band[2].mean()) < 0.1  # the per-band stretch evens the colours out


def test_stretch_limits_come_from_valid_pixels():
    bands = np.ones((3, 10, 10), np.float32)
    bands[:, :, 5:] = 3.0
    bands[:, 0, 0] = 1e6  # an invalid outlier outside the sample
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False
    out = percentile_stretch(bands, valid, (0, 100), joint=True)
    assert out[0, 5, 0] == 0.0 and out[0, 5, 9] == 1.0
    # nothing valid: every pixel sets the limits instead of failing
    assert percentile_stretch(bands, np.zeros((10, 10), bool), joint=True).shape == bands.shape
    assert percentile_stretch(bands, gamma=2.0).max() <= 1.0


def test_prob_classes_cover_zero_to_one():
    assert PROB_CLASSES[0].lower == 0.0 and PROB_CLASSES[-1].upper == 1.0
    assert all(a.upper == b.lower for a, b in zip(PROB_CLASSES, PROB_CLASSES[1:], strict=False))
    assert prob_class(0.55).lower == 0.5 and prob_class(0.6).lower == 0.5  # QGIS's rule: lower < p <= upper
    assert prob_class(1.0) is PROB_CLASSES[-1] and prob_class(0.0) is PROB_CLASSES[0]
    assert PROB_CLASSES[-1].rgb == (0xBD, 0x00, 0x26)
    assert to_uint8(np.array([-1.0, 0.5, 2.0])).tolist() == [0, 128, 255]
