"""Resampling onto a target grid: pixel centres in another CRS, and NaN-aware bilinear interpolation."""

from __future__ import annotations

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from lsmap.data.resample import CENTRE_LATTICE, Grid, _centres, _exact_centres, bilinear, bilinear_separable


def test_pixel_centres_in_another_crs_are_exact_to_a_millimetre_and_block_free():
    """Centres mapped to another CRS through the grid's lattice: within 1e-8 degrees (about a millimetre) of
    PROJ on every centre, exact at the lattice nodes, and the same for a pixel whatever window holds it."""
    grid = Grid(CRS.from_epsg(32645), from_origin(500_000, 3_080_000, 10, 10), 10980, 10980)
    wgs = CRS.from_epsg(4326)
    t = grid.transform
    for w in (Window(0, 0, 300, 200), Window(10_700, 10_900, 280, 80), Window(5_000, 37, 33, 77)):
        x, y = _centres(grid, w, wgs)
        cols = (w.col_off + np.arange(w.width) + 0.5)[None, :]
        rows = (w.row_off + np.arange(w.height) + 0.5)[:, None]
        ex, ey = _exact_centres(grid.crs, wgs, t.a * cols + t.c + 0 * rows, t.e * rows + t.f + 0 * cols)
        assert np.abs(x - ex).max() < 1e-8 and np.abs(y - ey).max() < 1e-8
        on = ((w.row_off + np.arange(w.height)) % CENTRE_LATTICE == 0)[:, None] & \
             ((w.col_off + np.arange(w.width)) % CENTRE_LATTICE == 0)[None, :]
        if on.any():
            np.testing.assert_array_equal(x[on], ex[on])
    big_x, big_y = _centres(grid, Window(4_990, 30, 60, 90), wgs)
    small_x, small_y = _centres(grid, Window(5_000, 37, 33, 77), wgs)
    np.testing.assert_array_equal(big_x[7:84, 10:43], small_x)
    np.testing.assert_array_equal(big_y[7:84, 10:43], small_y)


def test_bilinear_matches_a_point_by_point_reference_with_nodata_and_far_points():
    """The vectorised NaN-aware bilinear (a NaN frame, indices clipped to it) against the rule written out
    point by point: valid neighbours weighted and renormalised, NaN below half the weight, NaN outside."""
    rng = np.random.default_rng(3)
    arr = rng.random((9, 11)) * 100
    arr[3:5, 4:7] = np.nan
    row = rng.random(400) * 13 - 2
    col = rng.random(400) * 15 - 2
    row[:5], col[5:10] = [-40, 60, -1.2, 9.4, 3.5], [-30, 80, -1.01, 10.2, 5.0]

    def reference(r, c):
        r0, c0 = int(np.floor(r)), int(np.floor(c))
        fr, fc = r - r0, c - c0
        total = weight = 0.0
        for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            if 0 <= rr < arr.shape[0] and 0 <= cc < arr.shape[1] and np.isfinite(arr[rr, cc]):
                total += wt * arr[rr, cc]
                weight += wt
        return np.float32(total / weight) if weight >= 0.5 else np.float32(np.nan)

    want = np.array([reference(r, c) for r, c in zip(row, col, strict=True)], np.float32)
    got = bilinear(arr, row, col)
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[:2]).all() and np.isnan(got[5:7]).all() and np.isfinite(got).sum() > 150


def test_separable_bilinear_without_nodata_takes_the_short_way_to_the_same_values():
    """With every neighbour valid the weights are 1 and are not interpolated: the same values as with a NaN in
    the source away from the points (the full way), and as the general bilinear."""
    rng = np.random.default_rng(4)
    arr = rng.random((40, 44)) * 3000
    row = (np.arange(70) + 0.5) / 2 - 0.5 + 1.0
    col = (np.arange(80) + 0.5) / 2 - 0.5 + 1.0
    fast = bilinear_separable(arr, row, col)
    nan_away = arr.copy()
    nan_away[-1, -1] = np.nan
    np.testing.assert_array_equal(fast, bilinear_separable(nan_away, row, col))
    np.testing.assert_allclose(fast, bilinear(arr, *np.meshgrid(row, col, indexing="ij")), rtol=1e-6)
    edge = bilinear_separable(arr, row - 1.6, col)  # points past the first row: NaN, as before
    assert np.isnan(edge[0]).all() and np.isfinite(edge[3:]).all()


def test_bilinear_without_nodata_takes_the_short_way_to_the_same_values():
    """Every neighbour inside and valid: no NaN frame, no weight gathered, the same float32 values bit for bit as
    the full way (forced by a NaN in the source away from the points); points at the edge take the full way."""
    rng = np.random.default_rng(5)
    arr = rng.random((30, 33)) * 3000
    row, col = rng.random((2, 50, 60)) * [[[28.9]], [[31.9]]]
    fast = bilinear(arr, row, col)
    nan_away = np.pad(arr, ((0, 2), (0, 2)), constant_values=np.nan)  # never a neighbour of these points
    np.testing.assert_array_equal(fast, bilinear(nan_away, row, col))
    edge_row = row.copy()
    edge_row[0, 0] = 29.5  # past the last row's centre: half its weight outside
    got = bilinear(arr, edge_row, col)
    assert np.isnan(got[0, 0]) or got[0, 0] == bilinear(nan_away, edge_row, col)[0, 0]
    np.testing.assert_array_equal(got.ravel()[1:], fast.ravel()[1:])
