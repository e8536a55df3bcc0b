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


def read_stack(path: Path) -> np.ndarray:
    """A stack's values ``(C, H, W)`` float32 as lsmap's readers see them: uint16 codes unscaled by the
    bands' GDAL scale/offset; nodata pixels (any band) -9999 in every band, as float32 stacks store them."""
    import rasterio

    from lsmap.core.encoding import decode
    from lsmap.io.rasters import OUTPUT_NODATA

    with rasterio.open(path) as src:
        arr = src.read()
        if src.dtypes[0] != "uint16":
            return arr
        nod = (arr == src.nodata).any(axis=0)
        arr = decode(arr, src.scales, src.offsets)
        arr[:, nod] = OUTPUT_NODATA
        return arr
