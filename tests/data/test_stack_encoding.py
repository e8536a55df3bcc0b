"""Stack encodings: uint16 codes with a GDAL scale/offset read back as today's float32 values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st

from lsmap.core.bands import PROFILES, get_profile
from lsmap.core.encoding import UINT16_NODATA, band_quanta, decode, encode_uint16, max_error, scales_offsets
from lsmap.core.windows import Window
from lsmap.data.stack import stack_scene
from lsmap.errors import InputError
from lsmap.io.rasters import OUTPUT_NODATA
from lsmap.io.scene import band_scaling, read_scene_overview, read_scene_window

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
L4S = PROFILES["l4s14"]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> tuple[Path, Path]:
    """The sample bands and DEM stacked (the 200 x 150 px bottom-right AOI) as float32 and as uint16."""
    from lsmap.io.aoi import parse_bbox

    tmp = tmp_path_factory.mktemp("enc")
    with rasterio.open(SAMPLE / "s2" / "SYNTH_20230601_B02_10m.tif") as src:
        left, top = src.transform.c, src.transform.f
    aoi = parse_bbox([left + 3120, top - 5120, left + 5120, top - 3620], "EPSG:32645")  # the nodata corner
    kw = dict(dem=SAMPLE / "dem_30m.tif", aoi=aoi)
    f32 = stack_scene(SAMPLE / "s2", tmp / "f32.tif", encoding="float32", **kw).path
    u16 = stack_scene(SAMPLE / "s2", tmp / "u16.tif", **kw).path
    return f32, u16


def test_uint16_stack_reads_as_float32_stack_within_tolerance(stacks):
    """Every pixel read through read_scene_window equals the float32 stack's within max_error; same nodata."""
    f32, u16 = stacks
    with rasterio.open(f32) as a, rasterio.open(u16) as b:
        assert b.dtypes[0] == "uint16" and b.nodata == UINT16_NODATA and a.dtypes[0] == "float32"
        assert b.descriptions == a.descriptions == L4S.bands
        assert b.tags()["LSMAP_ENCODING"] == "uint16"
        assert b.compression.name == "zstd"
        win = Window(0, 0, a.width, a.height)
        x, va = read_scene_window(a, win, L4S)
        y, vb = read_scene_window(b, win, L4S)
        assert y.dtype == np.float32
        assert (va == vb).all() and va.any() and (~va).any()  # the sample's nodata corner lies in the AOI
        err = np.abs(y[:, va].astype(np.float64) - x[:, va]).max(axis=1)
        assert (err <= np.asarray(max_error(L4S))).all(), err
        # 10 m bands are whole DNs: stored exactly (up to float32 rounding)
        for band in ("B2", "B3", "B4", "B8"):
            assert err[L4S.bands.index(band)] < 2e-6
        # band subsets get their own scale/offset
        idx = (4, 13, 14)
        z, _ = read_scene_window(b, win, get_profile(["B4", "slope", "DEM"]), indexes=idx)
        np.testing.assert_array_equal(z, y[[3, 12, 13]])
        # the overview (quick-look) is unscaled too
        ov_a, _ = read_scene_overview(a, L4S, 64)
        ov_b, _ = read_scene_overview(b, L4S, 64)
        assert np.abs(ov_a - ov_b)[:, np.isfinite(ov_a).all(0) & (ov_a != OUTPUT_NODATA).all(0)].max() < 0.02


def test_float32_stack_reads_unchanged(stacks):
    """An older float32 stack (no scale/offset) is read exactly as stored."""
    f32, _ = stacks
    with rasterio.open(f32) as a:
        assert band_scaling(a) is None
        x, _ = read_scene_window(a, Window(3, 5, 40, 30), L4S)
        np.testing.assert_array_equal(x, a.read(window=rasterio.windows.Window(3, 5, 40, 30)))


def test_scaled_raw_integers_are_unscaled_first(tmp_path):
    """A tool's scaled integer raster reads as code * scale + offset, then raw scaling applies."""
    path = tmp_path / "s.tif"
    codes = np.arange(1, 1 + 4 * 16, dtype=np.uint16).reshape(4, 4, 4)
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=4, dtype="uint16",
                       crs="EPSG:32645", transform=rasterio.transform.from_origin(0, 0, 10, 10)) as dst:
        dst.write(codes)
        dst.scales, dst.offsets = (2.0,) * 4, (-1.0,) * 4
    prof = get_profile("rgbn")
    with rasterio.open(path) as src:
        x, _ = read_scene_window(src, Window(0, 0, 4, 4), prof)
        np.testing.assert_allclose(x, codes * 2.0 - 1.0)
        r, _ = read_scene_window(src, Window(0, 0, 4, 4), prof, raw=True)
        np.testing.assert_allclose(r, (codes * 2.0 - 1.0) / np.asarray(prof.divisors)[:, None, None], rtol=1e-6)


@given(st.lists(st.integers(-999, 64534), min_size=1, max_size=50))
def test_whole_dns_round_trip_exactly(dns):
    """Law: a whole DN in a band's range comes back as DN / divisor up to float32 rounding."""
    prof = get_profile(["B4", "B11"])
    raw = np.asarray(dns, np.float64)[None, None, :].repeat(2, axis=0)
    codes = encode_uint16(raw, np.zeros((1, len(dns)), bool), prof)
    back = decode(codes, *scales_offsets(prof)).astype(np.float64)
    want = raw / np.asarray(prof.divisors)[:, None, None]
    assert np.abs(back - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_values_outside_the_range_clip_and_nodata_is_code_zero():
    prof = get_profile(["B4", "slope", "DEM"])
    raw = np.asarray([[[-5000.0, 70000.0]], [[-1.0, 500.0]], [[-3000.0, 20000.0]]])
    codes = encode_uint16(raw, np.asarray([[False, False]]), prof)
    assert (codes >= 1).all()
    v = decode(codes, *scales_offsets(prof)) * np.asarray(prof.divisors, np.float32)[:, None, None]
    lows = [lo + s for s, lo in band_quanta(prof.bands)]
    np.testing.assert_allclose(v[:, 0, 0], lows, atol=1e-2)
    assert (encode_uint16(raw, np.asarray([[True, False]]), prof)[:, 0, 0] == UINT16_NODATA).all()


def test_unknown_encoding_is_refused(tmp_path):
    with pytest.raises(InputError, match="encoding"):
        stack_scene(SAMPLE / "s2", tmp_path / "x.tif", dem=SAMPLE / "dem_30m.tif", encoding="int8")


def test_cli_encoding_option(tmp_path):
    """`lsmap stack --encoding float32` writes the float values; the default writes uint16 codes."""
    import json

    from click.testing import CliRunner

    from lsmap.cli import main

    args = [str(SAMPLE / "s2"), "--bbox", "500000,3076000,500400,3076400", "--bbox-crs", "EPSG:32645",
            "--bands", "rgbn", "--json"]
    r = CliRunner().invoke(main, ["stack", *args, "-o", str(tmp_path / "a.tif")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["encoding"] == "uint16"
    r = CliRunner().invoke(main, ["stack", *args, "--encoding", "float32", "-o", str(tmp_path / "b.tif")])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert (a.dtypes[0], b.dtypes[0]) == ("uint16", "float32")
        x, _ = read_scene_window(a, Window(0, 0, a.width, a.height), get_profile("rgbn"))
        np.testing.assert_allclose(x, b.read(), atol=2e-6)  # 10 m bands: whole DNs, stored exactly
