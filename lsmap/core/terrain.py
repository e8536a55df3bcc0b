"""Slope of a DEM by Horn's (1981) method, as ``gdaldem slope`` computes it, in ground metres.

The 3 x 3 gradients are divided by the pixel sizes in ground metres of each row
(:func:`lsmap.core.ground.pixel_size_metres`): a geographic DEM's degrees per row from the WGS 84
ellipsoid, a Web Mercator DEM's map metres times their ground scale, so a 30 degree plane reads 30
degrees in any CRS. Used by :func:`lsmap.data.stack.stack_scene` (on the DEM's own grid) and by the
change evidence (:mod:`lsmap.map.evidence`).
"""

from __future__ import annotations

import numpy as np

from lsmap.core.ground import pixel_size_metres
from lsmap.errors import InputError


def horn_slope(dem: np.ndarray, transform, crs, row_offset: int = 0) -> np.ndarray:
    """Slope in degrees by Horn's (1981) method, as ``gdaldem slope`` computes it.

    Args:
        dem: Elevations in metres, NaN where invalid.
        transform: Affine transform of the full grid ``dem`` belongs to (north-up).
        crs: The grid's CRS (``rasterio.crs.CRS``); geographic CRSs are handled per row.
        row_offset: Row of ``dem[0]`` in that grid (for per-row latitudes of a window).

    Returns:
        Slope in degrees, NaN on the outer ring and next to invalid elevations.

    Shape:
        ``(H, W)`` -> ``(H, W)``, float32.
    """
    if transform.b != 0 or transform.d != 0:
        raise InputError("the DEM grid is rotated; warp it to a north-up grid first (gdalwarp)")
    z = np.pad(np.asarray(dem, np.float64), 1, constant_values=np.nan)
    dx, dy = pixel_size_metres(transform, crs, np.arange(dem.shape[0]) + row_offset)
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    gx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * dx)
    gy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8.0 * dy)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)
