"""How ``lsmap stack`` stores a band set: uint16 codes with a per-band GDAL scale and offset.

A stack's bands hold L4S-scaled values (raw / divisor, :mod:`lsmap.core.bands`). Stored as float32
(DEFLATE, floating-point predictor) they take 4.9-5.6 CPU-s to decode per 4096^2 scene, as much as
a small model's forward pass; stored as uint16 codes with the integer predictor they decode several
times faster and are smaller (``bench/stack_encoding.py`` measures the candidates; BENCHMARKS.md
records the table). Each band is quantised in its *raw* units (before the divisor), on a step that
is at or below the precision of the source:

- Sentinel-2 bands: 1 DN (after the product's offset), from -1000 (the lowest a baseline >= 04.00
  offset can give) to 64534 DN; 10 m bands are integers already and are stored exactly, resampled
  20/60 m bands are rounded to the DN grid they came from (at most 0.5 DN off). B10 (cirrus, DNs of
  a few tens, divisor 9.05) on a 1/4 DN step up to 15383 DN (a cirrus reflectance of 1.5).
- slope: 0.0015 degree from 0 to 98 degrees (slope is at most 90).
- DEM: 1/4 m from -1000 m to 15383 m.

Code 0 is nodata (:data:`UINT16_NODATA`); values beyond a band's range clip to its ends (only
saturated Sentinel-2 pixels, DN 65535 of products without offset, reach them). The file carries the
codes' GDAL scale and offset in L4S units (``value = code * scale + offset``, what ``gdalinfo
-unscale`` and :func:`lsmap.io.scene.read_scene_window` apply), so every reader sees the L4S values
to within :func:`max_error` (half a step / divisor) of the float32 stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lsmap.core.bands import BandProfile
from lsmap.core.constants import STACK_ENCODINGS  # noqa: F401  (named here too: the encodings' module)

#: Code of nodata pixels in a uint16 stack.
UINT16_NODATA = 0
_MAX_CODE = 65535
#: Raw-unit quantisation of each band: (step, value of code 0). Sentinel-2 bands not listed take ``_S2``.
_S2 = (1.0, -1001.0)
_QUANTA = {"B10": (0.25, -1000.25), "slope": (0.0015, -0.0015), "DEM": (0.25, -1000.25)}


def band_quanta(bands: Sequence[str]) -> tuple[tuple[float, float], ...]:
    """``(step, low)`` of each band in raw units: raw = ``low + code * step`` (code 0 is nodata)."""
    return tuple(_QUANTA.get(b, _S2) for b in bands)


def scales_offsets(profile: BandProfile) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """GDAL scale and offset per band, in L4S units: value = ``code * scale + offset``."""
    q = band_quanta(profile.bands)
    return (tuple(s / d for (s, _), d in zip(q, profile.divisors, strict=True)),
            tuple(lo / d for (_, lo), d in zip(q, profile.divisors, strict=True)))


def max_error(profile: BandProfile) -> tuple[float, ...]:
    """Largest difference, in L4S units, between a stored value and the float32 stack's, per band
    (half a step over the divisor, plus float32 rounding of values up to 100)."""
    return tuple(0.5 * s / d + 1e-5 for (s, _), d in zip(band_quanta(profile.bands), profile.divisors, strict=True))


def encode_uint16(raw: np.ndarray, invalid: np.ndarray, profile: BandProfile) -> np.ndarray:
    """Raw values ``(C, H, W)`` (DN after offset, degrees, metres) as uint16 codes; ``invalid`` pixels 0.

    Shape:
        ``raw`` ``(C, H, W)``, ``invalid`` ``(H, W)`` bool -> ``(C, H, W)`` uint16.
    """
    q = band_quanta(profile.bands)
    step = np.asarray([s for s, _ in q], np.float64).reshape(-1, 1, 1)
    low = np.asarray([lo for _, lo in q], np.float64).reshape(-1, 1, 1)
    codes = np.subtract(raw, low, dtype=np.float64)  # one float64 array, the steps below in place
    codes /= step
    np.rint(codes, out=codes)
    np.clip(codes, 1, _MAX_CODE, out=codes)
    codes[:, invalid] = UINT16_NODATA  # before the cast: invalid pixels may be NaN
    return codes.astype(np.uint16)


def decode(codes: np.ndarray, scales: Sequence[float], offsets: Sequence[float],
           out: np.ndarray | None = None) -> np.ndarray:
    """Codes ``(C, H, W)`` as float32 values ``code * scale + offset`` per band (two passes, no temporary).

    Args:
        codes: Integer codes.
        scales: Per-band GDAL scale.
        offsets: Per-band GDAL offset.
        out: float32 array of the same shape to write into (e.g. a slice of a strip buffer).

    Shape:
        ``(C, H, W)`` any integer dtype -> ``(C, H, W)`` float32.
    """
    if out is None:
        out = np.empty(codes.shape, np.float32)
    for b, (s, o) in enumerate(zip(scales, offsets, strict=True)):
        np.multiply(codes[b], np.float32(s), out=out[b], dtype=np.float32)
        if o != 0.0:
            out[b] += np.float32(o)
    return out
