"""Ground lengths and areas of a projected CRS whose map units are not ground metres.

A projected CRS's map metre is a ground metre only near its lines of true scale: UTM is within
0.04-0.1 % of it inside its zone, but Web Mercator (EPSG:3857, the CRS of web map tiles and of many
exported scenes and DEM tiles) stretches lengths by ``sec(latitude)`` and areas by ``sec^2`` (4.8 %
at 11.5 N, measured on the real Puthumala bands warped to it; x2 at 45 N). Where a CRS's scale departs
from 1 by more than :data:`MAP_SCALE_TOLERANCE`, lsmap measures on the ellipsoid instead (the
scales below come from geodesic distances and areas of small squares, ``pyproj.Geod``), so areas in
m2, km2 from pixel counts and slope from a DEM are true; within it, map units are taken at their word
(UTM, national grids: areas and slopes as GIS packages and ``gdaldem`` give them).

A grid's pixels in ground metres (:func:`pixel_size_metres`, :func:`mean_pixel_area_m2`): for a
projected CRS its pixel size times the CRS's linear unit (and the scales above where they apply); for
a geographic one the degree sizes converted to metres per row from the WGS 84 ellipsoid's radii of
curvature at the row's latitude.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Largest departure of a projected CRS's length or area scale from 1 for which its map units are used as
#: ground metres (UTM inside its zone: at most about 0.1 % in length, 0.2 % in area).
MAP_SCALE_TOLERANCE = 0.005
# WGS 84 ellipsoid (used for metre pixel sizes of geographic grids).
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3


def pyproj_crs(crs: Any):
    """``crs`` (rasterio CRS, EPSG code, WKT, pyproj CRS) as a ``pyproj.CRS``."""
    import pyproj

    return pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def _projected(crs: Any):
    """The ``pyproj.CRS`` of a projected ``crs`` with a geodetic CRS, else ``None``."""
    if crs is None:
        return None
    try:
        p = pyproj_crs(crs)
    except Exception:  # noqa: BLE001 - an unusual CRS: measured in its map units, as before
        return None
    if p.is_geographic or p.geodetic_crs is None or not p.is_projected:
        return None
    return p


def _to_lonlat(p):
    import pyproj

    return pyproj.Transformer.from_crs(p, p.geodetic_crs, always_xy=True).transform


def unit_metres(crs: Any) -> float:
    """Metres per map unit of a projected or local (engineering) CRS's x axis; 1 for a geographic CRS, one that
    does not say, or none. A local CRS in feet took 1 here while polygon areas took 0.3048 (found by a review)."""
    if crs is None:
        return 1.0
    try:
        p = pyproj_crs(crs)
    except Exception:  # noqa: BLE001 - an unusual CRS: measured in its map units, as before
        return 1.0
    if p.is_geographic or not p.axis_info:
        return 1.0
    return float(p.axis_info[0].unit_conversion_factor or 1.0)


def axis_scales(crs: Any, x: np.ndarray, y: np.ndarray, half: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Ground metres per map metre along the map's x and y axes at the points ``(x, y)`` of a projected CRS
    (geodesic lengths of ``2 * half`` map units centred there); ones for a geographic or unknown CRS.

    Shape:
        ``x``, ``y`` broadcastable -> two arrays of their broadcast shape.
    """
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    p = _projected(crs)
    if p is None:
        return np.ones(x.shape), np.ones(x.shape)
    fwd, geod, m = _to_lonlat(p), p.get_geod(), unit_metres(crs)
    xs, ys = x.ravel(), y.ravel()
    lon_w, lat_w = fwd(xs - half, ys)
    lon_e, lat_e = fwd(xs + half, ys)
    lon_s, lat_s = fwd(xs, ys - half)
    lon_n, lat_n = fwd(xs, ys + half)
    dx = np.asarray(geod.inv(lon_w, lat_w, lon_e, lat_e)[2], np.float64) / (2 * half * m)
    dy = np.asarray(geod.inv(lon_s, lat_s, lon_n, lat_n)[2], np.float64) / (2 * half * m)
    return dx.reshape(x.shape), dy.reshape(x.shape)


def areal_scales(crs: Any, x: np.ndarray, y: np.ndarray, half: float = 50.0) -> np.ndarray:
    """Ground m2 per map m2 at the points ``(x, y)`` of a projected CRS (geodesic area of the square of side
    ``2 * half`` map units centred there over its map area); ones for a geographic or unknown CRS."""
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    p = _projected(crs)
    if p is None:
        return np.ones(x.shape)
    fwd, geod, m = _to_lonlat(p), p.get_geod(), unit_metres(crs)
    out = np.empty(x.size, np.float64)
    for k, (cx, cy) in enumerate(zip(x.ravel(), y.ravel(), strict=True)):
        lon, lat = fwd([cx - half, cx + half, cx + half, cx - half], [cy - half, cy - half, cy + half, cy + half])
        out[k] = abs(geod.polygon_area_perimeter(lon, lat)[0]) / (2 * half * m) ** 2
    return out.reshape(x.shape)


def distorted(crs: Any, bounds: tuple[float, float, float, float]) -> bool:
    """Does a projected ``crs``'s area scale depart from 1 by more than :data:`MAP_SCALE_TOLERANCE` anywhere
    at the corners or centre of ``bounds`` (left, bottom, right, top)? False for geographic CRSs (measured on
    the ellipsoid already) and for CRSs pyproj cannot measure."""
    if _projected(crs) is None:
        return False
    left, bottom, right, top = bounds
    xs = np.array([left, right, left, right, (left + right) / 2])
    ys = np.array([bottom, bottom, top, top, (bottom + top) / 2])
    with np.errstate(invalid="ignore"):
        s = areal_scales(crs, xs, ys)
    s = s[np.isfinite(s)]
    return bool(s.size and np.abs(s - 1.0).max() > MAP_SCALE_TOLERANCE)


def ground_metres_per_unit(crs: Any, bounds: tuple[float, float, float, float]) -> float:
    """Ground metres per map unit along x at the centre of ``bounds`` (left, bottom, right, top) of a projected
    ``crs``: its unit's metres, times the ground scale where its map metres are not ground metres
    (:func:`distorted`: Web Mercator, ``cos(latitude)``). A length in metres on the ground (a simplification
    tolerance, a scale bar) divided by it is a length in map units."""
    m = unit_metres(crs)
    if not distorted(crs, bounds):
        return m
    left, bottom, right, top = bounds
    with np.errstate(invalid="ignore"):
        kx, _ = axis_scales(crs, (left + right) / 2, (bottom + top) / 2)
    k = float(kx)
    return m * k if np.isfinite(k) and k > 0 else m


def to_lonlat(geoms, crs: Any, segment: float = 1000.0):
    """Shapely geometries of a projected ``crs`` in its geodetic CRS (x = longitude), edges first cut to at most
    ``segment`` map units so that long straight map edges follow their map path."""
    import shapely

    p = _projected(crs)
    fwd = _to_lonlat(p)
    arr = shapely.segmentize(np.asarray(geoms, dtype=object), segment)

    def move(xy: np.ndarray) -> np.ndarray:
        lon, lat = fwd(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(arr, move), p.geodetic_crs


def mean_pixel_area_m2(transform, crs, height: int, width: int = 1) -> float:
    """The mean area of a grid's pixels in m2: ``|a e - b d|`` times the linear unit squared for a projected
    CRS, and for a geographic one the mean over the rows of :func:`pixel_size_metres` (degrees shrink with
    latitude), so that pixel counts give km2 in either. A projected CRS whose area scale departs from 1 by
    more than :data:`MAP_SCALE_TOLERANCE` over the grid (Web Mercator away from the
    equator) gives the mean ground area of its pixels at a lattice of up to 17 x 17 points of the grid."""
    if crs is not None and crs.is_geographic:
        dx, dy = pixel_size_metres(transform, crs, np.arange(max(1, height)))
        return float(np.mean(dx * dy))
    planar = abs(transform.a * transform.e - transform.b * transform.d) * unit_metres(crs) ** 2
    from rasterio.transform import array_bounds

    bounds = array_bounds(max(1, height), max(1, width), transform)
    if crs is not None and transform.b == transform.d == 0 and distorted(crs, (bounds[0], bounds[1], bounds[2], bounds[3])):
        rows = np.unique(np.linspace(0, max(1, height) - 1, 17).round()) + 0.5
        cols = np.unique(np.linspace(0, max(1, width) - 1, 17).round()) + 0.5
        x = transform.c + transform.a * cols[None, :]
        y = transform.f + transform.e * rows[:, None]
        return float(planar * np.mean(areal_scales(crs, x, y, half=abs(transform.a) / 2)))
    return planar


def pixel_size_metres(transform, crs, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel width and height in metres for the given rows of a north-up grid.

    Projected CRSs: the pixel size times the CRS's linear unit, times the ground scale of each axis at the
    row (first column) where that departs from 1 by more than :data:`MAP_SCALE_TOLERANCE`
    (Web Mercator: ``sec(latitude)``; UTM and national grids are taken at their word). Geographic CRSs: the degree
    sizes times the WGS 84 radii of curvature at each row's centre latitude (prime vertical
    ``N cos(lat)`` across, meridional ``M`` along).

    Returns:
        ``(dx, dy)`` arrays of shape ``(len(rows), 1)``.
    """
    rows = np.asarray(rows, np.float64).reshape(-1, 1)
    if crs is not None and crs.is_geographic:
        lat = np.radians(transform.f + transform.e * (rows + 0.5))
        w = 1.0 - _WGS84_E2 * np.sin(lat) ** 2
        n = _WGS84_A / np.sqrt(w)
        m = _WGS84_A * (1.0 - _WGS84_E2) / w**1.5
        dx = np.radians(abs(transform.a)) * n * np.cos(lat)
        dy = np.radians(abs(transform.e)) * m
        return dx, dy
    factor = unit_metres(crs)
    dx, dy = np.full_like(rows, abs(transform.a) * factor), np.full_like(rows, abs(transform.e) * factor)
    if crs is None or transform.b != 0 or transform.d != 0:
        return dx, dy
    # map metres that are not ground metres (Web Mercator stretches both axes by sec(latitude)): the ground
    # scale along each axis at the grid's first column, per row (so a block's values do not depend on the block)
    with np.errstate(invalid="ignore"):
        kx, ky = axis_scales(crs, transform.c + 0.5 * transform.a, transform.f + transform.e * (rows + 0.5))
    off = np.isfinite(kx) & np.isfinite(ky) & (np.maximum(abs(kx - 1), abs(ky - 1)) > MAP_SCALE_TOLERANCE)
    return np.where(off, dx * kx, dx), np.where(off, dy * ky, dy)
