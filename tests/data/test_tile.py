"""lsmap.data.tile: scene -> L4S patches + index, and back."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from _rasters import PIXEL, write_tif
from click.testing import CliRunner
from conftest import shared_data
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.core.constants import FILL
from lsmap.core.windows import owned_spans
from lsmap.data.tile import assemble_patches, map_labels, parse_label_map, read_index, read_tiles_meta, tile_scene
from lsmap.errors import BandMismatchError, InputError, MissingInputError, OutputExistsError
from lsmap.io.patches import find_patches, read_image, read_mask
from lsmap.io.scene import scale_raw

RGBN = get_profile("rgbn")
# rasterio's own use of Affine * (not ours)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def make_scene(rng, height, width, bands=4, nodata_frac=0.1):
    """Raw-DN-like uint16 scene with nodata 0 in a random set of pixels (sometimes one band only)."""
    data = rng.integers(1, 6000, size=(bands, height, width)).astype(np.uint16)
    holes = rng.random((height, width)) < nodata_frac
    data[:, holes] = 0
    one_band = rng.random((height, width)) < nodata_frac / 2
    data[0, one_band] = 0  # nodata in one band only: the pixel is invalid too
    return data


def expected_image(data, raw=True):
    scaled = scale_raw(data, RGBN) if raw else data.astype(np.float32)
    valid = (data != 0).all(axis=0)
    return np.where(valid, scaled, np.float32(FILL)), valid


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the round trip ------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 48), width=st.integers(1, 48), size=st.sampled_from([16, 32]),
    overlap_frac=st.floats(0, 0.75), seed=st.integers(0, 2**16), raw=st.booleans(),
)
@example(height=1, width=1, size=32, overlap_frac=0.0, seed=0, raw=True)  # a one-pixel scene
@example(height=20, width=60, size=32, overlap_frac=0.0, seed=1, raw=False)  # thinner than a patch
@example(height=33, width=32, size=32, overlap_frac=0.99, seed=2, raw=True)  # snapped last row, max overlap
def test_tile_then_assemble_reproduces_the_scene(height, width, size, overlap_frac, seed, raw):
    """Tiling with min_valid=0 and reassembling from the index gives back every pixel of the scene
    exactly: scaled values where valid, FILL (image) and 255 (mask) where nodata, at any scene size,
    including scenes smaller than one patch (which are padded, not dropped)."""
    overlap = int(overlap_frac * size)
    rng = np.random.default_rng(seed)
    data = make_scene(rng, height, width)
    labels = rng.integers(0, 2, size=(height, width)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = write_tif(tmp / "scene.tif", data, nodata=0)
        lab = write_tif(tmp / "labels.tif", labels)
        res = tile_scene(scene, tmp / "out", bands="rgbn", size=size, overlap=overlap, labels=lab,
                         min_valid=0.0, raw=raw)
        back = assemble_patches(tmp / "out")
        patches = find_patches(tmp / "out", require_masks=True)
        first, _ = read_image(patches[0].image)
    image, valid = expected_image(data, raw)
    assert back.covered.all()
    np.testing.assert_array_equal(back.image, image)
    np.testing.assert_array_equal(back.mask, np.where(valid, labels, 255))
    assert res.n_patches == len(patches) and res.n_skipped == 0
    assert first.shape == (4, size, size)
    assert res.n_padded == (res.n_patches if (height < size or width < size) else 0)


# --- masks, index, skipping, padding, overlap ---------------------------------------------------


@pytest.fixture
def chittagong_like(tmp_path, rng):
    """70 x 90 raw scene with a nodata corner and 0/1/2 labels (0 unlabelled, 1 no slide, 2 slide)."""
    data = make_scene(rng, 70, 90, nodata_frac=0.02)
    data[:, :32, :40] = 0  # top-left window entirely nodata
    data[:, 32:64, 32:50] = 0  # about half of the window at (32, 32)
    labels = rng.choice(np.array([0, 1, 2], np.uint8), size=(70, 90), p=[0.8, 0.15, 0.05])
    scene = write_tif(tmp_path / "scene.tif", data, nodata=0, block=16)
    lab = write_tif(tmp_path / "labels.tif", labels)
    return scene, lab, data, labels


def test_tile_masks_index_and_metadata(tmp_path, chittagong_like):
    import rasterio
    from rasterio.windows import Window, bounds

    scene, lab, data, labels = chittagong_like
    out = tmp_path / "patches"
    res = tile_scene(scene, out, bands="rgbn", size=32, overlap=8, labels=lab, label_map="0:255,1:0,2:1",
                     min_valid=0.5, raw=True)
    image, valid = expected_image(data)
    mask = np.select([~valid, labels == 0, labels == 1, labels == 2], [255, 255, 0, 1]).astype(np.uint8)
    index = read_index(out)
    meta = read_tiles_meta(out)
    with rasterio.open(scene) as src:
        transform, crs = src.transform, src.crs
    assert index.crs == crs and meta["crs"] == crs.to_wkt()
    assert meta["transform"] == list(transform)[:6] and meta["bands"]["name"] == "rgbn" and meta["raw"]
    assert len(index) == res.n_patches == len(list((out / "img").glob("*.h5")))
    assert list(index["id"]) == [str(i) for i in range(len(index))]
    times_labelled = np.zeros(labels.shape, int)
    own_rows, own_cols = owned_spans(70, 32, 8), owned_spans(90, 32, 8)
    for row in index.itertuples():
        win = Window(row.col_off, row.row_off, row.width, row.height)
        np.testing.assert_allclose(row.geometry.bounds, _xyxy(bounds(win, transform)), rtol=0, atol=1e-6)
        rows, cols = slice(row.row_off, row.row_off + 32), slice(row.col_off, row.col_off + 32)
        patch, _ = read_image(out / "img" / f"image_{row.id}.h5")
        np.testing.assert_array_equal(patch, image[:, rows, cols])  # every scene pixel of the window: context
        got = read_mask(out / "mask" / f"mask_{row.id}.h5")
        here = got != 255
        np.testing.assert_array_equal(got[here], mask[rows, cols][here])
        times_labelled[rows, cols] += here
        (r0, r1), (c0, c1) = own_rows[row.row_off], own_cols[row.col_off]
        assert (mask[r0:r1, c0:c1] == got[r0 - row.row_off:r1 - row.row_off, c0 - row.col_off:c1 - row.col_off]).all()
        assert row.valid_fraction == pytest.approx(valid[rows, cols].mean())
        assert row.valid_fraction >= 0.5
        assert row.landslide_pixels == (got == 1).sum()
        assert row.labelled_pixels == here.sum()
    assert times_labelled.max() == 1  # windows overlap (by 8, the last ones more): labels do not


def test_patches_without_overlap_label_every_pixel_once(tmp_path, rng):
    """A 70 x 90 scene cut into 32 px patches: the last row and column of windows are snapped back inside
    the scene and overlap their neighbours, but the patches' labels add up to the scene's, each pixel once
    (so evaluate counts no pixel twice, and a held-out patch shares no label with a training one)."""
    data = make_scene(rng, 70, 90, nodata_frac=0.0)
    labels = rng.integers(0, 2, size=(70, 90)).astype(np.uint8)
    scene = write_tif(tmp_path / "scene.tif", data, nodata=0)
    lab = write_tif(tmp_path / "labels.tif", labels)
    res = tile_scene(scene, tmp_path / "p", bands="rgbn", size=32, labels=lab, raw=True)
    index = read_index(tmp_path / "p")
    assert res.n_patches == 9 and set(index.row_off) == {0, 32, 38} and set(index.col_off) == {0, 32, 58}
    assert index.labelled_pixels.sum() == labels.size
    assert index.landslide_pixels.sum() == labels.sum()
    np.testing.assert_array_equal(assemble_patches(tmp_path / "p").mask, labels)


def test_labels_on_an_aligned_grid_of_another_extent_are_read_where_they_cover(tmp_path, chittagong_like):
    """Labels on the scene's grid but covering another extent (a label raster of the whole tile, or of part
    of the scene) give the masks of the same-extent raster where they cover, 255 where they do not."""
    scene, lab, data, labels = chittagong_like
    lm = "0:255,1:0,2:1"
    tile_scene(scene, tmp_path / "same", bands="rgbn", size=32, labels=lab, label_map=lm, raw=True)
    # scene rows 10.. and columns 2.., and 7 rows below the scene
    other = np.pad(labels[10:, 2:], ((0, 7), (0, 0)), constant_values=1)
    other = write_tif(tmp_path / "other.tif", other, origin=(400000.0 + 2 * PIXEL, 3690000.0 - 10 * PIXEL))
    tile_scene(scene, tmp_path / "shifted", bands="rgbn", size=32, labels=other, label_map=lm, raw=True)
    covered = np.zeros(labels.shape, bool)
    covered[10:, 2:] = True
    for pid in range(len(read_index(tmp_path / "same"))):
        want = read_mask(tmp_path / "same" / "mask" / f"mask_{pid}.h5")
        got = read_mask(tmp_path / "shifted" / "mask" / f"mask_{pid}.h5")
        row = read_index(tmp_path / "same").iloc[pid]
        cov = np.zeros((32, 32), bool)
        cov[:row.height, :row.width] = covered[row.row_off:row.row_off + 32, row.col_off:row.col_off + 32]
        np.testing.assert_array_equal(got[cov], want[cov])
        assert (want[cov] != 255).any() and (got[~cov] == 255).all()


def test_an_aoi_crops_a_geotiff_before_it_is_cut(tmp_path, chittagong_like):
    from lsmap.io.aoi import parse_bbox

    scene, lab, data, labels = chittagong_like
    lm = "0:255,1:0,2:1"
    tile_scene(scene, tmp_path / "full", bands="rgbn", size=16, labels=lab, label_map=lm, raw=True, min_valid=0)
    # columns 32..63 and rows 16..47 of the scene: a box in the scene's CRS
    x0, y1 = 400000.0 + 32 * PIXEL, 3690000.0 - 16 * PIXEL
    box = parse_bbox([x0, y1 - 32 * PIXEL, x0 + 32 * PIXEL, y1], "EPSG:32648")
    res = tile_scene(scene, tmp_path / "aoi", bands="rgbn", size=16, labels=lab, label_map=lm, raw=True, min_valid=0,
                     aoi=box)
    meta = read_tiles_meta(tmp_path / "aoi")
    assert res.n_patches == 4 and meta["aoi_window"] == [32, 16, 32, 32] and (meta["height"], meta["width"]) == (32, 32)
    assert meta["scene"] == str(scene.resolve()) and not meta["stacked"] and meta["aoi"]["source"] == box.source
    full = read_index(tmp_path / "full")
    for row in read_index(tmp_path / "aoi").itertuples():
        twin = full[(full.row_off == row.row_off + 16) & (full.col_off == row.col_off + 32)].iloc[0]
        a, _ = read_image(tmp_path / "aoi" / "img" / f"image_{row.id}.h5")
        b, _ = read_image(tmp_path / "full" / "img" / f"image_{twin.id}.h5")
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(read_mask(tmp_path / "aoi" / "mask" / f"mask_{row.id}.h5"),
                                      read_mask(tmp_path / "full" / "mask" / f"mask_{twin.id}.h5"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left


def test_a_product_is_tiled_as_stack_then_tile_with_its_own_scl(tmp_path):
    """``tile_scene(product)`` (and ``lsmap tile PRODUCT``) cut the same patches as ``lsmap stack`` then
    ``lsmap tile`` of the same AOI with the product's SCL, and leave no scratch behind."""
    from products_fixtures import CRS, X0, Y0, make_safe, zip_safe

    from lsmap.data.stack import stack_scene
    from lsmap.io.aoi import parse_bbox

    z = zip_safe(make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8")))
    bbox = [X0 + 200, Y0 - 1000, X0 + 1000, Y0 - 200]  # columns and rows 20..100 of the 120 px tile
    box = parse_bbox(bbox, CRS)
    stack_scene(z, tmp_path / "s.tif", bands="rgbn", aoi=box, layers={"SCL": tmp_path / "scl.tif"})
    two = tile_scene(tmp_path / "s.tif", tmp_path / "two", bands="rgbn", size=32, scl=tmp_path / "scl.tif")
    one = tile_scene(str(z), tmp_path / "one", bands="rgbn", size=32, aoi=box)
    assert one.n_patches == two.n_patches > 0 and one.n_skipped == two.n_skipped > 0  # the SCL stripes skip some
    a, b = read_tiles_meta(tmp_path / "one"), read_tiles_meta(tmp_path / "two")
    assert a["scene"] == str(z.resolve()) and a["stacked"] and not b["stacked"]
    assert a["not_observed"].pop("scl") == "the product's SCL" and b["not_observed"].pop("scl").endswith("scl.tif")
    assert a["not_observed"] == b["not_observed"] and a["not_observed"]["cloud"] > 0
    assert (a["height"], a["width"]) == (80, 80) and a["transform"] == b["transform"]
    for pid in range(one.n_patches):
        np.testing.assert_array_equal(read_image(tmp_path / "one" / "img" / f"image_{pid}.h5")[0],
                                      read_image(tmp_path / "two" / "img" / f"image_{pid}.h5")[0])
    # labels of the whole tile's 10 m grid, read under the AOI's patches
    from products_fixtures import SIZE, write_band

    whole = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 7 == 0).astype(np.uint8)
    write_band(tmp_path / "labels.tif", whole, 10)
    r = CliRunner().invoke(main, ["tile", str(z), "--bands", "rgbn", "--bbox", ",".join(map(str, bbox)),
                                  "--bbox-crs", CRS, "--size", "32", "--labels", str(tmp_path / "labels.tif"),
                                  "-o", str(tmp_path / "cli"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["n_patches"] == one.n_patches, r.output
    for row in read_index(tmp_path / "cli").itertuples():
        mask = read_mask(tmp_path / "cli" / "mask" / f"mask_{row.id}.h5")
        want = whole[20 + row.row_off:20 + row.row_off + 32, 20 + row.col_off:20 + row.col_off + 32]
        np.testing.assert_array_equal(mask[mask != 255], want[mask != 255])
        assert (mask != 255).mean() > 0.2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left


def test_product_options_fail_in_one_line_before_any_work(tmp_path, rng):
    from products_fixtures import make_safe

    safe = make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8"))
    scene = write_tif(tmp_path / "scene.tif", make_scene(rng, 64, 64), nodata=0)
    cases = [([str(safe), "--raw"], "drop --raw"),
             ([str(scene), "--offset", "-1000"], "--offset"),
             ([str(scene), "--slope", str(scene)], "--slope needs --dem"),
             ([str(scene), "--cloud-prob-max", "50"], "MSK_CLDPRB"),
             ([str(safe), "--bands", "l4s14"], "DEM")]
    for args, needle in cases:
        before = leftovers(tmp_path)
        r = CliRunner().invoke(main, ["tile", *args, "--bands" if "--bands" not in args else "--size",
                                      "rgbn" if "--bands" not in args else "32", "-o", str(tmp_path / "out" / "p")])
        last = r.output.strip().splitlines()[-1]  # a usage error prints the usage above its one line
        assert r.exit_code != 0 and last.startswith("Error: ") and needle in last, (args, r.output)
        assert leftovers(tmp_path) == before


def test_a_polygon_inventory_gives_the_masks_of_its_raster(tmp_path, rng):
    """Labels as a vector file of landslide polygons (any CRS): 1 where a pixel's centre is inside a polygon,
    0 elsewhere, 255 at nodata: the masks of the 0/1 raster the polygons were traced from."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    data = make_scene(rng, 70, 90, nodata_frac=0.02)
    scene = write_tif(tmp_path / "scene.tif", data, nodata=0, block=16)
    blobs = ndimage_blobs(rng, (70, 90))
    lab = write_tif(tmp_path / "labels.tif", blobs)
    with rasterio.open(lab) as src:
        polys = [shape(g) for g, v in shapes(blobs, mask=blobs == 1, transform=src.transform)]
        crs = src.crs
    inv = gpd.GeoDataFrame({"name": [f"slide {i}" for i in range(len(polys))]}, geometry=polys, crs=crs)
    inv.to_file(tmp_path / "inv.gpkg", engine="pyogrio")
    inv.to_crs("EPSG:4326").to_file(tmp_path / "inv.geojson", engine="pyogrio")
    tile_scene(scene, tmp_path / "r", bands="rgbn", size=32, labels=lab, raw=True)
    for name in ("inv.gpkg", "inv.geojson"):
        out = tmp_path / f"p_{name}"
        tile_scene(scene, out, bands="rgbn", size=32, labels=tmp_path / name, raw=True)
        for row in read_index(tmp_path / "r").itertuples():
            want = read_mask(tmp_path / "r" / "mask" / f"mask_{row.id}.h5")
            got = read_mask(out / "mask" / f"mask_{row.id}.h5")
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert len(polys) > 3 and (blobs == 1).sum() > 100
    r = CliRunner().invoke(main, ["tile", str(scene), "--bands", "rgbn", "--raw", "--size", "32", "--labels",
                                  str(tmp_path / "inv.gpkg"), "--label-map", "0:0,1:1", "-o", str(tmp_path / "c")])
    assert r.exit_code == 1 and "drop --label-map" in r.output and not (tmp_path / "c").exists(), r.output
    # an inventory whose polygons say what they are: every one is burned as a landslide, and a warning says so
    from lsmap.errors import LsmapWarning

    inv["class"] = ["landslide" if i % 2 else "non_landslide" for i in range(len(inv))]
    inv.to_file(tmp_path / "classes.gpkg", engine="pyogrio")
    with pytest.warns(LsmapWarning, match=r"classes.gpkg: its polygons carry 'class' with 2 values \(landslide, "
                                          r"non_landslide\), but every polygon is burned as a landslide"):
        tile_scene(scene, tmp_path / "k", bands="rgbn", size=32, labels=tmp_path / "classes.gpkg", raw=True)
    # label_where names the landslide polygons: the masks are those of an inventory of only those
    inv[inv["class"] == "landslide"].to_file(tmp_path / "only.gpkg", engine="pyogrio")
    tile_scene(scene, tmp_path / "o", bands="rgbn", size=32, labels=tmp_path / "only.gpkg", raw=True)
    r = CliRunner().invoke(main, ["tile", str(scene), "--bands", "rgbn", "--raw", "--size", "32", "--labels",
                                  str(tmp_path / "classes.gpkg"), "--label-where", "class=landslide", "-o",
                                  str(tmp_path / "w")])
    assert r.exit_code == 0 and "Warning" not in r.output, r.output
    for row in read_index(tmp_path / "o").itertuples():
        np.testing.assert_array_equal(read_mask(tmp_path / "w" / "mask" / f"mask_{row.id}.h5"),
                                      read_mask(tmp_path / "o" / "mask" / f"mask_{row.id}.h5"))
    assert read_tiles_meta(tmp_path / "w")["label_where"] == "class=landslide"
    with pytest.raises(InputError, match=r"no field 'kind' to select polygons by \(its fields: name, class\)"):
        tile_scene(scene, tmp_path / "x", bands="rgbn", size=32, labels=tmp_path / "classes.gpkg", raw=True,
                   label_where="kind=landslide")
    with pytest.raises(InputError, match=r"no feature has class = rockfall \(its values: landslide, non_landslide\)"):
        tile_scene(scene, tmp_path / "x", bands="rgbn", size=32, labels=tmp_path / "classes.gpkg", raw=True,
                   label_where="class=rockfall")
    with pytest.raises(InputError, match="`label_where` selects the landslide polygons of a vector inventory"):
        tile_scene(scene, tmp_path / "x", bands="rgbn", size=32, labels=lab, raw=True, label_where="class=landslide")
    with pytest.raises(InputError, match="must be FIELD=VALUE"):
        tile_scene(scene, tmp_path / "x", bands="rgbn", size=32, labels=tmp_path / "classes.gpkg", raw=True,
                   label_where="landslide")
    far = inv.translate(xoff=10_000)
    far.to_file(tmp_path / "far.gpkg", engine="pyogrio")
    with pytest.raises(InputError, match="no polygon of the labels overlaps"):
        tile_scene(scene, tmp_path / "f", bands="rgbn", size=32, labels=tmp_path / "far.gpkg", raw=True)
    assert not (tmp_path / "f").exists()


def ndimage_blobs(rng, shape) -> np.ndarray:
    """0/1 uint8 blobs (smoothed noise over a threshold), with holes and touching corners."""
    from scipy import ndimage

    return (ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) > 0.1).astype(np.uint8)


def _xyxy(b):
    left, bottom, right, top = b
    return (left, bottom, right, top)


def test_min_valid_skips_windows_with_few_valid_pixels(tmp_path, chittagong_like):
    from lsmap.core.windows import window_grid

    scene, _, data, _ = chittagong_like
    valid = (data != 0).all(axis=0)
    grid = window_grid(70, 90, 32, 0)
    fracs = [valid[w.toslices()].mean() for w in grid]
    for min_valid in (0.0, 0.5, 0.9):
        out = tmp_path / f"p{min_valid}"
        res = tile_scene(scene, out, bands="rgbn", size=32, min_valid=min_valid, raw=True)
        kept = [(w.row_off, w.col_off) for w, f in zip(grid, fracs, strict=False) if f >= min_valid]
        index = read_index(out)
        assert list(zip(index.row_off, index.col_off, strict=False)) == kept
        assert res.n_skipped == len(grid) - len(kept) and res.n_windows == len(grid)
    assert fracs[0] == 0.0  # the nodata corner really is skipped at min_valid > 0


def test_small_scene_is_padded_not_dropped(tmp_path, rng):
    data = make_scene(rng, 20, 50, nodata_frac=0)
    labels = rng.integers(0, 2, size=(20, 50)).astype(np.uint8)
    scene = write_tif(tmp_path / "s.tif", data, nodata=0)
    lab = write_tif(tmp_path / "l.tif", labels)
    res = tile_scene(scene, tmp_path / "o", bands="rgbn", size=32, labels=lab, raw=True)
    assert (res.n_patches, res.n_padded) == (2, 2)
    index = read_index(tmp_path / "o")
    assert list(zip(index.row_off, index.col_off, index.height, index.width, strict=False)) == [(0, 0, 20, 32), (0, 18, 20, 32)]
    assert list(index.valid_fraction) == [1.0, 1.0]  # padding does not count against min_valid
    img, _ = read_image(tmp_path / "o" / "img" / "image_1.h5")
    msk = read_mask(tmp_path / "o" / "mask" / "mask_1.h5")
    assert img.shape == (4, 32, 32) and msk.shape == (32, 32)
    np.testing.assert_array_equal(img[:, :20], scale_raw(data[:, :, 18:], RGBN))
    assert (img[:, 20:] == FILL).all() and (msk[20:] == 255).all()
    np.testing.assert_array_equal(msk[:20, 7:], labels[:, 25:])  # columns 18-24: labelled in patch 0 (centre 25)
    assert (msk[:, :7] == 255).all()


def test_overlap_windows_share_pixels(tmp_path, rng):
    data = make_scene(rng, 80, 80, nodata_frac=0)
    scene = write_tif(tmp_path / "s.tif", data, nodata=0)
    res = tile_scene(scene, tmp_path / "o", bands="rgbn", size=32, overlap=16, raw=True)
    index = read_index(tmp_path / "o")
    assert res.n_patches == 16
    assert sorted(set(index.row_off)) == [0, 16, 32, 48]
    a, _ = read_image(tmp_path / "o" / "img" / "image_0.h5")
    b, _ = read_image(tmp_path / "o" / "img" / "image_1.h5")  # col_off 16
    np.testing.assert_array_equal(a[:, :, 16:], b[:, :, :16])


def test_values_pass_through_without_raw(tmp_path, rng):
    data = rng.normal(size=(14, 40, 40)).astype(np.float32)
    scene = write_tif(tmp_path / "stack.tif", data)
    tile_scene(scene, tmp_path / "o", size=40)
    img, _ = read_image(tmp_path / "o" / "img" / "image_0.h5")
    np.testing.assert_array_equal(img, data)


def test_raw_scene_without_declared_nodata_uses_profile_nodata(tmp_path, rng):
    data = make_scene(rng, 16, 16, nodata_frac=0.3)
    scene = write_tif(tmp_path / "s.tif", data, nodata=None)
    tile_scene(scene, tmp_path / "o", bands="rgbn", size=16, min_valid=0, raw=True)
    np.testing.assert_array_equal(assemble_patches(tmp_path / "o").image, expected_image(data)[0])


def test_label_maps():
    assert parse_label_map("0:255,1:0,2:1") == {0: 255, 1: 0, 2: 1}
    assert parse_label_map(None) is None
    for bad in ("0-255", "a:1", "", "1:7"):
        with pytest.raises(InputError):
            parse_label_map(bad)
    np.testing.assert_array_equal(map_labels(np.array([[0, 1], [1, 255]]), None, "l.tif"), [[0, 1], [1, 255]])
    with pytest.raises(InputError, match=r"l\.tif: label values 2"):
        map_labels(np.array([0, 2]), None, "l.tif")
    np.testing.assert_array_equal(map_labels(np.array([0, 1, 2], np.uint16), {0: 255, 1: 0, 2: 1}, "l"), [255, 0, 1])


# --- bad input ----------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_failed(result, *needles):
    assert result.exit_code != 0
    msg = result.output.strip()
    assert msg.startswith("Error: ") and len(msg.splitlines()) == 1, msg
    for n in needles:
        assert str(n) in msg


def test_cli_tile_happy_path(tmp_path, chittagong_like):
    scene, lab, _, _ = chittagong_like
    out = tmp_path / "cli"
    r = run_cli("tile", scene, "-o", out, "--size", 32, "--bands", "rgbn", "--raw", "--labels", lab,
                "--label-map", "0:255,1:0,2:1", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["n_patches"] == len(read_index(out)) and d["labelled"]
    r = run_cli("tile", scene, "-o", out, "--size", 32, "--bands", "rgbn", "--raw")
    assert_failed(r, out, "--overwrite")
    r = run_cli("tile", scene, "-o", out, "--size", 32, "--bands", "rgbn", "--raw", "--overwrite")
    assert r.exit_code == 0 and "patches of 32 px" in r.output
    assert not (out / "mask").exists()


def test_existing_output_is_refused_before_work(tmp_path, chittagong_like, monkeypatch):
    scene, _, _, _ = chittagong_like
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    import lsmap.data.tile

    monkeypatch.setattr(lsmap.data.tile, "open_scene", lambda *a, **k: pytest.fail("opened the scene"))
    with pytest.raises(OutputExistsError):
        tile_scene(scene, out, bands="rgbn")
    assert leftovers(out) == ["keep.txt"]


@pytest.mark.parametrize("case", ["bands", "grid_shift", "grid_pixel", "grid_apart", "grid_crs", "label_values",
                                  "garbage", "truncated", "missing", "all_skipped", "label_bands"])
def test_bad_input_one_line_error_nothing_left(tmp_path, rng, case):
    data = make_scene(rng, 64, 64, nodata_frac=0)
    scene = write_tif(tmp_path / "scene.tif", data, nodata=0, block=16)
    labels = np.zeros((64, 64), np.uint8)
    lab, extra, bands, needle = tmp_path / "labels.tif", [], "rgbn", None
    if case == "bands":
        write_tif(lab, labels)
        bands, needle = "l4s14", scene
    elif case == "grid_shift":
        write_tif(lab, labels, origin=(400000.0 + PIXEL / 2, 3690000.0))
        needle = lab
    elif case == "grid_pixel":
        write_tif(lab, np.zeros((32, 32), np.uint8), pixel=2 * PIXEL)
        needle = lab
    elif case == "grid_apart":  # aligned, but 100 px east of the scene
        write_tif(lab, labels, origin=(400000.0 + 100 * PIXEL, 3690000.0))
        needle = "do not cover"
    elif case == "grid_crs":
        write_tif(lab, labels, crs="EPSG:32647")
        needle = lab
    elif case == "label_values":
        labels[5, 5] = 2
        write_tif(lab, labels)
        needle = "--label-map"
    elif case == "label_bands":
        write_tif(lab, np.zeros((2, 64, 64), np.uint8))
        needle = lab
    elif case == "garbage":
        write_tif(lab, labels)
        scene.write_bytes(b"not a tiff at all" * 100)
        needle = scene
    elif case == "truncated":
        write_tif(lab, labels)
        blob = scene.read_bytes()
        scene.write_bytes(blob[: len(blob) // 2])
        needle = scene
    elif case == "missing":
        lab = tmp_path / "nope.tif"
        needle = lab
    elif case == "all_skipped":
        write_tif(lab, labels)
        data[:, :, 1:] = 0
        write_tif(scene, data, nodata=0)
        needle = "--min-valid"
    before = leftovers(tmp_path)
    r = run_cli("tile", scene, "-o", tmp_path / "out" / "patches", "--size", 32, "--bands", bands, "--raw",
                "--labels", lab, *extra)
    assert_failed(r, needle)
    assert leftovers(tmp_path) == before  # no output, no temporary folder


def test_tile_and_stats_take_the_band_names_lsmap_stack_wrote(tmp_path, rng):
    # found on real L2A bands: `lsmap tile stack.tif` assumed 14 L4S bands and refused the 11-band stack that
    # `lsmap stack` had just written, as `lsmap stats` did; detect read its band names
    from detect_fixtures import write_scene

    l2a = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B11", "B12"]
    scene = write_scene(tmp_path / "l2a.tif", 1.0 + 0.1 * rng.random((11, 64, 64)), bands=l2a)
    res = CliRunner().invoke(main, ["tile", str(scene), "-o", str(tmp_path / "p"), "--size", "32"])
    assert res.exit_code == 0, res.output
    assert read_tiles_meta(tmp_path / "p")["bands"]["bands"] == l2a
    res = CliRunner().invoke(main, ["stats", str(scene), "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["bands"] == l2a and len(stats["mean"]) == 11
    res = CliRunner().invoke(main, ["stats", str(tmp_path / "p"), "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output  # the patches' own bands (tiles.json), not the L4S 14
    assert json.loads((tmp_path / "p.json").read_text())["bands"] == l2a
    res = CliRunner().invoke(main, ["tile", str(scene), "-o", str(tmp_path / "q"), "--bands", "l4s14"])
    assert res.exit_code == 1 and "14 bands" in res.output  # a band set given is still checked


def test_library_errors_are_typed(tmp_path, rng):
    scene = write_tif(tmp_path / "scene.tif", make_scene(rng, 8, 8), nodata=0)
    with pytest.raises(BandMismatchError):
        tile_scene(scene, tmp_path / "o", bands="l4s14")
    with pytest.raises(InputError, match="4 bands without band names"):  # no `bands`: the file's names, or say so
        tile_scene(scene, tmp_path / "o")
    with pytest.raises(MissingInputError):
        tile_scene(tmp_path / "none.tif", tmp_path / "o")
    for kw in ({"size": 0}, {"overlap": 128}, {"min_valid": 1.5}, {"label_map": "0:1"}):
        with pytest.raises(InputError):
            tile_scene(scene, tmp_path / "o", bands="rgbn", **kw)
    assert not (tmp_path / "o").exists()


# --- real data ----------------------------------------------------------------------------------


@pytest.mark.realdata
def test_chittagong_tiles_cover_valid_area_and_read_back_exactly(tmp_path):
    import rasterio
    import shapely
    from rasterio.windows import Window, bounds

    mosaic = shared_data("scenes", "chittagong_s2_rgbn", "mosaic")
    scene, lab = mosaic / "chittagong_s2_rgbn_mosaic.tif", mosaic / "chittagong_labels_mosaic.tif"
    out = tmp_path / "ct"
    res = tile_scene(scene, out, bands="rgbn", size=128, labels=lab, label_map="0:255,1:0,2:1",
                     min_valid=1 / (128 * 128), raw=True)
    with rasterio.open(scene) as src, rasterio.open(lab) as lsrc:
        data, transform = src.read(), src.transform
        labels = lsrc.read(1)
    valid = (data != 0).all(axis=0)
    index = read_index(out)
    assert res.n_windows == 144 and res.n_patches == len(index) > 0
    # every valid pixel centre lies in some footprint
    rows, cols = np.nonzero(valid)
    xs, ys = rasterio.transform.xy(transform, rows, cols, offset="center")
    union = shapely.union_all(index.geometry.values)
    assert shapely.contains_xy(union, np.asarray(xs), np.asarray(ys)).all()
    # every patch reads back bit-identical to its scene window (scaled, nodata -> FILL / 255)
    image = np.where(valid, scale_raw(data, RGBN), np.float32(FILL))
    mask = np.where(valid, np.array([255, 0, 1], np.uint8)[labels], 255)
    for row in index.itertuples():
        win = Window(row.col_off, row.row_off, row.width, row.height)
        np.testing.assert_allclose(row.geometry.bounds, bounds(win, transform), rtol=0, atol=1e-12)
        r, c = slice(row.row_off, row.row_off + 128), slice(row.col_off, row.col_off + 128)
        patch, _ = read_image(out / "img" / f"image_{row.id}.h5")
        np.testing.assert_array_equal(patch, image[:, r, c])
        np.testing.assert_array_equal(read_mask(out / "mask" / f"mask_{row.id}.h5"), mask[r, c])
    total = index.landslide_pixels.sum()
    assert total == ((labels == 2) & valid).sum() > 0  # no landslide pixel lost with min_valid this low


def test_tiles_are_read_through_a_cache_of_a_row_of_blocks(tmp_path, rng, monkeypatch):
    """Every window is read with GDAL's block cache bounded to a row of the scene's blocks (at least
    GDAL_CACHE_MB): GDAL's default, 5 % of the RAM, kept every block it decoded (648 MB against 319 MB for a
    4096^2 stack, measured)."""
    import rasterio.env

    import lsmap.data.tile as tile
    from lsmap.io.rasters import GDAL_CACHE_MB, row_cache_bytes

    scene = write_tif(tmp_path / "s.tif", make_scene(rng, 40, 64), nodata=0, block=16)
    seen, read = [], tile.read_scene_window
    monkeypatch.setattr(tile, "read_scene_window",
                        lambda *a, **k: seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX")) or read(*a, **k))
    tile_scene(scene, tmp_path / "p", bands="rgbn", size=16, raw=True)
    with rasterio.open(scene) as src:
        assert row_cache_bytes(src) == GDAL_CACHE_MB * 2**20  # a small scene: the least
        wide = row_cache_bytes(src, least_mb=0)
    assert seen and set(seen) == {GDAL_CACHE_MB * 2**20}
    assert wide == int(1.25 * 4 * 16 * (64 // 16 + 1) * 16 * 2)  # bands x block rows x (blocks + 1) x cols x bytes


def test_a_0_255_label_export_is_refused_and_landslide_free_labels_are_said(tmp_path, chittagong_like):
    """A 0/255 export without nodata became all-ignored masks with exit 0 (the CLI audit); train and evaluate
    refuse such folders, so tile does too, before anything is written; all-0 labels are written with a warning."""
    from lsmap.errors import LsmapWarning

    scene, _, _, labels = chittagong_like
    export = write_tif(tmp_path / "export.tif", np.where(labels == 2, 255, 0).astype(np.uint8))
    with pytest.raises(InputError, match=r"export.tif: no label pixel is 1 .* `label_map` 0:0,255:1"):
        tile_scene(scene, tmp_path / "p", bands="rgbn", size=32, labels=export, raw=True)
    assert not (tmp_path / "p").exists()
    res = tile_scene(scene, tmp_path / "q", bands="rgbn", size=32, labels=export, label_map="0:0,255:1", raw=True)
    assert res.n_patches and read_index(tmp_path / "q")["landslide_pixels"].sum() > 0
    zeros = write_tif(tmp_path / "zeros.tif", np.zeros_like(labels))
    with pytest.warns(LsmapWarning, match="zeros.tif: the patches hold no landslide pixel"):
        tile_scene(scene, tmp_path / "z", bands="rgbn", size=32, labels=zeros, raw=True)
    assert (tmp_path / "z").is_dir()


def test_an_existing_empty_folder_is_taken_as_the_output(tmp_path, chittagong_like):
    """A script's os.makedirs(out) before tile_scene(scene, out) was refused as an existing output (API audit);
    a folder holding anything is still refused without `overwrite`."""
    from lsmap.errors import OutputExistsError

    scene = chittagong_like[0]
    (tmp_path / "t").mkdir()
    assert tile_scene(scene, tmp_path / "t", bands="rgbn", size=32, raw=True).n_patches
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        tile_scene(scene, tmp_path / "u", bands="rgbn", size=32, raw=True)
    assert (tmp_path / "u" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("size", [3, 0, -8, 15.5, True])
def test_a_patch_size_below_the_smallest_window_is_refused(tmp_path, chittagong_like, size):
    """``--size 3`` wrote 25,480 patches of 3 px in 77 s (the CLI audit)."""
    with pytest.raises(InputError, match=r"`size` must be an integer( of at least 16)? \(got"):
        tile_scene(chittagong_like[0], tmp_path / "p", bands="rgbn", size=size, raw=True)
    assert not (tmp_path / "p").exists()
