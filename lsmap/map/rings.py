"""The rings of labelled pixel regions, traced with numpy: vertex arrays out, no Python object per vertex.

Each label of an image is a region (4-connected, as :func:`lsmap.map.components.label_block` labels them).
Its boundary runs along pixel edges with the region on its left (y down, as in the image); only the
corners where the boundary turns are vertices. The rings come out as GDAL's polygonizer traces the same
regions (``rasterio.features.shapes``, 4-connected; the same vertices, tested): each ring starts at its
top-left vertex (least row, then column), the exterior first, then the holes in the order of their first
vertex; where a region meets itself at a pixel corner (two of its pixels diagonal), its rings turn to keep
the other pixels whole, so that rings touch there rather than cross.

How: every corner of every region is found from the 2 x 2 pixels around each pixel corner; each corner's
successor is the corner that ends the straight run it starts (the corners of each line of a region, sorted,
pair up); rings are the cycles of that successor map (``scipy.sparse.csgraph``), walked in one depth-first
pass after linking each ring's last corner to the next ring's first. Time and memory follow the pixels and
the vertices, whatever the shape: a region spanning a dense scene with hundreds of thousands of holes costs
no more per vertex than many small ones, where GDAL hands such a polygon over as millions of Python tuples
at once (BENCHMARKS.md: 1.5-1.8 s and 283 MB against 6.7-8.4 s and 788 MB for 5.4 M vertices).
"""

from __future__ import annotations

import numpy as np

# directions of travel: the region is on the left (y grows downwards)
EAST, SOUTH, WEST, NORTH = 0, 1, 2, 3

# For the four pixels around a corner (bit 0: north-west, 1: north-east, 2: south-west, 3: south-east),
# those of one region give the directions in and out of the corner: one pixel (a convex corner), three
# (a concave one), two diagonal pixels (two corners, turning right: the other pixels stay whole), else none.
_TURNS: dict[int, tuple[tuple[int, int], ...]] = {
    0b1000: ((WEST, SOUTH),),
    0b0100: ((NORTH, WEST),),
    0b0010: ((SOUTH, EAST),),
    0b0001: ((EAST, NORTH),),
    0b1110: ((SOUTH, WEST),),
    0b1101: ((WEST, NORTH),),
    0b1011: ((EAST, SOUTH),),
    0b0111: ((NORTH, EAST),),
    0b1001: ((EAST, SOUTH), (WEST, NORTH)),
    0b0110: ((SOUTH, WEST), (NORTH, EAST)),
}


def _turn_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 4-bit pattern: the number of corners, and the in and out directions of the first and second."""
    count = np.zeros(16, np.int8)
    d_in = np.zeros((16, 2), np.int8)
    d_out = np.zeros((16, 2), np.int8)
    for pattern, turns in _TURNS.items():
        count[pattern] = len(turns)
        for k, (a, b) in enumerate(turns):
            d_in[pattern, k], d_out[pattern, k] = a, b
    return count, d_in, d_out


_COUNT, _IN, _OUT = _turn_tables()


def _corners(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every corner of every region: ``(x, y, label, in, out)`` arrays, ``x``/``y`` the pixel corner (int32)."""
    h, w = labels.shape
    pad = np.zeros((h + 2, w + 2), labels.dtype)
    pad[1:-1, 1:-1] = labels
    nw, ne, sw, se = pad[:-1, :-1], pad[:-1, 1:], pad[1:, :-1], pad[1:, 1:]
    # corners lie only where the four pixels are not all the same
    busy = nw != ne
    busy |= nw != sw
    busy |= nw != se
    at = np.flatnonzero(busy)  # flat indices of the (h + 1, w + 1) pixel corners
    del busy
    flat = pad.ravel()
    nw_at = at + at // (w + 1)  # the north-west pixel of each corner, in the padded image
    cells = [flat[nw_at + step] for step in (0, 1, w + 2, w + 3)]  # north-west, north-east, south-west, south-east
    del nw_at, pad, flat
    xs, ys, labs, ins, outs = [], [], [], [], []
    for k, lab in enumerate(cells):
        # each region once per corner: the first of the four pixels that holds it
        first = lab != 0
        for j in range(k):
            first &= cells[j] != lab
        pick = np.flatnonzero(first)
        del first
        lab = lab[pick]
        pattern = np.zeros(len(pick), np.int8)
        for j, other in enumerate(cells):
            pattern |= (other[pick] == lab).astype(np.int8) << j
        n = _COUNT[pattern]
        for turn in (0, 1):
            sel = np.flatnonzero(n > turn)
            where = at[pick[sel]]
            ys.append((where // (w + 1)).astype(np.int32))
            xs.append((where % (w + 1)).astype(np.int32))
            labs.append(lab[sel])
            ins.append(_IN[pattern[sel], turn])
            outs.append(_OUT[pattern[sel], turn])
    return tuple(np.concatenate(a) for a in (xs, ys, labs, ins, outs))


def _successors(x: np.ndarray, y: np.ndarray, lab: np.ndarray, d_in: np.ndarray, d_out: np.ndarray,
                size: int) -> np.ndarray:
    """For each corner, the next corner of its region's boundary.

    A boundary runs straight from a corner left in a direction to the corner entered in that direction; no
    other corner of the region lies between, and no pixel corner both ends and starts runs of one direction.
    So on each line (row or column) of a region, its corners in one direction, by position, are runs' starts
    and ends in turn: sorting them pairs each start with its end.
    """
    nxt = np.empty(len(x), np.int32)
    for d in (EAST, SOUTH, WEST, NORTH):
        line, pos = (y, x) if d in (EAST, WEST) else (x, y)
        sel = np.flatnonzero((d_in == d) | (d_out == d))
        key = lab[sel].astype(np.int64)
        key *= size
        key += line[sel]
        key *= size
        key += pos[sel]
        sel = sel[np.argsort(key, kind="stable")]
        del key
        if d in (EAST, SOUTH):  # runs towards growing positions: start, end, start, end...
            nxt[sel[0::2]] = sel[1::2]
        else:  # towards lower positions: end, start, end, start...
            nxt[sel[1::2]] = sel[0::2]
    return nxt


def trace_regions(labels: np.ndarray, col_off: int = 0, row_off: int = 0) -> tuple[np.ndarray, ...]:
    """The rings of every region of a label image (labels ``1..n``; 0 = none), in pixel coordinates offset by
    ``(col_off, row_off)``. Each label must be one 4-connected region (as ``scipy.ndimage.label`` gives them):
    two regions of one label that meet at a pixel corner would be traced as one ring through that corner twice.

    Shape:
        ``labels``: ``(h, w)`` integers.

    Returns:
        ``(xy, ring_sizes, owners, ring_counts)``: ``(v, 2)`` int32 vertices (column, row) ring after ring, each
        ring closed (its first vertex repeated), regions in label order, each region's exterior first; the
        vertices of each ring; the label - 1 of each ring; the rings of each region present, in label order.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components, depth_first_order

    h, w = labels.shape
    x, y, lab, d_in, d_out = _corners(labels)
    n = len(x)
    if not n:
        return np.zeros((0, 2), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    size = max(h, w) + 2
    nxt = _successors(x, y, lab, d_in, d_out, size)
    del d_in

    def one_edge_each(to: np.ndarray):  # the graph corner -> to[corner]
        return csr_matrix((np.ones(n, np.int8), to, np.arange(n + 1, dtype=np.int32)), shape=(n, n))

    n_rings, ring = connected_components(one_edge_each(nxt), directed=True, connection="weak")
    # each ring's first corner: its top-left (least row, then column; a ring passes a pixel corner once)
    at = y.astype(np.int64)
    at *= size
    at += x
    best = np.full(n_rings, np.iinfo(np.int64).max)
    np.minimum.at(best, ring, at)
    starts = np.flatnonzero(at == best[ring])
    del at, best
    starts = starts[np.argsort(ring[starts])]
    # rings by label, the exterior (leaving its top-left corner southwards) first, then the holes by first corner
    ring_order = np.lexsort((x[starts], y[starts], d_out[starts] != SOUTH, lab[starts]))
    starts = starts[ring_order]
    sizes = np.bincount(ring, minlength=n_rings)[ring[starts]]
    del ring
    # one walk through every ring from its start, going on from its last corner to the next ring's start
    last = np.empty(n, np.int32)
    last[nxt] = np.arange(n, dtype=np.int32)
    nxt[last[starts]] = np.roll(starts, -1)
    del last
    walk = depth_first_order(one_edge_each(nxt), int(starts[0]), directed=True, return_predecessors=False)
    del nxt
    # the vertices: each ring's corners, then its first corner again
    closing = np.zeros(n + len(starts), bool)
    closing[np.cumsum(sizes) + np.arange(len(starts))] = True
    xy = np.empty((n + len(starts), 2), np.int32)
    for c, v, off in ((0, x, col_off), (1, y, row_off)):
        xy[~closing, c] = v[walk]
        xy[closing, c] = v[starts]
        xy[:, c] += off
    owners = lab[starts].astype(np.int64) - 1
    _, ring_counts = np.unique(owners, return_counts=True)
    return xy, sizes + 1, owners, ring_counts
