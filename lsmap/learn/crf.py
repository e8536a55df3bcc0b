"""Dense-CRF post-processing of landslide probabilities (optional extra ``crf``: ``pydensecrf2``).

The 3rd-place solution sharpened landslide contours with a fully connected CRF (Kraehenbuehl and
Koltun 2011): a smoothness kernel over pixel positions and an appearance kernel over positions and
colour pull neighbouring pixels of similar colour towards the same label. Here the unary term is
the negative log of the model's probability, the colour is a natural-colour composite of three
bands (B4, B3, B2 when the profile has them) stretched to 8 bits, and the result is the CRF's
posterior landslide probability.

``evaluate``, ``refine`` and ``detect`` call :func:`crf_refine` per patch (or per window) on the
ensemble's probability map and the L4S-scaled image it came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lsmap.core.display import percentile_stretch, to_uint8
from lsmap.errors import InputError

#: Natural-colour bands, in R, G, B order.
RGB_BANDS = ("B4", "B3", "B2")
_EPS = 1e-6


_MISSING = "`crf` needs the 'crf' extra: pip install 'lsmap[crf]' (pydensecrf2)"


def available() -> bool:
    """True when ``pydensecrf2`` is importable (``pip install 'lsmap[crf]'``)."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """Raise :class:`InputError` naming the extra to install unless :func:`available`.

    Every stage that takes ``crf=True`` (evaluate, refine, detect, regional runs) checks with this
    before any work.
    """
    if not available():
        raise InputError(_MISSING)


def rgb_indices(band_names: Sequence[str]) -> tuple[int, int, int]:
    """Indices of the bands to use as R, G, B: B4/B3/B2 when present, else the first three (repeated if fewer)."""
    names = list(band_names)
    if all(b in names for b in RGB_BANDS):
        return tuple(names.index(b) for b in RGB_BANDS)  # type: ignore[return-value]
    if not names:
        raise InputError("CRF needs an image with at least one band")
    return tuple(min(i, len(names) - 1) for i in range(3))  # type: ignore[return-value]


def to_rgb8(image: np.ndarray, rgb: tuple[int, int, int] = (0, 1, 2), percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """Stretch three bands of ``image`` to a contiguous ``(H, W, 3)`` uint8 composite.

    Each band is clipped to its own ``percentiles`` and scaled linearly to 0..255 (a constant band
    becomes 0): :func:`lsmap.core.display.percentile_stretch` per band.

    Shape:
        ``image``: ``(C, H, W)``; returns ``(H, W, 3)``.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise InputError(f"CRF image has shape {image.shape}; expected (bands, H, W)")
    stretched = percentile_stretch(image[list(rgb)], percentiles=percentiles)
    return np.ascontiguousarray(to_uint8(stretched).transpose(1, 2, 0))


def crf_refine(
    prob: np.ndarray,
    image: np.ndarray,
    *,
    rgb: tuple[int, int, int] = (0, 1, 2),
    iterations: int = 5,
    sxy_gaussian: float = 3.0,
    compat_gaussian: float = 3.0,
    sxy_bilateral: float = 10.0,
    srgb: float = 13.0,
    compat_bilateral: float = 5.0,
) -> np.ndarray:
    """Refine a landslide probability map with a dense CRF.

    Args:
        prob: Landslide probability per pixel, in [0, 1].
        image: The image the probabilities were predicted from (L4S-scaled or raw: it is stretched).
        rgb: Band indices used as R, G, B (see :func:`rgb_indices`).
        iterations: Mean-field inference steps.
        sxy_gaussian: Spatial standard deviation (pixels) of the smoothness kernel.
        compat_gaussian: Weight of the smoothness kernel.
        sxy_bilateral: Spatial standard deviation (pixels) of the appearance kernel.
        srgb: Colour standard deviation (0..255 units) of the appearance kernel.
        compat_bilateral: Weight of the appearance kernel.

    Returns:
        Refined landslide probability, float32, same shape as ``prob``.

    Raises:
        InputError: shapes do not match, or ``pydensecrf2`` is not installed.

    Shape:
        ``prob``: ``(H, W)``; ``image``: ``(C, H, W)``; returns ``(H, W)``.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise InputError(_MISSING) from None
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 2 or np.asarray(image).ndim != 3 or np.asarray(image).shape[1:] != prob.shape:
        raise InputError(f"CRF: probability {prob.shape} and image {np.asarray(image).shape} do not match; "
                         "expected (H, W) and (bands, H, W)")
    h, w = prob.shape
    p = np.clip(np.nan_to_num(prob, nan=0.5), _EPS, 1.0 - _EPS)
    unary = np.ascontiguousarray(-np.log(np.stack([1.0 - p, p]).reshape(2, -1)), dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=sxy_gaussian, compat=compat_gaussian)
    crf.addPairwiseBilateral(sxy=sxy_bilateral, srgb=srgb, rgbim=to_rgb8(image, rgb), compat=compat_bilateral)
    q = np.asarray(crf.inference(int(iterations)), np.float32).reshape(2, h, w)
    return q[1] / np.maximum(q.sum(0), _EPS)
