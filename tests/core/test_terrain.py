"""Slope by Horn's method and pixel sizes and areas in ground metres, in projected, geographic and Web Mercator
grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from _rasters import plane_dem_4326
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform

from lsmap.core.ground import mean_pixel_area_m2, pixel_size_metres
from lsmap.core.terrain import horn_slope

UTM = CRS.from_epsg(32645)
X0, Y0 = 500_000.0, 3_000_000.0


@pytest.mark.parametrize("gx,gy", [(0.0, 0.0), (0.5, 0.0), (0.3, -0.4), (1.0, 1.0)])
def test_horn_slope_projected_plane(gx, gy):
    """A plane z = gx * x + gy * y has slope atan(hypot(gx, gy)) everywhere inside the border."""
    tr = from_origin(X0, Y0, 20, 25)
    x = X0 + 20 * (np.arange(12) + 0.5)
    y = Y0 - 25 * (np.arange(10) + 0.5)
    z = gx * x[None, :] + gy * y[:, None]
    s = horn_slope(z, tr, UTM)
    assert np.isnan(s[0]).all() and np.isnan(s[:, -1]).all()
    np.testing.assert_allclose(s[1:-1, 1:-1], math.degrees(math.atan(math.hypot(gx, gy))), atol=1e-4)


def test_horn_slope_geographic_plane_near_45n(tmp_path):
    """Degree pixel sizes become metres per row: a 30 deg plane at 45 N reads 30 deg."""
    step = 1 / 3600
    g = math.tan(math.radians(30))
    path = plane_dem_4326(tmp_path / "p.tif", 7.0, 45.02, 40, step, gx=g * 0.6, gy=g * 0.8)
    with rasterio.open(path) as src:
        s = horn_slope(src.read(1), src.transform, src.crs)
    np.testing.assert_allclose(s[1:-1, 1:-1], 30.0, atol=0.01)
    dx, dy = pixel_size_metres(from_origin(7.0, 45.0, step, step), CRS.from_epsg(4326), np.array([0]))
    assert 21.89 < dx[0, 0] < 21.91 and 30.86 < dy[0, 0] < 30.88  # 1" at 45 N: 21.90 m x 30.87 m


def test_horn_slope_web_mercator_dem_is_in_ground_metres():
    """A DEM in EPSG:3857 (web map tiles): its map metres are sec(lat) ground metres, so a 30 deg plane at
    45 N read 22.2 deg (tan 30 deg x cos 45 deg) when they were taken as metres; the real Jiuzhaigou DEM
    warped to EPSG:3857 lost 4.7 deg of slope (median) against the same DEM in UTM, 0.13 deg now."""
    merc = CRS.from_epsg(3857)
    x0, y0 = transform("EPSG:4326", merc, [9.0], [45.0])
    step, n = 30.0, 40
    tr = from_origin(x0[0], y0[0], step, step)
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    east, north = transform(merc, "EPSG:32632", (tr.c + step * cols).ravel(), (tr.f - step * rows).ravel())
    g = math.tan(math.radians(30))  # UTM 32N's central meridian is 9 E: scale 0.9996 there
    z = 1000.0 + g * (0.6 * np.asarray(east) + 0.8 * np.asarray(north)).reshape(n, n) / 0.9996
    s = horn_slope(z, tr, merc)
    np.testing.assert_allclose(s[1:-1, 1:-1], 30.0, atol=0.05)
    dx, dy = pixel_size_metres(tr, merc, np.array([0]))
    assert dx[0, 0] == pytest.approx(30 * math.cos(math.radians(45)), rel=0.005) and dy[0, 0] == pytest.approx(dx[0, 0], rel=0.005)
    # pixel counts to km2: a 30 m Web Mercator pixel at 45 N is about 450 m2 of ground, not 900
    assert mean_pixel_area_m2(tr, merc, n, n) == pytest.approx(900 * math.cos(math.radians(45)) ** 2, rel=0.01)


def test_utm_dem_and_pixel_area_keep_map_metres():
    """UTM's scale is within 0.1 % of 1 in its zone: its metres are used as they are (as gdaldem does)."""
    tr = from_origin(X0, Y0, 30, 30)
    dx, dy = pixel_size_metres(tr, UTM, np.arange(3))
    assert (dx == 30).all() and (dy == 30).all()
    assert mean_pixel_area_m2(from_origin(X0, Y0, 10, 10), UTM, 100, 100) == 100.0
