"""Rings traced with numpy (:mod:`lsmap.map.rings`) against GDAL's polygonizer, the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from lsmap.map.rings import trace_regions


def gdal_rings(labels: np.ndarray, mask: np.ndarray, col_off: int, row_off: int):
    """GDAL's rings of every region under ``mask`` (4-connected), regions in label order (GDAL's order kept
    within a region): ``[(label - 1, int32 ring), ...]``."""
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.features import shapes

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for g, v in shapes(labels, mask=mask, connectivity=4, transform=Affine.translation(col_off, row_off)):
            out += [(int(v) - 1, np.asarray(r, np.float64).astype(np.int32)) for r in g["coordinates"]]
    order = sorted(range(len(out)), key=lambda k: out[k][0])  # stable: GDAL's ring order within a region
    return [out[k] for k in order]


def numpy_rings(labels: np.ndarray, col_off: int, row_off: int):
    xy, sizes, owners, counts = trace_regions(labels, col_off, row_off)
    assert xy.dtype == np.int32 and sizes.sum() == len(xy)
    assert np.array_equal(counts, np.bincount(owners)[np.unique(owners)]), "rings per region, in label order"
    return list(zip(owners.tolist(), np.split(xy, np.cumsum(sizes)[:-1]), strict=True)) if len(sizes) else []


def regions(values: np.ndarray) -> np.ndarray:
    """Each 4-connected region of equal values its own label, ``1..n``, as GDAL groups pixels."""
    out = np.zeros(values.shape, np.int32)
    k = 0
    for v in np.unique(values):
        lab, n = ndimage.label(values == v)
        out[lab > 0] = lab[lab > 0] + k
        k += n
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(1, 40), w=st.integers(1, 40), kinds=st.integers(1, 5),
       smooth=st.floats(0, 1.2), keep=st.floats(0.2, 1))
@example(seed=0, h=1, w=1, kinds=1, smooth=0, keep=1)  # one pixel
@example(seed=1, h=30, w=30, kinds=2, smooth=0, keep=1)  # a chequer of pinches: regions meeting at corners
@example(seed=2, h=40, w=40, kinds=5, smooth=0.8, keep=0.5)  # many touching regions, half masked out
def test_rings_are_gdals(seed, h, w, kinds, smooth, keep):
    """Law: for regions that touch each other, meet at pixel corners, have holes and holes in holes, with
    some regions left out (label 0), the rings are GDAL's: the same vertices in the same order, ring for
    ring (each region's exterior first, then its holes), in label order."""
    rng = np.random.default_rng(seed)
    values = (ndimage.gaussian_filter(rng.random((h, w)), smooth) * kinds).astype(int)
    labels = regions(values)
    traced = rng.random(int(labels.max()) + 1)[labels] < keep
    off = (int(rng.integers(0, 5000)), int(rng.integers(0, 5000)))
    want = gdal_rings(labels, traced, *off)
    got = numpy_rings(np.where(traced, labels, 0), *off)
    assert [o for o, _ in got] == [o for o, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pinched_region_gives_rings_that_touch_without_crossing():
    """A region meeting itself at a pixel corner: two holes touching there, each its own ring (valid polygon)."""
    import shapely

    m = np.array([[1, 1, 1, 1, 1],
                  [1, 0, 1, 1, 1],
                  [1, 1, 0, 1, 1],
                  [1, 1, 1, 1, 1]], np.int32)
    xy, sizes, owners, counts = trace_regions(m)
    assert counts.tolist() == [3] and sizes.tolist() == [5, 5, 5]
    poly = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy.astype(float),
                                     (np.concatenate([[0], np.cumsum(sizes)]), np.array([0, 3])))[0]
    assert poly.is_valid and poly.area == m.sum()


@pytest.mark.parametrize("shape", [(0, 0), (3, 4)])
def test_nothing_to_trace(shape):
    xy, sizes, owners, counts = trace_regions(np.zeros(shape, np.int32))
    assert xy.shape == (0, 2) and len(sizes) == len(owners) == len(counts) == 0
