"""Laws of the pure window grid, padding and blend weights (lsmap.core.windows)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lsmap.core.windows import (
    Window,
    blend_weight,
    block_grid,
    offsets,
    owned_spans,
    pad_to,
    spread_sample,
    window_grid,
)


@st.composite
def grids(draw, max_len: int = 700, max_size: int = 256):
    """(height, width, size, overlap) with 0 <= overlap < size."""
    height = draw(st.integers(1, max_len))
    width = draw(st.integers(1, max_len))
    size = draw(st.integers(1, max_size))
    overlap = draw(st.integers(0, size - 1))
    return height, width, size, overlap


def coverage(height: int, width: int, windows: list[Window]) -> np.ndarray:
    """How many windows cover each pixel (2-D difference array, so large grids stay fast)."""
    diff = np.zeros((height + 1, width + 1), np.int64)
    r0 = np.array([w.row_off for w in windows])
    c0 = np.array([w.col_off for w in windows])
    r1 = r0 + np.array([w.height for w in windows])
    c1 = c0 + np.array([w.width for w in windows])
    np.add.at(diff, (r0, c0), 1)
    np.add.at(diff, (r0, c1), -1)
    np.add.at(diff, (r1, c0), -1)
    np.add.at(diff, (r1, c1), 1)
    return diff.cumsum(0).cumsum(1)[:height, :width]


@settings(max_examples=150, deadline=None)
@given(grids())
@example((1, 1, 1, 0))
@example((1, 700, 128, 0))  # a raster thinner than one window
@example((128, 128, 128, 0))  # exactly one window
@example((129, 129, 128, 0))  # one pixel more: last window snapped back by 127 px
@example((700, 700, 2, 1))  # stride 1: the largest grid
@example((700, 3, 256, 255))
@example((300, 300, 128, 127))
def test_window_grid_covers_every_pixel_inside_the_raster(case):
    """Every pixel is covered by at least one window; every window lies inside the raster and is
    size x size, clipped only where the raster itself is smaller than size."""
    height, width, size, overlap = case
    grid = window_grid(height, width, size, overlap)
    assert grid
    for w in grid[:: max(1, len(grid) // 200)] + grid[-1:]:
        assert w.row_off >= 0 and w.col_off >= 0
        assert w.row_off + w.height <= height and w.col_off + w.width <= width
        assert (w.height, w.width) == (min(size, height), min(size, width))
    assert (coverage(height, width, grid) >= 1).all()
    # row-major and without duplicates
    keys = [(w.row_off, w.col_off) for w in grid]
    assert keys == sorted(set(keys))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(8, 256))
@example(1, 1, 1)
@example(300, 300, 1)
@example(128, 129, 128)
@example(5, 700, 256)
def test_block_grid_partitions_the_raster(height, width, size):
    """Every pixel lies in exactly one block; blocks are inside the raster, at most size x size."""
    grid = block_grid(height, width, size)
    assert (coverage(height, width, grid) == 1).all()
    assert all(0 < w.height <= size and 0 < w.width <= size for w in grid)
    assert all(w.row_off + w.height <= height and w.col_off + w.width <= width for w in grid)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 700), st.integers(1, 256), st.data())
@example(129, 128, None)
def test_offsets_step_by_stride_and_snap_to_the_end(length, size, data):
    """Offsets start at 0, increase by at most size - overlap (so neighbours share >= overlap
    pixels and leave no gap), and the last one ends exactly at the raster end (or at 0 if the
    raster is shorter than a window)."""
    overlap = data.draw(st.integers(0, size - 1)) if data is not None else 0
    offs = offsets(length, size, overlap)
    assert offs[0] == 0
    assert offs[-1] == max(0, length - size)
    steps = np.diff(offs)
    assert (steps > 0).all() and (steps <= size - overlap).all()
    # all but the last (snapped) step are exactly the stride
    assert (steps[:-1] == size - overlap).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 700), st.integers(1, 256), st.data())
@example(300, 128, None)
def test_owned_spans_partition_the_axis_each_position_in_the_window_it_is_furthest_inside(length, size, data):
    """Spans partition [0, length); each lies inside its window; a position belongs to a window it is
    at least as far inside (from the nearer end) as any other window holding it, within half a pixel."""
    overlap = data.draw(st.integers(0, size - 1)) if data is not None else 0
    spans = owned_spans(length, size, overlap)
    assert list(spans) == offsets(length, size, overlap)
    flat = [p for a, b in spans.values() for p in range(a, b)]
    assert flat == list(range(length))
    for o, (a, b) in spans.items():
        end = min(o + size, length)
        assert o <= a <= b <= end

    def depth(p, o):
        return min(p - o, min(o + size, length) - 1 - p)

    for o, (a, b) in spans.items():
        for p in (a, b - 1, (a + b) // 2) if b > a else ():
            holders = [q for q in spans if q <= p < min(q + size, length)]
            assert depth(p, o) >= max(depth(p, q) for q in holders) - 1


@pytest.mark.parametrize("bad", [(0, 8, 0), (8, 0, 0), (8, 4, 4), (8, 4, -1)])
def test_offsets_reject_bad_arguments(bad):
    with pytest.raises(ValueError):
        offsets(*bad)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 3), st.floats(-1e6, 1e6, allow_nan=False))
@example(40, 40, 0, 0.0)
@example(1, 1, 2, np.nan)
def test_pad_to_then_crop_is_identity(h, w, lead, fill):
    """pad_to(a, size)[..., :h, :w] == a, the result is size x size, the rest equals fill."""
    size = 40
    a = np.random.default_rng(h * 41 + w).normal(size=(2,) * lead + (h, w)).astype(np.float32)
    p = pad_to(a, size, fill)
    assert p.shape == (2,) * lead + (size, size) and p.dtype == a.dtype
    np.testing.assert_array_equal(p[..., :h, :w], a)
    rest = np.ones((size, size), bool)
    rest[:h, :w] = False
    np.testing.assert_array_equal(p[..., rest], np.float32(fill))


def test_pad_to_rejects_too_large():
    with pytest.raises(ValueError):
        pad_to(np.zeros((3, 9, 4)), 8, 0)


def stitch(height: int, width: int, size: int, overlap: int, patches) -> np.ndarray:
    """Weighted blend of per-window patches (what sliding-window inference does)."""
    weight = blend_weight(size, overlap).astype(np.float64)
    acc = np.zeros((height, width))
    wsum = np.zeros((height, width))
    for w, patch in zip(window_grid(height, width, size, overlap), patches, strict=False):
        ww = weight[: w.height, : w.width]
        acc[w.toslices()] += ww * patch
        wsum[w.toslices()] += ww
    return acc / wsum


@settings(max_examples=60, deadline=None)
@given(grids(max_len=200, max_size=64), st.floats(-1e3, 1e3, allow_nan=False))
@example((200, 200, 64, 63), 1.0)
@example((5, 200, 64, 32), -3.5)
@example((64, 64, 64, 0), 0.0)
def test_blend_weight_stitching_keeps_a_constant_constant(case, value):
    """Blending windows that all predict the same constant gives that constant everywhere."""
    height, width, size, overlap = case
    n = len(window_grid(height, width, size, overlap))
    out = stitch(height, width, size, overlap, [value] * n)
    np.testing.assert_allclose(out, value, rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(grids(max_len=150, max_size=48))
def test_blend_weight_stitching_reproduces_the_raster(case):
    """Windows cut from a raster and blended back give the raster (identity model)."""
    height, width, size, overlap = case
    raster = np.random.default_rng(height + width).normal(size=(height, width))
    grid = window_grid(height, width, size, overlap)
    out = stitch(height, width, size, overlap, [raster[w.toslices()] for w in grid])
    np.testing.assert_allclose(out, raster, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size,overlap", [(16, 0), (16, 4), (9, 8), (1, 0)])
def test_blend_weight_shape_and_range(size, overlap):
    w = blend_weight(size, overlap)
    assert w.shape == (size, size) and w.dtype == np.float32
    assert (w > 0).all() and (w <= 1).all()
    np.testing.assert_array_equal(w, w.T)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(16, 300), st.integers(1, 2_000_000))
def test_spread_sample_is_a_spread_subset_of_the_block_grid(height, width, size, budget):
    cells = block_grid(height, width, size)
    sample = spread_sample(height, width, size, budget)
    k = max(1, budget // (size * size))
    assert sample and len(set(sample)) == len(sample) and set(sample) <= set(cells)
    assert sample == sorted(sample, key=lambda w: (w.row_off, w.col_off))  # row-major, like the grid
    if k >= len(cells):
        assert sample == cells
    else:
        assert len(sample) <= k
        rows = -(-height // size)
        # every row of cells gets its share: k points, at most ceil(k / rows) per row, none empty
        # when there are at least as many points as rows
        per_row = {}
        for w in sample:
            per_row[w.row_off] = per_row.get(w.row_off, 0) + 1
        assert max(per_row.values()) <= -(-k // rows)
        if k >= rows:
            assert len(per_row) == rows


def test_spread_sample_does_not_alias_with_a_periodic_field():
    """A regular every-other-cell lattice sees only one phase of a field with a two-cell period;
    the golden-ratio lattice sees both about equally."""
    sample = spread_sample(4096, 4096, 256, 64 * 256 * 256)
    phases = [((w.row_off // 256) % 2, (w.col_off // 256) % 2) for w in sample]
    counts = [phases.count(p) for p in [(0, 0), (0, 1), (1, 0), (1, 1)]]
    assert len(sample) == 64 and min(counts) >= 12
