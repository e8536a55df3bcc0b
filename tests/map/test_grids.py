"""Grids that are not north-up: south-up (a positive y pixel size) and rotated ones, through detect, the
quick-look, stack and tile (found by an audit: a quick-look crash that lost the run's outputs, stack refusing
south-up band files, wrong areas and footprints on rotated grids)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from detect_fixtures import tiny_checkpoint

import lsmap
from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.core.windows import Window, footprint, is_north_up
from lsmap.data.tile import read_index, tile_scene
from lsmap.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
RGBN = get_profile("rgbn")
X0, Y0 = 620000.0, 1270000.0
SOUTH_UP = Affine(10, 0, X0, 0, 10, Y0)  # row 0 is the southern edge
ROTATED = Affine.translation(X0, Y0) @ Affine.rotation(15) @ Affine.scale(10, -10)


def _scene(path, transform, rng, bands=4, dtype="float32", size=(48, 64)):
    data = rng.uniform(0.5, 1.5, (bands, *size)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=size[1], height=size[0], count=bands, dtype=dtype,
                       crs="EPSG:32643", transform=transform) as dst:
        dst.write(data)
        if bands == 4:
            dst.descriptions = tuple(RGBN.bands)
    return path


def test_footprints_of_rotated_and_south_up_windows():
    win = Window(col_off=2, row_off=3, width=4, height=5)
    north = footprint(win, Affine(10, 0, X0, 0, -10, Y0))
    assert north.equals(shapely.box(X0 + 20, Y0 - 80, X0 + 60, Y0 - 30))
    assert footprint(win, SOUTH_UP).equals(shapely.box(X0 + 20, Y0 + 30, X0 + 60, Y0 + 80))
    rot = footprint(win, ROTATED)
    assert rot.area == pytest.approx(40 * 50) and not rot.equals(shapely.box(*rot.bounds))
    assert is_north_up(SOUTH_UP) and not is_north_up(ROTATED)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("m") / "m", "rgbn")


def test_a_south_up_scene_gets_a_north_up_quick_look_and_its_outputs(tmp_path, rng, model):
    """It crashed after the models had run (a negative figure height), and the polygons were lost."""
    scene = _scene(tmp_path / "su.tif", SOUTH_UP, rng)
    gdf = lsmap.detect(scene, [model], out=tmp_path / "su.gpkg", quicklook=tmp_path / "su.png", window=64)
    assert (tmp_path / "su.gpkg").is_file() and mpimg.imread(tmp_path / "su.png").shape[0] > 100
    assert gdf.attrs["lsmap"]["scene_km2"] == pytest.approx(48 * 64 * 100 / 1e6)


def test_a_rotated_scene_has_its_true_area_and_is_refused_a_map_before_any_work(tmp_path, rng, model):
    scene = _scene(tmp_path / "rot.tif", ROTATED, rng)
    gdf = lsmap.detect(scene, [model], window=64)
    assert gdf.attrs["lsmap"]["scene_km2"] == pytest.approx(48 * 64 * 100 / 1e6, rel=1e-6)  # was cos^2 15 deg smaller
    with pytest.raises(InputError, match="rotated or sheared.*warp it first.*leave out `quicklook` and `report`"):
        lsmap.detect(scene, [model], out=tmp_path / "r.gpkg", quicklook=tmp_path / "r.png", window=64)
    assert not (tmp_path / "r.gpkg").exists()


def test_tile_index_footprints_follow_a_rotated_grid(tmp_path, rng):
    scene = _scene(tmp_path / "rot.tif", ROTATED, rng)
    tile_scene(scene, tmp_path / "p", bands="rgbn", size=32)
    for row in read_index(tmp_path / "p").itertuples():
        want = footprint(Window(row.col_off, row.row_off, row.width, row.height), ROTATED)
        assert row.geometry.symmetric_difference(want).area < 1e-6


def test_south_up_band_files_are_stacked(tmp_path, rng):
    folder = tmp_path / "bands"
    folder.mkdir()
    for band in RGBN.bands:
        dn = rng.integers(1100, 3000, (1, 40, 50)).astype("uint16")
        with rasterio.open(folder / f"T43PFN_20190809T051651_{band.replace('B', 'B0') if len(band) == 2 else band}_10m.tif",
                           "w", driver="GTiff", width=50, height=40, count=1, dtype="uint16", crs="EPSG:32643",
                           transform=SOUTH_UP) as dst:
            dst.write(dn)
    res = CliRunner().invoke(main, ["stack", str(folder), "--bands", "rgbn", "--offset", "-1000", "-o",
                                    str(tmp_path / "s.tif")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "s.tif") as src:
        assert (src.width, src.height) == (50, 40) and src.count == 4


# --- values at the wrong scale (the same audit: fractions read as L4S values gave 0 polygons, silently) ------


def test_values_at_the_wrong_scale_are_said(tmp_path, rng, model):
    """detect, tile and stats warn when a scene's spectral bands average far from a Sentinel-2 scene on the L4S
    scale (reflectance as a fraction; raw digital numbers read as L4S values); a plausible scene gives none."""
    import warnings

    from lsmap.data.stats import compute_stats
    from lsmap.errors import LsmapWarning

    north = Affine(10, 0, X0, 0, -10, Y0)
    dn = rng.integers(300, 2500, (4, 48, 64)).astype("float32")
    l4s = dn / np.asarray(RGBN.divisors, np.float32)[:, None, None]
    fractions = dn / 10000
    for name, data in (("l4s", l4s), ("fractions", fractions), ("dn", dn)):
        with rasterio.open(tmp_path / f"{name}.tif", "w", driver="GTiff", width=64, height=48, count=4,
                           dtype="float32", crs="EPSG:32643", transform=north) as dst:
            dst.write(data)
            dst.descriptions = tuple(RGBN.bands)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)
        lsmap.detect(tmp_path / "l4s.tif", [model], window=64)
        tile_scene(tmp_path / "l4s.tif", tmp_path / "p", bands="rgbn", size=32)
        compute_stats(tmp_path / "l4s.tif", "rgbn")
    with pytest.warns(LsmapWarning, match=r"fractions.tif: its spectral bands average 0.1\d* on the L4S scale \(read "
                                          r"as L4S values\).*reflectance as a fraction"):
        lsmap.detect(tmp_path / "fractions.tif", [model], window=64)
    with pytest.warns(LsmapWarning, match=r"raw digital numbers read as L4S values\? give `input_scale` raw"):
        lsmap.detect(tmp_path / "dn.tif", [model], window=64, input_scale="l4s")
    with pytest.warns(LsmapWarning, match=r"raw digital numbers read as L4S values\? give `raw`"):
        tile_scene(tmp_path / "dn.tif", tmp_path / "q", bands="rgbn", size=32)
    with pytest.warns(LsmapWarning, match=r"raw digital numbers read as L4S values\? give `raw`"):
        compute_stats(tmp_path / "dn.tif", "rgbn")


def test_band_files_of_reflectance_fractions_are_refused_by_stack(tmp_path, rng):
    """Band files holding 0-1 reflectance were stacked as '100 % valid' with 2 distinct codes left in a band."""
    folder = tmp_path / "bands"
    folder.mkdir()
    north = Affine(10, 0, X0, 0, -10, Y0)
    for band in RGBN.bands:
        with rasterio.open(folder / f"T43PFN_20190809T051651_{band.replace('B', 'B0')}_10m.tif", "w", driver="GTiff",
                           width=50, height=40, count=1, dtype="float32", crs="EPSG:32643", transform=north) as dst:
            dst.write(rng.uniform(0.01, 0.4, (1, 40, 50)).astype("float32"))
    res = CliRunner().invoke(main, ["stack", str(folder), "--bands", "rgbn", "-o", str(tmp_path / "s.tif")])
    assert res.exit_code == 1 and "reflectance as a fraction (0-1)" in res.output
    assert "multiply the band files by 10000 first" in res.output and not (tmp_path / "s.tif").exists()


def test_an_existing_folder_named_like_a_vector_file_gets_its_own_message(tmp_path, rng, model):
    """`-o dir.gpkg` where dir.gpkg is a folder said 'several scenes write a folder' for one scene."""
    scene = _scene(tmp_path / "s.tif", Affine(10, 0, X0, 0, -10, Y0), rng)
    (tmp_path / "dir.gpkg").mkdir()
    res = CliRunner().invoke(main, ["detect", str(scene), "--model", str(model), "-o", str(tmp_path / "dir.gpkg")])
    assert res.exit_code == 1 and "dir.gpkg: is an existing folder" in res.output
    assert "several scenes" not in res.output


def test_a_geographic_stack_is_summarised_in_degrees(tmp_path, rng):
    folder = tmp_path / "bands"
    folder.mkdir()
    for band in RGBN.bands:
        with rasterio.open(folder / f"T43PFN_20190809T051651_{band.replace('B', 'B0')}_10m.tif", "w", driver="GTiff",
                           width=50, height=40, count=1, dtype="uint16", crs="EPSG:4326",
                           transform=Affine(0.0001, 0, 76.1, 0, -0.0001, 11.5)) as dst:
            dst.write(rng.integers(300, 3000, (1, 40, 50)).astype("uint16"))
    res = CliRunner().invoke(main, ["stack", str(folder), "--bands", "rgbn", "--offset", "0", "-o", str(tmp_path / "s.tif")])
    assert res.exit_code == 0, res.output
    assert "50 x 40 px at 0.0001 degrees, EPSG:4326" in res.output


def test_a_south_up_scene_is_shown_to_the_models_north_up(tmp_path, rng, model):
    """The same ground stored south-up gave another map without TTA (the models saw it upside down): its windows
    are now turned north-up for the models and their output turned back, so the maps agree."""
    data = rng.uniform(0.5, 1.5, (4, 64, 64)).astype("float32")
    for name, transform, arr in (("north", Affine(10, 0, X0, 0, -10, Y0 + 640), data),
                                 ("south", SOUTH_UP, data[:, ::-1])):
        with rasterio.open(tmp_path / f"{name}.tif", "w", driver="GTiff", width=64, height=64, count=4,
                           dtype="float32", crs="EPSG:32643", transform=transform) as dst:
            dst.write(np.ascontiguousarray(arr))
            dst.descriptions = tuple(RGBN.bands)
        lsmap.detect(tmp_path / f"{name}.tif", [model], prob=tmp_path / f"{name}_p.tif", window=64, overlap=0)
    with rasterio.open(tmp_path / "north_p.tif") as a, rasterio.open(tmp_path / "south_p.tif") as b:
        north, south = a.read(1), b.read(1)
    assert (north != north[0, 0]).any()  # a map with something in it
    np.testing.assert_array_equal(south[::-1], north)


def test_stats_that_cannot_normalise_are_not_written(tmp_path, rng):
    """A 1-pixel scene's statistics (std 0) were written, then refused by every command that reads them."""
    with rasterio.open(tmp_path / "px.tif", "w", driver="GTiff", width=1, height=1, count=4, dtype="float32",
                       crs="EPSG:32643", transform=Affine(10, 0, X0, 0, -10, Y0)) as dst:
        dst.write(np.ones((4, 1, 1), "float32"))
        dst.descriptions = tuple(RGBN.bands)
    res = CliRunner().invoke(main, ["stats", str(tmp_path / "px.tif"), "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 1 and "band B4 has std 0.0 (a constant band) over 1 pixels" in res.output
    assert "nothing written" in res.output and not (tmp_path / "s.json").exists()


def test_offset_band_files_with_a_few_dark_pixels_still_look_offset(tmp_path, rng):
    """T29UNU's IMG_DATA bands (baseline 04.00) have 2 % of their valid pixels under DN 1000 (dark water), so
    the old rule (no DN below 1000) called them not offset and stacked them 0.1 too bright without a word."""
    import warnings

    from lsmap.data.stack import stack_scene
    from lsmap.errors import LsmapWarning

    north = Affine(10, 0, X0, 0, -10, Y0)
    for name, low in (("offset", 1100), ("plain", 150)):
        folder = tmp_path / name
        folder.mkdir()
        for band in RGBN.bands:
            dn = rng.integers(low, 3000, (1, 40, 50)).astype("uint16")
            dn[0, :1, :40] = 900  # 2 % of the pixels: water darker than the offset
            with rasterio.open(folder / f"T43PFN_20190809T051651_{band.replace('B', 'B0')}_10m.tif", "w",
                               driver="GTiff", width=50, height=40, count=1, dtype="uint16", crs="EPSG:32643",
                               transform=north) as dst:
                dst.write(dn)
    with pytest.warns(LsmapWarning, match=r"look offset: 2.0 % of the valid pixels below 1000 \(the median band\)"):
        stack_scene(tmp_path / "offset", tmp_path / "o.tif", bands="rgbn")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)
        stack_scene(tmp_path / "plain", tmp_path / "p.tif", bands="rgbn")
    res = CliRunner().invoke(main, ["info", str(tmp_path / "offset")])
    assert res.exit_code == 0 and "looks offset" in res.output and "--offset -1000" in res.output


def test_band_files_inside_a_product_are_refused_without_offset(tmp_path):
    """A product's IMG_DATA folder was read as loose band files without its -1000 offset (and without its SCL);
    now the product itself is asked for, or an explicit `offset`."""
    from products_fixtures import make_safe

    from lsmap.data.stack import stack_scene

    safe = make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8"))
    img = next(safe.glob("GRANULE/*/IMG_DATA"))
    with pytest.raises(InputError, match=rf"lie inside the product {safe.name}; give the product itself"):
        stack_scene(img, tmp_path / "a.tif", bands="rgbn")
    assert not (tmp_path / "a.tif").exists()
    stack_scene(img, tmp_path / "b.tif", bands="rgbn", offset=-1000)  # the analyst's explicit choice
    stack_scene(safe, tmp_path / "c.tif", bands="rgbn")
    with rasterio.open(tmp_path / "b.tif") as b, rasterio.open(tmp_path / "c.tif") as c:
        np.testing.assert_array_equal(b.read(), c.read())


def test_an_area_all_under_the_mask_says_so(tmp_path, rng, model):
    """A fully clouded AOI failed with 'stack.tif: the scene has no valid pixel ... check its nodata value'."""
    scene = _scene(tmp_path / "s.tif", Affine(10, 0, X0, 0, -10, Y0), rng)
    with rasterio.open(tmp_path / "clouds.tif", "w", driver="GTiff", width=64, height=48, count=1, dtype="uint8",
                       crs="EPSG:32643", transform=Affine(10, 0, X0, 0, -10, Y0)) as dst:
        dst.write(np.ones((1, 48, 64), "uint8"))
    with pytest.raises(InputError, match=r"s.tif: no pixel is left to map: the not-observed mask covers 100 % of the "
                                         r"area \(mask 100 %\)"):
        lsmap.detect(scene, [model], mask_raster=tmp_path / "clouds.tif", window=64)


def test_a_pre_scene_without_band_names_is_told_to_take_pre_bands(tmp_path, rng, model):
    scene = _scene(tmp_path / "post.tif", Affine(10, 0, X0, 0, -10, Y0), rng)
    with rasterio.open(tmp_path / "pre.tif", "w", driver="GTiff", width=64, height=48, count=5, dtype="float32",
                       crs="EPSG:32643", transform=Affine(10, 0, X0, 0, -10, Y0)) as dst:
        dst.write(rng.uniform(0.5, 1.5, (5, 48, 64)).astype("float32"))
    with pytest.raises(InputError, match=r"pre.tif: 5 bands without band names .*pass `pre_bands`"):
        lsmap.detect(scene, [model], pre=tmp_path / "pre.tif", window=64)


def test_an_area_of_interest_partly_outside_the_scene_is_said(tmp_path, rng):
    """An AOI reaching past the product was cut down silently (15 % of the box kept in the audit)."""
    from lsmap.errors import LsmapWarning
    from lsmap.io.aoi import aoi_window, parse_bbox

    north = Affine(10, 0, X0, 0, -10, Y0)
    inside = parse_bbox([X0 + 100, Y0 - 300, X0 + 400, Y0 - 100], "EPSG:32643")
    half = parse_bbox([X0 - 300, Y0 - 300, X0 + 300, Y0 - 100], "EPSG:32643")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)
        assert aoi_window(inside, "EPSG:32643", north, 64, 48).width == 30
    with pytest.warns(LsmapWarning, match=r"covers only 50 % of the area of interest's bounding box"):
        win = aoi_window(half, "EPSG:32643", north, 64, 48)
    assert (win.col_off, win.width) == (0, 30)


def test_a_south_up_scene_is_tiled_into_north_up_patches(tmp_path, rng):
    """Patches of a south-up scene were written south-up (training saw the ground upside down, with nothing to say
    so). They are now turned north-up, with their labels; tiles.json names the turn and the scene is put back
    together unchanged."""
    from lsmap.data.tile import assemble_patches, read_tiles_meta
    from lsmap.io.patches import read_image, read_mask

    data = rng.uniform(0.5, 1.5, (4, 64, 64)).astype("float32")
    truth = (rng.random((64, 64)) < 0.2).astype("uint8")
    patches = {}
    for name, transform, arr, lab in (("north", Affine(10, 0, X0, 0, -10, Y0 + 640), data, truth),
                                      ("south", SOUTH_UP, data[:, ::-1], truth[::-1])):
        for what, values in (("", arr), ("_mask", lab[None])):
            with rasterio.open(tmp_path / f"{name}{what}.tif", "w", driver="GTiff", width=64, height=64,
                               count=len(values), dtype=values.dtype, crs="EPSG:32643", transform=transform) as dst:
                dst.write(np.ascontiguousarray(values))
                if not what:
                    dst.descriptions = tuple(RGBN.bands)
        tile_scene(tmp_path / f"{name}.tif", tmp_path / name, size=32, labels=tmp_path / f"{name}_mask.tif")
        patches[name] = {int(r.id): (r.row_off, r.col_off) for r in read_index(tmp_path / name).itertuples()}
    assert read_tiles_meta(tmp_path / "south")["turned"] == ["rows"] and read_tiles_meta(tmp_path / "north")["turned"] == []
    for sid, (row, col) in patches["south"].items():  # the same ground: the patch at the mirrored row
        nid = next(i for i, (r, c) in patches["north"].items() if r == 64 - 32 - row and c == col)
        np.testing.assert_array_equal(read_image(tmp_path / "south" / "img" / f"image_{sid}.h5")[0],
                                      read_image(tmp_path / "north" / "img" / f"image_{nid}.h5")[0])
        np.testing.assert_array_equal(read_mask(tmp_path / "south" / "mask" / f"mask_{sid}.h5"),
                                      read_mask(tmp_path / "north" / "mask" / f"mask_{nid}.h5"))
    back = assemble_patches(tmp_path / "south")
    np.testing.assert_array_equal(back.image, data[:, ::-1])
    np.testing.assert_array_equal(back.mask, truth[::-1])


def test_a_geographic_scene_is_drawn_true_to_the_ground(tmp_path, rng, model):
    """A scene in degrees was drawn with equal degrees on both axes: at 60 degrees north a square in degrees is
    twice as tall as wide on the ground, and was drawn square (found by an audit: 13 % stretch in Kerala)."""
    import lsmap

    data = rng.uniform(0.5, 1.5, (4, 64, 64)).astype("float32")
    with rasterio.open(tmp_path / "geo.tif", "w", driver="GTiff", width=64, height=64, count=4, dtype="float32",
                       crs="EPSG:4326", transform=Affine(1e-4, 0, 10.0, 0, -1e-4, 60.0)) as dst:
        dst.write(data)
        dst.descriptions = tuple(RGBN.bands)
    lsmap.detect(tmp_path / "geo.tif", [model], out=tmp_path / "g.gpkg", quicklook=tmp_path / "g.png", window=64,
                 overlap=0)
    h, w = mpimg.imread(tmp_path / "g.png").shape[:2]
    assert h > w  # the map 2:1 (it was a square map in a landscape figure)


def test_an_area_too_far_to_project_into_the_grid_crs_is_outside_in_one_line():
    """A lon/lat box on the other side of the globe projects to infinite UTM coordinates: GEOS raised a NaN/Inf
    traceback in stats, stack, tile and detect (found by the CLI audit)."""
    from lsmap.errors import OutsideError
    from lsmap.io.aoi import aoi_window, parse_bbox

    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 3080000.0)
    with pytest.raises(OutsideError, match=r"--bbox 0,0,1,1: .* does not overlap the grid .*too far away"):
        aoi_window(parse_bbox("0,0,1,1"), "EPSG:32645", transform, 512, 512, where="the grid")
