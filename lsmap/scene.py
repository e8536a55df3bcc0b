"""Scene rasters: open a GeoTIFF with its band profile checked, and read it window by window.

A *valid* pixel is one where every band holds data: not the dataset's nodata value (or masked by
an internal mask / alpha band, through GDAL's per-band masks) and finite. When the file declares no
nodata and the values are raw (``raw=True``), the profile's raw nodata value
(:attr:`lsmap.bands.BandProfile.nodata`) marks nodata instead.

Values are returned as float32. With ``raw=True`` they are brought to the Landslide4Sense scale
by dividing each band by its profile divisor, computed in float64 and then rounded once to
float32 (:func:`scale_raw`); otherwise they are returned as stored (cast to float32), which is
right for stacks written by ``lsmap stack``, already on the L4S scale.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .bands import BandProfile
from .errors import InputError, MissingInputError
from .tiling import Window


def scale_raw(data: np.ndarray, profile: BandProfile) -> np.ndarray:
    """Raw values ``(C, H, W)`` -> L4S-scaled float32: ``float32(float64(data) / divisor)`` per band."""
    div = np.asarray(profile.divisors, np.float64).reshape(-1, *([1] * (data.ndim - 1)))
    return (np.asarray(data, np.float64) / div).astype(np.float32)


@contextlib.contextmanager
def open_scene(path: str | os.PathLike, profile: BandProfile | None = None) -> Iterator:
    """Open a raster for reading, checking its band count against ``profile``.

    Yields:
        The open ``rasterio`` dataset.

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: the file is not a readable raster.
        BandMismatchError: the band count does not fit ``profile``.
    """
    import rasterio
    from rasterio.errors import RasterioError

    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: raster does not exist")
    try:
        src = rasterio.open(path)
    except RasterioError as e:
        raise InputError(f"{path}: cannot read raster ({_one_line(e)}); is it a GeoTIFF?") from None
    with src:
        if profile is not None:
            profile.check_count(src.count, path)
        yield src


def read_window(src, window: Window, profile: BandProfile, *, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one window of an open scene: values and valid-pixel mask (see the module docstring).

    Invalid pixels keep the values stored in the file (callers fill them).

    Args:
        src: Dataset from :func:`open_scene`.
        window: Pixel window inside the raster.
        profile: Band profile (divisors and raw nodata).
        raw: Scale raw values by the profile divisors.

    Returns:
        ``(data, valid)``: float32 ``(C, h, w)`` and bool ``(h, w)``.

    Raises:
        InputError: the window cannot be read (corrupt file); the message names the file.
    """
    from rasterio.errors import RasterioError
    from rasterio.windows import Window as RioWindow

    rw = RioWindow(window.col_off, window.row_off, window.width, window.height)
    try:
        stored = src.read(window=rw)
        masks = src.read_masks(window=rw)
    except RasterioError as e:
        raise InputError(f"{src.name}: cannot read pixels ({_one_line(e)}); the file may be corrupt") from None
    valid = (masks > 0).all(axis=0)
    if raw and profile.nodata is not None and all(v is None for v in src.nodatavals):
        valid &= (stored != profile.nodata).all(axis=0)
    data = scale_raw(stored, profile) if raw else stored.astype(np.float32)
    valid &= np.isfinite(data).all(axis=0)
    return data, valid


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
