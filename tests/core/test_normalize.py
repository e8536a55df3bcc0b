"""Streaming band statistics and normalisation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmap.core.normalize import BandStats, RunningStats
from lsmap.errors import InputError


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_streaming_equals_numpy_on_the_concatenation(sizes, seed):
    """Law: updating block by block gives numpy's mean/std of all pixels together."""
    rng = np.random.default_rng(seed)
    blocks = [rng.normal(3, 2, size=(3, n, 5)) for n in sizes]
    rs = RunningStats(3)
    for b in blocks:
        rs.update(b)
    allpix = np.concatenate([b.reshape(3, -1) for b in blocks], axis=1)
    res = rs.result()
    np.testing.assert_allclose(res.mean, allpix.mean(1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.std, allpix.std(1), rtol=1e-9, atol=1e-10)
    assert res.count == allpix.shape[1]


def test_merge_equals_single_pass(rng):
    a, b = rng.normal(size=(2, 8, 8)), rng.normal(5, 3, size=(2, 4, 8))
    one, left, right = RunningStats(2), RunningStats(2), RunningStats(2)
    one.update(a), one.update(b), left.update(a), right.update(b)
    left.merge(right)
    np.testing.assert_allclose(left.result().mean, one.result().mean)
    np.testing.assert_allclose(left.result().std, one.result().std)


def test_valid_mask_and_nonfinite_are_excluded():
    x = np.array([[[1.0, 100.0], [3.0, np.nan]]])
    rs = RunningStats(1)
    rs.update(x, valid=np.array([[True, False], [True, True]]))
    res = rs.result()
    assert res.count == 2 and res.mean == (2.0,) and res.std == (1.0,)


def test_no_valid_pixel_is_an_error():
    rs = RunningStats(2)
    rs.update(np.zeros((2, 3, 3)), valid=np.zeros((3, 3), bool))
    with pytest.raises(InputError, match="no valid pixel"):
        rs.result()


def test_normalize_and_json_roundtrip(tmp_path):
    s = BandStats((1.0, 2.0), (2.0, 0.5), 10, ("B4", "B8"))
    x = np.stack([np.full((2, 2), 3.0), np.full((2, 2), 3.0)])
    np.testing.assert_allclose(s.normalize(x), np.stack([np.ones((2, 2)), np.full((2, 2), 2.0)]))
    s.save(tmp_path / "s.json")
    assert BandStats.load(tmp_path / "s.json") == s
    with pytest.raises(InputError, match="2 bands, data has 3"):
        s.normalize(np.zeros((3, 2, 2)))


def test_bad_stats_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        BandStats.load(bad)
