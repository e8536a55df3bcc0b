"""Landslides traced block by block from pieces that come in any order (lsmap.map.components)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import rasterio
import torch
from detect_fixtures import member, smooth_scene, write_scene
from rasterio.transform import from_origin

from lsmap.core.normalize import BandStats
from lsmap.map.components import BlockGrid, BlockStream
from lsmap.map.stream import PROB_NODATA, final_columns, last_window_row, predict_scene
from lsmap.map.vectorize import landslide_table, vectorize

TRANSFORM = from_origin(500000.0, 3000000.0, 10.0, 10.0)


def write(path, a):
    with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=1, dtype="float32",
                       crs="EPSG:32645", transform=TRANSFORM, nodata=PROB_NODATA) as dst:
        dst.write(a.astype(np.float32)[None])
    return path


def same_layers(got, ref, columns=("area_m2", "mean_prob", "max_prob")):
    assert len(got) == len(ref)
    assert all(a.equals(b) for a, b in zip(got.geometry, ref.geometry, strict=True))  # and the same order
    for c in columns:
        np.testing.assert_allclose(got[c], ref[c], rtol=1e-12)


def pieces(height, width, rng):
    """The raster cut at random rows and columns into rectangles (straddling blocks), shuffled."""
    rows = [0, *sorted(rng.choice(np.arange(1, height), 5, replace=False)), height]
    cols = [0, *sorted(rng.choice(np.arange(1, width), 6, replace=False)), width]
    out = [(r0, c0, r1, c1) for r0, r1 in pairwise(rows) for c0, c1 in pairwise(cols)]
    return [out[k] for k in rng.permutation(len(out))]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("col_edges", [None, [37, 50]])
def test_pieces_in_any_order_give_vectorize_output(tmp_path, seed, col_edges):
    """Rectangles of any shape, in any order, on a grid with extra column edges: the same landslides,
    order and attributes as vectorising the raster file (parts crossing borders joined)."""
    rng = np.random.default_rng(seed)
    p = (rng.random((70, 90)) < 0.45).astype(np.float32) * rng.uniform(0.6, 1.0, (70, 90)).astype(np.float32)
    p[:5, :7] = PROB_NODATA
    u = rng.random((70, 90)).astype(np.float32)
    ref = vectorize(write(tmp_path / "p.tif", p), uncertainty=write(tmp_path / "u.tif", u), block=16)
    stream = BlockStream(70, 90, 0.5, block=16, col_edges=col_edges, with_uncertainty=True, workers=2)
    for r0, c0, r1, c1 in pieces(70, 90, rng):
        stream.add(r0, c0, p[r0:r1, c0:c1], u[r0:r1, c0:c1])
    got = landslide_table(stream.landslides(TRANSFORM), "EPSG:32645", with_uncertainty=True)
    assert len(ref) > 20
    same_layers(got, ref, ("area_m2", "mean_prob", "max_prob", "mean_unc"))


def test_pixels_twice_or_missing_are_refused():
    p = np.zeros((20, 20), np.float32)
    stream = BlockStream(20, 20, 0.5, block=8)
    stream.add(0, 0, p[:10, :10])
    with pytest.raises(ValueError, match="came twice"):
        stream.add(5, 5, p[:10, :10])
    stream.close()
    stream = BlockStream(20, 20, 0.5, block=8)
    stream.add(0, 0, p[:, :12])
    with pytest.raises(ValueError, match="incomplete"):
        stream.landslides()
    with pytest.raises(ValueError, match="uncertainty"):
        stream.add(0, 12, p[:, 12:], p[:, 12:])
    stream.close()


def test_grid_columns_split_each_span():
    grid = BlockGrid(30, 100, 16, col_edges=[40, 70])
    assert grid.rows == [0, 16, 30]
    assert grid.cols == [0, 16, 32, 40, 56, 70, 86, 100]
    assert grid.cells(10, 35, 10, 10) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    grid = BlockGrid(50, 20, 16, row_edges=[37])
    assert grid.rows == [0, 16, 32, 37, 50]
    with pytest.raises(ValueError, match="row edges"):
        BlockGrid(50, 20, 16, row_edges=[51])


def test_blocks_left_at_the_end_are_traced_on_more_threads(monkeypatch):
    """While pieces come, ``workers`` blocks are traced at a time; the blocks left when the landslides are
    asked for, on ``finish_workers`` threads; the landslides are the same."""
    import threading
    import time

    from lsmap.map import components

    real = components.block_parts
    lock, active, most, go = threading.Lock(), [0], [0], threading.Event()

    def held_parts(*args):  # each block held until `go`, so that the threads in it can be counted
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        go.wait(10)
        with lock:
            active[0] -= 1
        return real(*args)

    def wait_for(n):
        t0 = time.monotonic()
        while active[0] < n and time.monotonic() - t0 < 10:
            time.sleep(0.01)

    p = (np.random.default_rng(2).random((32, 64)) > 0.6).astype(np.float32)
    monkeypatch.setattr(components, "block_parts", held_parts)
    stream = BlockStream(32, 64, 0.5, block=32, workers=1, finish_workers=2)
    stream.add(0, 0, p[:, :32])
    stream.add(0, 32, p[:, 32:])  # two blocks: no back-pressure wait
    wait_for(1)
    time.sleep(0.2)
    assert most[0] == 1  # the second block waits for the first while pieces may still come
    found = []
    finishing = threading.Thread(target=lambda: found.append(stream.landslides()))
    finishing.start()
    wait_for(2)
    assert most[0] == 2  # both blocks on threads once the landslides are asked for
    go.set()
    finishing.join(10)
    ref = BlockStream(32, 64, 0.5, block=64, workers=1)
    ref.add(0, 0, p)
    got, want = found[0].geoms, ref.landslides().geoms  # both in raster order
    assert len(got) == len(want) > 10 and all(a.equals(b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("uncertainty", [False, True])
def test_detect_stream_traces_what_the_blender_writes(tmp_path, monkeypatch, uncertainty):
    """predict_scene's pieces (column panels, row by row) traced while it runs: the landslides of the
    probability raster it wrote, on a grid whose blocks never wait for the next panel."""
    import lsmap.map.stream as stream_mod

    monkeypatch.setattr(stream_mod, "PANEL_WIDTH", 64)
    data = smooth_scene(np.random.default_rng(4))
    path = write_scene(tmp_path / "s.tif", data)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(14, 2, 5, padding=2)
    stats = BandStats((1.0,) * 14, (0.4,) * 14, 1)
    h, w = data.shape[1:]
    edges = final_columns(h, w, 64, 16)
    assert len(edges) > 2  # several panels
    stream = BlockStream(h, w, 0.5, block=40, col_edges=edges, with_uncertainty=uncertainty)
    open_blocks = []
    add = stream.add

    def sink(*args):
        add(*args)
        open_blocks.append(len(stream.open))

    unc = tmp_path / "u.tif" if uncertainty else None
    predict_scene(path, [member(conv)], tmp_path / "p.tif", stats=stats, window=64, overlap=16, device="cpu",
                  uncertainty_out=unc, tta=uncertainty, sink=sink)
    got = landslide_table(stream.landslides(TRANSFORM), "EPSG:32645", with_uncertainty=uncertainty)
    ref = vectorize(tmp_path / "p.tif", uncertainty=unc, block=40)
    assert len(ref) > 3
    cols = ("area_m2", "mean_prob", "max_prob") + (("mean_unc",) if uncertainty else ())
    same_layers(got.set_crs(ref.crs, allow_override=True), ref, cols)
    panel_blocks = max(-(-(b - a) // 40) for a, b in pairwise(edges))
    assert max(open_blocks) <= panel_blocks  # blocks of one panel's row of blocks at most


def test_detect_traces_on_one_thread_beside_cpu_models_and_on_all_cores_beside_a_gpu():
    """CPU model workers keep the cores busy (a second tracer only adds memory); a GPU leaves them free."""
    from types import SimpleNamespace

    from lsmap.map.components import default_workers
    from lsmap.map.detect import _block_stream
    from lsmap.map.options import DetectOptions

    info = SimpleNamespace(height=3000, width=5000)
    opts = DetectOptions(window=512, overlap=32)
    for dev, workers in ((torch.device("cpu"), 1), (torch.device("cuda"), default_workers())):
        stream = _block_stream(info, 0.5, opts, dev)
        try:
            assert (stream.workers, stream.finish_workers) == (workers, default_workers())
            assert set(final_columns(3000, 5000, 512, 32)) <= set(stream.grid.cols)  # no block spans two panels
            assert last_window_row(3000, 512, 32) == 2488 and 2488 in stream.grid.rows  # few rows left at the end
        finally:
            stream.close()


def test_dissolve_on_threads_keeps_the_order_and_the_unions():
    """Many groups (the threaded path, largest first) give each group's union in the given order."""
    import shapely

    from lsmap.map.components import DISSOLVE_PER_THREAD, dissolve

    rng = np.random.default_rng(0)
    groups, expected = [], []
    for k in range(3 * DISSOLVE_PER_THREAD):
        n = int(rng.integers(2, 9))  # n unit squares side by side: their union is one n x 1 box
        groups.append(np.array([shapely.box(i, 2 * k, i + 1, 2 * k + 1) for i in range(n)], dtype=object))
        expected.append(shapely.box(0, 2 * k, n, 2 * k + 1))
    threaded, serial = dissolve(groups, workers=2), dissolve(groups, workers=1)
    assert all(a.equals(b) for a, b in zip(threaded, expected, strict=True))
    assert all(a.equals(b) for a, b in zip(serial, expected, strict=True))


@pytest.mark.parametrize("density", [0.45, 0.62])
def test_landslides_joined_across_borders_are_traced_again_as_their_union(tmp_path, monkeypatch, density):
    """Joined landslides above RETRACE_VERTICES are traced again from their pixels (edge parity of the parts'
    rings, then GDAL): the same polygons, order and attributes as GEOS's union of the parts, also on a dense
    mask whose landslides span every block with many holes (where the union took minutes at 4096^2)."""
    import lsmap.map.components as C

    rng = np.random.default_rng(7)
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.random((150, 170)), 0.7)
    p = np.where(f > np.quantile(f, 1 - density), 0.9, 0.1).astype(np.float32)
    p[:4, :6] = PROB_NODATA
    path = write(tmp_path / "p.tif", p)
    monkeypatch.setattr(C, "RETRACE_VERTICES", 10**12)  # GEOS for every joined landslide
    union = vectorize(path, block=32)
    calls = []
    real = C.retrace
    monkeypatch.setattr(C, "retrace", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(C, "RETRACE_VERTICES", 0)  # traced again, every one
    traced = vectorize(path, block=32)
    assert calls and len(union) > 10
    same_layers(traced, union)
    assert traced.geometry.is_valid.all()


def test_parts_mask_gives_back_the_pixels_of_parts_and_retrace_refuses_two_polygons():
    """Edge parity over the parts' rings gives exactly their pixels (shared block borders cancel); parts that
    are not one polygon are not traced again (the caller dissolves them)."""
    from scipy import ndimage

    from lsmap.map.components import Parts, PartShapes, block_parts, label_polygons, parts_mask, retrace

    rng = np.random.default_rng(3)
    p = (ndimage.gaussian_filter(rng.random((64, 80)), 0.8) > 0.5).astype(np.float32)
    grid = BlockGrid(64, 80, 16)
    parts = Parts(with_uncertainty=False)
    for cell in [(i, j) for i in range(len(grid.rows) - 1) for j in range(len(grid.cols) - 1)]:
        win = grid.window(cell)
        parts.add(cell, block_parts(win, p[win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width],
                                    None, 0.5))
    shapes = PartShapes.concat(parts.shapes)
    mask, c0, r0 = parts_mask(shapes)
    want = p[r0:r0 + mask.shape[0], c0:c0 + mask.shape[1]] > 0.5
    np.testing.assert_array_equal(mask.astype(bool), want)
    labels, n = ndimage.label(p > 0.5)
    assert n > 1 and retrace(shapes) is None, "several landslides are not one polygon"
    for pair, one in (([[1, 0], [0, 1]], False), ([[1, 1], [0, 1]], True)):  # pixels touching at a corner only
        lab, k = ndimage.label(np.asarray(pair))
        two = label_polygons(lab.astype(np.int32), np.bincount(lab.ravel())[1:], 0, 0)
        assert (retrace(two) is not None) == one


def test_polygons_built_in_chunks_are_the_same_polygons(monkeypatch):
    """Building the parts' polygons a chunk at a time (bounded float copies) gives WKB-identical polygons,
    mapped by the affine transform vertex by vertex as a * x + b * y + c."""
    import shapely

    import lsmap.map.components as C
    from lsmap.map.components import block_parts

    rng = np.random.default_rng(5)
    p = (rng.random((40, 50)) < 0.5).astype(np.float32)
    shapes = block_parts(BlockGrid(40, 50, 64).window((0, 0)), p, None, 0.5).shapes
    t = from_origin(91.7574, 22.4924, 8.98e-05, 8.98e-05)
    whole = shapes.polygons(t)
    monkeypatch.setattr(C, "POLYGON_CHUNK", 7)
    chunked = shapes.polygons(t)
    assert len(whole) > 50 and list(shapely.to_wkb(chunked)) == list(shapely.to_wkb(whole))
    xy = shapes.xy.astype(np.float64)
    want = np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f])
    np.testing.assert_array_equal(shapely.get_coordinates(chunked), want)


def test_polygons_of_some_parts_are_those_of_the_whole(monkeypatch):
    """Law: ``polygons(transform, parts=idx)`` is ``polygons(transform)[idx]``, and each vertex is mapped as
    ``a x + b y + c``, ``d x + e y + f``: WKB for WKB, however many chunks of parts and vertices it is built in."""
    import shapely

    from lsmap.map import components as C

    labels, n = C.label_block(np.random.default_rng(11).random((50, 47)), 0.5)
    parts = C.label_polygons(labels, np.bincount(labels.ravel(), minlength=n + 1)[1:], 5, 6)
    idx = np.random.default_rng(0).permutation(n)[: n // 2]
    t = from_origin(500000.3, 3000000.7, 10.1, 9.9)
    want = [g.wkb for g in shapely.transform(parts.polygons()[idx], lambda xy: np.stack(
        [t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f], 1))]
    for chunk, vertices in ((1, 3), (7, 1000), (C.POLYGON_CHUNK, C.MAP_CHUNK)):
        monkeypatch.setattr(C, "POLYGON_CHUNK", chunk)
        monkeypatch.setattr(C, "MAP_CHUNK", vertices)
        assert [g.wkb for g in parts.polygons(t, parts=idx)] == want
