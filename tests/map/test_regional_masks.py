"""Regional runs with masks (issue 19): each product's own SCL, one mask raster for every scene, the merged
``not_observed`` layer and km2; one SCL file for several scenes refused."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from _rasters import write_tif
from click.testing import CliRunner

from lsmap.cli import main
from lsmap.data.masks import DEFAULT_SCL_CLASSES
from lsmap.errors import InputError, OutputExistsError
from lsmap.map.regional.merge import merge_not_observed, true_area_m2
from lsmap.map.regional.run import detect_many

COMMON = dict(threshold=1e-6, window=32, overlap=8, device="cpu", progress=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from detect_fixtures import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.safetensors", "rgbn")


def _scenes(tmp_path):
    from test_regional import write_scene

    d = tmp_path / "scenes"
    d.mkdir()
    return [write_scene(d / "a.tif", 0, nodata_block=0), write_scene(d / "b.tif", 64, nodata_block=0)]


def _cloud_raster(path):
    """A 20 m uint8 mask (1 = cloud) over the two scenes' overlap and beyond: x in [X0+700, X0+1300)."""
    from test_regional import UTM, X0, Y0

    m = np.zeros((48, 96), np.uint8)  # 20 m pixels: 1920 m x 960 m from (X0, Y0)
    m[10:30, 35:65] = 1
    return write_tif(path, m, crs=UTM, origin=(X0, Y0), pixel=20.0), shapely.box(X0 + 700, Y0 - 600, X0 + 1300, Y0 - 200)


def test_one_mask_raster_masks_every_scene_and_the_merged_layer_gets_not_observed(tmp_path, ckpt):
    scenes = _scenes(tmp_path)
    mask, cloud = _cloud_raster(tmp_path / "clouds.tif")
    res = detect_many(scenes, [ckpt], tmp_path / "ev", mask_raster=str(mask), **COMMON)
    assert res.ok, res.failures
    no = gpd.read_file(res.merged, layer="not_observed")
    assert list(no["reason"]) == ["mask"] and no.iloc[0]["scene"] == "a,b"
    assert no.geometry.iloc[0].symmetric_difference(cloud).area < 1e-6  # the union of both scenes' parts
    polys = gpd.read_file(res.merged, layer="event")
    assert len(polys) and max(g.intersection(cloud).area for g in polys.geometry) < 1e-6  # threshold 1e-6: all else
    d = res.to_dict()
    per_scene = [s["not_observed_km2"] for s in d["scenes"]]
    assert all(v > 0 for v in per_scene) and d["not_observed_km2"] == pytest.approx(sum(per_scene))
    assert d["not_observed_union_km2"] == pytest.approx(cloud.area / 1e6, rel=1e-3)
    assert d["observed_km2"] == pytest.approx(sum(s["observed_km2"] for s in d["scenes"]))
    # a re-run skips both scenes and still reports their km2 (from the completion markers)
    again = detect_many(scenes, [ckpt], tmp_path / "ev", mask_raster=str(mask), **COMMON)
    assert len(again.skipped) == 2 and again.to_dict()["not_observed_km2"] == pytest.approx(d["not_observed_km2"])
    # after a change of the mask file the layers are another run's: refused, and redone with overwrite
    _cloud_raster(tmp_path / "clouds.tif")
    with pytest.raises(OutputExistsError, match="detected with other models, options or inputs"):
        detect_many(scenes, [ckpt], tmp_path / "ev", mask_raster=str(mask), **COMMON)
    assert not detect_many(scenes, [ckpt], tmp_path / "ev", mask_raster=str(mask), overwrite=True, **COMMON).skipped


def test_merge_not_observed_dissolves_per_reason_and_keeps_scene_names():
    a = gpd.GeoDataFrame({"reason": ["cloud", "shadow"]}, geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 5)],
                         crs="EPSG:32633")
    b = gpd.GeoDataFrame({"reason": ["cloud"]}, geometry=[shapely.box(5, 0, 15, 10)], crs="EPSG:32633")
    out = merge_not_observed({"a": a, "b": b, "c": None})
    assert list(out["reason"]) == ["cloud", "shadow"] and list(out["scene"]) == ["a,b", "a"]
    assert out.geometry.iloc[0].area == pytest.approx(150.0)
    assert np.allclose(out["area_m2"], true_area_m2(out.geometry))
    assert len(merge_not_observed({"a": None})) == 0


def test_safe_products_bring_their_own_scl_into_a_regional_run(tmp_path, ckpt):
    from products_fixtures import make_safe, scl_classes, zip_safe

    one = make_safe(tmp_path / "p1", bands=("B2", "B3", "B4", "B8"))
    two = zip_safe(make_safe(tmp_path / "p2", bands=("B2", "B3", "B4", "B8"), seed=1))
    r = CliRunner().invoke(main, ["detect", str(one), str(two), "-o", str(tmp_path / "ev"), "--model", str(ckpt),
                                  "--window", "32", "--overlap", "8", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    hidden = np.isin(np.kron(scl_classes(20), np.ones((2, 2), np.uint8)), DEFAULT_SCL_CLASSES).sum() * 100 / 1e6
    assert [s["not_observed_km2"] for s in d["scenes"]] == [pytest.approx(hidden)] * 2
    no = gpd.read_file(d["merged"], layer="not_observed")
    assert sorted(no["reason"]) == ["cloud", "no data", "shadow", "snow"]
    assert d["not_observed_union_km2"] == pytest.approx(hidden, rel=2e-3)  # the same tile twice: overlaps once (true area)
    polys = gpd.read_file(d["merged"], layer="event")
    hidden_area = shapely.union_all(no.geometry.values)
    assert len(polys) and max(g.intersection(hidden_area).area for g in polys.geometry) < 1e-3
    # the SCL classes apply to every product; with none masked there is no not_observed layer
    r = CliRunner().invoke(main, ["detect", str(one), str(two), "-o", str(tmp_path / "ev2"), "--model", str(ckpt),
                                  "--window", "32", "--overlap", "8", "--device", "cpu", "--scl-mask", "none", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["not_observed_km2"] is None


def test_cloud_prob_max_in_a_regional_run_adds_cloud(tmp_path, ckpt):
    from products_fixtures import make_safe

    one = make_safe(tmp_path / "p1", bands=("B2", "B3", "B4", "B8"))
    res = detect_many([one], [ckpt], tmp_path / "ev", scl_mask="0", cloud_prob_max=40, **COMMON)
    assert res.ok, res.failures
    no = gpd.read_file(res.merged, layer="not_observed").set_index("reason")
    # MSK_CLDPRB of the fixture is 9 x the SCL class: classes 5..11 are above 40 %
    assert set(no.index) == {"no data", "cloud"}
    assert no.loc["cloud", "area_m2"] == pytest.approx(no.loc["no data", "area_m2"] * 7, rel=0.02)


def test_one_scl_file_for_several_scenes_is_refused(tmp_path, ckpt):
    scenes = _scenes(tmp_path)
    scl = write_tif(tmp_path / "scl.tif", np.full((48, 96), 4, np.uint8), crs="EPSG:32646",
                    origin=(400_000.0, 2_500_000.0), pixel=20.0)
    r = CliRunner().invoke(main, ["detect", *map(str, scenes), "-o", str(tmp_path / "ev"), "--model", str(ckpt),
                                  "--scl", str(scl)])
    assert r.exit_code != 0 and "ambiguous" in r.output and "--scl" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "ev").exists()
    with pytest.raises(InputError, match="ambiguous"):
        detect_many(scenes, [ckpt], tmp_path / "ev", scl=str(scl), **COMMON)
    # a bad mask raster fails before any scene runs
    bad = write_tif(tmp_path / "p.tif", np.full((48, 96), 0.5, np.float32), crs="EPSG:32646",
                    origin=(400_000.0, 2_500_000.0), pixel=20.0)
    with pytest.raises(InputError, match="non-integer"):
        detect_many(scenes, [ckpt], tmp_path / "ev", mask_raster=str(bad), **COMMON)
    assert not (tmp_path / "ev").exists()


def test_single_scene_cloud_prob_max_needs_a_product(tmp_path, ckpt):
    scenes = _scenes(tmp_path)
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), "-o", str(tmp_path / "a.gpkg"), "--model", str(ckpt),
                                  "--cloud-prob-max", "50"])
    assert r.exit_code != 0 and "--cloud-prob-max" in r.output and "MSK_CLDPRB" in r.output
    assert not (tmp_path / "a.gpkg").exists()
    with rasterio.open(scenes[0]) as src:
        assert src.count == 4


def test_cloud_prob_from_a_stac_items_asset(tmp_path, ckpt):
    from products_fixtures import make_stac_item, scl_classes, write_band

    item = make_stac_item(tmp_path / "stac", {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8"})
    write_band(tmp_path / "stac" / "cldprb.tif", (scl_classes(20).astype(np.uint16) * 9).astype(np.uint8), 20,
               driver="COG")
    d = json.loads(item.read_text())
    d["assets"]["cldprb"] = {"href": "./cldprb.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                             "roles": ["data"]}
    item.write_text(json.dumps(d))
    from lsmap.io.s2product import open_product

    assert set(open_product(item).layers) == {"SCL", "MSK_CLDPRB"}
    r = CliRunner().invoke(main, ["detect", str(item), "-o", str(tmp_path / "a.gpkg"), "--model", str(ckpt),
                                  "--window", "32", "--overlap", "8", "--device", "cpu", "--scl-mask", "none",
                                  "--cloud-prob-max", "40", "--json"])
    assert r.exit_code == 0, r.output
    no = gpd.read_file(tmp_path / "a.gpkg", layer="not_observed")
    assert list(no["reason"]) == ["cloud"]
    assert json.loads(r.output)["not_observed_km2"] == pytest.approx(7 / 12 * 1.44, rel=0.02)


def test_cli_text_output_names_the_not_observed_area(tmp_path, ckpt):
    scenes = _scenes(tmp_path)
    mask, _ = _cloud_raster(tmp_path / "clouds.tif")
    r = CliRunner().invoke(main, ["detect", *map(str, scenes), "-o", str(tmp_path / "ev"), "--model", str(ckpt),
                                  "--window", "32", "--overlap", "8", "--device", "cpu", "--mask-raster", str(mask)])
    assert r.exit_code == 0, r.output
    assert "not observed" in r.output and ": 0.240" in r.output and "km2 in the merged layer 'not_observed'" in r.output


def test_one_scene_says_when_no_cloud_mask_was_used_and_where_the_mask_layer_goes(tmp_path, ckpt):
    # found on real cloudy bands: without a mask the strongest detections were clouds, and nothing said a mask
    # was missing; a GeoJSON output dropped the not-observed layer without a word
    scene = _scenes(tmp_path)[0]
    mask, _ = _cloud_raster(tmp_path / "clouds.tif")
    opts = ["--model", str(ckpt), "--window", "32", "--overlap", "8", "--device", "cpu", "--threshold", "1e-6"]
    r = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp_path / "a.gpkg"), *opts])
    assert r.exit_code == 0 and "note: no cloud mask was used" in r.output and "--blue-max 0.2" in r.output
    r = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp_path / "b.gpkg"), *opts, "--mask-raster", str(mask)])
    assert r.exit_code == 0 and "no cloud mask" not in r.output and "Warning" not in r.output
    r = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp_path / "c.geojson"), *opts,
                                  "--mask-raster", str(mask)])
    assert r.exit_code == 0 and "Warning: " in r.output and "written only to a GeoPackage" in r.output
    assert (tmp_path / "c.geojson").exists()
