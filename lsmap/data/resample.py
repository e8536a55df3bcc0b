"""Sources resampled onto a target grid block by block, each pixel's value independent of the block.

A :class:`Layer` is one output band's source file, read window by window. A source on the target
grid is read as it is; a source on another grid (20/60 m bands, a DEM, a slope raster) is
resampled onto it bilinearly at the output pixel centres (:func:`bilinear`, NaN-aware: invalid
neighbours drop out and the weights renormalise), or nearest neighbour at full resolution (product
layers such as SCL, whose classes must not blend). The centres are mapped to each source with an
exact PROJ transform computed from the global grid (:data:`CENTRE_LATTICE`), so a pixel's value
does not depend on the block it falls in (rasterio's ``reproject`` always uses GDAL's approximate
transformer, whose result does). A source in the same CRS on a north-up grid is interpolated in two
1-D passes (:func:`bilinear_separable`). A source much finer than the target is sampled, not
averaged. Radiometry (``(DN + offset) * gain``) and invalid values (nodata, a saturated value) are
applied to the source pixels before any resampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lsmap.io.rasters import read_window


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS (``rasterio.crs.CRS``), affine transform and size in pixels."""

    crs: object
    transform: object
    width: int
    height: int


class Layer:
    """One output band's source: a file, sampled onto the output grid block by block.

    Resampling is bilinear at the output pixel centres, done here rather than by the GDAL
    warper: each centre is mapped to the source with an exact PROJ transform computed from the
    *global* grid, so the result of a pixel does not depend on the block it falls in (GDAL's
    approximate transformer, which rasterio's ``reproject`` always uses, does).
    """

    def __init__(self, src, name: str, nodata: float | None, grid: Grid,
                 derive: Callable[[np.ndarray, int], np.ndarray] | None = None, halo: int = 0,
                 nearest: bool = False, offset: float = 0.0, gain: float = 1.0,
                 saturated: float | None = None) -> None:
        self.src, self.name, self.nodata, self.grid = src, name, nodata, grid
        self.saturated = saturated  # a value read as invalid as well (Sentinel-2's SATURATED digital number)
        self.derive, self.halo, self.nearest = derive, halo, nearest
        # radiometry, applied to source pixels before any resampling: (DN + offset) * gain
        self.offset, self.gain = float(offset), float(gain)
        self.same_grid = (
            src.crs == grid.crs and src.width == grid.width and src.height == grid.height
            and src.transform.almost_equals(grid.transform, precision=1e-9 * max(1.0, abs(grid.transform.a)))
        )
        self.same_crs = src.crs == grid.crs
        self._key = "" if self.same_crs else src.crs.to_wkt()
        # Same CRS, both grids north-up: source rows depend on output rows only (and columns on
        # columns), so the interpolation separates into two cheap 1-D passes.
        t, g = src.transform, grid.transform
        self.separable = self.same_crs and t.b == t.d == 0 and g.b == g.d == 0

    def _read(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        """Source pixels ``[row0, row0+rows) x [col0, col0+cols)`` as float64, NaN outside/invalid."""
        from rasterio.windows import Window

        out = np.full((rows, cols), np.nan, np.float64)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + rows, self.src.height), min(col0 + cols, self.src.width)
        if r1 <= r0 or c1 <= c0:
            return out
        arr = read_window(self.src, 1, Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float64)
        if self.nodata is not None:
            arr[arr == self.nodata] = np.nan
        if self.saturated is not None:
            arr[arr == self.saturated] = np.nan
        if self.offset or self.gain != 1.0:
            arr = (arr + self.offset) * self.gain
        out[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = arr
        return out

    def block(self, w, cache: dict) -> np.ndarray:
        """This band on output window ``w`` (a :class:`rasterio.windows.Window`), float32, NaN where invalid.

        ``cache`` holds the block's pixel-centre coordinates per source CRS, shared by layers.
        """
        h = self.halo
        if self.same_grid:
            arr = self._read(w.row_off - h, w.col_off - h, w.height + 2 * h, w.width + 2 * h)
            if self.derive is not None:
                arr = self.derive(arr, w.row_off - h)
            return np.asarray(arr[h:h + w.height, h:h + w.width], np.float32)
        inv = ~self.src.transform
        if self.separable:
            g = self.grid.transform
            col = inv.a * (g.a * (w.col_off + np.arange(w.width) + 0.5) + g.c) + inv.c - 0.5
            row = inv.e * (g.e * (w.row_off + np.arange(w.height) + 0.5) + g.f) + inv.f - 0.5
            return self._separable(row, col)
        if self._key not in cache:
            cache[self._key] = _centres(self.grid, w, None if self.same_crs else self.src.crs)
        x, y = cache[self._key]
        col = inv.a * x + inv.b * y + inv.c - 0.5  # source pixel-centre coordinates
        row = inv.d * x + inv.e * y + inv.f - 0.5
        ok = np.isfinite(col) & np.isfinite(row)
        ok &= (col > -1) & (col < self.src.width) & (row > -1) & (row < self.src.height)
        dst = np.full((w.height, w.width), np.nan, np.float32)
        if self.nearest:
            ri, ci = np.floor(row + 0.5), np.floor(col + 0.5)
            ok = np.isfinite(ri) & np.isfinite(ci)
            ok &= (ri >= 0) & (ri < self.src.height) & (ci >= 0) & (ci < self.src.width)
            if ok.any():
                ri, ci = ri[ok].astype(np.int64), ci[ok].astype(np.int64)
                r0, c0 = int(ri.min()), int(ci.min())
                arr = self._read(r0, c0, int(ri.max()) - r0 + 1, int(ci.max()) - c0 + 1)
                dst[ok] = arr[ri - r0, ci - c0]
            return dst
        if not ok.any():
            return dst
        arr, r0, c0 = self._read_around(row[ok], col[ok])
        dst[ok] = bilinear(arr, row[ok] - r0, col[ok] - c0)
        return dst

    def _read_around(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Source pixels covering fractional ``rows``/``cols`` plus the halo (derived if set), and their offsets."""
        h = self.halo
        r0 = int(np.floor(rows.min())) - h
        c0 = int(np.floor(cols.min())) - h
        r1 = int(np.floor(rows.max())) + 2 + h
        c1 = int(np.floor(cols.max())) + 2 + h
        arr = self._read(r0, c0, r1 - r0, c1 - c0)
        if self.derive is not None:
            arr = self.derive(arr, r0)
        return arr, r0, c0

    def _separable(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        if self.nearest:  # full-resolution source pixels, never a decimated (overview) read
            ri, ci = np.floor(row + 0.5).astype(np.int64), np.floor(col + 0.5).astype(np.int64)
            ok_r, ok_c = (ri >= 0) & (ri < self.src.height), (ci >= 0) & (ci < self.src.width)
            dst = np.full((row.size, col.size), np.nan, np.float32)
            if ok_r.any() and ok_c.any():
                r0, c0 = int(ri[ok_r].min()), int(ci[ok_c].min())
                arr = self._read(r0, c0, int(ri[ok_r].max()) - r0 + 1, int(ci[ok_c].max()) - c0 + 1)
                dst[np.ix_(ok_r, ok_c)] = arr[np.ix_(ri[ok_r] - r0, ci[ok_c] - c0)]
            return dst
        ok_r = (row > -1) & (row < self.src.height)
        ok_c = (col > -1) & (col < self.src.width)
        dst = np.full((row.size, col.size), np.nan, np.float32)
        if not ok_r.any() or not ok_c.any():
            return dst
        arr, r0, c0 = self._read_around(row[ok_r], col[ok_c])
        dst[np.ix_(ok_r, ok_c)] = bilinear_separable(arr, row[ok_r] - r0, col[ok_c] - c0)
        return dst


#: Pixels between the nodes of the global lattice whose centres are mapped to another CRS exactly (PROJ); the
#: centres between are interpolated bilinearly. Over 16 x 10 m, UTM -> geographic is flat to about 0.3 mm
#: (1e-5 of a 30 m DEM pixel; tested against the exact transform), and PROJ on every centre took about 0.5 s per
#: Mpx, most of stacking a DEM given in EPSG:4326 (BENCHMARKS.md). The lattice is the whole grid's, so a
#: pixel's value does not depend on the block it falls in.
CENTRE_LATTICE = 16


def _centres(grid: Grid, w, crs) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of the pixel centres of window ``w`` of ``grid`` (in ``crs`` if given: exact at the nodes
    of the grid's :data:`CENTRE_LATTICE` lattice, bilinear between them)."""
    t = grid.transform
    if crs is None:
        cols = (w.col_off + np.arange(w.width) + 0.5)[None, :]
        rows = (w.row_off + np.arange(w.height) + 0.5)[:, None]
        return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    n = CENTRE_LATTICE
    r = w.row_off + np.arange(w.height)  # global pixel indices
    c = w.col_off + np.arange(w.width)
    r_node, c_node = r // n, c // n  # the lattice node at or before each pixel
    r0, c0 = int(r_node[0]), int(c_node[0])
    nodes_r = (np.arange(r0, int(r_node[-1]) + 2) * n + 0.5)[:, None]
    nodes_c = (np.arange(c0, int(c_node[-1]) + 2) * n + 0.5)[None, :]
    xs, ys = _exact_centres(grid.crs, crs, t.a * nodes_c + t.b * nodes_r + t.c, t.d * nodes_c + t.e * nodes_r + t.f)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):  # the lattice leaves the CRS's domain: every pixel exactly
        cols = (c + 0.5)[None, :]
        rows = (r + 0.5)[:, None]
        return _exact_centres(grid.crs, crs, t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f)
    i, a = r_node - r0, ((r % n) / n)[:, None]
    j, b = c_node - c0, (c % n) / n

    def lerp(v: np.ndarray) -> np.ndarray:
        across = v[:, j] * (1 - b) + v[:, j + 1] * b  # (node rows, w)
        return across[i] * (1 - a) + across[i + 1] * a

    return lerp(xs), lerp(ys)


def _exact_centres(src_crs, crs, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` (same shape) mapped from ``src_crs`` to ``crs`` by PROJ, point by point."""
    from rasterio.warp import transform

    xs, ys = transform(src_crs, crs, x.ravel(), y.ravel())
    return np.asarray(xs, np.float64).reshape(x.shape), np.asarray(ys, np.float64).reshape(x.shape)


def bilinear_separable(arr: np.ndarray, row: np.ndarray, col: np.ndarray, min_weight: float = 0.5) -> np.ndarray:
    """:func:`bilinear` on the grid ``row x col`` (1-D coordinates), in two 1-D passes.

    Gives the same values as ``bilinear(arr, *np.meshgrid(row, col, indexing="ij"))`` up to
    rounding.

    Shape:
        ``arr`` ``(h, w)``, ``row`` ``(H,)``, ``col`` ``(W,)`` -> ``(H, W)``, float32.
    """
    padded = np.pad(np.asarray(arr, np.float64), 1, constant_values=np.nan)
    valid = np.isfinite(padded)
    values = np.where(valid, padded, 0.0)
    weights = valid.astype(np.float64)
    ri = np.floor(row).astype(np.int64)
    ci = np.floor(col).astype(np.int64)
    fr = (row - ri)[:, None]
    fc = (col - ci)[None, :]
    ri += 1  # index into the padded array
    ci += 1

    def interp(a: np.ndarray) -> np.ndarray:
        rows = a[ri] * (1 - fr) + a[ri + 1] * fr
        return rows[:, ci] * (1 - fc) + rows[:, ci + 1] * fc

    if valid[1:-1, 1:-1].all() and ri.min() >= 1 and ri.max() < arr.shape[0] and ci.min() >= 1 \
            and ci.max() < arr.shape[1]:  # every neighbour valid (most blocks): the weights are all 1
        return interp(values).astype(np.float32)
    total, weight = interp(values), interp(weights)
    out = np.full(total.shape, np.nan, np.float32)
    keep = weight >= min_weight
    out[keep] = total[keep] / weight[keep]
    return out


def bilinear(arr: np.ndarray, row: np.ndarray, col: np.ndarray, min_weight: float = 0.5) -> np.ndarray:
    """Bilinear interpolation of ``arr`` at fractional pixel-centre coordinates, NaN-aware.

    Invalid (NaN) neighbours drop out and the weights of the valid ones are renormalised, as the
    GDAL warper does; a point whose valid neighbours weigh less than ``min_weight`` is NaN, so
    nodata areas neither grow nor shrink by more than half a source pixel.

    Args:
        arr: Source values, NaN where invalid.
        row: Row coordinates (0 = centre of the first row), any shape.
        col: Column coordinates, same shape as ``row``.
        min_weight: Least total weight of valid neighbours for a value.

    Returns:
        Interpolated values, float32, shape of ``row``.
    """
    h, w = arr.shape
    r0, c0 = np.floor(row), np.floor(col)
    fr, fc = row - r0, col - c0
    r0 = r0.astype(np.int64)
    c0 = c0.astype(np.int64)
    if row.size and r0.min() >= 0 and r0.max() < h - 1 and c0.min() >= 0 and c0.max() < w - 1 \
            and np.isfinite(arr).all():  # every neighbour inside and valid (a DEM's blocks, mostly): weights are 1
        values, weights = np.asarray(arr, np.float64).ravel(), None
        base = r0 * w + c0

        def at(dr: int, dc: int) -> np.ndarray:
            return base + (dr * w + dc)
    else:
        # a NaN frame around the source: a neighbour outside it (any distance: indices clipped to the frame) is
        # invalid like a NaN one; invalid neighbours add 0 to the value and to the weight (no mask per neighbour)
        padded = np.pad(np.asarray(arr, np.float64), 1, constant_values=np.nan)
        valid = np.isfinite(padded)
        values = np.where(valid, padded, 0.0).ravel()
        weights = valid.astype(np.float64).ravel()

        def at(dr: int, dc: int) -> np.ndarray:
            return np.clip(r0 + (dr + 1), 0, h + 1) * (w + 2) + np.clip(c0 + (dc + 1), 0, w + 1)
    total = np.zeros(row.shape, np.float64)
    weight = np.zeros(row.shape, np.float64)
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        i = at(dr, dc)
        total += wt * values[i]
        weight += wt if weights is None else wt * weights[i]
    out = np.full(row.shape, np.nan, np.float32)
    keep = weight >= min_weight
    out[keep] = total[keep] / weight[keep]
    return out


def overlaps(src, grid: Grid) -> bool:
    """Does the raster ``src`` cover any part of ``grid``?"""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, bounds

    try:
        left, bottom, right, top = transform_bounds(
            grid.crs, src.crs, *bounds(Window(0, 0, grid.width, grid.height), grid.transform), densify_pts=21
        )
    except Exception:  # noqa: BLE001 - a CRS pair PROJ cannot relate cannot overlap either
        return False
    b = src.bounds  # south-up rasters have bottom above top: compare the ranges
    return (min(left, right) < max(b.left, b.right) and max(left, right) > min(b.left, b.right)
            and min(bottom, top) < max(b.bottom, b.top) and max(bottom, top) > min(b.bottom, b.top))
