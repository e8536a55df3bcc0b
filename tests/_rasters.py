"""Tiny GeoTIFF writer for tests (generated data only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ORIGIN = (400000.0, 3690000.0)
PIXEL = 10.0


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    nodata: float | None = None,
    crs: str | None = "EPSG:32648",
    origin: tuple[float, float] = ORIGIN,
    pixel: float = PIXEL,
    block: int | None = None,
) -> Path:
    """Write ``data`` (``(C, H, W)`` or ``(H, W)``) as a GeoTIFF with a north-up grid."""
    import rasterio
    from rasterio.transform import from_origin

    data = data[None] if data.ndim == 2 else data
    count, height, width = data.shape
    profile = dict(
        driver="GTiff", height=height, width=width, count=count, dtype=data.dtype.name,
        crs=crs, transform=from_origin(*origin, pixel, pixel), nodata=nodata,
    )
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
