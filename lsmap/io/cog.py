"""The probability raster as uint8 cloud-optimized GeoTIFFs: probabilities and masks for a GIS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lsmap.io.outputs import gdal_write_check, verify_geotiff
from lsmap.io.rasters import GDAL_CACHE_MB, atomic_output

#: Encoding of the exported probability COG: value = round(p * PROB_SCALE), 255 = nodata.
PROB_SCALE = 254
UINT8_NODATA = 255


def encode_probability(p: np.ndarray) -> np.ndarray:
    """Probabilities (nodata :data:`lsmap.map.stream.PROB_NODATA`, negative) as uint8: ``round(254 p)``, 255 = nodata."""
    return np.where(p >= 0, np.rint(np.clip(p, 0, 1) * PROB_SCALE), UINT8_NODATA).astype(np.uint8)


def encode_mask(p: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities as a uint8 mask: 1 where ``p > threshold``, 0 elsewhere, 255 = nodata."""
    return np.where(p >= 0, p > threshold, UINT8_NODATA).astype(np.uint8)


def write_uint8_cog(prob: str | os.PathLike, out: str | os.PathLike, encode, *, resampling: str,
                    scale: float | None = None, block: int = 1024, description: str | None = None,
                    tags: dict[str, str] | None = None) -> Path:
    """Stream the float probability raster ``prob`` through ``encode`` into a uint8 COG at ``out``.

    Written block by block into a tiled staging GeoTIFF beside ``out``, then copied with GDAL's COG
    driver (overviews with ``resampling``). ``out`` is written directly: wrap in an atomic output.
    ``description`` names the band and ``tags`` (dataset metadata) say what produced the file: a GIS shows
    both (found by an audit: the only tag was AREA_OR_POINT).
    """
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window as RioWindow

    out = Path(out)
    staging = out.with_name(out.stem + ".staging.tif")
    try:
        with gdal_write_check(out), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), rasterio.open(prob) as src:
            prof = {"driver": "GTiff", "dtype": "uint8", "count": 1, "height": src.height, "width": src.width,
                    "crs": src.crs, "transform": src.transform, "nodata": UINT8_NODATA, "tiled": True,
                    "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
            with rasterio.open(staging, "w", **prof) as dst:
                for r0 in range(0, src.height, block):
                    for c0 in range(0, src.width, block):
                        win = RioWindow(c0, r0, min(block, src.width - c0), min(block, src.height - r0))
                        dst.write(encode(src.read(1, window=win))[None], window=win)
                if scale is not None:
                    dst.scales = (scale,)
                if description:
                    dst.set_band_description(1, description)
                if tags:
                    dst.update_tags(**tags)
            rasterio.shutil.copy(staging, out, driver="COG", compress="DEFLATE", resampling=resampling,
                                 overview_resampling=resampling, BIGTIFF="IF_SAFER",
                                 NUM_THREADS="ALL_CPUS")
        verify_geotiff(out)
    finally:
        staging.unlink(missing_ok=True)
    return out


def export_probability(prob: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the probability raster as a uint8 cloud-optimized GeoTIFF (atomically).

    Encoding (:func:`encode_probability`): ``round(254 p)`` in 0..254, 255 = nodata (no valid
    input there); the GDAL scale ``1/254`` is set, so ``gdalinfo -unscale`` and rasterio's
    ``scales`` give probabilities back.
    """
    with atomic_output(out, overwrite) as tmp:
        write_probability_cog(prob, tmp)
    return Path(out)


def export_mask(prob: str | os.PathLike, out: str | os.PathLike, threshold: float, overwrite: bool = False) -> Path:
    """Write the pixel mask ``p > threshold`` as a uint8 COG (atomically): 1, 0, 255 = nodata.

    The mask is the thresholded probability, before the polygon filters (``min_area``, hole filling).
    """
    with atomic_output(out, overwrite) as tmp:
        write_mask_cog(prob, tmp, threshold)
    return Path(out)


def write_probability_cog(prob: str | os.PathLike, out: str | os.PathLike, tags: dict[str, str] | None = None) -> None:
    """Write the probability COG of :func:`export_probability` to ``out`` directly (the caller renames)."""
    write_uint8_cog(prob, out, encode_probability, resampling="average", scale=1 / PROB_SCALE,
                    description=f"landslide probability (value / {PROB_SCALE}; {UINT8_NODATA} nodata)", tags=tags)


def write_mask_cog(prob: str | os.PathLike, out: str | os.PathLike, threshold: float,
                   tags: dict[str, str] | None = None) -> None:
    """Write the mask COG of :func:`export_mask` to ``out`` directly (the caller renames)."""
    write_uint8_cog(prob, out, lambda p: encode_mask(p, threshold), resampling="nearest",
                    description=f"landslide mask (1: probability > {threshold:g}, 0: not; {UINT8_NODATA} nodata)",
                    tags=tags)
