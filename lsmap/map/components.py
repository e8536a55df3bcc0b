"""The landslides of a probability raster as connected components, found block by block.

A raster is cut into the blocks of a grid (:class:`BlockGrid`). In each block the pixels above the
threshold are labelled into 4-connected components (``scipy.ndimage.label``), summarised (pixel
count, sum and maximum of the probability, sum of the uncertainty) and traced into polygons in
*pixel* coordinates of the scene (integers, so polygons from neighbouring blocks share exactly equal
edges): :func:`block_parts`, pure, run on worker threads. :class:`Parts` numbers the parts of the
blocks, in any order, and joins those that touch across a block border (the connected components of
the touching pairs, :mod:`lsmap.core.graph`); only those are dissolved (``shapely.union_all``), so a
landslide split by block borders comes out as one polygon, and no whole-scene array is ever held.

:class:`BlockStream` feeds it: pieces of the raster come in as they become final (from a file,
block by block, or from detection's blender while the models still run on the rows below), are
gathered into the grid's blocks, and each block is traced as soon as it is complete. Georeferencing
and the attribute table are :mod:`lsmap.map.vectorize`'s.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from lsmap.core.graph import components, groups
from lsmap.map.rings import trace_regions

#: Most threads tracing blocks.
MAX_WORKERS = 4


def default_workers() -> int:
    """Threads tracing blocks by default: the CPU cores this process may use, at most :data:`MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def label_block(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """4-connected components of ``prob > threshold`` (compared in float64, whatever ``prob``'s dtype).

    Shape:
        ``prob``: ``(h, w)``; returns ``(h, w)`` int32 labels (0 = none) and the component count.
    """
    from scipy import ndimage

    labels, n = ndimage.label(prob > np.float64(threshold))
    return labels.astype(np.int32, copy=False), int(n)


def index_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices ``starts[i] .. starts[i] + counts[i] - 1`` of every ``i``, concatenated."""
    counts = np.asarray(counts, np.int64)
    offsets = np.repeat(np.asarray(starts, np.int64) - np.cumsum(counts) + counts, counts)
    return offsets + np.arange(int(counts.sum()), dtype=np.int64)


@dataclass
class PartShapes:
    """The polygons of parts as integer vertex arrays (pixel corners of the scene), not as shapely
    objects: 8 bytes a vertex instead of about 640 bytes a polygon, so the parts of a fragmented scene
    held until the end stay a few MB (measured: 179,248 parts held 114 MB as shapely polygons).

    Attributes:
        xy: ``(v, 2)`` int32 vertices (column, row) of every ring, part by part, ring by ring (the exterior
            first), each ring closed.
        ring_sizes: ``(r,)`` vertices of each ring.
        ring_counts: ``(n,)`` rings of each part.
        bounds: ``(n, 4)`` int32 ``(col0, row0, col1, row1)`` of each part.
    """

    xy: np.ndarray
    ring_sizes: np.ndarray
    ring_counts: np.ndarray
    bounds: np.ndarray

    @staticmethod
    def concat(items: list[PartShapes]) -> PartShapes:
        if not items:
            return PartShapes(np.zeros((0, 2), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                              np.zeros((0, 4), np.int32))
        return PartShapes(*(np.concatenate([getattr(x, f) for x in items]) for f in
                            ("xy", "ring_sizes", "ring_counts", "bounds")))

    def take(self, parts: np.ndarray) -> PartShapes:
        """The parts numbered ``parts`` (``(m,)`` indices), in that order."""
        first_ring = np.zeros(len(self.ring_counts) + 1, np.int64)
        np.cumsum(self.ring_counts, out=first_ring[1:])
        rings = index_ranges(first_ring[parts], self.ring_counts[parts])
        first_vertex = np.zeros(len(self.ring_sizes) + 1, np.int64)
        np.cumsum(self.ring_sizes, out=first_vertex[1:])
        vertices = index_ranges(first_vertex[rings], self.ring_sizes[rings])
        return PartShapes(self.xy[vertices], self.ring_sizes[rings], self.ring_counts[parts], self.bounds[parts])

    def polygons(self, transform=None, parts: np.ndarray | None = None) -> np.ndarray:
        """``(n,)`` object array of shapely polygons, vertices mapped by the affine ``transform`` (default:
        pixel coordinates); with ``parts`` (indices), those parts' only, in that order. Each vertex is mapped on
        its own (``a x + b y + c``, ``d x + e y + f``), so vertices that two parts share stay exactly equal and
        their union is exact. Built :data:`POLYGON_CHUNK` parts at a time, so that the float copies of the
        vertices are a chunk's, not the scene's (a dense 4096^2 mask has tens of millions of vertices)."""
        import shapely

        if parts is not None:
            out = np.empty(len(parts), dtype=object)
            for p0 in range(0, len(parts), POLYGON_CHUNK):
                out[p0:p0 + POLYGON_CHUNK] = self.take(parts[p0:p0 + POLYGON_CHUNK]).polygons(transform)
            return out
        rings = np.zeros(len(self.ring_sizes) + 1, np.int64)
        np.cumsum(self.ring_sizes, out=rings[1:])
        parts = np.zeros(len(self.ring_counts) + 1, np.int64)
        np.cumsum(self.ring_counts, out=parts[1:])
        out = np.empty(len(self.ring_counts), dtype=object)
        for p0 in range(0, len(self.ring_counts), POLYGON_CHUNK):
            p1 = min(p0 + POLYGON_CHUNK, len(self.ring_counts))
            r0, r1 = parts[p0], parts[p1]
            v0, v1 = rings[r0], rings[r1]
            xy = self.xy[v0:v1].astype(np.float64)
            if transform is not None:
                t = transform
                for c0 in range(0, len(xy), MAP_CHUNK):  # in place, the temporaries a chunk's
                    seg = xy[c0:c0 + MAP_CHUNK]
                    x = seg[:, 0].copy()
                    mapped = t.a * x  # (a x + b y) + c, as one expression would: the same rounding
                    mapped += t.b * seg[:, 1]
                    mapped += t.c
                    x *= t.d
                    x += t.e * seg[:, 1]
                    x += t.f
                    seg[:, 0], seg[:, 1] = mapped, x
            # from offsets in one call: 2-3x faster than rings then polygons by index (0.19 against 0.43-0.67 s
            # for the 153,528 parts of a fragmented 4096^2 mask, BENCHMARKS.md)
            out[p0:p1] = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy,
                                                   (rings[r0:r1 + 1] - v0, parts[p0:p1 + 1] - r0))
        return out


#: Parts whose polygons :meth:`PartShapes.polygons` builds at a time.
POLYGON_CHUNK = 65536

#: Vertices :meth:`PartShapes.polygons` maps by the transform at a time (one polygon may have millions).
MAP_CHUNK = 1 << 20


def label_polygons(labels: np.ndarray, counts: np.ndarray, col_off: int, row_off: int,
                   where: np.ndarray | None = None) -> PartShapes:
    """The polygon of each component ``1..n`` of a label image, in pixel coordinates of the scene: rings
    traced by :func:`lsmap.map.rings.trace_regions` (numpy; the vertices GDAL's polygonizer gives, tested),
    bounds from the pixels.

    Args:
        labels: ``(h, w)`` labels ``1..n`` (0 = none), from :func:`label_block`.
        counts: ``(n,)`` pixels of each label.
        where: The flat indices of the labelled pixels, when the caller has them (``np.flatnonzero(labels)``).
    """
    n = len(counts)
    lab = labels.ravel()
    where = np.flatnonzero(lab) if where is None else where
    ids = lab[where].astype(np.int64) - 1
    rows, cols = np.divmod(where, labels.shape[1])
    r0 = np.full(n, labels.shape[0], np.int64)
    c0 = np.full(n, labels.shape[1], np.int64)
    r1 = np.zeros(n, np.int64)
    c1 = np.zeros(n, np.int64)
    np.minimum.at(r0, ids, rows)
    np.minimum.at(c0, ids, cols)
    np.maximum.at(r1, ids, rows + 1)
    np.maximum.at(c1, ids, cols + 1)
    bounds = np.stack([c0 + col_off, r0 + row_off, c1 + col_off, r1 + row_off], 1).astype(np.int32)
    xy, ring_sizes, _, ring_counts = trace_regions(labels, col_off, row_off)
    return PartShapes(xy, ring_sizes, ring_counts, bounds)


def parts_mask(s: PartShapes) -> tuple[np.ndarray, int, int]:
    """The pixels of parts (rings of pixel corners, as traced) as a uint8 mask of their bounding box, and the
    box's column and row offsets.

    By edge parity: a pixel is inside when an odd number of the rings' vertical edges lie at or left of it on
    its row (an edge two parts share along a block border counts twice and cancels). Numpy only, one byte
    a pixel of the box; no polygon is rasterised edge by edge.
    """
    c0, r0 = int(s.bounds[:, 0].min()), int(s.bounds[:, 1].min())
    c1, r1 = int(s.bounds[:, 2].max()), int(s.bounds[:, 3].max())
    x, y = s.xy[:, 0] - np.int32(c0), s.xy[:, 1] - np.int32(r0)  # int32: a vertex array is tens of millions long
    vertical = x[:-1] == x[1:]
    vertical &= y[:-1] != y[1:]
    vertical[np.cumsum(s.ring_sizes)[:-1] - 1] = False  # not from a ring's last vertex to the next ring's first
    at = np.flatnonzero(vertical)
    x, ya, yb = x[at], np.minimum(y[at], y[at + 1]), np.maximum(y[at], y[at + 1])
    toggles = np.zeros((r1 - r0 + 1, c1 - c0 + 1), np.int8)  # int8 wraps, parity stays
    np.add.at(toggles, (ya, x), 1)
    np.add.at(toggles, (yb, x), -1)
    np.cumsum(toggles, axis=0, out=toggles)  # edges covering each (row, column)
    np.cumsum(toggles, axis=1, out=toggles)  # edges at or left of each pixel
    return (toggles[:-1, :-1] & 1).astype(np.uint8), c0, r0


#: Vertices above which the parts of one landslide joined across block borders are traced again from their
#: pixels (:func:`retrace`) instead of dissolved by GEOS, whose union of parts with tens of thousands of holes
#: took minutes on a dense mask (BENCHMARKS.md).
RETRACE_VERTICES = 10_000


def retrace(s: PartShapes, transform=None):
    """The union of parts that form one 4-connected landslide, traced again from their pixels (:func:`parts_mask`,
    :func:`lsmap.map.rings.trace_regions`): the same polygon as their union (tested), in a time and memory that
    follow the pixels of their bounding box and the vertices, where GEOS's union of parts with many holes does
    not; ``None`` when the pixels are not one 4-connected region (the caller then dissolves the parts)."""
    from scipy import ndimage

    mask, c0, r0 = parts_mask(s)
    if ndimage.label(mask, output=np.int32)[1] != 1:  # several 4-connected regions: several polygons
        return None
    xy, sizes, _, rings = trace_regions(mask, c0, r0)
    h, w = mask.shape
    one = PartShapes(xy, sizes, rings, np.array([[c0, r0, c0 + w, r0 + h]], np.int32))
    return one.polygons(transform)[0]


@dataclass
class BlockParts:
    """The connected components of one block (the parts of the landslides in it), in label order.

    Attributes:
        win: The block's window.
        count: ``(n,)`` pixels of each part.
        psum: ``(n,)`` float64 sums of the probability.
        pmax: ``(n,)`` maxima of the probability.
        usum: ``(n,)`` float64 sums of the uncertainty, or ``None``.
        shapes: The parts' polygons in scene pixel coordinates.
        edges: The labels (``1..n``, 0 = none) along the block's top row, bottom row, left column and
            right column.
    """

    win: Any
    count: np.ndarray
    psum: np.ndarray
    pmax: np.ndarray
    usum: np.ndarray | None
    shapes: PartShapes
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def block_parts(win, p: np.ndarray, u: np.ndarray | None, threshold: float) -> BlockParts:
    """Label one block's landslide pixels into parts, summarise and trace them (no state: any thread).

    Shape:
        ``p``, ``u``: ``(h, w)`` probability and uncertainty of the block ``win``.
    """
    labels, n = label_block(p, threshold)
    edges = (labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())
    if not n:
        empty = np.zeros(0)
        return BlockParts(win, np.zeros(0, np.int64), empty, empty, empty if u is not None else None,
                          PartShapes.concat([]), edges)
    # over the labelled pixels only (a few % of a block), in raster order: the same float64 sums
    on = np.flatnonzero(labels)
    flat = labels.ravel()[on] - 1
    pv = p.ravel()[on].astype(np.float64)
    counts = np.bincount(flat, minlength=n)
    pmax = np.full(n, -np.inf)
    np.maximum.at(pmax, flat, pv)
    usum = np.bincount(flat, weights=u.ravel()[on].astype(np.float64), minlength=n) if u is not None else None
    return BlockParts(win, counts, np.bincount(flat, weights=pv, minlength=n), pmax, usum,
                      label_polygons(labels, counts, win.col_off, win.row_off, on), edges)


@dataclass
class Landslides:
    """One entry per landslide (parts that touch across block borders dissolved), in raster order:
    top row first, then left column, whatever the grid.

    Attributes:
        geoms: ``(k,)`` object array of polygons (scene pixel coordinates, or mapped by the transform
            given to :meth:`Parts.landslides`).
        count: ``(k,)`` pixels.
        psum, pmax: ``(k,)`` probability sums and maxima.
        usum: ``(k,)`` uncertainty sums, or ``None``.
    """

    geoms: np.ndarray
    count: np.ndarray
    psum: np.ndarray
    pmax: np.ndarray
    usum: np.ndarray | None


class Parts:
    """The parts of the landslides in the blocks of a grid so far, added in any order, and which parts
    touch across block borders.

    Each part has a global number (in the order its block was added, then label order), its pixel
    geometry, its pixel count, probability sum and maximum, and uncertainty sum. A block is known by
    its grid cell ``(i, j)``; when it is added, its edges are joined to those of the neighbouring cells
    already added (each border once, when the second of its two blocks comes).
    """

    def __init__(self, with_uncertainty: bool) -> None:
        self.shapes: list[PartShapes] = []  # per block: its parts' polygons (label order)
        self.n_parts = 0
        self.count: list[np.ndarray] = []
        self.psum: list[np.ndarray] = []
        self.pmax: list[np.ndarray] = []
        self.usum: list[np.ndarray] | None = [] if with_uncertainty else None
        self.pairs: list[np.ndarray] = []
        self.sides: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}  # cell -> part numbers + 1 along its edges

    def add(self, cell: tuple[int, int], found: BlockParts) -> None:
        """Number a block's parts after those added before and join them to its neighbours'."""
        n, base = len(found.count), self.n_parts
        if cell in self.sides:
            raise ValueError(f"block {cell} added twice")
        if n:
            self.count.append(found.count)
            self.psum.append(found.psum)
            self.pmax.append(found.pmax)
            if self.usum is not None:
                self.usum.append(found.usum)
            self.shapes.append(found.shapes)
            self.n_parts += n
        top, bottom, left, right = (np.where(e > 0, e.astype(np.int64) + base, 0) for e in found.edges)
        i, j = cell
        for other, mine, theirs in (((i, j - 1), left, 3), ((i, j + 1), right, 2), ((i - 1, j), top, 1),
                                    ((i + 1, j), bottom, 0)):
            if other in self.sides:
                self._join(self.sides[other][theirs], mine)
        self.sides[cell] = (top, bottom, left, right)

    def _join(self, a: np.ndarray, b: np.ndarray) -> None:
        """Record that the parts on either side of a block border touch (4-connectivity)."""
        both = (a > 0) & (b > 0)
        if both.any():
            self.pairs.append(np.unique(np.stack([a[both], b[both]], 1), axis=0) - 1)

    def landslides(self, transform=None) -> Landslides:
        """The landslides: touching parts dissolved and summed, in raster order; polygons mapped by the
        affine ``transform`` (default: pixel coordinates)."""
        if not self.n_parts:
            empty = np.zeros(0)
            return Landslides(np.empty(0, dtype=object), empty, empty, empty,
                              empty if self.usum is not None else None)
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), np.int64)
        inv = components(self.n_parts, pairs[:, 0], pairs[:, 1])
        k = int(inv.max()) + 1
        count = np.bincount(inv, weights=np.concatenate(self.count), minlength=k)
        psum = np.bincount(inv, weights=np.concatenate(self.psum), minlength=k)
        pmax = np.full(k, -np.inf)
        np.maximum.at(pmax, inv, np.concatenate(self.pmax))
        usum = np.bincount(inv, weights=np.concatenate(self.usum), minlength=k) if self.usum is not None else None
        shapes = PartShapes.concat(self.shapes)
        self.shapes = []
        # parts alone in their landslide (nearly all of them) are taken as they are, without a Python
        # step per polygon; only the parts that touch across block borders are dissolved, on other
        # threads while the polygons of the others are built here
        out = np.empty(k, dtype=object)
        alone = np.bincount(inv, minlength=k)[inv] == 1
        with ThreadPoolExecutor(1, thread_name_prefix="lsmap-dissolve") as pool:
            if alone.all():
                out[inv] = shapes.polygons(transform)
            else:  # the polygons of the joined parts are built by join_parts only (a dense mask's are most)
                joined = np.flatnonzero(~alone)
                members = [joined[m] for m in groups(inv[joined])]
                unions = pool.submit(join_parts, shapes, members, transform)
                lone = np.flatnonzero(alone)
                out[inv[lone]] = shapes.polygons(transform, lone)
                for m, union in zip(members, unions.result(), strict=True):
                    out[inv[m[0]]] = union
        # raster order: by the pixel bounds (top row first, then left column), whatever the transform
        b = np.empty((k, 4), np.int64)
        b[:, :2], b[:, 2:] = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        np.minimum.at(b[:, 0], inv, shapes.bounds[:, 0])
        np.minimum.at(b[:, 1], inv, shapes.bounds[:, 1])
        np.maximum.at(b[:, 2], inv, shapes.bounds[:, 2])
        np.maximum.at(b[:, 3], inv, shapes.bounds[:, 3])
        order = np.lexsort((b[:, 2], b[:, 3], b[:, 0], b[:, 1]))
        return Landslides(out[order], count[order], psum[order], pmax[order],
                          usum[order] if usum is not None else None)


def join_parts(shapes: PartShapes, members: list[np.ndarray], transform=None) -> list:
    """One polygon for each group of parts (``members``: indices into ``shapes``) that touch across block
    borders: groups of more than :data:`RETRACE_VERTICES` vertices traced again from their pixels
    (:func:`retrace`), the others dissolved by GEOS (:func:`dissolve`); in order."""
    first = np.zeros(len(shapes.ring_counts) + 1, np.int64)
    np.cumsum(shapes.ring_counts, out=first[1:])
    vertex_end = np.zeros(len(shapes.ring_sizes) + 1, np.int64)
    np.cumsum(shapes.ring_sizes, out=vertex_end[1:])
    part_vertices = vertex_end[first[1:]] - vertex_end[first[:-1]]
    out: list = [None] * len(members)
    for g, m in enumerate(members):
        if part_vertices[m].sum() > RETRACE_VERTICES:
            out[g] = retrace(shapes.take(m), transform)
    rest = [g for g, u in enumerate(out) if u is None]
    if rest:
        parts = shapes.polygons(transform, np.concatenate([members[g] for g in rest]))
        cuts = np.cumsum([len(members[g]) for g in rest])[:-1]
        for g, union in zip(rest, dissolve(np.split(parts, cuts)), strict=True):
            out[g] = union
    return out


#: Landslides to dissolve per extra thread (:func:`dissolve`): fewer run on the calling thread.
DISSOLVE_PER_THREAD = 32


def dissolve(parts: list[np.ndarray], workers: int | None = None) -> list:
    """``shapely.union_all`` of each array of polygons, in order.

    GEOS releases the GIL, so many unions run on ``workers`` threads (default :func:`default_workers`),
    the largest first: on a fragmented 4096^2 mask a few landslides of tens of thousands of vertices take
    most of the time (BENCHMARKS.md, issue 20).
    """
    import shapely

    workers = min(workers or default_workers(), max(1, len(parts) // DISSOLVE_PER_THREAD))
    if workers == 1:
        return [shapely.union_all(p.tolist()) for p in parts]
    sizes = [int(shapely.get_num_coordinates(p).sum()) for p in parts]
    order = sorted(range(len(parts)), key=lambda k: -sizes[k])
    out: list = [None] * len(parts)
    with ThreadPoolExecutor(workers, thread_name_prefix="lsmap-dissolve") as pool:
        for k, union in zip(order, pool.map(lambda k: shapely.union_all(parts[k].tolist()), order), strict=True):
            out[k] = union
    return out


def _cuts(size: int, block: int, edges: list[int] | None, what: str) -> list[int]:
    """``0 .. size`` cut every ``block`` px within each span between ``edges``."""
    bounds = sorted({0, size, *(edges or [])})
    if bounds[0] < 0 or bounds[-1] > size:
        raise ValueError(f"{what} edges must lie in [0, {size}] (got {edges})")
    return sorted({c for a, b in pairwise(bounds) for c in range(a, b, block)} | {size})


class BlockGrid:
    """A grid of blocks partitioning a ``height`` x ``width`` raster: rows every ``block`` px within each
    span between ``row_edges``, columns every ``block`` px within each span between ``col_edges`` (e.g.
    the columns detection finalises panel by panel, so that no block waits for the next panel, and the
    first row it finalises only at the end, so that the blocks traced after the models are few)."""

    def __init__(self, height: int, width: int, block: int, col_edges: list[int] | None = None,
                 row_edges: list[int] | None = None) -> None:
        if block < 2:
            raise ValueError(f"block must be at least 2 pixels (got {block})")
        self.rows = _cuts(height, block, row_edges, "row")
        self.cols = _cuts(width, block, col_edges, "column")

    def cells(self, row_off: int, col_off: int, height: int, width: int) -> list[tuple[int, int]]:
        """The cells ``(i, j)`` a rectangle of the raster overlaps."""
        i0 = bisect.bisect_right(self.rows, row_off) - 1
        i1 = bisect.bisect_left(self.rows, row_off + height)
        j0 = bisect.bisect_right(self.cols, col_off) - 1
        j1 = bisect.bisect_left(self.cols, col_off + width)
        return [(i, j) for i in range(i0, i1) for j in range(j0, j1)]

    def window(self, cell: tuple[int, int]):
        from rasterio.windows import Window

        i, j = cell
        return Window(col_off=self.cols[j], row_off=self.rows[i], width=self.cols[j + 1] - self.cols[j],
                      height=self.rows[i + 1] - self.rows[i])


class BlockStream:
    """Traces a probability raster block by block as its pieces become final, on worker threads.

    :meth:`add` takes a rectangle of final values (every pixel of the raster exactly once, in any
    order); a block of the grid is handed to a worker (:func:`block_parts`) as soon as all its pixels
    have come, and the pieces of incomplete blocks are kept until then (the blocks a piece straddles).
    At most ``2 * workers`` complete blocks wait for a worker: :meth:`add` then waits (so memory stays a
    few blocks). :meth:`landslides` joins the blocks in the order their pixels were completed: the same
    landslides whatever that order and the number of workers. The stream keeps references to the
    arrays given to :meth:`add` until their block is traced: callers must not change them afterwards.

    Args:
        height, width: The raster's size.
        threshold: Probability above which a pixel is a landslide.
        block: Block size (px).
        col_edges, row_edges: Extra column and row edges of the grid (:class:`BlockGrid`).
        with_uncertainty: Pieces come with an uncertainty raster's values too.
        workers: Tracing threads while pieces come (default :func:`default_workers`).
        finish_workers: Tracing threads once :meth:`landslides` is called, for the blocks left (default
            :func:`default_workers`, at least ``workers``): e.g. one beside CPU models, all cores after them.
    """

    def __init__(self, height: int, width: int, threshold: float, *, block: int = 1024,
                 col_edges: list[int] | None = None, row_edges: list[int] | None = None,
                 with_uncertainty: bool = False, workers: int | None = None, finish_workers: int | None = None) -> None:
        for name, n in (("workers", workers), ("finish_workers", finish_workers)):
            if n is not None and n < 1:
                raise ValueError(f"{name} must be positive (got {n})")
        self.grid = BlockGrid(height, width, block, col_edges, row_edges)
        self.threshold, self.with_uncertainty = float(threshold), with_uncertainty
        self.workers = workers or default_workers()
        self.finish_workers = max(self.workers, finish_workers or default_workers())
        # finish_workers threads, of which `workers` may trace at a time until the end (the gate)
        self.pool = ThreadPoolExecutor(self.finish_workers, thread_name_prefix="lsmap-trace")
        self.gate = threading.Semaphore(self.workers)
        self.open: dict[tuple[int, int], list] = {}  # cell -> [p, u, pixels still missing]
        self.done: set[tuple[int, int]] = set()
        self.futures: deque[tuple[tuple[int, int], Future]] = deque()
        self.parts = Parts(with_uncertainty)
        self.lock = threading.Lock()
        self.seconds = 0.0  # summed over the workers' blocks

    def add(self, row_off: int, col_off: int, p: np.ndarray, u: np.ndarray | None = None) -> None:
        """Final values of the rectangle at ``(row_off, col_off)`` (``p``: ``(h, w)`` probability,
        ``u``: the same rectangle of the uncertainty, when the stream has one)."""
        if (u is not None) != self.with_uncertainty:
            raise ValueError("uncertainty values must come with every piece, or with none")
        h, w = p.shape
        for cell in self.grid.cells(row_off, col_off, h, w):
            win = self.grid.window(cell)
            r0, c0 = max(row_off, win.row_off), max(col_off, win.col_off)
            r1 = min(row_off + h, win.row_off + win.height)
            c1 = min(col_off + w, win.col_off + win.width)
            src = (slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off))
            if cell in self.done:
                raise ValueError(f"pixels of block {cell} came twice")
            if (r1 - r0, c1 - c0) == (win.height, win.width):  # the whole block at once: no copy
                self._submit(cell, win, p[src], u[src] if u is not None else None)
                continue
            if cell not in self.open:
                self.open[cell] = [np.empty((win.height, win.width), p.dtype),
                                   np.empty((win.height, win.width), u.dtype) if u is not None else None,
                                   win.height * win.width]
            entry = self.open[cell]
            dst = (slice(r0 - win.row_off, r1 - win.row_off), slice(c0 - win.col_off, c1 - win.col_off))
            entry[0][dst] = p[src]
            if u is not None:
                entry[1][dst] = u[src]
            entry[2] -= (r1 - r0) * (c1 - c0)
            if entry[2] < 0:
                raise ValueError(f"pixels of block {cell} came twice")
            if entry[2] == 0:
                del self.open[cell]
                self._submit(cell, win, entry[0], entry[1])

    def _submit(self, cell, win, p: np.ndarray, u: np.ndarray | None) -> None:
        self.done.add(cell)
        self.futures.append((cell, self.pool.submit(self._trace, win, p, u)))
        while sum(not f.done() for _, f in self.futures) > 2 * self.workers:  # back-pressure
            next(f for _, f in self.futures if not f.done()).result()
        while self.futures and self.futures[0][1].done():  # join what is ready, in completion order
            cell, f = self.futures.popleft()
            self.parts.add(cell, f.result())

    def _trace(self, win, p, u) -> BlockParts:
        with self.gate:
            t0 = time.perf_counter()
            out = block_parts(win, p, u, self.threshold)
            with self.lock:
                self.seconds += time.perf_counter() - t0
        return out

    def landslides(self, transform=None) -> Landslides:
        """Wait for the blocks still being traced and return the landslides (polygons mapped by the affine
        ``transform``; default: pixel coordinates).

        Raises:
            ValueError: some pixels of the raster never came.
        """
        for _ in range(self.finish_workers - self.workers):  # the blocks left on every thread
            self.gate.release()
        self.workers = self.finish_workers
        while self.futures:
            cell, f = self.futures.popleft()
            self.parts.add(cell, f.result())
        missing = (len(self.grid.rows) - 1) * (len(self.grid.cols) - 1) - len(self.done)
        if missing:
            raise ValueError(f"{missing} blocks of the raster are incomplete")
        self.close()
        return self.parts.landslides(transform)

    def close(self) -> None:
        """Stop the workers (blocks not started are dropped)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
