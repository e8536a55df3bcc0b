"""Pure: window grids that cover a raster exactly, and blend weights for stitching.

Windows are :class:`rasterio.windows.Window` values (``col_off, row_off, width, height``). A grid covers every pixel, stays
inside the raster, and snaps its last row/column of windows to the far edge instead of falling
short; a raster smaller than one window gets one window of the raster's size (callers pad).
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window


def offsets(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride ``size - overlap``, the last one snapped to the end.

    Args:
        length: Raster length along the axis (>= 1).
        size: Window length (>= 1).
        overlap: Pixels shared by neighbouring windows (0 <= overlap < size).

    Returns:
        Sorted, distinct offsets; ``[0]`` when ``length <= size``.

    Raises:
        ValueError: on a non-positive length/size or an overlap outside ``[0, size)``.
    """
    if length < 1 or size < 1:
        raise ValueError(f"length and size must be positive (got {length}, {size})")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, {size}) (got {overlap})")
    if length <= size:
        return [0]
    stride = size - overlap
    offs = list(range(0, length - size, stride))
    offs.append(length - size)
    return offs


def window_grid(height: int, width: int, size: int, overlap: int = 0) -> list[Window]:
    """Windows of ``size`` x ``size`` (clipped to the raster) covering a ``height`` x ``width`` raster.

    Row-major order. Every window lies inside the raster; windows are full-size unless the raster
    itself is smaller than ``size`` along that axis.
    """
    rows = offsets(height, size, overlap)
    cols = offsets(width, size, overlap)
    h, w = min(size, height), min(size, width)
    return [Window(col_off=c, row_off=r, width=w, height=h) for r in rows for c in cols]


def owned_spans(length: int, size: int, overlap: int = 0) -> dict[int, tuple[int, int]]:
    """The part of the axis each window of :func:`offsets` owns: every position in exactly one span.

    Where two neighbouring windows overlap (by ``overlap``, or more where the last one is snapped
    back to the far edge), the boundary is the middle of the shared part, so each position belongs to
    the window it is furthest inside. Tiling uses this to label each pixel in one patch only.

    Returns:
        ``{offset: (start, stop)}`` in raster coordinates, ``start`` inclusive, ``stop`` exclusive.
    """
    offs = offsets(length, size, overlap)
    ends = [min(o + size, length) for o in offs]
    cuts = [0] + [(offs[k + 1] + ends[k]) // 2 for k in range(len(offs) - 1)] + [length]
    return {o: (cuts[k], cuts[k + 1]) for k, o in enumerate(offs)}


def footprint(window: Window, transform):
    """The polygon a pixel ``window`` covers under an affine ``transform``: its four corners mapped, so that
    rotated, sheared and south-up grids get their true footprint (an axis-aligned box of
    :func:`rasterio.windows.bounds` does not)."""
    import shapely

    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    return shapely.Polygon([transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))])


def is_north_up(transform) -> bool:
    """Whether a grid has no rotation or shear (its rows run along x; south-up grids count)."""
    return transform.b == 0 and transform.d == 0


def north_up_turn(transform) -> tuple[int, ...]:
    """The axes (``-2`` rows, ``-1`` columns) to flip so that a window of the grid reads north-up and east-right,
    as the models learnt their images: ``(-2,)`` for a south-up grid, ``()`` for the usual one. Flipping the same
    axes again turns it back."""
    return tuple(d for d, flipped in ((-2, transform.e > 0), (-1, transform.a < 0)) if flipped)


def blend_weight(size: int, overlap: int, floor: float = 1e-3, crop: tuple[int, int] | None = None) -> np.ndarray:
    """2-D weight for blending overlapping windows of ``size`` pixels that overlap by ``overlap``.

    The weight is 1 in the centre and falls off with a raised-cosine (Hann) ramp over the
    ``overlap`` pixels at each edge, never below ``floor`` (so pixels covered by one window only,
    e.g. at the raster border, still get their own prediction). Stitching divides the weighted sum
    by the summed weights, so a constant prediction stays constant and an identity-like model
    reproduces its input exactly.

    ``crop=(h, w)`` returns ``blend_weight(size, overlap)[:h, :w]`` without building the full
    square (a window larger than the scene is clipped to it: ``--window 100000`` needs no 74 GiB).

    Shape:
        ``(size, size)`` (or ``crop``), float32.
    """
    ramp = np.ones(size, np.float64)
    if overlap > 0:
        t = (np.arange(overlap) + 0.5) / overlap
        edge = 0.5 - 0.5 * np.cos(np.pi * t)
        ramp[:overlap] = edge
        ramp[size - overlap:] = np.minimum(ramp[size - overlap:], edge[::-1])
    ramp = np.maximum(ramp, floor)
    h, w = (size, size) if crop is None else crop
    return np.outer(ramp[:h], ramp[:w]).astype(np.float32)


def pad_to(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """Pad the last two axes of ``array`` at their far ends (bottom, right) to ``size`` with ``fill``.

    A window of a raster smaller than ``size`` (see :func:`window_grid`) becomes a full patch this
    way; pixel ``(i, j)`` of the result is pixel ``(i, j)`` of ``array`` wherever that exists, so
    cropping ``result[..., :h, :w]`` undoes the padding. Arrays already ``size`` x ``size`` are
    returned unchanged (not copied).

    Shape:
        ``(..., h, w)`` with ``h, w <= size`` -> ``(..., size, size)``, same dtype.

    Raises:
        ValueError: an axis is longer than ``size``.
    """
    h, w = array.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"array of {h} x {w} pixels does not fit in {size} x {size}")
    if h == size and w == size:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, size - h), (0, size - w)]
    return np.pad(array, pad, mode="constant", constant_values=np.asarray(fill).astype(array.dtype))


def block_grid(height: int, width: int, size: int) -> list[Window]:
    """Disjoint windows of at most ``size`` x ``size`` that partition a ``height`` x ``width`` raster.

    Unlike :func:`window_grid`, the last row/column of windows is clipped at the edge instead of
    snapped back, so every pixel lies in exactly one window (for streaming statistics, where a pixel
    counted twice would bias the result). Row-major order.

    Raises:
        ValueError: on a non-positive height, width or size.
    """
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"height, width and size must be positive (got {height}, {width}, {size})")
    return [
        Window(col_off=c, row_off=r, width=min(size, width - c), height=min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]


def spread_sample(height: int, width: int, size: int, max_pixels: int) -> list[Window]:
    """About ``max_pixels`` worth of the :func:`block_grid` cells, spread evenly over the raster.

    The cells are those hit by a Fibonacci (golden-ratio) lattice of ``k = max_pixels // size**2``
    points in the unit square: every row of cells gets its share and, unlike every n-th cell of a
    regular grid, the sample does not alias with periodic patterns (fields, orbits, stripes). The
    lattice is fixed, so the sample is the same on every run. Row-major order; at least one cell.

    Raises:
        ValueError: on a non-positive height, width, size or budget.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive (got {max_pixels})")
    cells = block_grid(height, width, size)
    rows, cols = -(-height // size), -(-width // size)
    k = max(1, max_pixels // (size * size))
    if k >= len(cells):
        return cells
    golden = (5**0.5 - 1) / 2
    hit = sorted({(min(rows - 1, int((i + 0.5) / k * rows)), min(cols - 1, int((i * golden) % 1.0 * cols)))
                  for i in range(k)})
    return [cells[r * cols + c] for r, c in hit]

