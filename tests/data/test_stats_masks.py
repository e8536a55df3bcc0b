"""lsmap stats with masks (issue 19): the statistics of a masked scene are those of its clear pixels, as
detect's scan computes them; a product's own SCL masks by default; bad masks are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from _rasters import write_tif
from click.testing import CliRunner
from detect_fixtures import write_scene
from test_masks import cloudy, scl_file

from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.data.masks import DEFAULT_SCL_CLASSES, MaskSpec, write_not_observed
from lsmap.data.scan import scan_scene
from lsmap.data.stats import compute_stats
from lsmap.errors import InputError, MissingInputError
from lsmap.io.aoi import AOI
from lsmap.io.scene import scene_info


def test_stats_of_a_masked_scene_equal_its_clear_pixels_and_detects_scan(tmp_path, rng):
    data, _, cloud, scl = cloudy(rng)
    data[:, :10, :10] = -9999.0
    scene = write_scene(tmp_path / "scene.tif", data, nodata=-9999.0)
    scl_path = scl_file(tmp_path / "scl.tif", scl)
    ext = write_tif(tmp_path / "ext.tif", np.pad(np.ones((10, 10), np.uint8), ((0, 90), (60, 50))),
                    crs="EPSG:32645", origin=(500000.0, 3000000.0), pixel=20.0)  # 20 x 20 px at cols 120..139
    r = CliRunner().invoke(main, ["stats", str(scene), "-o", str(tmp_path / "s.json"), "--scl", str(scl_path),
                                  "--mask-raster", str(ext), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    clear = ~np.kron(np.isin(scl, DEFAULT_SCL_CLASSES), np.ones((2, 2), bool))
    clear[:10, :10] = False
    clear[:20, 120:140] = False
    px = data[:, clear].astype(np.float64)
    np.testing.assert_allclose(got["mean"], px.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(got["std"], px.std(axis=1), rtol=1e-4)
    assert got["count"] == clear.sum()
    # the same numbers as detect's scan of the same masks
    profile = get_profile("l4s14")
    info = scene_info(scene, profile)
    nobs = write_not_observed(MaskSpec(scl=scl_path, raster=ext), info, tmp_path / "no.tif")
    scan = scan_scene(info.__class__(**{**info.__dict__, "mask": nobs.path}), profile, block=64).stats
    np.testing.assert_allclose(got["mean"], scan.mean, rtol=1e-6)
    # --all-pixels counts the nodata but never the not-observed pixels
    all_px = compute_stats(scene, scl=scl_path, mask_raster=ext, valid_only=False)
    assert all_px.count == clear.sum() + 100
    assert compute_stats(scene).mean[0] > got["mean"][0] + 0.3  # the cloud deck moves them without the mask


def test_stats_of_a_product_use_its_own_scl_and_cloud_prob(tmp_path):
    from products_fixtures import make_safe, scl_classes, zip_safe

    z = zip_safe(make_safe(tmp_path / "dl", bands=("B2", "B3", "B4", "B8")))
    scl = np.kron(scl_classes(20), np.ones((2, 2), np.uint8))
    masked = compute_stats(z, "rgbn")
    assert masked.count == int((~np.isin(scl, DEFAULT_SCL_CLASSES)).sum())
    off = compute_stats(z, "rgbn", scl_mask="none")
    assert off.count > masked.count
    # MSK_CLDPRB = 9 x class: above 40 % are classes 5..11; with SCL class 0 (and the corner nodata)
    cld = compute_stats(z, "rgbn", scl_mask="0", cloud_prob_max=40)
    corner = np.zeros(scl.shape, bool)
    corner[:20, :20] = True  # the fixture's band nodata
    assert cld.count == int((np.isin(scl, (1, 2, 3, 4)) & ~corner).sum())
    with pytest.raises(InputError, match="`raw`"):
        compute_stats(z, "rgbn", raw=True)


def test_stats_of_a_band_folder_equal_those_of_its_stack(tmp_path):
    """A folder of band files (no patches in it) is stacked as ``lsmap stack`` stacks it; a mapping of stack
    arguments and an AOI work as in detect; a folder of neither still gets the patch-layout error."""
    from products_fixtures import CRS, X0, Y0, band_dn, write_band

    from lsmap.data.stack import stack_scene
    from lsmap.io.aoi import parse_bbox

    folder = tmp_path / "bands"
    folder.mkdir()
    for b in ("B2", "B3", "B4", "B8"):
        write_band(folder / f"T33_{b}.tif", band_dn(b, 10), 10)
    stack_scene(folder, tmp_path / "s.tif", bands="rgbn", offset=-1000)
    want = compute_stats(tmp_path / "s.tif", "rgbn")
    got = compute_stats({"s2": folder, "offset": -1000}, "rgbn")
    assert got == want and got.count > 0
    plain = compute_stats({"s2": folder, "offset": 0}, "rgbn")  # offset 0: the DNs as they are
    assert plain.count == want.count and plain.mean[0] > want.mean[0]
    with pytest.raises(InputError, match="look offset.*give `offset` -1000 if they are, or `offset` 0"):
        compute_stats(folder, "rgbn")  # DNs that all exceed 1000, and no offset said
    # what that message says works from Python too (the API audit: `offset` was refused as an unknown option)
    assert compute_stats(folder, "rgbn", offset=-1000) == want
    with pytest.raises(InputError, match="is a stacked scene; `offset` is for the band files"):
        compute_stats(tmp_path / "s.tif", "rgbn", offset=-1000)
    with pytest.raises(InputError, match="`slope` needs `dem`"):
        compute_stats(folder, "rgbn", slope=tmp_path / "s.tif")
    with pytest.raises(InputError, match="go inside the stacking inputs"):
        compute_stats({"s2": folder}, "rgbn", offset=-1000)
    box = parse_bbox([X0 + 200, Y0 - 1000, X0 + 1000, Y0 - 200], CRS)
    stack_scene(folder, tmp_path / "a.tif", bands="rgbn", aoi=box, offset=-1000)
    assert compute_stats({"s2": folder, "offset": -1000}, "rgbn", aoi=box) == compute_stats(tmp_path / "a.tif", "rgbn")
    r = CliRunner().invoke(main, ["stats", str(folder), "--bands", "rgbn", "--offset", "-1000", "-o",
                                  str(tmp_path / "c.json"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["mean"] == list(want.mean), r.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no train patches found"):
        compute_stats(tmp_path / "empty")
    # a GeoTIFF is cropped as detect and tile crop it
    stack_scene(folder, tmp_path / "ao.tif", bands="rgbn", aoi=box, offset=-1000)
    assert compute_stats(tmp_path / "s.tif", "rgbn", aoi=box) == compute_stats(tmp_path / "ao.tif", "rgbn")
    # an area given as a script gives it: a vector file's path, a lon/lat box (the API audit: AttributeError)
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[box.geometry], crs=CRS).to_file(tmp_path / "area.geojson")
    assert compute_stats(tmp_path / "s.tif", "rgbn", aoi=str(tmp_path / "area.geojson")) == \
        compute_stats(tmp_path / "s.tif", "rgbn", aoi=tmp_path / "area.geojson")
    lonlat = box.to_crs("EPSG:4326").geometry.bounds
    assert compute_stats(tmp_path / "s.tif", "rgbn", aoi=lonlat).count > 0
    assert compute_stats(tmp_path / "s.tif", "rgbn", aoi=",".join(map(str, lonlat))).count > 0
    with pytest.raises(MissingInputError, match="nope.geojson: area of interest file does not exist"):
        compute_stats(tmp_path / "s.tif", "rgbn", aoi=tmp_path / "nope.geojson")
    with pytest.raises(InputError, match="has no area"):
        compute_stats(tmp_path / "s.tif", "rgbn", aoi=AOI(shapely.Polygon(), CRS, "x"))


def test_stats_mask_errors_are_one_line_before_any_work(tmp_path, rng):
    data, _, _, scl = cloudy(rng)
    scene = write_scene(tmp_path / "scene.tif", data)
    far = write_tif(tmp_path / "far.tif", scl, crs="EPSG:32645", origin=(900000.0, 3000000.0), pixel=20.0)
    cases = [(["--scl", str(far)], "does not overlap"), (["--scl-mask", "12"], "--scl-mask"),
             (["--cloud-prob-max", "50"], "MSK_CLDPRB")]
    for extra, match in cases:
        r = CliRunner().invoke(main, ["stats", str(scene), "-o", str(tmp_path / "s.json"), *extra])
        assert r.exit_code != 0 and match in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "s.json").exists()
    from patchgen import make_patches

    make_patches(tmp_path / "patches", 2)
    with pytest.raises(InputError, match="apply to scenes"):
        compute_stats(tmp_path / "patches", scl=far)
