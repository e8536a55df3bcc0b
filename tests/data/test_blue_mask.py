"""The bright-blue cloud test (``blue_max``) for scenes without an SCL: the pixels whose B2 surface reflectance
exceeds the threshold, grown by a margin, are cloud wherever the not-observed rule applies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import shared_data
from detect_fixtures import Band0Model, member, write_scene
from scipy import ndimage
from test_masks import KW, _box, cloudy

import lsmap
from lsmap.cli import main
from lsmap.core.bands import PROFILES
from lsmap.data.masks import BLUE_BUFFER_PX, MaskSpec, check_blue_max, write_not_observed
from lsmap.errors import InputError
from lsmap.io.scene import scene_info

L4S = PROFILES["l4s14"]
B2_DIV = L4S.divisors[L4S.bands.index("B2")]


def _codes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _expected(data: np.ndarray, blue_max: float, buffer: int) -> np.ndarray:
    bright = data[L4S.bands.index("B2")] * B2_DIV / 10000.0 > blue_max
    if buffer:
        bright = ndimage.binary_dilation(bright, structure=np.ones((3, 3), bool), iterations=buffer)
    return bright


def test_the_deck_and_a_margin_are_cloud_whatever_the_blocks(tmp_path, rng):
    data, _, cloud, _ = cloudy(rng)
    assert (data[1][~cloud] * B2_DIV / 1e4 < 0.2).all() and (data[1][cloud] * B2_DIV / 1e4 > 0.2).all()
    scene = write_scene(tmp_path / "scene.tif", data, bands=L4S.bands)
    info = scene_info(scene, L4S)
    want = _expected(data, 0.2, BLUE_BUFFER_PX)
    assert want.sum() == (80 + 2 * BLUE_BUFFER_PX) * (100 + 2 * BLUE_BUFFER_PX)  # the deck and its margin
    for block in (37, 1024):  # the margin is read across window edges: the same raster for any blocks
        nobs = write_not_observed(MaskSpec(blue_max=0.2), info, tmp_path / f"b{block}.tif", block=block)
        codes = _codes(nobs.path)
        np.testing.assert_array_equal(codes == 2, want)
        assert set(np.unique(codes)) == {0, 2} and nobs.counts == {"cloud": int(want.sum())}
    bare = write_not_observed(MaskSpec(blue_max=0.2, blue_buffer=0), info, tmp_path / "bare.tif")
    np.testing.assert_array_equal(_codes(bare.path) == 2, cloud)


def test_digital_numbers_give_the_mask_of_the_l4s_values(tmp_path, rng):
    data, _, _, _ = cloudy(rng)
    dn = np.rint(data * np.asarray(L4S.divisors, np.float32)[:, None, None]).astype(np.uint16)
    dn[:, :4, :4] = 0  # nodata corner
    raw = tmp_path / "raw.tif"
    with rasterio.open(raw, "w", driver="GTiff", width=240, height=200, count=14, dtype="uint16", crs="EPSG:32645",
                       transform=rasterio.transform.from_origin(500000.0, 3000000.0, 10, 10), nodata=0) as dst:
        dst.write(dn)
        dst.descriptions = L4S.bands
    a = write_not_observed(MaskSpec(blue_max=0.2), scene_info(raw, L4S), tmp_path / "a.tif")
    b = write_not_observed(MaskSpec(blue_max=0.2), scene_info(write_scene(tmp_path / "s.tif", data, bands=L4S.bands),
                                                               L4S), tmp_path / "b.tif")
    np.testing.assert_array_equal(_codes(a.path), _codes(b.path))
    assert a.counts["cloud"] > 0


def test_masks_combine_scl_first(tmp_path, rng):
    from test_masks import scl_file

    data, _, _, scl = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data, bands=L4S.bands)
    spec = MaskSpec(scl=scl_file(tmp_path / "scl.tif", scl), blue_max=0.2)
    codes = _codes(write_not_observed(spec, scene_info(scene, L4S), tmp_path / "no.tif").path)
    shadow = np.kron(scl == 3, np.ones((2, 2), bool))
    assert (codes[shadow] == 3).all()  # SCL's reasons first
    assert (codes[_expected(data, 0.2, BLUE_BUFFER_PX) & ~shadow] == 2).all()


def test_detect_leaves_the_deck_out(tmp_path, rng):
    data, _, _, _ = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data)  # no band names: detect's band plan names them
    m = member(Band0Model(), mean=1.0, std=0.5)
    bare = lsmap.detect(scene, [m], norm="model", **KW)
    deck = _box(100 - 3, 120 - 3, 180 + 3, 220 + 3)
    assert any(g.intersects(deck) for g in bare.geometry)  # the bright deck reads as a landslide
    gdf = lsmap.detect(scene, [m], norm="model", blue_max=0.2, out=tmp_path / "o.gpkg", **KW)
    assert len(gdf) == 2 and not any(g.intersection(deck).area > 0 for g in gdf.geometry)
    s = gdf.attrs["lsmap"]
    assert s["not_observed"]["blue_max"] == 0.2 and s["not_observed"]["km2"]["cloud"] == pytest.approx(
        _expected(data, 0.2, BLUE_BUFFER_PX).sum() * 100 / 1e6)


def test_bad_blue_max_and_scenes_without_b2_are_one_line_errors(tmp_path, rng):
    for bad in (0, -0.1, 2, "x", float("nan")):
        with pytest.raises(InputError, match="`blue_max`"):
            check_blue_max(bad)
    data, _, _, _ = cloudy(rng, h=64, w=64)
    rgb_nir = write_scene(tmp_path / "b48.tif", data[[3, 7]], bands=("B4", "B8"))
    with pytest.raises(InputError, match="blue band B2, which the scene does not have"):
        write_not_observed(MaskSpec(blue_max=0.2), scene_info(rgb_nir), tmp_path / "x.tif")
    unnamed = write_scene(tmp_path / "u.tif", data[:4])
    with pytest.raises(InputError, match="no names"):
        write_not_observed(MaskSpec(blue_max=0.2), scene_info(unnamed), tmp_path / "y.tif")
    r = CliRunner().invoke(main, ["stats", str(rgb_nir), "--bands", "B4,B8", "--blue-max", "0.2", "-o",
                                  str(tmp_path / "s.json")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "B2" in r.output
    assert not (tmp_path / "s.json").exists()
    r = CliRunner().invoke(main, ["tile", str(rgb_nir), "--bands", "B4,B8", "--blue-max", "0", "-o",
                                  str(tmp_path / "p")])
    assert r.exit_code == 2 and "--blue-max" in r.output


def test_tile_and_stats_leave_the_deck_out(tmp_path, rng):
    data, _, _, _ = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data, bands=L4S.bands)
    bright = _expected(data, 0.2, BLUE_BUFFER_PX)
    r = CliRunner().invoke(main, ["stats", str(scene), "--blue-max", "0.2", "-o", str(tmp_path / "s.json"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["count"] == (~bright).sum(), r.output
    r = CliRunner().invoke(main, ["tile", str(scene), "--blue-max", "0.2", "--size", "40", "--min-valid", "0", "-o",
                                  str(tmp_path / "p"), "--json"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "p" / "tiles.json").read_text())
    assert meta["not_observed"]["blue_max"] == 0.2 and meta["not_observed"]["cloud"] == bright.sum()


@pytest.mark.realdata
def test_real_wayanad_clouds_without_scl(tmp_path):
    """The real cloudy Wayanad 2024 bands have no SCL: with ``blue_max`` 0.2 most polygons on cloud edges go,
    and the debris-flow track (the largest polygon) stays."""
    bands = shared_data("s2", "kerala", "wayanad_2024_a")
    source = {"s2": bands, "offset": -1000}
    bare = lsmap.detect(source, None, device="cpu")
    masked = lsmap.detect(source, None, device="cpu", blue_max=0.2)
    assert len(masked) < 0.3 * len(bare)
    track = bare.loc[bare["area_m2"].idxmax()].geometry
    assert masked.geometry.intersection(track).area.sum() > 0.9 * track.area
    assert 0.05 < masked.attrs["lsmap"]["not_observed_km2"] / masked.attrs["lsmap"]["scene_km2"] < 0.25
