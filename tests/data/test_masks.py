"""Not-observed masks (issue 19): SCL and user masks, honoured by the statistics, the model input, the
rasters and the polygons; the ``not_observed`` layer; bad masks as one-line errors."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from _rasters import write_tif
from click.testing import CliRunner
from detect_fixtures import Band0Model, member, smooth_scene, write_scene

import lsmap
from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.data.masks import DEFAULT_SCL_CLASSES, MaskSpec, parse_scl_classes, write_not_observed
from lsmap.data.scan import scan_scene
from lsmap.errors import InputError
from lsmap.io.scene import scene_info

KW = dict(window=64, overlap=16, device="cpu")
ORIGIN = (500000.0, 3000000.0)  # write_scene's default


def cloudy(rng, h=200, w=240):
    """A scene with three landslide blobs in band 0 (2.0 on them), a bright cloud deck over one of them and
    its SCL (20 m): cloud (9) on the deck, shadow (3) beside it, vegetation (4) elsewhere."""
    data = smooth_scene(rng, h=h, w=w)
    yy, xx = np.mgrid[:h, :w]
    blobs = np.zeros((h, w), bool)
    blobs[30:60, 30:70] = True
    blobs[120:150, 150:200] = True
    blobs[140:170, 20:50] = True
    data[0] = np.where(blobs, 2.0, 0.5)
    cloud = np.zeros((h, w), bool)
    cloud[100:180, 120:220] = True  # the second blob lies under it
    data[:, cloud] = 5.0  # a bright deck: band 0 high too, so an unmasked cloud reads as a landslide
    scl = np.full((h // 2, w // 2), 4, np.uint8)
    scl[50:90, 60:110] = 9
    scl[20:30, 0:20] = 3
    return data, blobs, cloud, scl


def scl_file(path, scl):
    return write_tif(path, scl, crs="EPSG:32645", origin=ORIGIN, pixel=20.0)


def test_scl_classes_parsed_and_unknown_class_is_an_error():
    assert parse_scl_classes(None) == DEFAULT_SCL_CLASSES == (0, 1, 3, 8, 9, 10, 11)
    assert parse_scl_classes("9, 8,3") == (3, 8, 9) and parse_scl_classes("none") == ()
    for bad in ("12", "cloud", "3.5", "-1"):
        with pytest.raises(InputError, match="`scl_mask`"):
            parse_scl_classes(bad)


def test_statistics_of_a_masked_scene_equal_those_of_its_clear_pixels(tmp_path, rng):
    data, _, cloud, scl = cloudy(rng)
    data[:, :10, :10] = -9999.0  # scene nodata too
    scene = write_scene(tmp_path / "scene.tif", data, nodata=-9999.0)
    profile = get_profile("l4s14")
    info = scene_info(scene, profile)
    nobs = write_not_observed(MaskSpec(scl=scl_file(tmp_path / "scl.tif", scl)), info, tmp_path / "no.tif", block=64)
    with rasterio.open(nobs.path) as src:
        codes = src.read(1)
    masked = np.kron(np.isin(scl, DEFAULT_SCL_CLASSES), np.ones((2, 2), bool))
    np.testing.assert_array_equal(codes != 0, masked)
    assert set(np.unique(codes)) == {0, 2, 3} and nobs.counts == {"cloud": 8000, "shadow": 800}
    got = scan_scene(info.__class__(**{**info.__dict__, "mask": nobs.path}), profile, block=64).stats
    clear = ~masked
    clear[:10, :10] = False
    px = data[:, clear].astype(np.float64)
    np.testing.assert_allclose(got.mean, px.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(got.std, px.std(axis=1), rtol=1e-4)
    assert got.count == clear.sum()
    unmasked = scan_scene(info, profile, block=64).stats
    assert unmasked.mean[0] > got.mean[0] + 0.3  # the deck moved the statistics without the mask


def test_detect_with_scl_masks_clouds_everywhere(tmp_path, rng):
    data, blobs, cloud, scl = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data)
    m = member(Band0Model(), mean=1.0, std=0.5)
    out = tmp_path / "slides.gpkg"
    bare = lsmap.detect(scene, [m], norm="model", **KW)
    assert any(g.intersects(_box(110, 130, 200, 210)) for g in bare.geometry)  # the cloud is a "landslide"
    gdf = lsmap.detect(scene, [m], out=out, norm="model", prob=tmp_path / "prob.tif", mask=tmp_path / "mask.tif",
                       scl=scl_file(tmp_path / "scl.tif", scl), fill_holes=1e6, **KW)
    masked = np.kron(np.isin(scl, DEFAULT_SCL_CLASSES), np.ones((2, 2), bool))
    for name in ("prob.tif", "mask.tif"):
        with rasterio.open(tmp_path / name) as src:
            v = src.read(1)
        assert (v[masked] == 255).all() and (v[~masked] != 255).all()
    layers = {name for name, _ in __import__("pyogrio").list_layers(out)}
    assert {"slides", "not_observed"} <= layers
    no = gpd.read_file(out, layer="not_observed")
    assert sorted(no["reason"]) == ["cloud", "shadow"]
    np.testing.assert_allclose(no.set_index("reason")["area_m2"]["cloud"], 8000 * 100.0)
    slides = gpd.read_file(out, layer="slides")
    union = no.geometry.union_all()
    assert len(slides) == 2 and all(g.intersection(union).area == 0 for g in slides.geometry)
    assert sorted(slides["near_not_observed"]) == [False, True]  # the blob cut by the shadow; the clear one
    s = gdf.attrs["lsmap"]
    assert s["not_observed_km2"] == pytest.approx(masked.sum() * 100 / 1e6)
    assert s["observed_km2"] == pytest.approx((~masked).sum() * 100 / 1e6)


def _box(r0, c0, r1, c1):
    from shapely.geometry import box

    x0, y0 = ORIGIN
    return box(x0 + 10 * c0, y0 - 10 * r1, x0 + 10 * c1, y0 - 10 * r0)


def test_mask_raster_on_another_grid_combines_with_scl(tmp_path, rng):
    data, _, _, scl = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data)
    user = np.zeros((40, 48), np.uint8)  # 50 m pixels
    user[0:4, 40:48] = 7
    ext = write_tif(tmp_path / "user.tif", user, crs="EPSG:32645", origin=ORIGIN, pixel=50.0)
    info = scene_info(scene, "l4s14")
    nobs = write_not_observed(MaskSpec(scl=scl_file(tmp_path / "scl.tif", scl), raster=ext), info,
                              tmp_path / "no.tif", block=64)
    with rasterio.open(nobs.path) as src:
        codes = src.read(1)
    assert (codes[0:20, 200:240] == 5).all() and nobs.counts["mask"] == 800 and nobs.counts["cloud"] == 8000


@pytest.mark.parametrize("case, match", [
    ("float", "non-integer values"),
    ("far", "does not overlap"),
    ("class", "not a scene classification class"),
])
def test_bad_masks_are_one_line_errors_before_any_work(tmp_path, rng, case, match):
    data, _, _, scl = cloudy(rng, h=64, w=64)
    scene = write_scene(tmp_path / "scene.tif", data)
    ckpt = tmp_path / "m.safetensors"
    from detect_fixtures import tiny_checkpoint

    tiny_checkpoint(ckpt)
    args = ["detect", str(scene), "-o", str(tmp_path / "out.gpkg"), "--model", str(ckpt), "--device", "cpu"]
    if case == "float":
        prob = write_tif(tmp_path / "p.tif", rng.random((32, 32)).astype(np.float32), crs="EPSG:32645",
                         origin=ORIGIN, pixel=20.0)
        args += ["--mask-raster", str(prob)]
    elif case == "far":
        args += ["--scl", str(write_tif(tmp_path / "s.tif", scl, crs="EPSG:32645", origin=(100000.0, 1000000.0),
                                        pixel=20.0))]
    else:
        args += ["--scl", str(scl_file(tmp_path / "scl.tif", scl)), "--scl-mask", "3,12"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert match in r.output and r.output.strip().count("\n") == 0 and r.output.startswith("Error:")
    assert "--scl" in r.output or "--mask-raster" in r.output
    assert not (tmp_path / "out.gpkg").exists()


def test_cli_json_reports_observed_area(tmp_path, rng):
    data, _, _, scl = cloudy(rng, h=64, w=64)
    scene = write_scene(tmp_path / "scene.tif", data)
    from detect_fixtures import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    r = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp_path / "out.gpkg"), "--model", str(ckpt),
                                  "--device", "cpu", "--window", "32", "--overlap", "8",
                                  "--scl", str(scl_file(tmp_path / "scl.tif", scl)), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    total = s["observed_km2"] + s["not_observed_km2"]
    assert total == pytest.approx(64 * 64 * 100 / 1e6) and s["not_observed"]["scl_classes"] == list(DEFAULT_SCL_CLASSES)


@pytest.mark.realdata
def test_real_t29unu_safe_not_observed_layer_from_its_scl(tmp_path):
    """``lsmap.detect`` on the real L2A T29UNU SAFE (AOI where clouds, shadows and ground mix; its rgb bands are
    present at 60 m): the product's own SCL masks the scene; the not_observed layer holds cloud and shadow; no
    landslide polygon overlaps it; masked pixels are nodata in the probability and mask rasters."""
    import glob

    from conftest import shared_data

    from lsmap.io.aoi import parse_bbox

    (safe,) = glob.glob(str(shared_data("s2", "l2a_safe_T29UNU") / "*.SAFE"))
    # p = sigmoid((B4 - 0.5) / 0.05): bright pixels (clouds first of all) are "landslides" unless masked
    m = member(Band0Model(), profile="rgb", mean=0.5, std=0.05)
    out = tmp_path / "t29unu.gpkg"
    gdf = lsmap.detect({"s2": safe}, [m], out=out, prob=tmp_path / "prob.tif", mask=tmp_path / "mask.tif",
                       aoi=parse_bbox("-8.8,52.8,-8.7,52.9"), norm="model", quicklook=tmp_path / "q.png", **KW)
    s = gdf.attrs["lsmap"]
    assert s["not_observed"]["scl"].endswith("scl.tif")
    no = gpd.read_file(out, layer="not_observed")
    assert {"cloud", "shadow"} <= set(no["reason"])
    assert s["not_observed_km2"] > 1 and s["observed_km2"] > 1
    np.testing.assert_allclose(no["area_m2"].sum() / 1e6, s["not_observed_km2"], rtol=1e-6)
    union = no.geometry.union_all()
    slides = gpd.read_file(out, layer="t29unu")
    assert len(slides) and all(g.intersection(union).area < 1e-6 for g in slides.geometry)
    from rasterio.features import rasterize

    with rasterio.open(tmp_path / "prob.tif") as p, rasterio.open(tmp_path / "mask.tif") as k:
        prob, mask = p.read(1), k.read(1)
        hidden = rasterize([union], out_shape=prob.shape, transform=p.transform, all_touched=False).astype(bool)
    assert hidden.mean() > 0.2 and (prob[hidden] == 255).all() and (mask[hidden] == 255).all()
    assert (prob[~hidden] != 255).mean() > 0.9


def test_tile_writes_masked_pixels_ignored_and_skips_mostly_masked_patches(tmp_path, rng):
    from lsmap.data.tile import tile_scene
    from lsmap.io.patches import read_image, read_mask

    data, blobs, _, scl = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data)
    labels = write_tif(tmp_path / "lab.tif", blobs.astype(np.uint8), crs="EPSG:32645", origin=ORIGIN, pixel=10.0)
    sclf = scl_file(tmp_path / "scl.tif", scl)
    plain = tile_scene(scene, tmp_path / "plain", size=40, labels=labels)
    res = tile_scene(scene, tmp_path / "p", size=40, labels=labels, scl=sclf)
    masked = np.kron(np.isin(scl, DEFAULT_SCL_CLASSES), np.ones((2, 2), bool))
    from lsmap.data.tile import read_index

    index = read_index(tmp_path / "p")
    assert plain.n_skipped == 0 and res.n_skipped == sum(
        masked[r:r + 40, c:c + 40].mean() > 0.5 for r in range(0, 200, 40) for c in range(0, 240, 40))
    assert res.n_skipped > 0
    for _, row in index.iterrows():
        r, c = int(row["row_off"]), int(row["col_off"])
        m = read_mask(tmp_path / "p" / "mask" / f"mask_{row['id']}.h5")
        img, _ = read_image(tmp_path / "p" / "img" / f"image_{row['id']}.h5")
        hid = masked[r:r + 40, c:c + 40]
        assert (m[hid] == 255).all() and (m[~hid] != 255).all()
        assert (img[:, hid] == 0).all() and (img[:, ~hid] != 0).any(axis=0).all()


def test_filled_holes_and_simplification_never_reach_into_not_observed_area(tmp_path, rng):
    data = smooth_scene(rng, h=96, w=96)
    data[0] = 0.5
    data[0, 20:80, 20:80] = 2.0  # one landslide...
    scl = np.full((48, 48), 4, np.uint8)
    scl[20:28, 20:28] = 8  # ...with a cloud (160 m square) inside it: a hole of the polygon
    scene = write_scene(tmp_path / "scene.tif", data)
    m = member(Band0Model(), mean=1.0, std=0.5)
    gdf = lsmap.detect(scene, [m], norm="model", scl=scl_file(tmp_path / "scl.tif", scl), fill_holes=1e6,
                       simplify=15, **KW)
    assert len(gdf) == 1 and gdf["near_not_observed"].all()
    cloud = _box(40, 40, 56, 56)
    assert gdf.geometry.iloc[0].intersection(cloud).area == pytest.approx(0, abs=1e-6)
    assert gdf["area_m2"].iloc[0] == pytest.approx(60 * 60 * 100 - 16 * 16 * 100, rel=0.02)


def test_a_products_own_scl_masks_by_default_and_scl_mask_none_turns_it_off(tmp_path):
    from detect_fixtures import tiny_checkpoint
    from products_fixtures import make_safe, scl_classes, zip_safe

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", "rgbn")
    z = zip_safe(make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8")))
    common = ["--model", str(ckpt), "--window", "32", "--overlap", "8", "--json", "--device", "cpu"]
    r = CliRunner().invoke(main, ["detect", str(z), "-o", str(tmp_path / "a.gpkg"), "--mask", str(tmp_path / "m.tif"),
                                  *common])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    scl = np.kron(scl_classes(20), np.ones((2, 2), np.uint8))
    hidden = np.isin(scl, DEFAULT_SCL_CLASSES)
    assert s["not_observed_km2"] == pytest.approx(hidden.sum() * 100 / 1e6)
    with rasterio.open(tmp_path / "m.tif") as src:
        assert ((src.read(1) == 255) == hidden).all()
    no = gpd.read_file(tmp_path / "a.gpkg", layer="not_observed")
    assert sorted(no["reason"]) == ["cloud", "no data", "shadow", "snow"]  # one dissolved row per reason
    r = CliRunner().invoke(main, ["detect", str(z), "-o", str(tmp_path / "b.gpkg"), "--scl-mask", "none", *common])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["not_observed_km2"] is None


def _mask_and_slides(seed: int):
    """Not-observed polygons of two reasons (dissolved per reason, as `not_observed_polygons` gives them)
    and landslide polygons around and inside them, on a 10 m grid."""
    import shapely

    rng = np.random.default_rng(seed)
    cells = [shapely.box(x, y, x + 10, y + 10) for x, y in rng.integers(0, 60, (600, 2)) * 10]
    reasons = [shapely.union_all(cells[:300]), shapely.difference(shapely.union_all(cells[300:]),
                                                                  shapely.union_all(cells[:300]))]
    masked = gpd.GeoDataFrame({"reason": ["cloud", "shadow"]}, geometry=reasons, crs="EPSG:32645")
    corners, sizes = rng.integers(0, 60, (80, 2)) * 10, rng.integers(1, 4, (80, 2)) * 10
    slides = [shapely.box(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes, strict=True)]
    slides += [shapely.box(-30, 0, 0, 10), shapely.box(5, 5, 6, 6)]  # one sharing an edge with nothing, one tiny
    return masked, gpd.GeoDataFrame(geometry=slides, crs="EPSG:32645")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cut_and_near_not_observed_equal_the_whole_mask_rule(seed):
    """Law: with the mask's polygons indexed, each landslide is cut by, and measured against, the whole
    dissolved mask as before: cut where it overlaps it by a positive area (empty when inside), unchanged
    otherwise (the same object), near within the distance."""
    import shapely

    from lsmap.data.masks import cut_not_observed, near_not_observed

    masked, slides = _mask_and_slides(seed)
    union = shapely.union_all(masked.geometry.values)
    got = cut_not_observed(slides.geometry.values, masked)
    changed = 0
    for g, c in zip(slides.geometry, got, strict=True):
        if shapely.intersection(g, union).area > 0:
            changed += 1
            assert c.equals(g.difference(union)) or (c.is_empty and g.difference(union).is_empty)
        else:
            assert c is g
    assert changed > 5 and any(c.is_empty for c in got)
    for d in (0.0, 5.0, 25.0):
        want = np.array([g.distance(union) <= d for g in slides.geometry])
        np.testing.assert_array_equal(near_not_observed(slides, masked, d), want)
    empty = masked.iloc[:0]
    assert list(cut_not_observed(slides.geometry.values, empty)) == list(slides.geometry)
    assert not near_not_observed(slides, empty, 5.0).any()


def test_observed_and_not_observed_km2_of_a_geographic_scene(tmp_path, rng):
    """A scene in EPSG:4326: the summary's observed and not-observed km2 are true areas (they were square
    degrees / 1e6), adding up to the scene's geodesic area, with the masked share of the pixels."""
    data, _, _, _ = cloudy(rng, h=64, w=64)
    res = 1e-4  # about 11 x 10 m at 27.8 N
    scene = write_scene(tmp_path / "scene.tif", data, crs="EPSG:4326", res=res, origin=(85.3, 27.8))
    user = np.zeros((64, 64), np.uint8)
    user[:16] = 3  # a quarter of the rows masked
    ext = write_tif(tmp_path / "user.tif", user, crs="EPSG:4326", origin=(85.3, 27.8), pixel=res)
    gdf = lsmap.detect(scene, [member(Band0Model())], norm="model", mask_raster=ext, **KW)
    s = gdf.attrs["lsmap"]
    assert s["observed_km2"] + s["not_observed_km2"] == pytest.approx(s["scene_km2"], rel=1e-4)
    assert s["scene_km2"] == pytest.approx(64 * 64 * 11.0 * 9.9 / 1e6, rel=0.03)
    assert s["not_observed_km2"] == pytest.approx(s["scene_km2"] / 4, rel=1e-3)
