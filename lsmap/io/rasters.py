"""Rasters: open and read them with GDAL failures turned into lsmap errors; lsmap's GeoTIFF profile.

Outputs (checks before any work, atomic writes, locks, GDAL write checks) are
:mod:`lsmap.io.outputs`'s; :func:`atomic_output` and :func:`check_output` are re-exported here
for the modules that import them from this one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lsmap.core.checks import is_empty_path
from lsmap.errors import InputError, MissingInputError
from lsmap.io.outputs import atomic_output, check_output

__all__ = ["GDAL_CACHE_MB", "OUTPUT_NODATA", "atomic_output", "check_output", "geotiff_profile", "open_raster",
           "read_window", "row_cache_bytes", "set_band_descriptions"]

if TYPE_CHECKING:
    import numpy as np

#: GDAL block cache (MB) while streaming rasters: keeps the cache, hence memory, independent of scene size.
GDAL_CACHE_MB = 128


def row_cache_bytes(src, width: int | None = None, least_mb: float = GDAL_CACHE_MB) -> int:
    """GDAL block cache for reading ``src`` top to bottom, ``width`` columns (default: all) at a time: one row
    of its blocks (all bands) across them, +25 %, at least ``least_mb``. Every block is then decoded once
    although several rows of windows read it, and the cache, hence memory, does not grow with the scene: GDAL's
    default, 5 % of the RAM, keeps every block it decoded (``lsmap tile`` on a 4096^2 stack: 648 MB peak
    against 319 MB, measured)."""
    import numpy as np

    bh, bw = src.block_shapes[0]
    itemsize = max(np.dtype(t).itemsize for t in src.dtypes)
    cols = min(src.width, width) if width is not None else src.width
    row = src.count * bh * (-(-cols // bw) + 1) * bw * itemsize  # +1: a panel straddles a block column
    return int(max(least_mb * 2**20, row + row // 4))


# --- rasters ---------------------------------------------------------------------------------

#: Nodata value of the float32 rasters lsmap writes (NaN trips up many GIS tools).
OUTPUT_NODATA = -9999.0


def open_raster(path: str | os.PathLike, what: str = "raster"):
    """Open ``path`` with rasterio for reading, turning failures into lsmap errors.

    Args:
        path: Raster file (any GDAL format: GeoTIFF, JPEG 2000, VRT, ...).
        what: What the file is meant to be (``"DEM"``, ``"band B04"``), used in messages.

    Returns:
        An open ``rasterio.DatasetReader`` (use it as a context manager).

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: ``path`` exists but GDAL cannot read it (corrupt, truncated, not a raster).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    if is_gdal_virtual(path):  # /vsizip/, /vsicurl/, ...: GDAL itself says whether it exists
        try:
            return rasterio.open(str(path))
        except RasterioIOError as e:
            raise InputError(
                f"{gdal_source(path)}: cannot read {what} ({_first_line(e)}); check the product or its URL, or "
                f"re-download it"
            ) from None
    if is_empty_path(path):  # Path("") is '.': it read ".: raster is a folder"
        raise InputError(f"empty path given as the {what}; give a raster file")
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: {what} file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder; give a raster file")
    try:
        return rasterio.open(path)
    except RasterioIOError as e:
        raise InputError(
            f"{path}: cannot read {what} ({_first_line(e)}); check or re-download the file"
        ) from None


def is_gdal_virtual(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a GDAL virtual file system path (``/vsizip/...``, ``/vsicurl/...``)."""
    return isinstance(path, str) and path.startswith("/vsi")


def gdal_source(path: str | os.PathLike) -> str:
    """A GDAL path as the user knows it: the URL of ``/vsicurl/URL`` (without a SAS token: records and
    messages carry no credentials), ``ZIP!member`` of ``/vsizip/``."""
    p = str(path)
    if p.startswith("/vsicurl/"):
        url, _, query = p[len("/vsicurl/"):].partition("?")
        return url if "sig=" in query else p[len("/vsicurl/"):]
    if p.startswith("/vsizip/"):
        inner = p[len("/vsizip/"):]
        i = inner.lower().find(".zip/")
        return f"{inner[:i + 4]}!{inner[i + 5:]}" if i >= 0 else inner
    return p


def decode_in_caller():
    """A ``rasterio.Env`` in which GDAL decodes every block in the thread that reads it (``GDAL_NUM_THREADS=1``).

    Some drivers decode a read's blocks on worker threads of their own (JPEG 2000: the bands of SAFE
    products); an error there is printed and lost, and the read returns the blocks as zeros or garbage
    (found with a damaged band inside a SAFE zip: garbage stacked and mapped, exit 0). Decoded in the
    reading thread, the same error makes the read fail, and :func:`read_window` names the file. Open and
    read the inputs inside it; lsmap reads files on threads of its own where it pays.
    """
    import rasterio

    return rasterio.Env(GDAL_NUM_THREADS=1)


def missing_tiles(src, size: int, first: bool = False) -> list[str]:
    """The tiles (strips) of an open GeoTIFF whose recorded offset + size runs past ``size`` bytes (a file cut
    short: a full disk, an interrupted copy or download), or that were never written (offset and size 0, unless
    the file allows sparse tiles), as ``"band B tile I,J"``; only the first with ``first``. Empty when the driver
    does not report block offsets (not a plain GeoTIFF)."""
    out = []
    for b in range(1, src.count + 1):
        bh, bw = src.block_shapes[b - 1]
        for i in range(-(-src.height // bh)):
            for j in range(-(-src.width // bw)):
                off = src.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=b)
                n = src.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=b)
                if off is None or n is None:
                    return []
                if int(off) + int(n) > size or (int(off) == 0 and int(n) == 0 and not _sparse_ok(src)):
                    out.append(f"band {b} tile {i},{j}")
                    if first:
                        return out
    return out


def _sparse_ok(src) -> bool:
    return str(src.tags(ns="IMAGE_STRUCTURE").get("SPARSE_OK", "")).upper() in ("TRUE", "YES")


def read_window(src, band: int | Sequence[int] | None, window, *, boundless: bool = False, fill_value: float | None = None,
                masks: bool = False, out_shape: tuple[int, ...] | None = None, resampling=None) -> np.ndarray:
    """Read a window of one band (``band``, 1-based) or all bands (``None``) of an open dataset.

    Corrupt files often open fine (the header is intact) and fail only when a block is decoded;
    this turns that failure into :class:`InputError` naming the file.

    Args:
        src: Open ``rasterio`` dataset.
        band: 1-based band index, a list of them (``(len, h, w)``), or ``None`` for all bands (``(C, h, w)``).
        window: ``rasterio.windows.Window``.
        boundless: Allow windows reaching outside the raster (filled with ``fill_value``).
        fill_value: Value outside the raster with ``boundless``.
        masks: Read GDAL's validity masks (0 = nodata, 255 = valid) instead of the values.
        out_shape: Read resampled to this shape (``(h, w)`` or ``(C, h, w)``): an overview.
        resampling: ``rasterio.enums.Resampling`` of an ``out_shape`` read (default nearest).

    Raises:
        InputError: GDAL cannot decode the requested block.
    """
    from rasterio.errors import RasterioError

    kw = {} if out_shape is None else {"out_shape": out_shape, **({"resampling": resampling} if resampling else {})}
    try:
        if masks:
            return src.read_masks(band, window=window, boundless=boundless, **kw)
        return src.read(band, window=window, boundless=boundless, fill_value=fill_value, **kw)
    except (RasterioError, ValueError) as e:
        cause = e.__cause__ if e.__cause__ is not None and "previous exception" in str(e) else e  # GDAL's own words
        raise InputError(
            f"{src.name}: cannot read pixels ({_first_line(cause)}); check or re-download the file"
        ) from None


def geotiff_profile(
    *, crs, transform, width: int, height: int, count: int, dtype: str = "float32",
    nodata: float | None = OUTPUT_NODATA, creation_options: dict | None = None,
) -> dict:
    """Creation profile of the GeoTIFFs lsmap writes.

    Tiled 256 x 256, DEFLATE with the floating-point predictor (3) for float data and the
    horizontal one (2) for integers, ``BIGTIFF=IF_SAFER`` so scenes past 4 GB still write, and
    band interleaving (each band compresses on its own). Tiles are compressed by GDAL threads
    (``NUM_THREADS=ALL_CPUS``) while the caller prepares the next block, with the same pixels.
    ``creation_options`` add or override GDAL options (e.g. ``{"DISCARD_LSB": 12}`` for smaller,
    lossy float files).
    """
    import numpy as np

    floating = np.issubdtype(np.dtype(dtype), np.floating)
    profile = {
        "driver": "GTiff", "crs": crs, "transform": transform, "width": int(width), "height": int(height),
        "count": int(count), "dtype": dtype, "nodata": nodata, "tiled": True, "blockxsize": 256,
        "blockysize": 256, "compress": "deflate", "predictor": 3 if floating else 2,
        "BIGTIFF": "IF_SAFER", "interleave": "band", "NUM_THREADS": "ALL_CPUS",
    }
    profile.update(creation_options or {})
    return profile


def set_band_descriptions(dst, names) -> None:
    """Write band names as band descriptions of an open, writable dataset."""
    for i, name in enumerate(names, start=1):
        dst.set_band_description(i, str(name))


#: A URL's query that carries a SAS signature (``?st=...&sig=...``): left out of messages.
_SAS_QUERY = re.compile(r"\?[^\s'\"]*\bsig=[^\s'\"]*")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return _SAS_QUERY.sub("", text[0]) if text else type(e).__name__
