"""Tiny GeoTIFF writer for tests (generated data only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ORIGIN = (400000.0, 3690000.0)
PIXEL = 10.0
WGS84_A, WGS84_E2 = 6378137.0, 6.69437999014e-3


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


def radii(lat_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 prime-vertical N and meridional M radii at ``lat_deg``."""
    s2 = np.sin(np.radians(lat_deg)) ** 2
    w = 1 - WGS84_E2 * s2
    return WGS84_A / np.sqrt(w), WGS84_A * (1 - WGS84_E2) / w**1.5


def plane_dem_4326(path: Path, lon0: float, lat0: float, n: int, step: float, gx: float, gy: float) -> Path:
    """A DEM in EPSG:4326 whose surface rises ``gx`` m/m to the east and ``gy`` m/m to the north."""
    rows = np.arange(n)[:, None]
    cols = np.arange(n)[None, :]
    lat = lat0 - (rows + 0.5) * step
    lon = lon0 + (cols + 0.5) * step
    nr, mr = radii(lat)
    east = np.radians(lon - lon0) * nr * np.cos(np.radians(lat))
    # northing along the meridian from the top edge (M varies slowly; integrate per row)
    north = -np.cumsum(np.r_[0.0, np.radians(step) * radii(lat[:-1, 0] - step / 2)[1]])[:, None]
    z = 1000.0 + gx * east + gy * north
    return write_tif(path, z.astype(np.float32), nodata=-9999.0, crs="EPSG:4326", origin=(lon0, lat0), pixel=step)
