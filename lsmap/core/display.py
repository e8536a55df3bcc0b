"""How lsmap shows things: the percentile stretch of images and the colours of landslide probability.

Pure functions and constants, no I/O. One owner for

- :func:`percentile_stretch`: bands to ``[0, 1]`` between percentiles, either per band (the dense
  CRF's colour image, :func:`lsmap.learn.crf.to_rgb8`) or with one pair of limits common to all
  bands (the natural-colour quick-look and report, which must keep the bands' colour balance);
- :data:`PROB_CLASSES`: the classes and colours of a polygon's ``mean_prob``, the same in the
  quick-look PNG, the HTML report and the QGIS style written into GeoPackages;
- :data:`NODATA_COLOUR` and :data:`NOT_OBSERVED_COLOUR`: the fills of pixels without data and of
  pixels not observed (clouds), distinct from any bright surface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbClass:
    """One class of mean landslide probability: ``lower < p <= upper`` (the first one includes 0), QGIS's rule."""

    lower: float
    upper: float
    colour: str  # "#rrggbb"

    @property
    def label(self) -> str:
        return f"{self.lower:.1f} - {self.upper:.1f}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.colour.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


#: Classes of ``mean_prob`` (yellow to dark red; ColorBrewer YlOrRd). Polygons hold pixels above the
#: detection threshold, so most fall in the upper classes; the first catches thresholds below 0.5.
PROB_CLASSES: tuple[ProbClass, ...] = (
    ProbClass(0.0, 0.5, "#ffffb2"),
    ProbClass(0.5, 0.6, "#fed976"),
    ProbClass(0.6, 0.7, "#feb24c"),
    ProbClass(0.7, 0.8, "#fd8d3c"),
    ProbClass(0.8, 0.9, "#f03b20"),
    ProbClass(0.9, 1.0, "#bd0026"),
)
#: Fill of pixels without data (outside the swath, masked): flat dark grey, unlike any surface.
NODATA_COLOUR = "#3a3a3a"
#: Not observed (clouds, shadows: observed but not usable): hatched in this colour.
NOT_OBSERVED_COLOUR = "#c8c8ff"
#: Outline of polygons the change/terrain evidence rejected (dashed, in the quick-look and the report).
REJECTED_COLOUR = "#19d3da"


def prob_class(p: float) -> ProbClass:
    """The :data:`PROB_CLASSES` entry of a probability (values outside ``[0, 1]`` go to the end classes)."""
    for c in PROB_CLASSES:
        if p <= c.upper:
            return c
    return PROB_CLASSES[-1]


def percentile_stretch(bands: np.ndarray, valid: np.ndarray | None = None,
                       percentiles: tuple[float, float] = (2, 98), *, joint: bool = False,
                       gamma: float = 1.0) -> np.ndarray:
    """Stretch bands linearly between percentiles of their values to ``[0, 1]``.

    Non-finite values count as 0. The limits are the ``percentiles`` of the ``valid`` pixels (all
    pixels when ``None``): of each band on its own (``joint=False``; a constant band becomes 0), or
    of all bands' values pooled (``joint=True``), one linear map for every band, which keeps their
    ratios: a grey surface stays grey. ``gamma > 1`` brightens the mid-tones (``x ** (1 / gamma)``).

    Args:
        bands: Values, float or integer.
        valid: Pixels whose values set the limits.
        percentiles: Lower and upper percentile, 0..100.
        joint: One pair of limits for all bands instead of one per band.
        gamma: Display gamma applied after the linear stretch.

    Returns:
        float64 in ``[0, 1]``, same shape as ``bands`` (every pixel, valid or not, is stretched).

    Shape:
        ``bands``: ``(C, H, W)``; ``valid``: ``(H, W)``.
    """
    x = np.nan_to_num(np.asarray(bands, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if x.ndim != 3:
        raise ValueError(f"bands have shape {x.shape}; expected (bands, H, W)")
    if valid is not None and not np.asarray(valid).any():
        valid = None  # nothing valid: fall back to every pixel rather than fail on an empty sample
    sample = (lambda a: a[valid]) if valid is not None else (lambda a: a)
    limits: Sequence[tuple[float, float]]
    if joint:
        lo, hi = np.percentile(np.concatenate([sample(b).ravel() for b in x]), percentiles)
        limits = [(lo, hi)] * len(x)
    else:
        limits = [tuple(np.percentile(sample(b), percentiles)) for b in x]
    out = np.empty(x.shape, np.float64)
    for k, (lo, hi) in enumerate(limits):
        # float32 band minus float64 limits: computed in float64, as the CRF always did
        out[k] = (x[k] - lo) / (hi - lo) if hi > lo else 0.0
    np.clip(out, 0.0, 1.0, out=out)
    if gamma != 1.0:
        np.power(out, 1.0 / gamma, out=out)
    return out


def to_uint8(x: np.ndarray) -> np.ndarray:
    """``[0, 1]`` values -> uint8 0..255, rounded to nearest (values outside are clipped)."""
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)
