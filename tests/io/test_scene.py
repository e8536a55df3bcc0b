"""The one valid-pixel rule and window reader of lsmap.io.scene."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from _rasters import write_tif

from lsmap.core.bands import PROFILES, get_profile
from lsmap.core.windows import Window
from lsmap.errors import InputError
from lsmap.io.scene import declares_nodata, open_scene, read_scene_window, scale_raw, scene_info

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
RGBN, L4S = PROFILES["rgbn"], PROFILES["l4s14"]


def gdal_valid(path):
    """Validity as GDAL's own per-band masks give it (plus finiteness)."""
    with rasterio.open(path) as src:
        data = src.read()
        ok = (src.read_masks() > 0).all(axis=0)
    if data.dtype.kind == "f":
        ok &= np.isfinite(data).all(axis=0)
    return ok


@pytest.mark.parametrize("dtype, nodata", [("uint16", 0), ("int16", -9999), ("float32", -9999.0), ("float32", np.nan)])
def test_declared_nodata_compared_like_gdal_masks(tmp_path, rng, dtype, nodata):
    """Comparing values with the declared nodata (no second decode) marks exactly the pixels GDAL's
    masks mark."""
    data = rng.integers(1, 3000, (4, 30, 40)).astype(dtype)
    data[:, :5] = nodata
    data[2, 10:12, :] = nodata  # one band only
    if dtype == "float32":
        data[3, 25, :5] = np.nan
    path = write_tif(tmp_path / "s.tif", data, nodata=nodata, block=16)
    with open_scene(path, RGBN) as src:
        assert declares_nodata(src)
        _, valid = read_scene_window(src, Window(0, 0, 40, 30), RGBN)
        _, part = read_scene_window(src, Window(16, 8, 20, 16), RGBN)
    np.testing.assert_array_equal(valid, gdal_valid(path))
    np.testing.assert_array_equal(part, valid[8:24, 16:36])


def test_undeclared_nodata_is_any_spectral_band_at_profile_nodata(tmp_path, rng):
    """Without declared nodata or masks, a pixel is invalid when any spectral band holds the profile's
    raw nodata (0); zeros in slope or DEM are real values."""
    data = rng.integers(1, 3000, (14, 20, 20)).astype(np.uint16)
    data[3, 0, :] = 0  # one spectral band (B4)
    data[12, 1, :] = 0  # slope 0 degrees
    data[13, 2, :] = 0  # DEM at sea level
    data[:12, 3, :] = 0  # every spectral band
    data[1, 5, :4] = 65535  # B2 saturated: not observed, as `lsmap stack` takes it (it was read as a bright value)
    data[13, 6, :] = 65535  # a DEM value, not a Sentinel-2 reading
    path = write_tif(tmp_path / "s.tif", data)
    with open_scene(path, L4S) as src:
        assert not declares_nodata(src)
        scaled, valid = read_scene_window(src, Window(0, 0, 20, 20), L4S, raw=True)
    expected = np.ones((20, 20), bool)
    expected[[0, 3]] = False
    expected[5, :4] = False
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_array_equal(scaled, scale_raw(data, L4S))


def test_dataset_mask_is_used_when_present(tmp_path, rng):
    data = rng.random((4, 20, 30)).astype(np.float32) + 1
    path = write_tif(tmp_path / "s.tif", data)
    mask = np.full((20, 30), 255, np.uint8)
    mask[:, :7] = 0
    with rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    with open_scene(path, RGBN) as src:
        _, valid = read_scene_window(src, Window(0, 0, 30, 20), RGBN)
    np.testing.assert_array_equal(valid, mask > 0)


def test_scene_info_needs_a_crs(tmp_path, rng):
    path = write_tif(tmp_path / "s.tif", rng.random((4, 8, 8)).astype(np.float32), crs=None)
    with pytest.raises(InputError, match="coordinate reference system"):
        scene_info(path, RGBN)
    info = scene_info(write_tif(tmp_path / "g.tif", rng.random((4, 8, 9)).astype(np.float32), nodata=0.0), "rgbn")
    assert (info.height, info.width, info.count, info.declares_nodata) == (8, 9, 4, True)


def _described(path, data, names, nodata=None):
    write_tif(path, data, nodata=nodata)
    with rasterio.open(path, "r+") as dst:
        for i, n in enumerate(names, start=1):
            dst.set_band_description(i, n)
    return path


def test_scene_band_names_from_descriptions_or_given(tmp_path, rng):
    from lsmap.io.scene import scene_band_names

    data = rng.random((4, 8, 8)).astype(np.float32)
    info = scene_info(_described(tmp_path / "d.tif", data, ["B08", "b4", "B3", "B2"]))
    assert info.bands == ("B8", "B4", "B3", "B2"), "descriptions in canonical spelling"
    assert scene_band_names(info) == ("B8", "B4", "B3", "B2")
    with pytest.raises(InputError, match=r"d\.tif: `bands` rgbn .* descriptions say B8, B4, B3, B2"):
        scene_band_names(info, "rgbn")
    bare = scene_info(write_tif(tmp_path / "n.tif", data))
    assert bare.bands is None
    assert scene_band_names(bare, "B2,B3,B4,B8") == ("B2", "B3", "B4", "B8")
    assert scene_band_names(bare, assume=RGBN) == RGBN.bands
    with pytest.raises(InputError, match=r"n\.tif: 4 bands without band names .*`bands`"):
        scene_band_names(bare)
    assert scene_band_names(scene_info(write_tif(tmp_path / "l.tif", rng.random((14, 4, 4))))) == L4S.bands


def test_read_a_band_subset_by_name_in_its_order(tmp_path, rng):
    from lsmap.errors import MissingBandError
    from lsmap.io.scene import scene_band_indices

    data = rng.integers(1, 3000, (4, 8, 8)).astype(np.uint16)
    data[0, 0, 0] = 0  # nodata in B8 only
    path = _described(tmp_path / "s.tif", data, ["B8", "B4", "B3", "B2"], nodata=0)
    info = scene_info(path)
    idx = scene_band_indices(info.bands, "B2,B4", source=path)
    assert idx == (4, 2)
    with open_scene(path) as src:
        got, valid = read_scene_window(src, Window(0, 0, 8, 8), get_profile("B2,B4"), indexes=idx)
    np.testing.assert_array_equal(got, data[[3, 1]].astype(np.float32))
    assert valid.all(), "B8's nodata does not matter when B8 is not read"
    with pytest.raises(MissingBandError, match=r"s\.tif: no band B5 needed by m\.safetensors"):
        scene_band_indices(info.bands, "B4,B5", source=path, user="m.safetensors")


def test_overview_reads_through_a_bounded_cache_and_unscales_only_the_bands_asked(tmp_path, rng, monkeypatch):
    """read_scene_overview: GDAL's block cache is bounded during the decimated read (its default, 5 % of the
    RAM, kept every decoded block of the scene); the bands asked equal those of the whole overview, and the
    validity still follows every band (nodata in one band not returned)."""
    import rasterio.env

    import lsmap.io.scene as scene

    data = rng.integers(1, 3000, (4, 64, 80)).astype("uint16")
    data[3, :8, :] = 0  # nodata in B8 only
    path = write_tif(tmp_path / "s.tif", data, nodata=0, block=16)
    seen, read = [], scene.read_window
    monkeypatch.setattr(scene, "read_window",
                        lambda *a, **k: seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX")) or read(*a, **k))
    with open_scene(path, RGBN) as src:
        every, valid = scene.read_scene_overview(src, RGBN, 40)
        rgb, valid_rgb = scene.read_scene_overview(src, RGBN, 40, bands=(2, 1, 0))
    assert seen == [scene.GDAL_CACHE_MB * 2**20] * 2
    assert every.shape == (4, 32, 40) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb, every[[2, 1, 0]])
    np.testing.assert_array_equal(valid_rgb, valid)
    assert not valid[:4].any() and valid[4:].all()


def test_an_lsmap_stack_overview_reads_only_the_bands_shown(tmp_path, rng, monkeypatch):
    """A stack `lsmap stack` wrote (STACK_TAG) has one nodata mask for all its bands: the overview reads only the
    bands asked, and gives the same values and validity as reading every band."""
    import lsmap.io.scene as scene

    data = rng.integers(1, 3000, (4, 64, 80)).astype("uint16")
    data[:, :8, :] = 0  # nodata in every band, as lsmap stack writes it
    data[:, 30:33, 10:50] = 0
    plain = write_tif(tmp_path / "plain.tif", data, nodata=0, block=16)
    tagged = write_tif(tmp_path / "stack.tif", data, nodata=0, block=16)
    with rasterio.open(tagged, "r+") as dst:
        dst.update_tags(**{scene.STACK_TAG: "rgbn"})
    read, asked = scene.read_window, []
    monkeypatch.setattr(scene, "read_window", lambda src, band, *a, **k: asked.append(band) or read(src, band, *a, **k))
    with open_scene(plain, RGBN) as a, open_scene(tagged, RGBN) as b:
        want, want_valid = scene.read_scene_overview(a, RGBN, 40, bands=(2, 1, 0))
        got, got_valid = scene.read_scene_overview(b, RGBN, 40, bands=(2, 1, 0))
    assert asked == [None, [3, 2, 1]]  # every band of the plain file, the three shown of the stack
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_valid, want_valid)
    assert not got_valid.all() and got_valid.any()


def _terrain_stack(path, rng, slope_zero: float, nodata=0.0):
    """A 14-band L4S-scaled float stack declaring ``nodata`` (one value for every band, as GeoTIFF has), with
    slope 0 on a share of the pixels (flat ground) and a nodata border."""
    data = rng.uniform(0.5, 1.5, (14, 64, 64)).astype("float32")
    data[12] = rng.uniform(0.2, 40.0, (64, 64))
    data[12][rng.random((64, 64)) < slope_zero] = 0.0
    data[:, :4] = nodata  # outside the footprint: every band
    return write_tif(path, data, nodata=nodata)


def test_a_nodata_value_that_is_real_terrain_is_said(tmp_path, rng):
    """A foreign stack declaring 0 as nodata masked every pixel of slope 0 (flat ground) in every band, with no
    word (found by an audit: 1.25 % of a scene). Said by detect's, tile's and stats' checks; not for a share of
    pixels a DEM's voids would make, nor for a value outside the band's range."""
    from lsmap.io.scene import terrain_nodata_warning

    why = terrain_nodata_warning(_terrain_stack(tmp_path / "flat.tif", rng, 0.05), L4S, "flat.tif")
    assert why is not None and why.startswith("flat.tif: its nodata value 0 is also a slope value: slope holds it at")
    assert "rio edit-info --unset-nodata flat.tif" in why
    import subprocess
    import sys
    from pathlib import Path

    subprocess.run([str(Path(sys.executable).parent / "rio"), "edit-info", "--unset-nodata", str(tmp_path / "flat.tif")],
                   check=True)  # the fix it names: slope 0 is then valid, the spectral bands' 0 still nodata
    assert terrain_nodata_warning(tmp_path / "flat.tif", L4S, "flat.tif") is None
    with open_scene(tmp_path / "flat.tif", L4S) as src:
        data, valid = read_scene_window(src, Window(0, 0, 64, 64), L4S)
    assert valid[4:].all() and not valid[:4].any() and (data[12][valid] == 0).any()
    assert terrain_nodata_warning(_terrain_stack(tmp_path / "ok.tif", rng, 0.0), L4S, "ok.tif") is None
    assert terrain_nodata_warning(_terrain_stack(tmp_path / "far.tif", rng, 0.0, nodata=-9999.0), L4S, "f") is None
    stray = _terrain_stack(tmp_path / "stray.tif", rng, 0.0)
    with rasterio.open(stray, "r+") as dst:  # two pixels only: below the share
        band = dst.read(13)
        band[30, 30:32] = 0
        dst.write(band, 13)
    assert terrain_nodata_warning(stray, L4S, "stray.tif") is None


def test_the_terrain_nodata_warning_reaches_the_commands(tmp_path, rng):
    from detect_fixtures import tiny_checkpoint

    import lsmap
    from lsmap.data.stats import compute_stats
    from lsmap.data.tile import tile_scene
    from lsmap.errors import LsmapWarning

    path = _terrain_stack(tmp_path / "flat.tif", rng, 0.05)
    with pytest.warns(LsmapWarning, match="nodata value 0 is also a slope value"):
        compute_stats(path, "l4s14")
    with pytest.warns(LsmapWarning, match="nodata value 0 is also a slope value"):
        tile_scene(path, tmp_path / "patches", size=32)
    model = tiny_checkpoint(tmp_path / "m", "l4s14")
    with pytest.warns(LsmapWarning, match="flat.tif: its nodata value 0 is also a slope value"):
        lsmap.detect(path, [model], window=64, overlap=0)
