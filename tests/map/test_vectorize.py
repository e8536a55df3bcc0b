"""Block-wise vectorisation of probability rasters (lsmap.map.vectorize)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from scipy import ndimage

from lsmap.errors import InputError, OutputExistsError
from lsmap.map.stream import PROB_NODATA
from lsmap.map.vectorize import areas_m2, vectorize, write_vector


def write_prob(path, p, *, crs="EPSG:32645", transform=None):
    transform = transform or from_origin(500000.0, 3000000.0, 10.0, 10.0)
    with rasterio.open(path, "w", driver="GTiff", width=p.shape[1], height=p.shape[0], count=1, dtype="float32",
                       crs=crs, transform=transform, nodata=PROB_NODATA) as dst:
        dst.write(p.astype(np.float32)[None])
    return path


def test_polygons_match_a_known_mask(tmp_path):
    p = np.full((100, 120), 0.1, np.float32)
    p[10:20, 10:30] = 0.9  # 200 px
    p[50:80, 60:70] = 0.7  # 300 px
    p[55, 65] = 0.95
    p[90:95, 100:120] = PROB_NODATA  # nodata never becomes a polygon
    gdf = vectorize(write_prob(tmp_path / "p.tif", p), threshold=0.5, block=32)
    assert gdf.crs == "EPSG:32645" and len(gdf) == 2
    assert list(gdf["id"]) == [1, 2]
    np.testing.assert_allclose(gdf["area_m2"], [200 * 100.0, 300 * 100.0])
    np.testing.assert_allclose(gdf["mean_prob"], [0.9, (0.7 * 299 + 0.95) / 300], rtol=1e-6)
    np.testing.assert_allclose(gdf["max_prob"], [0.9, 0.95], rtol=1e-6)
    assert gdf.geometry.iloc[0].equals(shapely.box(500100, 3000000 - 200, 500300, 3000000 - 100))


def test_blob_crossing_block_borders_is_one_polygon(tmp_path):
    """A blob spanning several blocks, and a U shape whose arms meet only in another block, each
    come out as one polygon identical to the one from a single block."""
    p = np.zeros((64, 64), np.float32)
    yy, xx = np.mgrid[:64, :64]
    p[(yy - 20) ** 2 + (xx - 20) ** 2 < 14**2] = 0.8  # disc around a block corner (block 16)
    p[40:60, 40:43] = p[40:60, 50:53] = p[57:60, 40:53] = 0.9  # U: arms joined at the bottom
    path = write_prob(tmp_path / "p.tif", p)
    small, whole = vectorize(path, block=16), vectorize(path, block=1024)
    assert len(small) == len(whole) == 2
    for a, b in zip(small.geometry, whole.geometry, strict=False):
        assert a.geom_type == "Polygon" and a.equals(b)
    np.testing.assert_allclose(small["mean_prob"], whole["mean_prob"])
    np.testing.assert_allclose(small["area_m2"], whole["area_m2"])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), block=st.integers(2, 40), fraction=st.floats(0.2, 0.7))
@example(seed=0, block=2, fraction=0.6)
def test_polygons_are_the_4_connected_components_for_any_block_size(tmp_path_factory, seed, block, fraction):
    """Law: one polygon per 4-connected component of p > threshold, areas summing to the pixel
    count times the pixel area, whatever the block size."""
    rng = np.random.default_rng(seed)
    p = (rng.random((37, 45)) < fraction).astype(np.float32) * 0.9
    path = write_prob(tmp_path_factory.mktemp("v") / "p.tif", p)
    gdf = vectorize(path, block=block)
    _, n = ndimage.label(p > 0.5)
    assert len(gdf) == n
    assert gdf["area_m2"].sum() == pytest.approx((p > 0.5).sum() * 100.0)
    assert gdf.geometry.is_valid.all()


def test_geographic_crs_areas_are_true_square_metres(tmp_path):
    """An EPSG:4326 blob at 22.4 N (about 10 m pixels): geodesic area within 0.5 % of its area in
    the local UTM zone."""
    res = 8.983152841196085e-05
    p = np.zeros((200, 200), np.float32)
    yy, xx = np.mgrid[:200, :200]
    p[(yy - 100) ** 2 + (xx - 90) ** 2 < 60**2] = 0.9
    path = write_prob(tmp_path / "p.tif", p, crs="EPSG:4326", transform=from_origin(91.76, 22.49, res, res))
    gdf = vectorize(path)
    assert len(gdf) == 1 and gdf.crs == "EPSG:4326"
    utm = gdf.to_crs("EPSG:32646").area.iloc[0]
    assert gdf["area_m2"].iloc[0] == pytest.approx(utm, rel=0.005)
    # and about pixel count x (10 m)^2 at this latitude
    assert gdf["area_m2"].iloc[0] == pytest.approx((p > 0.5).sum() * 9.2486 * 9.9996, rel=0.01)


def test_areas_in_feet_and_metres():
    """Map units inside each CRS's zone (at (0, 0), 500 km west of UTM 45N's central meridian, its scale is
    1.0027: the 100 m square is 9,946 m2 of ground, and so measured, see the Web Mercator test)."""
    assert areas_m2([shapely.box(500_000, 3_000_000, 500_100, 3_000_100)], "EPSG:32645")[0] == pytest.approx(1e4)
    feet = shapely.box(6_561_667, 1_900_000, 6_561_767, 1_900_100)  # California zone 5, in US survey feet
    assert areas_m2([feet], "EPSG:2229")[0] == pytest.approx(1e4 * 0.3048006096**2, rel=1e-6)
    assert areas_m2([shapely.box(0, 0, 100, 100)], "EPSG:32645")[0] == pytest.approx(9946.3, rel=1e-4)


def test_min_area_fill_holes_and_simplify(tmp_path):
    p = np.zeros((60, 60), np.float32)
    p[5:25, 5:25] = 0.9
    p[10, 10] = 0.0  # a 1-pixel hole (100 m2)
    p[15:18, 15:18] = 0.0  # a 9-pixel hole (900 m2)
    p[40:42, 40:42] = 0.9  # 400 m2
    p[30:55, 30] = 0.9  # a thin line, to be simplified
    p[30:55, 31] = np.where(np.arange(25) % 2 == 0, 0.9, 0.0)
    path = write_prob(tmp_path / "p.tif", p)
    plain = vectorize(path)
    assert len(plain) == 3 and len(plain.geometry.iloc[0].interiors) == 2
    filled = vectorize(path, fill_holes=500, min_area=450)
    assert len(filled) == 2  # the 400 m2 square is dropped
    assert len(filled.geometry.iloc[0].interiors) == 1
    assert filled["area_m2"].iloc[0] == pytest.approx((400 - 9) * 100.0)
    simple = vectorize(path, simplify=15)
    assert shapely.get_num_coordinates(simple.geometry.iloc[2]) < shapely.get_num_coordinates(plain.geometry.iloc[2])
    assert simple.geometry.is_valid.all()


def test_uncertainty_column_and_grid_check(tmp_path):
    p = np.zeros((30, 30), np.float32)
    p[5:10, 5:10] = 0.8
    u = np.full((30, 30), 0.1, np.float32)
    u[5:10, 5:7] = 0.2
    gdf = vectorize(write_prob(tmp_path / "p.tif", p), uncertainty=write_prob(tmp_path / "u.tif", u))
    assert gdf["mean_unc"].iloc[0] == pytest.approx((10 * 0.2 + 15 * 0.1) / 25, rel=1e-6)
    other = write_prob(tmp_path / "o.tif", u[:20])
    with pytest.raises(InputError, match="not on the grid"):
        vectorize(tmp_path / "p.tif", uncertainty=other)


def test_empty_result_is_a_valid_empty_layer(tmp_path):
    gdf = vectorize(write_prob(tmp_path / "p.tif", np.zeros((20, 20), np.float32)))
    assert len(gdf) == 0 and gdf.crs == "EPSG:32645"
    write_vector(gdf, tmp_path / "e.gpkg")
    back = gpd.read_file(tmp_path / "e.gpkg")
    assert len(back) == 0 and back.crs == "EPSG:32645"


@pytest.mark.parametrize("name", ["out.gpkg", "out.geojson", "out.shp"])
def test_write_vector_formats_and_overwrite(tmp_path, name):
    p = np.zeros((20, 20), np.float32)
    p[2:6, 2:6] = 0.9
    gdf = vectorize(write_prob(tmp_path / "p.tif", p))
    out = write_vector(gdf, tmp_path / name)
    back = gpd.read_file(out)
    # GeoJSON is WGS 84 lon/lat (RFC 7946); GeoPackage and shapefile keep the scene CRS; areas in m2 either way
    assert len(back) == 1 and back.crs == ("EPSG:4326" if name.endswith(".geojson") else "EPSG:32645")
    assert back["area_m2"].iloc[0] == pytest.approx(1600.0)
    with pytest.raises(OutputExistsError):
        write_vector(gdf, tmp_path / name)
    write_vector(gdf, tmp_path / name, overwrite=True)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("crs", ["EPSG:32645", "EPSG:4326"])
def test_filled_holes_are_those_of_each_polygon_one_by_one(crs):
    """Law: vectorised hole filling keeps exactly the holes a polygon-by-polygon pass keeps (same
    coordinates), for projected and geographic CRSs; polygons without holes come back as they are."""
    import shapely
    from shapely.geometry import Polygon

    from lsmap.map.components import label_block, label_polygons
    from lsmap.map.vectorize import areas_m2, fill_small_holes

    labels, n = label_block(np.random.default_rng(7).random((80, 90)), 0.62)  # many parts with holes
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    unit = 10.0 if crs == "EPSG:32645" else 1e-4
    geoms = list(shapely.transform(label_polygons(labels, counts, 0, 0).polygons(), lambda xy: xy * unit))
    assert sum(len(g.interiors) for g in geoms) > 5
    for limit in (0, 150, 400, 1e9):
        want = []
        for g in geoms:  # the reference: one polygon at a time
            holes = [Polygon(r) for r in g.interiors]
            keep = [h.exterior for h, a in zip(holes, areas_m2(holes, crs), strict=True) if a >= limit]
            want.append(Polygon(g.exterior, keep) if g.interiors else g)
        got = fill_small_holes(geoms, crs, limit)
        assert [g.wkb for g in got] == [g.wkb for g in want]
        assert all(a is b for a, b in zip(got, geoms, strict=True) if not b.interiors)


@pytest.mark.parametrize("n", [0, 5, 3 * 4096 + 17])
def test_geos_on_threads_gives_the_single_call_output(n):
    """Law: the pieces on threads give ``fn(geoms)``, in order, whatever the count and the workers."""
    import shapely

    from lsmap.map import vectorize as vec

    rng = np.random.default_rng(n)
    geoms = shapely.buffer(shapely.points(rng.random((n, 2)) * 1000), rng.random(n) * 5 + 1)
    want = [g.wkb for g in shapely.simplify(geoms, 0.5)]
    for workers in (1, 2, 3):
        got = vec.geos_on_threads(lambda g: shapely.simplify(g, 0.5), geoms, workers)
        assert [g.wkb for g in got] == want


def test_polygons_with_too_many_holes_are_left_unsimplified_with_a_warning(tmp_path, monkeypatch):
    """GEOS's topology-preserving simplifier takes hours on a dense scene's polygon of hundreds of thousands of
    holes: such polygons stay as traced, the others are simplified, and one warning says so and what to do."""
    from lsmap.errors import LsmapWarning
    from lsmap.map import vectorize as vec

    p = np.zeros((64, 64), np.float32)
    p[2:30, 2:62] = 0.9  # a wide landslide with 4 one-pixel holes
    p[10, 10:50:10] = 0.1
    p[36:60, 20:44] = 0.9  # a square with 1 hole and a ragged edge
    p[48, 30] = p[36, 21:44:2] = 0.1
    path = write_prob(tmp_path / "p.tif", p)
    plain = vectorize(path)
    assert sorted(len(g.interiors) for g in plain.geometry) == [1, 4]
    monkeypatch.setattr(vec, "SIMPLIFY_MAX_HOLES", 3)
    with pytest.warns(LsmapWarning, match=r"1 polygon\(s\) with more than 3 holes \(up to 4\) left unsimplified.*--fill-holes"):
        out = vectorize(path, simplify=15)
    holed = [len(g.interiors) for g in out.geometry].index(4)
    assert out.geometry.iloc[holed].equals_exact(plain.geometry.iloc[holed], 0)  # as traced
    other = 1 - holed
    assert shapely.get_num_coordinates(out.geometry.iloc[other]) < shapely.get_num_coordinates(plain.geometry.iloc[other])
    assert out.area_m2.iloc[holed] == plain.area_m2.iloc[holed]


def test_unknown_vector_format_and_unreadable_raster(tmp_path):
    gdf = gpd.GeoDataFrame(geometry=[], crs="EPSG:4326")
    with pytest.raises(InputError, match="unknown vector format"):
        write_vector(gdf, tmp_path / "out.kml")
    (tmp_path / "bad.tif").write_text("nope")
    with pytest.raises(InputError, match="cannot read"):
        vectorize(tmp_path / "bad.tif")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fraction=st.floats(0.02, 0.6))
@example(seed=0, fraction=0.01)  # speckle: nearly every component one pixel
@example(seed=1, fraction=0.55)  # large components with holes and diagonal contacts
def test_fast_polygons_equal_traced_shapes(seed, fraction):
    """Law: the polygon built for every label (vectorised constructors, one-pixel squares written
    directly) is the polygon ``shape()`` makes of GDAL's trace, coordinate for coordinate."""
    from affine import Affine
    from rasterio.features import shapes
    from shapely.geometry import shape

    from lsmap.map.components import label_block, label_polygons

    rng = np.random.default_rng(seed)
    labels, n = label_block(rng.random((40, 37)), 1 - fraction)
    if n == 0:
        return
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    parts = label_polygons(labels, counts, 64, 128)
    fast = parts.polygons()
    np.testing.assert_array_equal(parts.bounds, shapely.bounds(fast))  # integer bounds kept for the order
    slow = {int(v): shape(g) for g, v in shapes(labels, mask=labels > 0, connectivity=4,
                                                   transform=Affine.translation(64, 128))}
    assert len(slow) == n
    for v in range(1, n + 1):
        assert fast[v - 1].wkb == slow[v].wkb


@pytest.mark.parametrize("pick", [[], [0], "all", "odd", "reversed"])
def test_taken_parts_are_those_parts_exactly(pick):
    """Law: the polygons of ``take(idx)`` are the polygons ``idx`` of the whole, coordinate for coordinate."""
    from lsmap.map.components import label_block, label_polygons

    labels, n = label_block(np.random.default_rng(5).random((48, 41)), 0.5)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    parts = label_polygons(labels, counts, 3, 9)
    named = {"all": np.arange(n), "odd": np.arange(1, n, 2), "reversed": np.arange(n)[::-1]}
    idx = np.asarray(named[pick] if isinstance(pick, str) else pick, np.int64)
    taken, whole = parts.take(idx), parts.polygons()
    assert [g.wkb for g in taken.polygons()] == [g.wkb for g in whole[idx]]
    np.testing.assert_array_equal(taken.bounds, parts.bounds[idx])


def test_tracing_threads_raise_no_georeferencing_warning(tmp_path):
    """No NotGeoreferencedWarning from the tracing threads: when blocks were traced by rasterio, which hides
    that warning of its in-memory rasters with ``catch_warnings`` (not thread-safe), it reached users. Tracing is
    numpy's now (:mod:`lsmap.map.rings`); this guards against the warning coming back by another way."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    rng = np.random.default_rng(3)
    p = (rng.random((96, 96)) < 0.4).astype(np.float32) * 0.9
    path = write_prob(tmp_path / "p.tif", p)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=NotGeoreferencedWarning, append=True)
        for _ in range(3):
            assert len(vectorize(path, block=16)) > 0


def test_noisy_mask_polygons_equal_the_traced_ones(tmp_path):
    """A speckled mask with blobs, in one block and in blocks of 32: the same polygons, attributes
    and order as tracing the whole mask with rasterio.features.shapes and shapely.shape."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    rng = np.random.default_rng(7)
    p = (0.4 * rng.random((96, 96))).astype(np.float32)
    p[rng.random((96, 96)) < 0.03] = 0.8
    p[10:30, 40:70] = 0.9
    p[15:20, 50:55] = 0.1  # a hole
    p[60:62, 31:34] = 0.7  # a clump across the block border at column 32
    path = tmp_path / "p.tif"
    tr = from_origin(500000, 3000000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=1, dtype="float32",
                       crs="EPSG:32645", transform=tr) as dst:
        dst.write(p[None])
    labels, n = ndimage.label(p > 0.5)
    ref = [shape(g) for g, _ in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=tr)]
    ref_by_wkb = {g.wkb for g in ref}
    assert len(ref) == n > 150
    one = vectorize(path, block=1024)
    assert len(one) == n and {g.wkb for g in one.geometry} == ref_by_wkb
    blocks = vectorize(path, block=32)
    assert len(blocks) == n
    assert all(a.equals(b) for a, b in zip(blocks.geometry, one.geometry, strict=True))  # joined parts: same shape
    np.testing.assert_allclose(blocks["mean_prob"], one["mean_prob"])


@pytest.mark.parametrize("workers", [1, 3])
def test_worker_threads_do_not_change_the_output(tmp_path, workers):
    """Blocks traced by any number of threads are joined in block order: the same polygons, attributes
    and order as one thread, with parts crossing block borders and an uncertainty raster."""
    rng = np.random.default_rng(3)
    p = (rng.random((70, 90)) < 0.45).astype(np.float32) * 0.9
    u = rng.random((70, 90)).astype(np.float32)
    path, upath = write_prob(tmp_path / "p.tif", p), write_prob(tmp_path / "u.tif", u)
    ref = vectorize(path, uncertainty=upath, block=16, workers=2)
    got = vectorize(path, uncertainty=upath, block=16, workers=workers)
    assert len(ref) > 20 and [g.wkb for g in got.geometry] == [g.wkb for g in ref.geometry]
    for col in ("area_m2", "mean_prob", "max_prob", "mean_unc"):
        np.testing.assert_array_equal(got[col], ref[col])


def test_workers_bound_the_tracing_threads_to_the_end(tmp_path, monkeypatch):
    """``workers`` is every thread vectorize traces on, the blocks left at the end included."""
    import lsmap.map.vectorize as vec

    made = []

    class Recording(vec.BlockStream):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self.workers, self.finish_workers))

    monkeypatch.setattr(vec, "BlockStream", Recording)
    path = write_prob(tmp_path / "p.tif", (np.random.default_rng(1).random((40, 40)) < 0.3).astype(np.float32))
    vectorize(path, block=16, workers=1)
    assert made == [(1, 1)]


def test_bad_worker_count_is_refused(tmp_path):
    path = write_prob(tmp_path / "p.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="workers"):
        vectorize(path, workers=0)


@pytest.mark.parametrize("block", [16, 23, 1024])
def test_not_observed_polygons_equal_the_dissolved_traces_per_reason(tmp_path, block):
    """Law: one (multi)polygon per reason, the same area as dissolving every traced polygon of that reason with
    GEOS (the previous way), whatever the blocks; reasons in code order, areas in m2; nothing for code 0."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    from lsmap.data.masks import REASONS
    from lsmap.map.vectorize import not_observed_polygons

    rng = np.random.default_rng(block)
    field = ndimage.gaussian_filter(rng.random((70, 61)), 1.0)
    codes = np.zeros(field.shape, np.uint8)
    codes[field > np.quantile(field, 0.7)] = 2  # clouds
    codes[(field > np.quantile(field, 0.6)) & (codes == 0)] = 3  # their shadow rings
    codes[(rng.random(field.shape) < 0.03) & (codes == 0)] = 1  # speckle
    path = tmp_path / "codes.tif"
    tr = from_origin(500000, 3000000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=61, height=70, count=1, dtype="uint8", crs="EPSG:32645",
                       transform=tr) as dst:
        dst.write(codes[None])
    got = not_observed_polygons(path, block=block)
    want = {}
    for g, v in shapes(codes, mask=codes > 0, transform=tr, connectivity=4):
        want.setdefault(int(v), []).append(shape(g))
    assert list(got["reason"]) == [REASONS[k] for k in sorted(want)]
    for (k, polys), geom, area in zip(sorted(want.items()), got.geometry, got["area_m2"], strict=True):
        ref = shapely.union_all(polys)
        assert geom.is_valid and geom.equals(ref), REASONS[k]
        assert area == pytest.approx((codes == k).sum() * 100.0)
    empty = tmp_path / "none.tif"
    with rasterio.open(empty, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:32645",
                       transform=tr) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    assert len(not_observed_polygons(empty)) == 0


def test_not_observed_areas_in_a_geographic_crs(tmp_path):
    """A reason's MultiPolygon mixes traced parts (one winding) and parts dissolved across block borders (the
    other); pyproj sums signed ring areas, so they cancelled in EPSG:4326 (found by a review: 27,381 m2 for
    58,186). The area equals the sum of its parts' now, in both CRSs."""
    from _rasters import write_tif

    from lsmap.map.vectorize import not_observed_polygons

    r = np.zeros((64, 64), np.uint8)
    r[4:24, 4:24] = 2  # crosses the block border at 16: dissolved by GEOS
    r[34:46, 34:46] = 2  # inside one block: as traced
    for crs, pix, origin in (("EPSG:32648", 10.0, (400000.0, 3690000.0)), ("EPSG:4326", 0.0001, (100.0, 30.0))):
        path = write_tif(tmp_path / f"n_{crs[5:]}.tif", r, crs=crs, pixel=pix, origin=origin)
        g = not_observed_polygons(path, block=16)
        parts = list(shapely.get_parts(g.geometry.iloc[0]))
        assert len(parts) == 2
        assert g.area_m2.iloc[0] == pytest.approx(float(areas_m2(parts, crs).sum()), rel=1e-9)
        x0, y0 = origin
        boxes = [shapely.box(x0 + c0 * pix, y0 - r1 * pix, x0 + c1 * pix, y0 - r0 * pix)
                 for r0, r1, c0, c1 in ((4, 24, 4, 24), (34, 46, 34, 46))]
        assert g.area_m2.iloc[0] == pytest.approx(float(areas_m2(boxes, crs).sum()), rel=1e-6)


def test_shapefile_field_names_are_chosen_and_said(tmp_path):
    """Fields over 10 characters were cut by GDAL with a raw pyogrio warning (found by an audit: pre_not_ob,
    near_not_o); lsmap names them and says so."""
    from lsmap.errors import LsmapWarning

    gdf = gpd.GeoDataFrame({"id": [1], "pre_not_observed": [0.2], "near_not_observed": [True],
                            "landslide_area_total": [1.0], "landslide_area_totals": [2.0]},
                           geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32645")
    with pytest.warns(LsmapWarning, match=r"x.shp: a shapefile holds field names of at most 10 characters: "
                                          r"pre_not_observed -> pre_no_obs, near_not_observed -> near_no_ob"):
        write_vector(gdf, tmp_path / "x.shp")
    back = gpd.read_file(tmp_path / "x.shp")
    assert list(back.columns) == ["id", "pre_no_obs", "near_no_ob", "landslide_", "landslid_1", "geometry"]
    assert back.pre_no_obs.iloc[0] == 0.2 and back.landslid_1.iloc[0] == 2.0


def test_shapefile_text_longer_than_the_format_holds_is_cut_in_whole_characters_and_said(tmp_path):
    """A merged layer's ``scene_ids`` can list hundreds of polygons; GDAL cut them with one raw warning per value."""
    import warnings

    from lsmap.errors import LsmapWarning

    ids = ",".join(f"S2B_MSIL2A_{i}:{i}" for i in range(40))
    gdf = gpd.GeoDataFrame({"scene_ids": [ids, "a:1"], "scene": ["é" * 200, "b"]},
                           geometry=[shapely.box(0, 0, 10, 10)] * 2, crs="EPSG:32645")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_vector(gdf, tmp_path / "x.shp")
    ours = [str(w.message) for w in caught if issubclass(w.category, LsmapWarning)]
    assert len(caught) == 1 and "1 value(s) of scene_ids, 1 value(s) of scene cut" in ours[0]
    back = gpd.read_file(tmp_path / "x.shp")
    assert back.scene_ids[0] == ids.encode()[:251].decode() + "..." and back.scene_ids[1] == "a:1"
    assert back.scene[0] == "é" * 125 + "..." and len(back.scene[0].encode()) <= 254
    assert gdf.scene_ids[0] == ids  # the caller's table is not changed


def test_lsmap_warnings_name_the_callers_line(tmp_path):
    """A script saw lsmap/map/vectorize.py (or detect.py:395) as the warning's place, not its own line."""
    import warnings

    from lsmap.errors import LsmapWarning
    from lsmap.io.aoi import as_aoi

    gdf = gpd.GeoDataFrame({"near_not_observed": [True]}, geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32645")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_vector(gdf, tmp_path / "x.shp")
    bowtie = tmp_path / "bowtie.geojson"  # an invalid area, repaired with a warning two calls down
    gpd.GeoDataFrame(geometry=[shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])], crs="EPSG:32645").to_file(bowtie)
    with warnings.catch_warnings(record=True) as more:
        warnings.simplefilter("always")
        as_aoi(str(bowtie))
    ours = [w for w in [*caught, *more] if issubclass(w.category, LsmapWarning)]
    assert len(ours) == 2 and all(w.filename == __file__ for w in ours), [(w.filename, w.lineno) for w in ours]


def test_web_mercator_areas_are_ground_square_metres(tmp_path):
    """A scene in EPSG:3857 at 45 N: its map m2 are 2x ground m2 (sec^2 45 deg), so area_m2 were 2x too large
    (+4.8 % at 11.5 N: the real Puthumala bands warped to EPSG:3857, 21 polygons); now geodesic, as in
    EPSG:4326, and within 0.2 % of the local UTM area."""
    from rasterio.warp import transform as warp_transform

    x0, y0 = warp_transform("EPSG:4326", "EPSG:3857", [9.0], [45.0])
    p = np.zeros((100, 100), np.float32)
    p[20:60, 30:90] = 0.9
    path = write_prob(tmp_path / "p.tif", p, crs="EPSG:3857", transform=from_origin(x0[0], y0[0], 10, 10))
    gdf = vectorize(path)
    assert len(gdf) == 1
    geodesic = areas_m2(list(gdf.to_crs("EPSG:4326").geometry), "EPSG:4326")[0]
    assert gdf["area_m2"].iloc[0] == pytest.approx(geodesic, rel=1e-6)
    assert gdf["area_m2"].iloc[0] == pytest.approx(gdf.to_crs("EPSG:32632").area.iloc[0], rel=0.002)
    assert gdf["area_m2"].iloc[0] == pytest.approx(40 * 60 * 100 * 0.5, rel=0.01)
    # UTM polygons keep their planar areas
    square = shapely.box(500_000, 5_000_000, 500_100, 5_000_100)
    assert areas_m2([square], "EPSG:32632")[0] == 1e4


def test_lengths_in_metres_are_ground_metres_in_web_mercator():
    """--simplify (metres) and the quick-look's scale bar took Web Mercator's map metres as ground metres: at 45 N a
    map metre is 0.707 m of ground, so a 10 m tolerance simplified by 7 m and the bar read 41 % long (noticed by
    the radiometry audit, session 17). Both now go through lsmap.core.ground.ground_metres_per_unit."""
    from rasterio.warp import transform as warp_transform

    from lsmap.map.quicklook import _metres_per_unit
    from lsmap.map.vectorize import metres_to_crs_units

    x, y = warp_transform("EPSG:4326", "EPSG:3857", [9.0], [45.0])
    bounds = (x[0], y[0], x[0] + 5000, y[0] + 5000)
    assert metres_to_crs_units(10, "EPSG:3857", bounds) == pytest.approx(10 * 2**0.5, rel=2e-3)
    assert _metres_per_unit("EPSG:3857", bounds) == (pytest.approx(2**-0.5, rel=2e-3), "m")
    utm = (500_000, 5_000_000, 505_000, 5_005_000)  # a UTM zone's map metres are taken at their word
    assert metres_to_crs_units(10, "EPSG:32632", utm) == 10 and _metres_per_unit("EPSG:32632", utm) == (1.0, "m")
    assert metres_to_crs_units(10, "EPSG:2229", (6_561_667, 1_900_000, 6_571_667, 1_910_000)) == \
        pytest.approx(10 / 0.3048006096)


def test_a_local_crs_in_feet_counts_pixels_and_polygons_alike():
    """A local (engineering) CRS in feet: pixel-count areas took its unit as 1 m while polygon areas took 0.3048 m
    (found by the session 17 review); both are in square metres now."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from lsmap.core.ground import mean_pixel_area_m2

    local = CRS.from_wkt('ENGCRS["local feet",EDATUM["local"],CS[Cartesian,2],AXIS["x",east,LENGTHUNIT["foot",0.3048]],'
                         'AXIS["y",north,LENGTHUNIT["foot",0.3048]]]')
    pixel = mean_pixel_area_m2(from_origin(0, 1000, 10, 10), local, 100, 100)
    assert pixel == pytest.approx(100 * 0.3048**2) == areas_m2([shapely.box(0, 0, 10, 10)], local)[0]
