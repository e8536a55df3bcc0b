"""Sentinel-2 products as downloaded: SAFE folders and zips, STAC Items, DEM tiles, AOIs, DN offsets."""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import read_stack
from click.testing import CliRunner
from conftest import shared_data
from products_fixtures import (
    CRS,
    SIZE,
    X0,
    Y0,
    RangeHandler,
    band_dn,
    loose_bands,
    make_safe,
    make_stac_item,
    mtd_xml,
    scl_classes,
    serve,
    write_band,
    zip_safe,
)
from rasterio.transform import from_origin

from lsmap.cli import main
from lsmap.core.bands import L4S_DIVISORS, PROFILES, BandProfile
from lsmap.data.stack import stack_scene
from lsmap.errors import InputError, LsmapWarning, MissingInputError
from lsmap.io.aoi import parse_bbox
from lsmap.io.s2product import open_safe, parse_mtd

RGBN = PROFILES["rgbn"]
L4S_DIV = dict(zip(("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM"),
                   L4S_DIVISORS, strict=True))
#: a band set with a 20 m band and terrain, that an L2A product fills (no B10)
MIXED = BandProfile("mixed", ("B4", "B11", "B8", "slope", "DEM"), tuple(L4S_DIV[b] for b in ("B4", "B11", "B8",
                    "slope", "DEM")), frozenset({"B4", "B11", "B8"}))


def read(path) -> np.ndarray:
    return read_stack(path)


def write_dem(path: Path, *, x0=X0 - 300, y0=Y0 + 300, n=60, res=30.0, crs=CRS) -> Path:
    """A smooth DEM (metres) on a 30 m grid that covers the fake tile with a margin."""
    y, x = np.mgrid[0:n, 0:n]
    z = (800 + 3 * x + 2 * y + 40 * np.sin(x / 7) * np.cos(y / 9)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32", crs=crs,
                       transform=from_origin(x0, y0, res, res), nodata=-9999.0) as dst:
        dst.write(z, 1)
    return path


def only_outputs(folder: Path, *names: str) -> None:
    """Nothing but the named files in ``folder`` (no temporary or half-written leftovers)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# --- metadata -----------------------------------------------------------------------------------

#: every real metadata file here: (folder glob, level, baseline, DN offset or None)
REAL_MTD = [
    ("L1C_N0509_*", "L1C", "05.09", -1000.0), ("N0212_*", "L2A", "02.12", None), ("N0214_S2B_MSIL2A_2020*", "L2A",
    "02.14", None), ("N0214_S2B_MSIL2A_2021*", "L2A", "02.14", None), ("N0400_S2B_MSIL2A_20220413*", "L2A", "04.00",
    -1000.0), ("N0400_S2B_MSIL2A_20221127*", "L2A", "04.00", -1000.0), ("N0509_*", "L2A", "05.09", -1000.0),
    ("N0510_*", "L2A", "05.10", -1000.0), ("N0511_*", "L2A", "05.11", -1000.0),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("pattern", "level", "baseline", "offset"), REAL_MTD)
def test_every_real_mtd_parses_to_its_offset_and_quantification(pattern, level, baseline, offset):
    (path,) = glob.glob(str(shared_data("s2", "mtd_baselines") / pattern / "MTD_MSIL*.xml"))
    meta = parse_mtd(path)
    assert (meta.level, meta.baseline, meta.quantification) == (level, baseline, 10000.0)
    assert meta.product_type == f"S2MSI{level[1:]}"
    assert meta.sensing_time[:4] in ("2019", "2020", "2021", "2022", "2023", "2024")
    if offset is None:  # before 04.00: no offset element, no offset
        assert meta.offsets == {} and meta.offset("B4") == 0.0
    else:
        assert set(meta.offsets) == set(PROFILES["l4s14"].sentinel2_bands) | {"B8A"}
        assert set(meta.offsets.values()) == {offset}
    assert len(meta.image_files) >= 13


@pytest.mark.realdata
def test_real_mtd_list_is_complete():
    folders = sorted(Path(p).name for p in glob.glob(str(shared_data("s2", "mtd_baselines") / "*")))
    matched = [f for f in folders if any(Path(f).match(p) for p, *_ in REAL_MTD)]
    assert matched == folders


def test_offsets_follow_band_ids_not_positions(tmp_path):
    """band_id 8 is B8A and 9 is B9 (Spectral_Information), not the 9th and 10th band names."""
    xml = mtd_xml("P.SAFE", [], offsets={"B4": -1000, "B8A": -1008, "B9": -1009}).encode()
    meta = parse_mtd(xml, "MTD_MSIL2A.xml")
    assert meta.offsets == {"B4": -1000.0, "B8A": -1008.0, "B9": -1009.0}
    old = parse_mtd(mtd_xml("P.SAFE", [], baseline="02.14", offsets=None).encode(), "MTD_MSIL2A.xml")
    assert old.offsets == {} and old.baseline == "02.14"
    l1c = parse_mtd(mtd_xml("P.SAFE", [], level="L1C", offsets={"B10": -1000}).encode(), "MTD_MSIL1C.xml")
    assert (l1c.level, l1c.offsets) == ("L1C", {"B10": -1000.0})
    with pytest.raises(InputError, match="not a Sentinel-2"):
        parse_mtd(b"<a/>", "x.xml")


# --- SAFE folders and zips ------------------------------------------------------------------------


def test_safe_stack_applies_the_offset_like_loose_offset_free_files(tmp_path):
    """(DN + offset) of a 04.00 product stacks to the same L4S values as offset-free files of the same scene."""
    safe = make_safe(tmp_path)
    loose = loose_bands(safe, tmp_path / "loose", ["B2", "B3", "B4", "B8"])
    r = stack_scene(safe, tmp_path / "p.tif", bands="rgbn")
    stack_scene(loose, tmp_path / "l.tif", bands="rgbn")
    assert r.kind == "SAFE" and r.offsets == {"B4": -1000.0, "B3": -1000.0, "B2": -1000.0, "B8": -1000.0}
    assert r.product["baseline"] == "04.00" and r.offsets_known
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), read(tmp_path / "l.tif"))
    dn = band_dn("B4", 10, base=1100).astype(np.float64)
    got = read(tmp_path / "p.tif")[0]
    ok = dn > 0
    np.testing.assert_allclose(got[ok], ((dn - 1000) / L4S_DIV["B4"])[ok], rtol=1e-6)
    assert (got[~ok] == -9999).all()  # DN 0 stays no data whatever the offset


def test_old_baseline_has_no_offset_and_l1c_uses_radio_offset(tmp_path):
    old = make_safe(tmp_path / "a", baseline="02.14", offset=None)  # the same reflectances, DN without +1000
    r = stack_scene(old, tmp_path / "old.tif", bands="rgb")
    assert set(r.offsets.values()) == {0.0} and r.offsets_known
    dn = band_dn("B4", 10, base=100).astype(np.float64)
    np.testing.assert_allclose(read(tmp_path / "old.tif")[0][dn > 0], (dn / L4S_DIV["B4"])[dn > 0], rtol=1e-6)
    stack_scene(make_safe(tmp_path / "b"), tmp_path / "new.tif", bands="rgb")
    np.testing.assert_array_equal(read(tmp_path / "new.tif"), read(tmp_path / "old.tif"))
    s2 = PROFILES["s2"].sentinel2_bands
    l1c = make_safe(tmp_path / "c", level="L1C", baseline="05.09", bands=s2, scl=False)
    r = stack_scene(l1c, tmp_path / "l1c.tif", bands="s2")
    assert r.product["level"] == "L1C" and set(r.offsets.values()) == {-1000.0}
    stack_scene(make_safe(tmp_path / "d", level="L1C", baseline="03.01", offset=None, bands=s2, scl=False),
                tmp_path / "l1c_old.tif", bands="s2")
    np.testing.assert_array_equal(read(tmp_path / "l1c.tif"), read(tmp_path / "l1c_old.tif"))


def test_zip_is_read_in_place_and_equals_the_folder(tmp_path):
    safe = make_safe(tmp_path / "dl")
    z = zip_safe(safe)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    out.mkdir()
    r = stack_scene(z, out / "z.tif", bands=MIXED, dem=write_dem(tmp_path / "dem.tif"))
    stack_scene(safe, out / "f.tif", bands=MIXED, dem=tmp_path / "dem.tif")
    assert r.kind == "SAFE zip" and r.sources["B4"].startswith(f"{z.resolve()}!") and r.sources["B4"].endswith(".tif")
    np.testing.assert_array_equal(read(out / "z.tif"), read(out / "f.tif"))
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # nothing unzipped: the only new files are the outputs and the DEM
    assert set(after) - set(before) == {Path("out"), Path("out/z.tif"), Path("out/f.tif"), Path("dem.tif")}


def test_finest_present_file_per_band_and_a_10m_grid_from_60m_bands(tmp_path):
    """A product whose 10 m files are absent (like the real T29UNU here) stacks from 60 m at 10 m."""
    safe = make_safe(tmp_path, present={"B2": [60], "B3": [60], "B4": [20, 60], "B8": [60], "B5": [60], "B11": [60]})
    src = open_safe(safe)
    assert src.files["B4"].endswith("_B04_20m.tif") and src.files["B2"].endswith("_B02_60m.tif")
    assert any(n.startswith("B2: read from its 60 m file") for n in src.notes)
    r = stack_scene(safe, tmp_path / "s.tif", bands="rgb")
    with rasterio.open(tmp_path / "s.tif") as s:
        assert (s.width, s.height, s.transform.a) == (SIZE, SIZE, 10.0)
        assert (s.transform.c, s.transform.f) == (X0, Y0)
    assert (r.width, r.resolution) == (SIZE, (10.0, 10.0))


@pytest.mark.skipif("JP2OpenJPEG" not in rasterio.drivers.raster_driver_extensions().values(),
                    reason="GDAL without the JPEG 2000 driver")
def test_jpeg2000_product(tmp_path):
    safe = make_safe(tmp_path / "j", fmt="JPEG2000", bands=("B2", "B3", "B4"))
    tif = make_safe(tmp_path / "t", bands=("B2", "B3", "B4"))
    stack_scene(safe, tmp_path / "j.tif", bands="rgb")
    stack_scene(tif, tmp_path / "t.tif", bands="rgb")
    np.testing.assert_array_equal(read(tmp_path / "j.tif"), read(tmp_path / "t.tif"))  # lossless JP2


# --- bad products: one line, the file, the fix, nothing left ---------------------------------------


def _fails(args, tmp_path, *needles):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    res = CliRunner().invoke(main, ["stack", *map(str, args), "-o", str(out / "s.tif"), "--bands", "rgb"])
    assert res.exit_code != 0, res.output
    line = res.output.strip()
    assert line.startswith("Error:") and "\n" not in line, line
    for n in needles:
        assert n in line, line
    assert list(out.iterdir()) == []
    return line


def test_bad_products_fail_in_one_line_and_leave_nothing(tmp_path):
    safe = make_safe(tmp_path / "p", bands=("B2", "B3", "B4"))
    z = zip_safe(safe)
    data = z.read_bytes()
    cut = tmp_path / "cut.SAFE.zip"
    cut.write_bytes(data[: len(data) // 2])
    _fails([cut], tmp_path, str(cut), "truncated", "re-download")
    nomtd = tmp_path / "x" / safe.name
    nomtd.parent.mkdir()
    (nomtd / "GRANULE").mkdir(parents=True)
    _fails([nomtd], tmp_path, str(nomtd), "MTD_MSIL2A.xml", "re-download")
    zmtd = tmp_path / "nomtd.zip"
    with zipfile.ZipFile(zmtd, "w") as zf:
        zf.writestr("P.SAFE/manifest.safe", "x")
    _fails([zmtd], tmp_path, str(zmtd), "no MTD_MSIL2A.xml")
    item = make_stac_item(tmp_path / "stac", {"green": "B3", "blue": "B2"})
    _fails([item], tmp_path, str(item), "band B4", "'red' or 'B04'")
    _fails([safe, "--bbox", "20,10,20.1,10.1"], tmp_path, "--bbox 20,10,20.1,10.1", "does not overlap",
           "lon 16.27")
    _fails([safe, "--offset", "-1000"], tmp_path, "--offset is for loose band files")
    _fails([safe, "--bbox", "1,2,3"], tmp_path, "four numbers")


# --- AOI ----------------------------------------------------------------------------------------------


def _bbox_lonlat(col0, row0, col1, row1):
    """lon/lat box strictly inside the pixels [col0, col1) x [row0, row1) of the fake tile's 10 m grid."""
    from rasterio.warp import transform_bounds

    x0, x1 = X0 + 10 * col0 + 3, X0 + 10 * col1 - 3
    y0, y1 = Y0 - 10 * row1 + 3, Y0 - 10 * row0 - 3
    w, s, e, n = transform_bounds(CRS, "EPSG:4326", x0, y0, x1, y1, densify_pts=21)
    return (x0, y0, x1, y1), (w, s, e, n)


def test_aoi_stack_is_the_full_stack_window_to_the_pixel(tmp_path):
    safe = make_safe(tmp_path)
    dem = write_dem(tmp_path / "dem.tif")
    full = stack_scene(safe, tmp_path / "full.tif", bands=MIXED, dem=dem, block=32)
    (x0, y0, x1, y1), _ = _bbox_lonlat(37, 21, 91, 70)
    r = stack_scene(safe, tmp_path / "aoi.tif", bands=MIXED, dem=dem, block=32,
                    aoi=parse_bbox(f"{x0},{y0},{x1},{y1}", CRS))
    assert r.window == (37, 21, 54, 49) and (r.width, r.height) == (54, 49)
    a, f = read(tmp_path / "aoi.tif"), read(tmp_path / "full.tif")
    np.testing.assert_array_equal(a, f[:, 21:70, 37:91])  # bands, 20 m resampling, DEM and slope
    with rasterio.open(tmp_path / "aoi.tif") as s, rasterio.open(tmp_path / "full.tif") as fs:
        assert s.transform == fs.transform @ fs.transform.translation(37, 21)
    assert full.window is None


def test_lonlat_bbox_and_vector_aoi_in_another_crs(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    stack_scene(safe, tmp_path / "full.tif", bands="rgb")
    full = read(tmp_path / "full.tif")
    (x0, y0, x1, y1), lonlat = _bbox_lonlat(30, 40, 80, 100)
    r = stack_scene(safe, tmp_path / "ll.tif", bands="rgb", aoi=parse_bbox(",".join(map(str, lonlat))))
    c0, r0, w, h = r.window  # the lon/lat box's projected outline, snapped outward: covers the pixels asked
    assert c0 <= 30 and r0 <= 40 and c0 + w >= 80 and r0 + h >= 100 and w <= 52 and h <= 62
    np.testing.assert_array_equal(read(tmp_path / "ll.tif"), full[:, r0:r0 + h, c0:c0 + w])
    # a vector AOI (a triangle, stored in EPSG:3857): cropped to its bounds, nodata outside it
    from shapely.geometry import Polygon

    tri = Polygon([(x0, y0), (x1, y0), (x0, y1)])
    gpd.GeoDataFrame(geometry=[tri], crs=CRS).to_crs(3857).to_file(tmp_path / "aoi.gpkg")
    res = CliRunner().invoke(main, ["stack", str(safe), "--bands", "rgb", "--aoi", str(tmp_path / "aoi.gpkg"),
                                    "-o", str(tmp_path / "v.tif"), "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.output)
    c0, r0, w, h = v["window"]
    got = read(tmp_path / "v.tif")
    win = full[:, r0:r0 + h, c0:c0 + w]
    inside = got[0] != -9999
    np.testing.assert_array_equal(got[:, inside], win[:, inside])
    assert 0.35 < inside.mean() < 0.65 and inside[-3, 2] and not inside[2, -3]  # the triangle's lower-left half
    assert box(*v["aoi"]["bounds"]).area > 0 and v["aoi"]["mask"] is True


def test_aoi_options_errors(tmp_path):
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    _fails([safe, "--bbox-crs", "EPSG:32633"], tmp_path, "--bbox-crs", "--bbox W,S,E,N")
    _fails([safe, "--bbox", "14.1,45,14.0,45.1"], tmp_path, "west must be less than east")


# --- DEM tiles ----------------------------------------------------------------------------------------


def _dem_tiles(dem: Path, folder: Path, skip: tuple[int, int] | None = None) -> Path:
    """Cut ``dem`` into 2 x 2 tiles (as 1-degree DEM tiles are) in ``folder``."""
    folder.mkdir()
    with rasterio.open(dem) as src:
        z = src.read(1)
        n = z.shape[0] // 2
        for i in range(2):
            for j in range(2):
                if (i, j) == skip:
                    continue
                t = src.transform @ src.transform.translation(j * n, i * n)
                with rasterio.open(folder / f"dem_{i}{j}.tif", "w", driver="GTiff", width=n, height=n, count=1,
                                   dtype="float32", crs=src.crs, transform=t, nodata=-9999.0) as dst:
                    dst.write(z[i * n:(i + 1) * n, j * n:(j + 1) * n], 1)
    return folder


def test_dem_tiles_mosaic_equals_the_single_dem(tmp_path):
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4", "B8", "B11"))
    dem = write_dem(tmp_path / "dem.tif")
    tiles = _dem_tiles(dem, tmp_path / "tiles")
    stack_scene(safe, tmp_path / "one.tif", bands=MIXED, dem=dem)
    r = stack_scene(safe, tmp_path / "tiles.tif", bands=MIXED, dem=tiles)
    np.testing.assert_array_equal(read(tmp_path / "tiles.tif"), read(tmp_path / "one.tif"))
    assert r.sources["DEM"].startswith("4 DEM tiles")
    dems = sum((["--dem", str(p)] for p in sorted(tiles.iterdir())), [])
    res = CliRunner().invoke(main, ["stack", str(safe), "--bands", "B4,B3,B2,B8,slope,DEM", "-o",
                                    str(tmp_path / "c.tif"), *dems])
    assert res.exit_code == 0, res.output
    # a band set without terrain dropped the DEM without a word (the CLI audit)
    res = CliRunner().invoke(main, ["stack", str(safe), "--bands", "rgbn", "-o", str(tmp_path / "d.tif"), *dems])
    assert res.exit_code == 1 and "--dem is given but the band set --bands rgbn has no slope or DEM band" in res.output
    assert not (tmp_path / "d.tif").exists()


def test_dem_tiles_that_miss_part_of_the_aoi(tmp_path):
    safe = make_safe(tmp_path, bands=("B4", "B8", "B11"))
    tiles = _dem_tiles(write_dem(tmp_path / "dem.tif"), tmp_path / "tiles", skip=(1, 1))
    with pytest.warns(LsmapWarning, match=r"covers 7\d\.\d % of the Sentinel-2 scene"):
        stack_scene(safe, tmp_path / "w.tif", bands=MIXED, dem=tiles)
    with pytest.raises(InputError, match="add the DEM tiles of the whole area of interest"):
        stack_scene(safe, tmp_path / "e.tif", bands=MIXED, dem=tiles,
                    aoi=parse_bbox(f"{X0 + 600},{Y0 - 1100},{X0 + 1100},{Y0 - 600}", CRS))
    assert not (tmp_path / "e.tif").exists()
    far = write_dem(tmp_path / "far.tif", x0=X0 + 50_000)
    with pytest.raises(InputError, match="does not overlap"):
        stack_scene(safe, tmp_path / "f.tif", bands=MIXED, dem=[far, far])


# --- loose files: --offset and the offset warning ---------------------------------------------------


def test_loose_files_that_look_offset_warn_and_offset_fixes_them(tmp_path):
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    raw = loose_bands(safe, tmp_path / "raw", ["B2", "B3", "B4"], offset=0)  # DNs still carry +1000
    res = CliRunner().invoke(main, ["stack", str(raw), "--bands", "rgb", "-o", str(tmp_path / "a.tif")])
    assert res.exit_code == 0
    assert "Warning:" in res.output and "look offset" in res.output and "--offset -1000" in res.output
    res = CliRunner().invoke(main, ["stack", str(raw), "--bands", "rgb", "--offset", "-1000", "-o",
                                    str(tmp_path / "b.tif")])
    assert res.exit_code == 0 and "Warning" not in res.output
    stack_scene(safe, tmp_path / "p.tif", bands="rgb")
    np.testing.assert_array_equal(read(tmp_path / "b.tif"), read(tmp_path / "p.tif"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)  # offset-free DNs: no warning
        stack_scene(loose_bands(safe, tmp_path / "fixed", ["B2", "B3", "B4"]), tmp_path / "c.tif", bands="rgb")
        stack_scene(raw, tmp_path / "z.tif", bands="rgb", offset=0)  # `offset` 0: the user says they are not offset
        from lsmap.io.scene import scene_info

        scene_info(tmp_path / "z.tif")


def test_info_says_whether_loose_band_files_look_offset(tmp_path):
    # found by the real-data audit: `lsmap info` on the Wayanad bands said "dn offsets unknown", and only detect
    # then refused them as offset
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    offset = loose_bands(safe, tmp_path / "raw", ["B2", "B3", "B4"], offset=0)  # DNs still carry +1000
    plain = loose_bands(safe, tmp_path / "fixed", ["B2", "B3", "B4"])
    res = CliRunner().invoke(main, ["info", str(offset)])
    assert res.exit_code == 0 and re.search(r"dn offset hint +no DN below 1\d{3} .*looks offset.*--offset -1000", res.output)
    res = CliRunner().invoke(main, ["info", str(plain), "--json"])
    assert res.exit_code == 0 and "not offset" in json.loads(res.output)["dn_offset_hint"]


def test_info_says_when_a_geotiff_was_cut_short(tmp_path):
    # found by the real-data audit: `lsmap info` on a truncated GeoTIFF reported everything fine
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    full = stack_scene(safe, tmp_path / "s.tif", bands="rgb").path
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    whole = json.loads(CliRunner().invoke(main, ["info", str(full), "--json"]).output)
    assert whole["complete"] == "yes"
    res = CliRunner().invoke(main, ["info", str(cut)])
    assert res.exit_code == 0 and re.search(r"complete +no: \d+ tiles lie past the end of the file", res.output)


def test_an_offset_given_to_files_that_are_not_offset_is_refused(tmp_path):
    # found on the real Puthumala bands: `--offset -1000` on offset-free DNs put 88-90 % of B1-B4 below zero
    # reflectance and erased the scar from the map, exit 0
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    fixed = loose_bands(safe, tmp_path / "fixed", ["B2", "B3", "B4"])  # offset-free DNs (100-600)
    res = CliRunner().invoke(main, ["stack", str(fixed), "--bands", "rgb", "--offset", "-1000", "-o",
                                    str(tmp_path / "a.tif")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    assert re.search(r"with --offset -1000, the valid pixels below zero reflectance are B4 \d+ %, B3 \d+ %, B2", res.output)
    assert "do not look offset; stack them without --offset" in res.output and "Traceback" not in res.output
    assert not list(tmp_path.glob("*a.tif*"))
    with pytest.raises(InputError, match=r"fixed: with `offset` -1000"):
        stack_scene(fixed, tmp_path / "b.tif", bands="rgb", offset=-1000)
    with pytest.raises(InputError, match=r"^`offset` nan: give a finite number of DNs"):
        stack_scene(fixed, tmp_path / "b.tif", bands="rgb", offset=float("nan"))
    raw = loose_bands(safe, tmp_path / "raw", ["B2", "B3", "B4"], offset=0)  # offset DNs: the same offset is right
    stack_scene(raw, tmp_path / "c.tif", bands="rgb", offset=-1000)


def test_offset_looking_stack_warns_again_when_read_and_internal_stacking_refuses(tmp_path):
    """A stack of offset-looking band files made without an offset carries a tag, and whatever reads it warns
    again (once per command); tile, stats and detect, which stack band folders themselves and go on with the
    values, refuse them with the fix and write nothing."""
    from lsmap.io.scene import OFFSET_TAG, scene_info

    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    raw = loose_bands(safe, tmp_path / "raw", ["B2", "B3", "B4"], offset=0)  # DNs still carry +1000
    with pytest.warns(LsmapWarning, match="look offset"):
        stack_scene(raw, tmp_path / "a.tif", bands="rgb")
    with rasterio.open(tmp_path / "a.tif") as src:
        assert re.fullmatch(r"none below 1\d{3}", src.tags()[OFFSET_TAG])
    with pytest.warns(LsmapWarning, match=r"a\.tif: stacked from band files whose digital numbers look offset"):
        scene_info(tmp_path / "a.tif")
    res = CliRunner().invoke(main, ["tile", str(tmp_path / "a.tif"), "--bands", "rgb", "--size", "32", "-o",
                                    str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert res.output.count("Warning:") == 1 and "restack with --offset -1000" in res.output
    stack_scene(raw, tmp_path / "b.tif", bands="rgb", offset=-1000)
    with rasterio.open(tmp_path / "b.tif") as src:
        assert OFFSET_TAG not in src.tags()
    for cmd in (["tile", str(raw), "--bands", "rgb", "--size", "32", "-o", str(tmp_path / "q")],
                ["stats", str(raw), "--bands", "rgb", "-o", str(tmp_path / "s.json")]):
        res = CliRunner().invoke(main, cmd)
        assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
        assert "look offset" in res.output and "give --offset -1000 if they are, or --offset 0" in res.output
    assert not (tmp_path / "q").exists() and not (tmp_path / "s.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no scratch left"
    res = CliRunner().invoke(main, ["stats", str(raw), "--bands", "rgb", "--offset", "0", "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 0 and "Warning" not in res.output, res.output


# --- SCL / cloud probability layers ----------------------------------------------------------------


def test_scl_layer_is_written_nearest_at_full_resolution(tmp_path):
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    (x0, y0, x1, y1), _ = _bbox_lonlat(20, 10, 70, 50)
    r = stack_scene(safe, tmp_path / "s.tif", bands="rgb", layers={"SCL": tmp_path / "scl.tif",
                    "MSK_CLDPRB": tmp_path / "cld.tif"}, aoi=parse_bbox(f"{x0},{y0},{x1},{y1}", CRS))
    scl = read(tmp_path / "scl.tif")[0]
    expect = np.repeat(np.repeat(scl_classes(20), 2, 0), 2, 1)[10:50, 20:70]  # each 20 m pixel -> 2 x 2
    np.testing.assert_array_equal(scl, expect)
    assert r.layers["SCL"].endswith("scl.tif") and r.sources["SCL"].endswith("_SCL_20m.tif")
    np.testing.assert_array_equal(read(tmp_path / "cld.tif")[0], expect * 9)
    with rasterio.open(tmp_path / "scl.tif") as s, rasterio.open(tmp_path / "s.tif") as b:
        assert (s.transform, s.shape, s.nodata, s.dtypes[0]) == (b.transform, b.shape, 0, "uint8")
    loose = loose_bands(safe, tmp_path / "loose", ["B2", "B3", "B4"])
    with pytest.raises(MissingInputError, match="no SCL layer"):
        stack_scene(loose, tmp_path / "x.tif", bands="rgb", layers={"SCL": tmp_path / "x_scl.tif"})


def test_layers_are_nodata_outside_a_polygon_aoi_as_the_stack_is(tmp_path):
    """A vector AOI masks the pixels outside its polygon: in the SCL and cloud-probability layers too, not
    only in the stack (before, the layers kept their values over the whole bounding box)."""
    from shapely.geometry import Polygon

    from lsmap.io.aoi import AOI

    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    (x0, y0, x1, y1), _ = _bbox_lonlat(20, 10, 70, 50)
    aoi = AOI(Polygon([(x0, y0), (x1, y0), (x0, y1)]), CRS, "triangle.gpkg", mask=True)
    stack_scene(safe, tmp_path / "s.tif", bands="rgb", aoi=aoi,
                layers={"SCL": tmp_path / "scl.tif", "MSK_CLDPRB": tmp_path / "cld.tif"})
    with rasterio.open(tmp_path / "s.tif") as b:
        outside = ~b.read_masks(1).astype(bool)
    scl, cld = read(tmp_path / "scl.tif")[0], read(tmp_path / "cld.tif")[0]
    with rasterio.open(tmp_path / "scl.tif") as a, rasterio.open(tmp_path / "cld.tif") as c:
        nodata = a.nodata, c.nodata
    assert 0.3 < outside.mean() < 0.7  # the triangle: about half the box
    assert (scl[outside] == nodata[0]).all() and (cld[outside] == nodata[1]).all()  # each layer's nodata
    assert (cld[~outside] != nodata[1]).all()
    box = np.repeat(np.repeat(scl_classes(20), 2, 0), 2, 1)[10:50, 20:70]
    np.testing.assert_array_equal(scl[~outside], box[~outside])


# --- STAC Items ----------------------------------------------------------------------------------------

EARTH_SEARCH = {"red": "B4", "green": "B3", "blue": "B2", "nir": "B8", "swir16": "B11"}
PLANETARY = {"B04": "B4", "B03": "B3", "B02": "B2", "B08": "B8", "B11": "B11"}


def _local_reference(item_dir: Path, folder: Path, bands) -> Path:
    """The Item's COGs as loose band files with the offset applied."""
    folder.mkdir()
    for b in bands:
        with rasterio.open(item_dir / f"{b}.tif") as s:
            dn = s.read(1).astype(np.int32)
            res = int(s.transform.a)
        write_band(folder / f"B{b[1:].zfill(2)}.tif", np.where(dn > 0, dn - 1000, 0).astype(np.uint16), res)
    return folder


@pytest.mark.parametrize(("keys", "raster_offset"), [(EARTH_SEARCH, True), (PLANETARY, False)])
def test_stac_item_file_stacks_like_local_files(tmp_path, keys, raster_offset):
    item = make_stac_item(tmp_path / "item", keys, raster_offset=raster_offset, scl="scl" if raster_offset else "SCL")
    ref = _local_reference(tmp_path / "item", tmp_path / "ref", keys.values())
    r = stack_scene(item, tmp_path / "s.tif", bands=MIXED, dem=write_dem(tmp_path / "dem.tif"),
                    layers={"SCL": tmp_path / "scl.tif"})
    stack_scene(ref, tmp_path / "r.tif", bands=MIXED, dem=tmp_path / "dem.tif")
    assert r.kind == "STAC" and set(r.offsets.values()) == {-1000.0} and r.quantification == 10000.0
    np.testing.assert_array_equal(read(tmp_path / "s.tif"), read(tmp_path / "r.tif"))
    assert read(tmp_path / "scl.tif").max() == 11


def test_stac_item_over_http_range_requests_equals_local_files(tmp_path):
    """A generated Item with COG assets served by a loopback HTTP server: same stack as the local files."""
    item = make_stac_item(tmp_path / "item", EARTH_SEARCH)
    ref = _local_reference(tmp_path / "item", tmp_path / "ref", EARTH_SEARCH.values())
    stack_scene(ref, tmp_path / "r.tif", bands="rgbn")
    with serve(tmp_path / "item") as (url, handler):
        res = CliRunner().invoke(main, ["stack", f"{url}/{item.name}", "--bands", "rgbn", "-o",
                                        str(tmp_path / "s.tif"), "--write-scl", str(tmp_path / "scl.tif"), "--json"])
        assert res.exit_code == 0, res.output
        ranged = list(handler.ranges)
    out = json.loads(res.output)
    assert out["kind"] == "STAC" and out["sources"]["B4"] == f"{url}/B4.tif"
    np.testing.assert_array_equal(read(tmp_path / "s.tif"), read(tmp_path / "r.tif"))
    assert any(r.startswith("/B4.tif ") for r in ranged)  # COG bytes came by range requests
    with serve(tmp_path / "item") as (url, _):  # stats and tile take the Item's URL as detect does
        from lsmap.data.stats import compute_stats
        from lsmap.data.tile import read_tiles_meta, tile_scene

        assert compute_stats(f"{url}/{item.name}", "rgbn") == compute_stats(tmp_path / "s.tif", "rgbn",
                                                                             scl=tmp_path / "scl.tif")
        tile_scene(f"{url}/{item.name}", tmp_path / "p", bands="rgbn", size=32)
        assert read_tiles_meta(tmp_path / "p")["scene"] == f"{url}/{item.name}"
    with serve(tmp_path / "item") as (url, _):
        res = CliRunner().invoke(main, ["stack", f"{url}/missing.json", "--bands", "rgb", "-o",
                                        str(tmp_path / "m.tif")])
    assert res.exit_code != 0 and "cannot read the STAC Item" in res.output and "missing.json" in res.output
    assert not (tmp_path / "m.tif").exists()


def _bucket_item(item: Path, alternate_url: str | None) -> Path:
    """The Item with every asset href moved to ``s3://sentinel-cogs/...`` (and an https alternate, optional)."""
    d = json.loads(item.read_text())
    for asset in d["assets"].values():
        name = asset["href"].removeprefix("./")
        asset["href"] = f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/33/T/WN/{name}"
        if alternate_url:
            asset["alternate"] = {"s3": {"href": asset["href"]}, "https": {"href": f"{alternate_url}/{name}"}}
    out = item.with_name("bucket_item.json")
    out.write_text(json.dumps(d))
    return out


def test_stac_bucket_hrefs_take_the_https_alternate(tmp_path):
    """Items that point at s3:// (Copernicus Data Space, Earth Search's alternates) read the http(s) alternate."""
    item = make_stac_item(tmp_path / "item", EARTH_SEARCH)
    ref = _local_reference(tmp_path / "item", tmp_path / "ref", EARTH_SEARCH.values())
    stack_scene(ref, tmp_path / "r.tif", bands="rgbn")
    with serve(tmp_path / "item") as (url, handler):
        bucket = _bucket_item(item, url)
        r = stack_scene(bucket, tmp_path / "s.tif", bands="rgbn")
        ranged = list(handler.ranges)
    assert r.sources["B4"] == f"{url}/B4.tif"
    assert any(x.startswith("/B4.tif ") for x in ranged)
    np.testing.assert_array_equal(read(tmp_path / "s.tif"), read(tmp_path / "r.tif"))


def test_data_space_items_take_the_finest_resolution_and_their_processing_version(tmp_path):
    """Copernicus Data Space Ecosystem Items name assets with their resolution (B04_20m, B04_10m, SCL_60m...) and
    say the baseline as ``processing:version``: the finest file of each band is read, the -1000 offset applied."""
    item = make_stac_item(tmp_path / "item", PLANETARY, raster_offset=False, scl="SCL", baseline=None)
    ref = _local_reference(tmp_path / "item", tmp_path / "ref", PLANETARY.values())
    d = json.loads(item.read_text())
    d["properties"]["processing:version"] = "05.09"
    coarse = {}
    for key, band in PLANETARY.items():  # a 60 m decoy listed first, then the file at its native resolution
        write_band(tmp_path / "item" / f"{band}_60m.tif", band_dn(band, 60, 5, base=1100), 60, driver="COG", nodata=0)
        coarse[f"{key}_60m"] = {**d["assets"][key], "href": f"./{band}_60m.tif"}
    write_band(tmp_path / "item" / "SCL_60m.tif", scl_classes(60), 60, driver="COG")
    assets = {**coarse, "SCL_60m": {**d["assets"]["SCL"], "href": "./SCL_60m.tif"}, "TCI_10m": d["assets"]["B04"]}
    for key, band in PLANETARY.items():
        assets[f"{key}_{10 if band != 'B11' else 20}m"] = d["assets"][key]
    assets["SCL_20m"] = d["assets"]["SCL"]
    d["assets"] = assets
    cdse = item.with_name("cdse.json")
    cdse.write_text(json.dumps(d))
    r = stack_scene(cdse, tmp_path / "s.tif", bands=MIXED, dem=write_dem(tmp_path / "dem.tif"),
                    layers={"SCL": tmp_path / "scl.tif"})
    stack_scene(ref, tmp_path / "r.tif", bands=MIXED, dem=tmp_path / "dem.tif")
    assert set(r.offsets.values()) == {-1000.0}
    assert r.sources["B4"].endswith("/B4.tif") and r.sources["SCL"].endswith("/SCL.tif")
    np.testing.assert_array_equal(read(tmp_path / "s.tif"), read(tmp_path / "r.tif"))


def test_data_space_bucket_needs_its_keys_and_endpoint(tmp_path, monkeypatch):
    """s3://eodata/ (the Data Space's bucket) is never read anonymously: without AWS keys a one-line error with
    the fixes; with them, /vsis3/ through the Data Space's S3 endpoint (unless the user set another)."""
    import lsmap.io.stac as stac

    for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
              "AWS_NO_SIGN_REQUEST", "AWS_S3_ENDPOINT", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    d = json.loads(make_stac_item(tmp_path / "item", PLANETARY, raster_offset=False, scl="SCL").read_text())
    for key, asset in d["assets"].items():
        asset["href"] = f"s3://eodata/Sentinel-2/MSI/L2A/2024/07/30/X.SAFE/GRANULE/G/IMG_DATA/R10m/{key}.jp2"
    item = tmp_path / "eodata.json"
    item.write_text(json.dumps(d))
    res = CliRunner().invoke(main, ["stack", str(item), "--bands", "rgb", "-o", str(tmp_path / "x.tif")])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "s3://eodata/" in res.output and "AWS_ACCESS_KEY_ID" in res.output and ".SAFE.zip" in res.output
    assert "AWS_NO_SIGN_REQUEST" not in os.environ and not (tmp_path / "x.tif").exists()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    src = stac.open_item(item)
    assert src.files["B4"] == "/vsis3/eodata/Sentinel-2/MSI/L2A/2024/07/30/X.SAFE/GRANULE/G/IMG_DATA/R10m/B04.jp2"
    assert os.environ["AWS_S3_ENDPOINT"] == stac.CDSE_ENDPOINT and os.environ["AWS_VIRTUAL_HOSTING"] == "FALSE"
    monkeypatch.setenv("AWS_S3_ENDPOINT", "s3.example.org")  # the user's own endpoint is kept
    stac.open_item(item)
    assert os.environ["AWS_S3_ENDPOINT"] == "s3.example.org"


class _BlobStore(RangeHandler):
    """Azure Blob Storage as Planetary Computer's assets live in it: reads of the container ``/cont/`` without a
    SAS signature are refused (403); every request is recorded, with its subscription key header."""

    requests: list[str] = []
    keys: list[str | None] = []

    def send_head(self):
        type(self).requests.append(self.path)
        type(self).keys.append(self.headers.get("Ocp-Apim-Subscription-Key"))
        if self.path.startswith("/cont/") and "sig=" not in self.path:
            self.send_error(403, "Server failed to authenticate the request")
            return None
        return super().send_head()


def _blob_item(folder: Path, url: str, *, signed: bool = False) -> Path:
    """A Planetary Computer-style Item (asset keys ``B04``...) whose COGs sit in the container ``cont`` at ``url``."""
    d = json.loads(make_stac_item(folder / "cont", PLANETARY, raster_offset=False, scl="SCL").read_text())
    for asset in d["assets"].values():
        asset["href"] = f"{url}/cont/{asset['href'].removeprefix('./')}" + ("?st=1&sig=given" if signed else "")
    out = folder / ("signed.json" if signed else "item.json")
    out.write_text(json.dumps(d))
    return out


def test_planetary_computer_blob_hrefs_are_signed_with_a_sas_token(tmp_path, monkeypatch):
    """Unsigned Azure blob hrefs get one token per container from the SAS API (PC_SDK_SAS_URL, and the
    subscription key when set); the stack equals the local files' and records no token; signed hrefs are
    read as given; no token API: a one-line error with the fixes."""
    from datetime import UTC, datetime, timedelta

    import lsmap.io.stac as stac
    from lsmap.io.rasters import open_raster

    monkeypatch.setattr(stac, "BLOB_DOMAIN", "127.0.0.1")  # the loopback server stands for *.blob.core.windows.net
    monkeypatch.setattr(stac, "_SAS_TOKENS", {})
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "k-123")
    srv = tmp_path / "srv"
    (srv / "token" / "127").mkdir(parents=True)
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    (srv / "token" / "127" / "cont").write_text(json.dumps({"msft:expiry": expiry,
                                                           "token": "st=2026-12-07&sp=rl&sig=abc%3D"}))
    base = type("Store", (_BlobStore,), {"requests": [], "keys": []})
    with serve(srv, base) as (url, handler):
        monkeypatch.setenv("PC_SDK_SAS_URL", f"{url}/token/")
        item = _blob_item(srv, url)
        ref = _local_reference(srv / "cont", tmp_path / "ref", PLANETARY.values())
        r = stack_scene(item, tmp_path / "s.tif", bands="rgbn", layers={"SCL": tmp_path / "scl.tif"})
        stac.open_item(item)  # opened again (detect opens an Item twice): the token is reused
        seen = list(handler.requests)
        assert seen.count("/token/127/cont") == 1, "one token for the container's five assets, and for a second open"
        assert handler.keys[seen.index("/token/127/cont")] == "k-123"
        assert any(p.startswith("/cont/B4.tif?st=2026-12-07&sp=rl&sig=abc%3D") for p in seen)
        assert r.sources["B4"] == f"{url}/cont/B4.tif" and r.sources["SCL"] == f"{url}/cont/SCL.tif"
        with pytest.raises(InputError) as e:  # GDAL's messages name the URL: never with its token
            open_raster(f"/vsicurl/{url}/cont/none.tif?st=1&sig=secret", "band B4")
        assert "sig=" not in str(e.value) and f"{url}/cont/none.tif" in str(e.value)

        url_key = f"{url}/token/127/cont"
        stac._SAS_TOKENS[url_key] = (stac._SAS_TOKENS[url_key][0], datetime.now(UTC).timestamp() + 60)
        handler.requests.clear()
        stac.open_item(item)  # a token about to expire is not handed out: a new one is asked for
        assert handler.requests.count("/token/127/cont") == 1
        handler.requests.clear()
        stack_scene(_blob_item(srv, url, signed=True), tmp_path / "g.tif", bands="rgbn")
        assert not any(p.startswith("/token/") for p in handler.requests), "signed hrefs are read as given"
        assert any(p.startswith("/cont/B4.tif?st=1&sig=given") for p in handler.requests)

        monkeypatch.setenv("PC_SDK_SAS_URL", f"{url}/no-such-api")
        stac._SAS_TOKENS.clear()
        res = CliRunner().invoke(main, ["stack", str(item), "--bands", "rgbn", "-o", str(tmp_path / "x.tif")])
    stack_scene(ref, tmp_path / "r.tif", bands="rgbn")
    np.testing.assert_array_equal(read(tmp_path / "s.tif"), read(tmp_path / "r.tif"))
    np.testing.assert_array_equal(read(tmp_path / "g.tif"), read(tmp_path / "r.tif"))
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"{url}/no-such-api/127/cont: cannot get a Planetary Computer SAS token" in res.output
    assert "PC_SDK_SUBSCRIPTION_KEY" in res.output and "planetary_computer.sign" in res.output
    assert not (tmp_path / "x.tif").exists()


def test_stac_bucket_hrefs_without_alternate_read_through_vsis3(tmp_path, monkeypatch):
    """No alternate: /vsis3/ (anonymous when no AWS credentials are configured, as public buckets need)."""
    from lsmap.io.stac import open_item

    for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
              "AWS_NO_SIGN_REQUEST"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    bucket = _bucket_item(make_stac_item(tmp_path / "item", EARTH_SEARCH), None)
    src = open_item(bucket)
    assert src.files["B4"] == "/vsis3/sentinel-cogs/sentinel-s2-l2a-cogs/33/T/WN/B4.tif"
    assert src.layers["SCL"].startswith("/vsis3/sentinel-cogs/")
    assert os.environ["AWS_NO_SIGN_REQUEST"] == "YES"
    monkeypatch.delenv("AWS_NO_SIGN_REQUEST")
    monkeypatch.setenv("AWS_PROFILE", "mine")  # credentials configured: requests are signed
    open_item(bucket)
    assert "AWS_NO_SIGN_REQUEST" not in os.environ


# --- detect -----------------------------------------------------------------------------------------------


def test_detect_on_a_product_with_an_aoi_covers_the_full_runs_window(tmp_path):
    from detect_fixtures import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", "rgbn")
    z = zip_safe(make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8")))
    (x0, y0, x1, y1), _ = _bbox_lonlat(25, 30, 105, 90)
    common = ["--model", str(ckpt), "--window", "32", "--overlap", "8", "--json"]
    res = CliRunner().invoke(main, ["detect", str(z), "-o", str(tmp_path / "full.gpkg"), "--prob",
                                    str(tmp_path / "full.tif"), *common])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["detect", str(z), "--bbox", f"{x0},{y0},{x1},{y1}", "--bbox-crs", CRS, "-o",
                                    str(tmp_path / "aoi.gpkg"), "--prob", str(tmp_path / "aoi.tif"), *common])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "aoi.tif") as a, rasterio.open(tmp_path / "full.tif") as f:
        assert a.shape == (60, 80) and a.transform == f.transform @ f.transform.translation(25, 30)
    # a stacked scene is cropped the same way
    stack_scene(z, tmp_path / "scene.tif", bands="rgbn")
    res = CliRunner().invoke(main, ["detect", str(tmp_path / "scene.tif"), "--bbox", f"{x0},{y0},{x1},{y1}",
                                    "--bbox-crs", CRS, "-o", str(tmp_path / "s.gpkg"), "--prob",
                                    str(tmp_path / "s.tif"), "--norm", "model", *common])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["aoi_window"] == [25, 30, 80, 60]
    with rasterio.open(tmp_path / "s.tif") as s, rasterio.open(tmp_path / "aoi.tif") as a:
        assert (s.transform, s.shape) == (a.transform, a.shape)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch left


def test_library_detect_takes_a_product_path_as_the_cli_does(tmp_path):
    """``lsmap.detect("x.SAFE.zip")`` stacks the product and uses its SCL, as ``{"s2": ...}`` and the CLI do; a
    product path as ``pre`` is stacked too."""
    from detect_fixtures import tiny_checkpoint

    import lsmap

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", "rgbn")
    z = zip_safe(make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8")))
    kw = dict(window=32, overlap=8, device="cpu", norm="model")
    a = lsmap.detect(str(z), [ckpt], prob=tmp_path / "a.tif", **kw)
    b = lsmap.detect({"s2": z}, [ckpt], prob=tmp_path / "b.tif", **kw)
    sa, sb = a.attrs["lsmap"], b.attrs["lsmap"]
    assert sa["scene"] == str(z) and sb["scene"] == "stacked inputs"
    assert sa["not_observed_km2"] == sb["not_observed_km2"] > 0  # the product's own SCL masks in both
    np.testing.assert_array_equal(read_stack(tmp_path / "a.tif"), read_stack(tmp_path / "b.tif"))
    c = lsmap.detect(z, [ckpt], pre=str(z), min_ndvi_drop=0.0, min_slope=0.0, **kw)
    assert len(c) > 0 and "dndvi" in c.columns
    np.testing.assert_allclose(c["dndvi"], 0.0, atol=1e-5)  # the same product before and after


# --- real data -----------------------------------------------------------------------------------------------

T29UNU_BBOX = "-8.8,52.8,-8.7,52.9"  # inside the valid part of the swath: clouds, shadows and ground


@pytest.mark.realdata
def test_real_t29unu_safe_and_zip_stack_at_10m_with_the_offset(tmp_path):
    """The real L2A 04.00 product: only its 60 m spectral bands are here (its 10/20 m files are absent), so
    the 10 m stack comes from the 60 m files; the -1000 offset of its metadata is applied; the zip built
    here gives the same pixels, read in place."""
    (safe,) = glob.glob(str(shared_data("s2", "l2a_safe_T29UNU") / "*.SAFE"))
    res = CliRunner().invoke(main, ["stack", safe, "--bbox", T29UNU_BBOX, "--bands", "rgb", "-o",
                                    str(tmp_path / "s.tif"), "--write-scl", str(tmp_path / "scl.tif"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["resolution"] == [10.0, 10.0] and set(out["offsets"].values()) == {-1000.0}
    assert out["product"]["baseline"] == "04.00" and any("60 m file" in n for n in out["notes"])
    z = tmp_path / (Path(safe).name + ".zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(Path(safe).rglob("*")):
            zf.write(p, p.relative_to(Path(safe).parent).as_posix())
    res = CliRunner().invoke(main, ["stack", str(z), "--bbox", T29UNU_BBOX, "--bands", "rgb", "-o",
                                    str(tmp_path / "z.tif")])
    assert res.exit_code == 0, res.output
    s = read(tmp_path / "s.tif")
    np.testing.assert_array_equal(s, read(tmp_path / "z.tif"))
    # the 60 m B04 DNs under the AOI, by hand: mean (DN - 1000) / divisor (without the offset it would be
    # 2.2 higher: 1000 / 445.17)
    (b04,) = glob.glob(f"{safe}/GRANULE/*/IMG_DATA/R60m/*_B04_60m.jp2")
    c0, r0, w, h = out["window"]
    with rasterio.open(b04) as src:
        dn = src.read(1, window=rasterio.windows.Window(c0 // 6 + 1, r0 // 6 + 1, w // 6 - 2, h // 6 - 2))
    ours = s[0][6 - r0 % 6:, 6 - c0 % 6:][: (h // 6 - 2) * 6, : (w // 6 - 2) * 6]
    assert (dn > 0).all() and (ours > -9999).all()
    assert ours.mean() == pytest.approx((dn.mean() - 1000.0) / L4S_DIV["B4"], rel=0.01)
    scl = read(tmp_path / "scl.tif")[0]
    assert set(np.unique(scl)) <= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}  # no blended class 14
    assert {3, 8, 9}.issubset(set(np.unique(scl)))  # shadow and cloud in this AOI


@pytest.mark.realdata
def test_real_t29unu_tiles_straight_from_the_product_as_from_its_stack(tmp_path):
    """``lsmap tile`` of the real SAFE with an AOI: the patches of ``lsmap stack`` + ``lsmap tile --scl``, its own
    SCL's clouds and shadows left out (most windows of this cloudy AOI are skipped)."""
    from lsmap.data.tile import read_tiles_meta
    from lsmap.io.patches import read_image

    (safe,) = glob.glob(str(shared_data("s2", "l2a_safe_T29UNU") / "*.SAFE"))
    common = ["--bands", "rgb", "--size", "128", "--min-valid", "0.2", "--json"]
    res = CliRunner().invoke(main, ["tile", safe, "--bbox", T29UNU_BBOX, "-o", str(tmp_path / "one"), *common])
    assert res.exit_code == 0, res.output
    one = json.loads(res.output)
    stack_scene(safe, tmp_path / "s.tif", bands="rgb", aoi=parse_bbox(T29UNU_BBOX),
                layers={"SCL": tmp_path / "scl.tif"})
    res = CliRunner().invoke(main, ["tile", str(tmp_path / "s.tif"), "--scl", str(tmp_path / "scl.tif"), "-o",
                                    str(tmp_path / "two"), *common])
    assert res.exit_code == 0, res.output
    assert one == {**json.loads(res.output), "out_dir": one["out_dir"]}
    assert 0 < one["n_patches"] < one["n_skipped"]
    meta = read_tiles_meta(tmp_path / "one")
    assert meta["stacked"] and meta["not_observed"]["cloud"] > 0 and meta["not_observed"]["shadow"] > 0
    for pid in range(one["n_patches"]):
        np.testing.assert_array_equal(read_image(tmp_path / "one" / "img" / f"image_{pid}.h5")[0],
                                      read_image(tmp_path / "two" / "img" / f"image_{pid}.h5")[0])


@pytest.mark.realdata
def test_real_wayanad_loose_bands_look_offset(tmp_path):
    kerala = shared_data("s2", "kerala")
    with pytest.warns(LsmapWarning, match="no value below 1008 in any band"):
        stack_scene(kerala / "wayanad_2024_a", tmp_path / "w.tif", bands="rgb")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)
        stack_scene(kerala / "puthumala_2019", tmp_path / "p.tif", bands="rgb")
        stack_scene(kerala / "wayanad_2024_a", tmp_path / "o.tif", bands="rgb", offset=-1000, overwrite=True)
    with pytest.raises(InputError, match=r"puthumala_2019: with `offset` -1000, .* B4 88 %, B3 88 %, B2 90 %"):
        stack_scene(kerala / "puthumala_2019", tmp_path / "n.tif", bands="rgb", offset=-1000)
    import lsmap

    with pytest.raises(InputError, match=r"wayanad_2024_a: the digital numbers look offset.*give `offset` -1000"):
        lsmap.detect(kerala / "wayanad_2024_a", out=tmp_path / "x.gpkg", device="cpu")
    assert not (tmp_path / "x.gpkg").exists()


def test_library_errors_name_python_arguments_and_the_cli_names_flags(tmp_path):
    """`lsmap.io.aoi.parse_bbox` names its argument; `lsmap stack` shows the same error with the flag."""
    with pytest.raises(InputError, match=r"^`bbox` 1,2: give four numbers"):
        parse_bbox("1,2")
    with pytest.raises(InputError, match=r"^`bbox_crs` EPSG:0: unknown CRS"):
        parse_bbox("1,2,3,4", "EPSG:0")
    safe = make_safe(tmp_path, bands=("B2", "B3", "B4"))
    res = CliRunner().invoke(main, ["stack", str(safe), "--bands", "rgb", "--bbox", "1,2", "-o", str(tmp_path / "s.tif")])
    assert res.exit_code != 0 and "Error: --bbox 1,2: give four numbers W,S,E,N (e.g. --bbox 76.13" in res.output


def test_aoi_from_a_multi_layer_geopackage_takes_its_polygon_layer(tmp_path):
    """A GeoPackage with a point layer first and QGIS's layer_styles table: the polygons are the AOI, no warning."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point, box

    from lsmap.io.aoi import read_aoi

    path = tmp_path / "areas.gpkg"
    gpd.GeoDataFrame({"n": [1]}, geometry=[Point(500010, 3000010)], crs="EPSG:32645").to_file(path, layer="pts")
    gpd.GeoDataFrame({"n": [1]}, geometry=[box(500000, 2999000, 501000, 3000000)], crs="EPSG:32645").to_file(
        path, layer="slides", mode="a")
    import pyogrio

    pyogrio.write_dataframe(pd.DataFrame({"styleName": ["s"]}), path, layer="layer_styles", append=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aoi = read_aoi(path)
    assert aoi.geometry.bounds == (500000, 2999000, 501000, 3000000) and aoi.crs.to_epsg() == 32645


def test_info_says_what_lsmap_sees_in_a_product_a_band_folder_and_a_stack(tmp_path):
    """`lsmap info INPUT` before any work: a product's kind, level, baseline, bands, offsets, layers, the stack
    it fills and the default model detect would take (or why none fits); a band folder's unknown offset; a
    stack's bands and whether its band files looked offset. A model name still prints its card."""
    from lsmap.data.sources import describe_source
    from lsmap.learn.models import shipped_defaults

    l2a = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B11", "B12")
    zipped = zip_safe(make_safe(tmp_path / "p", bands=(*l2a, "B8A")))
    res = CliRunner().invoke(main, ["info", str(zipped), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert (d["kind"], d["level"], d["baseline"]) == ("SAFE zip", "L2A", "04.00")
    assert d["bands"] == [*l2a[:8], "B8A", *l2a[8:]] and set(d["dn_offsets"].values()) == {-1000.0}
    assert d["layers"] == ["MSK_CLDPRB", "SCL"] and d["stack_bands"] == "l2a"
    assert d["default_model"] == "l2a-default" and d["stack_left_out"]["DEM"] == "no DEM"
    short = describe_source(make_safe(tmp_path / "q", bands=("B2", "B3", "B4")))
    assert short["default_model"] is None and "no shipped model fits its bands (B2, B3, B4)" in short["default_model_why"]
    raw = loose_bands(make_safe(tmp_path / "r", bands=("B2", "B3", "B4")), tmp_path / "raw", ["B2", "B3", "B4"], offset=0)
    res = CliRunner().invoke(main, ["info", str(raw)])
    assert res.exit_code == 0 and "band files" in res.output and "unknown (give --offset" in res.output, res.output
    with pytest.warns(LsmapWarning):
        stack_scene(raw, tmp_path / "s.tif", bands="rgb")
    d = describe_source(tmp_path / "s.tif")
    assert (d["kind"], d["bands"], d["encoding"], d["dn_looks_offset"]) == ("stack", ["B4", "B3", "B2"], "uint16", True)
    res = CliRunner().invoke(main, ["info", "l2a-default"])
    shipped = next(p for p in shipped_defaults() if p.stem == "l2a-default")
    assert res.exit_code == 0 and str(shipped) in res.output
    res = CliRunner().invoke(main, ["info", str(shipped.with_suffix(".json"))])  # a card, not a STAC Item
    assert res.exit_code == 0 and "tiny-unet" in res.output, res.output
    res = CliRunner().invoke(main, ["info", str(tmp_path / "nothing.tif")])
    assert res.exit_code != 0 and "nothing" in res.output


@pytest.mark.parametrize("order", ["band first", "composite first"])
def test_a_true_colour_composite_is_not_taken_for_a_band(tmp_path, order):
    """An asset known only by its eo:bands had resolution 0 and won over B04_10m: a TCI listing B04, B03, B02 was
    read as B4 (found by a code review). Composites are no band; assets named by key win over eo:bands ones."""
    import json

    from lsmap.io.stac import asset_hint, open_item

    assets = {"B04_10m": {"href": "./B04_10m.jp2"},
              "TCI_10m": {"href": "./TCI_10m.jp2", "eo:bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]},
              "red_band": {"href": "./red.tif", "eo:bands": [{"name": "B04"}]}}
    keys = list(assets) if order == "band first" else list(reversed(assets))
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None, "links": [],
            "properties": {"datetime": "2024-01-01T00:00:00Z", "processing:version": "05.10"},
            "assets": {k: assets[k] for k in keys}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    assert open_item(str(tmp_path / "item.json")).files["B4"].endswith("B04_10m.jp2")
    assert asset_hint("B2") == "'blue' or 'B02'"  # "blue" was dropped with the "b02"-style keys
