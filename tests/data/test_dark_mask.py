"""The dark test (``dark_max``) for the cloud shadows of scenes without an SCL: the pixels whose SWIR (B11)
surface reflectance is below the threshold are not observed, reason ``dark`` (shadow or water), wherever the
not-observed rule applies; bright landslide pixels stay."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from conftest import shared_data
from detect_fixtures import Band0Model, member, smooth_scene, write_scene
from scipy import ndimage
from test_masks import KW, ORIGIN, scl_file

import lsmap
from lsmap.cli import main
from lsmap.core.bands import PROFILES
from lsmap.data.masks import DARK_BAND, DARK_BUFFER_PX, REASONS, MaskSpec, check_dark_max, write_not_observed
from lsmap.errors import InputError, OutputExistsError
from lsmap.io.scene import scene_info

L4S = PROFILES["l4s14"]
B11 = L4S.bands.index("B11")
B11_DIV = L4S.divisors[B11]
DARK = 7  # the reason code of the dark test
PATCH = (slice(100, 160), slice(120, 200))


def _refl(value: float) -> float:
    """The L4S value of B11 surface reflectance ``value``."""
    return value * 10000.0 / B11_DIV


def shadowed(rng, h=200, w=240):
    """A scene with three landslide blobs in band 0 (2.0 on them) whose B11 reflectance is 0.19 (the median of
    the labelled Landslide4Sense landslide pixels), one of them right beside a dark patch (a cloud shadow:
    every band low, B11 0.011) whose band 0 is high too, so that an unmasked shadow reads as a landslide."""
    data = smooth_scene(rng, h=h, w=w)
    blobs = np.zeros((h, w), bool)
    blobs[30:60, 30:70] = True
    blobs[140:170, 20:50] = True
    blobs[110:140, 200:230] = True  # touches the patch's right edge
    data[0] = np.where(blobs, 2.0, 0.5)
    data[B11, blobs] = _refl(0.19)
    patch = np.zeros((h, w), bool)
    patch[PATCH] = True
    data[:, patch] = 0.1
    data[0, patch] = 2.0
    return data, blobs, patch


def _codes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _box(r0, c0, r1, c1, origin=ORIGIN, res=10.0):
    return shapely.box(origin[0] + c0 * res, origin[1] - r1 * res, origin[0] + c1 * res, origin[1] - r0 * res)


def test_the_dark_patch_is_not_observed_as_dark_and_the_landslides_stay_whatever_the_blocks(tmp_path, rng):
    data, blobs, patch = shadowed(rng)
    refl = data[B11] * B11_DIV / 1e4
    assert DARK_BAND == "B11" and REASONS[DARK] == "dark" and DARK_BUFFER_PX == 0
    assert (refl[~patch] > 0.04).all() and (refl[patch] < 0.04).all()  # only the patch is dark
    info = scene_info(write_scene(tmp_path / "scene.tif", data, bands=L4S.bands), L4S)
    for block in (37, 1024):
        nobs = write_not_observed(MaskSpec(dark_max=0.04), info, tmp_path / f"b{block}.tif", block=block)
        codes = _codes(nobs.path)
        np.testing.assert_array_equal(codes == DARK, patch)
        assert set(np.unique(codes)) == {0, DARK} and nobs.counts == {"dark": int(patch.sum())}
        assert (codes[blobs] == 0).all()  # the landslide beside the shadow is observed
    # a margin, read across window edges: the same raster for any blocks, and it reaches into the blob beside
    want = ndimage.binary_dilation(patch, structure=np.ones((3, 3), bool), iterations=2)
    for block in (37, 1024):
        grown = write_not_observed(MaskSpec(dark_max=0.04, dark_buffer=2), info, tmp_path / f"g{block}.tif",
                                   block=block)
        np.testing.assert_array_equal(_codes(grown.path) == DARK, want)
    assert (want & blobs).sum() == 2 * 30
    # a threshold below the patch's reflectance masks nothing
    assert write_not_observed(MaskSpec(dark_max=0.005), info, tmp_path / "low.tif").counts == {}


def test_digital_numbers_give_the_mask_of_the_l4s_values(tmp_path, rng):
    data, _, patch = shadowed(rng)
    dn = np.rint(data * np.asarray(L4S.divisors, np.float32)[:, None, None]).astype(np.uint16)
    dn[:, :4, :4] = 0  # nodata corner: not dark
    raw = tmp_path / "raw.tif"
    with rasterio.open(raw, "w", driver="GTiff", width=240, height=200, count=14, dtype="uint16", crs="EPSG:32645",
                       transform=rasterio.transform.from_origin(*ORIGIN, 10, 10), nodata=0) as dst:
        dst.write(dn)
        dst.descriptions = L4S.bands
    a = write_not_observed(MaskSpec(dark_max=0.04), scene_info(raw, L4S), tmp_path / "a.tif")
    b = write_not_observed(MaskSpec(dark_max=0.04), scene_info(write_scene(tmp_path / "s.tif", data, bands=L4S.bands),
                                                               L4S), tmp_path / "b.tif")
    np.testing.assert_array_equal(_codes(a.path), _codes(b.path))
    assert a.counts == {"dark": int(patch.sum())}


def test_scl_and_clouds_come_first(tmp_path, rng):
    data, _, patch = shadowed(rng)
    data[1, 100:160, 100:120] = 5.0  # a bright-blue cloud left of the patch: its margin covers 3 columns of it
    scl = np.full((100, 120), 4, np.uint8)
    scl[50:60, 70:80] = 3  # SCL shadow over part of the patch (20 m)
    spec = MaskSpec(scl=scl_file(tmp_path / "scl.tif", scl), blue_max=0.2, dark_max=0.04)
    info = scene_info(write_scene(tmp_path / "scene.tif", data, bands=L4S.bands), L4S)
    codes = _codes(write_not_observed(spec, info, tmp_path / "no.tif").path)
    shadow = np.kron(scl == 3, np.ones((2, 2), bool))
    assert (codes[shadow] == 3).all()  # SCL's reasons first
    assert (codes[100:160, 120:123] == 2).all()  # the cloud's margin stays cloud
    assert (codes[patch & ~shadow] != 0).all() and (codes[100:160, 123:200][~shadow[100:160, 123:200]] == DARK).all()


def test_detect_leaves_the_shadow_out_and_keeps_the_landslides(tmp_path, rng):
    data, blobs, patch = shadowed(rng)
    scene = write_scene(tmp_path / "scene.tif", data)  # no band names: detect's band plan names them
    m = member(Band0Model(), mean=1.0, std=0.5)
    bare = lsmap.detect(scene, [m], norm="model", **KW)
    shade = _box(100 + 3, 120 + 3, 160 - 3, 200 - 3)
    assert any(g.intersects(shade) for g in bare.geometry)  # the shadow reads as a landslide
    gdf = lsmap.detect(scene, [m], norm="model", dark_max=0.04, out=tmp_path / "o.gpkg", **KW)
    assert len(gdf) == 3 and not any(g.intersection(shade).area > 0 for g in gdf.geometry)
    for r0, c0, r1, c1 in ((30, 30, 60, 70), (140, 20, 170, 50), (110, 200, 140, 230)):
        assert max(g.intersection(_box(r0, c0, r1, c1)).area for g in gdf.geometry) > 0.8 * (r1 - r0) * (c1 - c0) * 100
    s = gdf.attrs["lsmap"]["not_observed"]
    assert s["dark_max"] == 0.04 and s["dark_band"] == "B11" and s["dark_buffer"] == 0 and s["blue_max"] is None
    assert s["km2"] == {"dark": pytest.approx(patch.sum() * 100 / 1e6)}
    layer = gpd.read_file(tmp_path / "o.gpkg", layer="not_observed")
    assert list(layer["reason"]) == ["dark"]


def test_a_band_folder_gets_b11_stacked_for_the_test_when_the_model_does_not_read_it(tmp_path):
    from products_fixtures import band_dn, write_band

    folder = tmp_path / "bands"
    folder.mkdir()
    for b in ("B2", "B3", "B4", "B8"):
        write_band(folder / f"T33_{b}.tif", band_dn(b, 10), 10)
    b11 = band_dn("B11", 20, base=1600)  # reflectance 0.06 and above, with the offset -1000
    b11[20:40, 30:50] = 1100  # reflectance 0.01: a shadow of 400 m x 400 m
    write_band(folder / "T33_B11.tif", b11, 20)
    m = member(Band0Model(), "rgbn", mean=1.0, std=0.5)
    gdf = lsmap.detect({"s2": folder, "offset": -1000}, [m], norm="model", dark_max=0.04, **KW)
    assert gdf.attrs["lsmap"]["not_observed"]["km2"]["dark"] == pytest.approx(0.16, rel=0.1)


def test_bad_dark_max_and_scenes_without_b11_are_one_line_errors(tmp_path, rng):
    for bad in (0, -0.1, 1, 2, "x", float("nan")):
        with pytest.raises(InputError, match="`dark_max` must be a SWIR"):
            check_dark_max(bad)
    data, _, _ = shadowed(rng)
    rgbn = write_scene(tmp_path / "rgbn.tif", data[[3, 2, 1, 7]], bands=("B4", "B3", "B2", "B8"))
    with pytest.raises(InputError, match="SWIR band B11, which the scene does not have .*stack B11 too"):
        write_not_observed(MaskSpec(dark_max=0.04), scene_info(rgbn), tmp_path / "x.tif")
    unnamed = write_scene(tmp_path / "u.tif", data[:4])
    with pytest.raises(InputError, match="`dark_max` reads the scene's B11 band, but its bands have no names"):
        write_not_observed(MaskSpec(dark_max=0.04), scene_info(unnamed), tmp_path / "y.tif")
    for cmd in (["stats", str(rgbn), "--bands", "rgbn", "--dark-max", "0.04", "-o", str(tmp_path / "s.json")],
                ["tile", str(rgbn), "--bands", "rgbn", "--dark-max", "0.04", "-o", str(tmp_path / "p")]):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 1 and r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1
        assert "--dark-max reads the SWIR band B11" in r.output and "stack B11 too" in r.output, r.output
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "p").exists()
    for bad in ("0", "1", "x"):
        r = CliRunner().invoke(main, ["tile", str(rgbn), "--bands", "rgbn", "--dark-max", bad, "-o", str(tmp_path / "p")])
        assert r.exit_code == 2 and "--dark-max" in r.output
    with pytest.raises(InputError, match="`dark_max` must be"):
        lsmap.detect(rgbn, [member(Band0Model(), "rgbn")], dark_max=1.5, **KW)


def test_tile_and_stats_leave_the_shadow_out(tmp_path, rng):
    data, _, patch = shadowed(rng)
    scene = write_scene(tmp_path / "scene.tif", data, bands=L4S.bands)
    r = CliRunner().invoke(main, ["stats", str(scene), "--dark-max", "0.04", "-o", str(tmp_path / "s.json"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["count"] == (~patch).sum(), r.output
    r = CliRunner().invoke(main, ["tile", str(scene), "--dark-max", "0.04", "--size", "40", "--min-valid", "0", "-o",
                                  str(tmp_path / "p"), "--json"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "p" / "tiles.json").read_text())
    assert meta["not_observed"]["dark_max"] == 0.04 and meta["not_observed"]["dark"] == patch.sum()


def test_several_scenes_take_it_and_the_run_summary_records_it(tmp_path, rng):
    from detect_fixtures import tiny_checkpoint

    from lsmap.map.regional.run import detect_many

    data, _, patch = shadowed(rng)
    d = tmp_path / "scenes"
    d.mkdir()
    scenes = [write_scene(d / "a.tif", data, bands=L4S.bands),
              write_scene(d / "b.tif", data, bands=L4S.bands, origin=(ORIGIN[0] + 4000, ORIGIN[1]))]
    m = tiny_checkpoint(tmp_path / "m.safetensors")
    res = detect_many(scenes, [m], tmp_path / "ev", dark_max=0.04, progress=False, **KW)
    assert res.ok, res.failures
    out = res.to_dict()
    km2 = patch.sum() * 100 / 1e6
    assert [s["not_observed_km2"] for s in out["scenes"]] == [pytest.approx(km2)] * 2
    assert out["not_observed_km2"] == pytest.approx(2 * km2)
    for name in ("a", "b"):  # each scene's record holds it, and so does the key a re-run compares
        assert json.loads((tmp_path / "ev" / f"{name}.done.json").read_text())["params"]["dark_max"] == 0.04
    layer = gpd.read_file(res.merged, layer="not_observed")
    assert list(layer["reason"]) == ["dark"] and layer.iloc[0]["scene"] == "a,b"
    with pytest.raises(OutputExistsError, match=r"other options \(`dark_max` 0.04 -> 0.05\)"):
        detect_many(scenes, [m], tmp_path / "ev", dark_max=0.05, progress=False, **KW)
    with pytest.raises(InputError, match="`dark_max` must be"):
        detect_many(scenes, [m], tmp_path / "ev2", dark_max=0, progress=False, **KW)
    assert not (tmp_path / "ev2").exists()
    r = CliRunner().invoke(main, ["detect", *map(str, scenes), "-o", str(tmp_path / "ev3"), "--model", "nope",
                                  "--dark-max", "1"])
    assert r.exit_code == 2 and "--dark-max" in r.output


@pytest.mark.realdata
def test_real_wayanad_shadows_without_scl(tmp_path):
    """The real cloudy Wayanad 2024 bands have no SCL: with ``dark_max`` 0.04 some 2 % of the scene is dark (the
    cumulus shadows), and the debris-flow track (the largest polygon) stays whole."""
    bands = shared_data("s2", "kerala", "wayanad_2024_a")
    source = {"s2": bands, "offset": -1000}
    bare = lsmap.detect(source, None, device="cpu")
    masked = lsmap.detect(source, None, device="cpu", dark_max=0.04)
    track = bare.loc[bare["area_m2"].idxmax()].geometry
    assert masked.geometry.intersection(track).area.sum() > 0.99 * track.area
    s = masked.attrs["lsmap"]
    assert set(s["not_observed"]["km2"]) == {"dark"} and 0.01 < s["not_observed_km2"] / s["scene_km2"] < 0.04
