"""Change and terrain evidence on generated scene pairs: new scars kept, look-alikes dropped."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from detect_fixtures import Band0Model, member, tiny_checkpoint, write_scene
from rasterio.transform import from_origin

import lsmap
from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.errors import InputError
from lsmap.io.scene import scene_info
from lsmap.map.evidence import EvidenceReader, ndvi, plan_evidence

H, W = 120, 160
ORIGIN = (500000.0, 3000000.0)
KW = dict(window=64, overlap=16, device="cpu", norm="model")
DN = {"veg": (400.0, 2500.0), "bare": (1600.0, 2100.0)}  # (red B4, NIR B8) digital numbers
#: The regions of the generated pair (rows, cols): what they were and are, and their slope.
REGIONS = {
    "scar": (slice(20, 50), slice(20, 50)),  # vegetated before, bare after, 30 degrees: a new landslide
    "bar": (slice(20, 50), slice(100, 130)),  # bare in both scenes, 30 degrees: a gravel bar / rock outcrop
    "flat": (slice(75, 105), slice(60, 90)),  # vegetated before, bare after, but 3 degrees: a harvested field
}


def _region_mask(name: str) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[REGIONS[name]] = True
    return m


def pair(tmp_path, *, terrain: str = "slope", pre_raw: bool = False):
    """A post scene (B2 flag band, B4, B8, slope or DEM; L4S scale) and its pre scene (B4, B8)."""
    p = get_profile("B2,B4,B8,slope")
    post = np.zeros((4, H, W), np.float32)
    post[0] = 0.5  # B2: the stand-in model flags B2 > 1
    red, nir = np.full((H, W), DN["veg"][0]), np.full((H, W), DN["veg"][1])
    pre_red, pre_nir = red.copy(), nir.copy()
    slope = np.full((H, W), 20.0)
    for name in REGIONS:
        m = _region_mask(name)
        post[0][m] = 3.0
        red[m], nir[m] = DN["bare"]
        if name == "bar":
            pre_red[m], pre_nir[m] = DN["bare"]
        slope[m] = 3.0 if name == "flat" else 30.0
    post[1], post[2] = red / p.divisors[1], nir / p.divisors[2]
    if terrain == "slope":
        post[3] = slope / p.divisors[3]
        names = ["B2", "B4", "B8", "slope"]
    else:  # a DEM rising 1 m per m eastwards: 45 degrees everywhere
        post[3] = (np.arange(W, dtype=np.float64)[None, :] * 10.0 + 500.0 + np.zeros((H, 1))) / 772.83144788
        names = ["B2", "B4", "B8", "DEM"]
    post_path = write_scene(tmp_path / "post.tif", post, origin=ORIGIN, bands=names)
    pre = np.stack([pre_red, pre_nir]) if pre_raw else np.stack([pre_red / p.divisors[1], pre_nir / p.divisors[2]])
    pre_path = write_scene(tmp_path / "pre.tif", pre, origin=ORIGIN, bands=["B4", "B8"],
                           nodata=0.0 if pre_raw else None)
    return post_path, pre_path


def models():
    return [member(Band0Model(), "B2", mean=1.0, std=0.5)]


def _centroid_region(geom) -> str:
    c = geom.centroid
    col, row = (c.x - ORIGIN[0]) / 10.0, (ORIGIN[1] - c.y) / 10.0
    for name, (rs, cs) in REGIONS.items():
        if rs.start <= row < rs.stop and cs.start <= col < cs.stop:
            return name
    return "elsewhere"


def _by_region(gdf) -> dict:
    return {_centroid_region(g): row for g, (_, row) in zip(gdf.geometry, gdf.iterrows(), strict=True)}


def test_new_scar_kept_bar_dropped_by_ndvi_flat_by_slope(tmp_path):
    post, pre = pair(tmp_path)
    base = lsmap.detect(post, models(), **KW)
    assert sorted(_by_region(base)) == ["bar", "flat", "scar"], "the stand-in model flags all three regions"
    out = tmp_path / "slides.gpkg"
    gdf = lsmap.detect(post, models(), out=out, pre=pre, keep_rejected=True, **KW)
    kept, rejected = _by_region(gdf), _by_region(gdf.attrs["rejected"])
    assert list(kept) == ["scar"]
    assert {k: r["reason"] for k, r in rejected.items()} == {"bar": "ndvi_drop", "flat": "slope"}
    scar = kept["scar"]
    veg, bare = ndvi(*[np.array([v]) for v in DN["veg"]])[0], ndvi(*[np.array([v]) for v in DN["bare"]])[0]
    assert scar["ndvi_pre"] == pytest.approx(veg, abs=1e-4) and scar["ndvi_post"] == pytest.approx(bare, abs=1e-4)
    assert scar["dndvi"] == pytest.approx(veg - bare, abs=1e-4) and scar["pre_not_observed"] == 0
    assert scar["mean_slope"] == pytest.approx(30.0, abs=1e-3)
    assert rejected["bar"]["dndvi"] == pytest.approx(0.0, abs=1e-4)
    assert rejected["flat"]["mean_slope"] == pytest.approx(3.0, abs=1e-3) and rejected["flat"]["dndvi"] > 0.5
    # the GeoPackage has both layers, the ids of one detection
    layers = dict(pyogrio.list_layers(out))
    assert {"slides", "rejected"} <= set(layers)
    on_disk = gpd.read_file(out, layer="rejected")
    assert sorted(on_disk["reason"]) == ["ndvi_drop", "slope"]
    assert sorted([*gdf["id"], *on_disk["id"]]) == sorted(base["id"])
    ev = gdf.attrs["lsmap"]["evidence"]
    assert ev["kept"] == 1 and ev["rejected"] == 2 and ev["pre_warped"] is False


def test_thresholds_and_slope_only(tmp_path):
    post, pre = pair(tmp_path)
    # NDVI only: the flat field stays
    gdf = lsmap.detect(post, models(), pre=pre, min_slope=0, **KW)
    assert sorted(_by_region(gdf)) == ["flat", "scar"]
    # a drop limit above the scar's drop rejects it too
    gdf = lsmap.detect(post, models(), pre=pre, min_ndvi_drop=0.9, min_slope=0, **KW)
    assert len(gdf) == 0 and len(gdf.attrs["rejected"]) == 3
    # slope alone, without a pre scene: no NDVI-change columns
    gdf = lsmap.detect(post, models(), min_slope=10, **KW)
    assert sorted(_by_region(gdf)) == ["bar", "scar"]
    assert "dndvi" not in gdf.columns and "ndvi_post" in gdf.columns and "mean_slope" in gdf.columns


def test_pre_scene_in_digital_numbers_and_slope_from_dem(tmp_path):
    post, pre = pair(tmp_path, terrain="dem", pre_raw=True)
    gdf = lsmap.detect(post, models(), pre=pre, keep_rejected=False, **KW)
    assert gdf.attrs["lsmap"]["evidence"]["pre_input_scale"] == "raw"
    assert gdf.attrs["lsmap"]["evidence"]["slope_source"] == "DEM"
    kept = _by_region(gdf)
    assert sorted(kept) == ["flat", "scar"], "45 degrees everywhere: only NDVI rejects"
    veg, bare = ndvi(np.array([DN["veg"][0]]), np.array([DN["veg"][1]]))[0], \
        ndvi(np.array([DN["bare"][0]]), np.array([DN["bare"][1]]))[0]
    assert kept["scar"]["dndvi"] == pytest.approx(veg - bare, abs=1e-4)
    assert kept["scar"]["mean_slope"] == pytest.approx(45.0, abs=0.01)


def _warp(src_path, dst_path, dst_crs, res, *, shift=(0.0, 0.0)):
    """Write ``src_path`` reprojected onto another CRS / grid (bilinear), covering more than its extent."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(src_path) as src:
        transform, w, h = calculate_default_transform(src.crs, dst_crs, src.width, src.height, *src.bounds,
                                                      resolution=res)
        transform = transform @ transform.translation(-4 + shift[0], -4 + shift[1])
        w, h = w + 8, h + 8
        out = np.full((src.count, h, w), np.nan, np.float32)
        reproject(src.read(), out, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
        prof = {**src.profile, "crs": dst_crs, "transform": transform, "width": w, "height": h, "nodata": np.nan}
        descriptions = src.descriptions
    with rasterio.open(dst_path, "w", **prof) as dst:
        dst.write(out)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return dst_path


def _pixel_ndvi_pre(post, pre):
    info = scene_info(post)
    plan = plan_evidence(info, ["B2", "B4", "B8", "slope"], pre=pre)
    from rasterio.windows import Window

    with EvidenceReader(plan) as reader:
        return plan, reader.block(Window(0, 0, W, H)).ndvi_pre


@pytest.mark.parametrize("crs,res", [("EPSG:32646", 10.0), ("EPSG:4326", 1.2e-4), ("EPSG:32645", 20.0)])
def test_pre_scene_on_another_grid_is_reprojected(tmp_path, crs, res):
    """The pre scene on another CRS/grid: warped onto the post grid, its NDVI matches the aligned
    one away from region edges (bilinear twice blurs one or two pixels), and the per-polygon figures agree."""
    post, pre = pair(tmp_path)
    other = _warp(pre, tmp_path / "pre_other.tif", crs, res)
    plan, warped = _pixel_ndvi_pre(post, other)
    assert plan.pre.shift is None
    _, aligned = _pixel_ndvi_pre(post, pre)
    from scipy import ndimage

    interior = np.zeros((H, W), bool)
    interior[2:-2, 2:-2] = True  # the scene's outer pixels were at the warped pre scene's edge, twice
    for name in REGIONS:
        m = _region_mask(name)
        interior &= ~(ndimage.binary_dilation(m, iterations=4) & ~ndimage.binary_erosion(m, iterations=4))
    assert np.isfinite(warped[interior]).all()
    np.testing.assert_allclose(warped[interior], aligned[interior], atol=2e-3)
    gdf = lsmap.detect(post, models(), pre=other, **KW)
    assert gdf.attrs["lsmap"]["evidence"]["pre_warped"] is True
    assert list(_by_region(gdf)) == ["scar"]
    assert _by_region(gdf)["scar"]["dndvi"] > 0.45


def test_pre_scene_shifted_by_whole_pixels_is_read_directly(tmp_path):
    post, pre = pair(tmp_path)
    with rasterio.open(pre) as src:
        data = src.read()
    big = np.full((2, H + 10, W + 10), np.nan, np.float32)
    big[:, 3:3 + H, 7:7 + W] = data
    shifted = write_scene(tmp_path / "shifted.tif", big, origin=(ORIGIN[0] - 70.0, ORIGIN[1] + 30.0), bands=["B4", "B8"])
    plan, a = _pixel_ndvi_pre(post, shifted)
    assert plan.pre.shift == (3, 7)
    _, b = _pixel_ndvi_pre(post, pre)
    np.testing.assert_array_equal(a, b)


def test_partly_observed_pre_scene(tmp_path):
    """The pre scene misses most of the bar (a cloud, nodata): the bar is not judged on NDVI and is kept,
    with its share; the missing pixels are left out of its NDVI means."""
    post, pre = pair(tmp_path)
    with rasterio.open(pre) as src:
        data = src.read()
    rs, cs = REGIONS["bar"]
    data[:, rs.start:rs.start + 24, cs] = np.nan  # 80 % of the bar
    cloudy = write_scene(tmp_path / "cloudy.tif", data, origin=ORIGIN, bands=["B4", "B8"])
    gdf = lsmap.detect(post, models(), pre=cloudy, **KW)
    kept = _by_region(gdf)
    assert sorted(kept) == ["bar", "scar"]
    assert kept["bar"]["pre_not_observed"] == pytest.approx(0.8, abs=1e-6)
    assert kept["bar"]["dndvi"] == pytest.approx(0.0, abs=1e-4)
    assert gdf.attrs["lsmap"]["evidence"]["unjudged"] == 1  # the summary counts it apart from the judged scar


def test_gate_zeroes_probability_where_evidence_fails(tmp_path):
    post, pre = pair(tmp_path)
    lsmap.detect(post, models(), prob=tmp_path / "p0.tif", **KW)
    gdf = lsmap.detect(post, models(), pre=pre, gate=True, prob=tmp_path / "p.tif", mask=tmp_path / "m.tif", **KW)
    with rasterio.open(tmp_path / "p0.tif") as a, rasterio.open(tmp_path / "p.tif") as b, \
            rasterio.open(tmp_path / "m.tif") as m:
        p0, p, mask = a.read(1), b.read(1), m.read(1)
    for name in ("bar", "flat"):  # NDVI did not drop / flat: 0
        r = _region_mask(name)
        assert (p0[r] > 200).all() and (p[r] == 0).all() and (mask[r] == 0).all()
    # the vegetated background did not lose NDVI either: 0 too; the scar keeps its probability
    scar = _region_mask("scar")
    assert (p0[~scar] > 0).all() and (p[~scar] == 0).all()
    np.testing.assert_array_equal(p[scar], p0[scar])
    assert list(_by_region(gdf)) == ["scar"] and gdf.attrs["lsmap"]["evidence"]["rejected"] == 0


def test_gate_without_raster_outputs_still_reads_its_scratch_rasters(tmp_path):
    """The gate rewrites the probability after prediction, so detect keeps the scratch probability (and
    uncertainty) rasters for it even when no raster output is asked for."""
    post, pre = pair(tmp_path)
    gdf = lsmap.detect(post, models(), pre=pre, gate=True, uncertainty=True, **KW)
    assert list(_by_region(gdf)) == ["scar"] and gdf["mean_unc"].between(0, 0.25).all()


def test_bad_pre_scenes_fail_before_any_work(tmp_path, monkeypatch):
    post, pre = pair(tmp_path)
    far = write_scene(tmp_path / "far.tif", np.ones((2, 20, 20), np.float32), origin=(600000.0, 3100000.0),
                      bands=["B4", "B8"])
    no_nir = write_scene(tmp_path / "no_nir.tif", np.ones((3, H, W), np.float32), origin=ORIGIN,
                         bands=["B4", "B3", "B2"])

    def boom(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(lsmap.map.detect, "predict_scene", boom)
    monkeypatch.setattr(lsmap.map.detect, "_load_members", boom)
    out = tmp_path / "o.gpkg"
    for bad, msg in ((far, "does not overlap the post-event scene"), (no_nir, "has no band B8")):
        with pytest.raises(InputError, match=msg) as e:
            lsmap.detect(post, models(), out=out, pre=bad, **KW)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(InputError, match="`min_ndvi_drop` needs a pre-event scene"):
        lsmap.detect(post, models(), min_ndvi_drop=0.2, **KW)
    with pytest.raises(InputError, match="`gate` acts on the evidence"):
        lsmap.detect(post, models(), gate=True, **KW)
    with pytest.raises(InputError, match="give `out` a .gpkg name"):
        lsmap.detect(post, models(), out=tmp_path / "o.geojson", pre=pre, keep_rejected=True, **KW)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_errors_are_one_line(tmp_path):
    post, pre = pair(tmp_path)
    far = write_scene(tmp_path / "far.tif", np.ones((2, 20, 20), np.float32), origin=(600000.0, 3100000.0),
                      bands=["B4", "B8"])
    flat_post = write_scene(tmp_path / "rgb.tif", np.ones((3, 40, 40), np.float32), origin=ORIGIN,
                            bands=["B4", "B3", "B2"])
    cases = [
        ([str(post), "--pre", str(far)], "does not overlap"),
        ([str(post), "--min-ndvi-drop", "0.2"], "--min-ndvi-drop needs a pre-event scene; pass --pre"),
        ([str(post), "--keep-rejected"], "pass --pre or --min-slope"),
        ([str(flat_post), "--min-slope", "10", "--model", str(tiny_checkpoint(tmp_path / "m", "rgb"))],
         "--min-slope needs a slope or DEM band"),
        ([str(post), "a.tif", "--pre", str(pre)], "--pre works with one scene"),
        ([str(post), "--pre-offset", "-1000"], "--pre-offset is the DN offset of a pre-event band folder; pass --pre"),
        ([str(post), "--pre", str(pre), "--pre-offset", "-1000"], "this stacked GeoTIFF is read as it is"),
    ]
    for args, msg in cases:
        out = tmp_path / ("event" if "a.tif" in args else "o.gpkg")
        r = CliRunner().invoke(main, ["detect", *args, "-o", str(out), "--device", "cpu"])
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert r.exit_code != 0 and len(errors) == 1 and msg in errors[0], r.output
        assert not out.exists()


def test_detect_many_refuses_a_pre_scene(tmp_path):
    post, pre = pair(tmp_path)
    with pytest.raises(InputError, match="`pre` is the pre-event scene of one scene"):
        lsmap.detect_many([post], None, tmp_path / "event", pre=str(pre))


def test_pre_scene_as_band_files_is_stacked(tmp_path):
    """A folder of Sentinel-2 band files as the pre scene: its red and NIR are stacked first."""
    post, pre = pair(tmp_path, pre_raw=True)
    folder = tmp_path / "pre_bands"
    folder.mkdir()
    with rasterio.open(pre) as src:
        data = src.read()
    for i, band in enumerate(("B04", "B08")):
        with rasterio.open(folder / f"T45_20230420_{band}_10m.tif", "w", driver="GTiff", width=W, height=H,
                           count=1, dtype="uint16", crs="EPSG:32645", nodata=0,
                           transform=from_origin(*ORIGIN, 10.0, 10.0)) as dst:
            dst.write(data[i].astype(np.uint16), 1)
    gdf = lsmap.detect(post, models(), pre={"s2": folder}, **KW)
    assert list(_by_region(gdf)) == ["scar"]


def test_sample_pair_end_to_end_cli(tmp_path):
    """The quickstart's pair through the CLI: the default model's look-alikes go to the rejected layer."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sample_data"
    out = tmp_path / "slides.gpkg"
    r = CliRunner().invoke(main, ["detect", str(root / "scene_l4s14.tif"), "--pre", str(root / "scene_pre_rgbn.tif"),
                                  "-o", str(out), "--keep-rejected", "--json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)["evidence"]
    assert ev["kept"] > 0 and ev["rejected"] > 0
    kept, rejected = gpd.read_file(out, layer="slides"), gpd.read_file(out, layer="rejected")
    assert (kept["dndvi"] >= ev["min_ndvi_drop"]).all() and set(rejected["reason"]) <= {"ndvi_drop", "slope",
                                                                                        "ndvi_drop,slope"}


@pytest.mark.parametrize("kind", ["safe", "zip", "stac"])
def test_pre_product_is_stacked_over_the_post_footprint_only(tmp_path, monkeypatch, kind):
    """A SAFE folder, a zip or a STAC Item as the pre scene: only its part over the post scene is stacked."""
    from products_fixtures import make_safe, make_stac_item, zip_safe
    from rasterio.windows import Window

    import lsmap.data.stack
    import lsmap.map.evidence as evidence
    from lsmap.data.stack import stack_scene

    if kind == "stac":
        product = make_stac_item(tmp_path / "item", {"blue": "B2", "red": "B4", "nir": "B8"})
    else:
        product = make_safe(tmp_path / "p", bands=("B2", "B4", "B8"))
        product = zip_safe(product) if kind == "zip" else product
    full = tmp_path / "full.tif"
    stack_scene(product, full, bands="B2,B4,B8")
    win = Window(40, 30, 60, 50)
    with rasterio.open(full) as src:
        prof = src.profile | {"width": win.width, "height": win.height, "transform": src.window_transform(win)}
        data, names, scaling = src.read(window=win), src.descriptions, (src.scales, src.offsets)
    with rasterio.open(tmp_path / "post.tif", "w", **prof) as dst:
        dst.write(data)
        dst.descriptions = names
        dst.scales, dst.offsets = scaling  # a uint16 stack's codes: the copy keeps their scale/offset
    seen = []

    def spy(*args, **kwargs):
        out = stack_scene(*args, **kwargs)
        with rasterio.open(kwargs["out"]) as s:
            seen.append((kwargs["aoi"].source, s.shape))
        return out

    monkeypatch.setattr(lsmap.data.stack, "stack_scene", spy)
    b2 = data[0][data[0] > 0] * scaling[0][0] + scaling[1][0]  # B2 as read (uint16 codes unscaled)
    mod = member(Band0Model(), "B2", mean=float(np.median(b2)), std=float(b2.std()) / 4)
    gdf = lsmap.detect(tmp_path / "post.tif", [mod], pre={"s2": product}, min_ndvi_drop=0.0, min_slope=0.0, **KW)
    assert len(gdf) > 0 and np.isfinite(gdf["ndvi_pre"]).all()
    (source, shape), = seen
    m = evidence.PRE_MARGIN_PX
    assert source == "the post-event scene post.tif" and shape == (50 + 2 * m, 60 + 2 * m)
    np.testing.assert_allclose(gdf["dndvi"], 0.0, atol=1e-5)  # the same product before and after: no change


def test_rejected_polygons_are_drawn_in_the_quicklook_and_the_report(tmp_path):
    """What the evidence dropped stays visible: dashed outlines in both maps, counted with their reasons."""
    import re

    from PIL import Image

    post, pre = pair(tmp_path)
    with rasterio.open(post) as src:  # a natural-colour band for the maps: B3 (a copy of B4)
        data = src.read()
    post = write_scene(tmp_path / "post_rgb.tif", np.concatenate([data[:1], data[1:2], data[1:]]), origin=ORIGIN,
                       bands=["B2", "B3", "B4", "B8", "slope"])
    out = tmp_path / "o"
    out.mkdir()
    gdf = lsmap.detect(post, models(), pre=pre, quicklook=out / "q.png", report=out / "r.html", **KW)
    lsmap.detect(post, models(), quicklook=out / "q0.png", min_slope=0, **KW)  # no evidence: nothing rejected
    assert list(_by_region(gdf)) == ["scar"]
    page = (out / "r.html").read_text()
    data = json.loads(re.search(r'id="lsmap-data">(.*?)</script>', page, re.S).group(1).replace("<\\/", "</"))
    assert sorted(r["reason"] for r in data["rejected"]) == ["ndvi_drop", "slope"]
    assert ["rejected by evidence", "2 (ndvi drop: 1, slope: 1)"] in data["summary"]
    with_rejected = np.asarray(Image.open(out / "q.png").convert("RGB"), np.int16)
    without = np.asarray(Image.open(out / "q0.png").convert("RGB"), np.int16)
    assert with_rejected.shape == without.shape
    from lsmap.core.display import REJECTED_COLOUR

    rgb = np.array([int(REJECTED_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    drawn = (np.abs(with_rejected - rgb).max(-1) < 12) & (np.abs(without - rgb).max(-1) >= 12)
    assert drawn.sum() > 100, "dashed outlines drawn where the look-alikes are"


def test_a_pre_event_band_folder_takes_its_own_offset(tmp_path):
    # found on real bands: an offset pre-event folder was refused with "give --offset -1000", and --offset is the
    # post scene's: nothing could give the pre scene's
    from products_fixtures import loose_bands, make_safe

    from lsmap.data.stack import stack_scene

    safe = make_safe(tmp_path, bands=("B2", "B3", "B4", "B8"))
    post = stack_scene(safe, tmp_path / "post.tif", bands="rgbn").path
    pre = loose_bands(safe, tmp_path / "pre", ["B4", "B8"], offset=0)  # DNs still carry the +1000
    model = tiny_checkpoint(tmp_path / "m", "rgbn")
    with pytest.raises(InputError, match=r"pre: the digital numbers look offset.*give `pre_offset` -1000"):
        lsmap.detect(post, [model], out=tmp_path / "a.gpkg", pre=pre, device="cpu")
    gdf = lsmap.detect(post, [model], out=tmp_path / "b.gpkg", pre=pre, pre_offset=-1000, device="cpu", threshold=1e-6)
    assert "ndvi_pre" in gdf.columns and gdf.attrs["lsmap"]["evidence"] is not None


def test_a_cloud_in_the_pre_scene_is_not_observed_and_drops_nothing(tmp_path):
    # found with a real cloudy pre scene: a landslide under a pre-event cloud was dropped for "no NDVI drop"
    # (a cloud's NDVI is near 0), with pre_not_observed 0: the pre scene's clouds were never masked
    p = get_profile("B2,B3,B4,B8,slope")
    scar = _region_mask("scar")
    post = np.zeros((5, H, W), np.float32)
    post[0] = 300 / p.divisors[0]  # B2: dark ground, no cloud in the post scene
    post[1] = np.where(scar, 3.0, 0.5)  # B3: what the stand-in model flags
    post[2] = np.where(scar, DN["bare"][0], DN["veg"][0]) / p.divisors[2]
    post[3] = np.where(scar, DN["bare"][1], DN["veg"][1]) / p.divisors[3]
    post[4] = np.where(scar, 30.0, 20.0) / p.divisors[4]
    post_path = write_scene(tmp_path / "post.tif", post, origin=ORIGIN, bands=["B2", "B3", "B4", "B8", "slope"])
    q = get_profile("B2,B4,B8")
    pre = np.stack([np.where(scar, 6000.0, 300.0), np.where(scar, 5500.0, DN["veg"][0]),
                    np.where(scar, 5800.0, DN["veg"][1])]) / np.asarray(q.divisors).reshape(3, 1, 1)
    pre_path = write_scene(tmp_path / "pre.tif", pre.astype(np.float32), origin=ORIGIN, bands=["B2", "B4", "B8"])
    flag = [member(Band0Model(), "B3", mean=1.0, std=0.5)]

    unmasked = lsmap.detect(post_path, flag, pre=pre_path, out=tmp_path / "a.gpkg", keep_rejected=True, **KW)
    assert len(unmasked) == 0 and list(unmasked.attrs["rejected"]["reason"]) == ["ndvi_drop"]
    gdf = lsmap.detect(post_path, flag, pre=pre_path, out=tmp_path / "b.gpkg", keep_rejected=True, blue_max=0.2, **KW)
    assert len(gdf) == 1 and len(gdf.attrs["rejected"]) == 0  # seen through the cloud: not judged on its NDVI
    assert gdf["pre_not_observed"].iloc[0] == pytest.approx(1.0) and np.isnan(gdf["dndvi"].iloc[0])


def test_a_pre_product_masks_its_clouds_with_its_own_scl(tmp_path):
    from products_fixtures import make_safe

    from lsmap.data.masks import DEFAULT_SCL_CLASSES
    from lsmap.map.evidence import mask_pre, stack_pre

    work = tmp_path / "work"
    work.mkdir()
    path, spec = stack_pre(make_safe(tmp_path / "p", bands=("B2", "B4", "B8")), work)
    assert spec.scl is not None and spec.scl.is_file()  # written beside the pre stack, on its grid
    plan = mask_pre(plan_evidence(scene_info(path), ["B4", "B8"], pre=path), spec, work)
    with rasterio.open(plan.pre.info.mask) as m, rasterio.open(spec.scl) as scl:
        not_observed, classes = m.read(1) > 0, scl.read(1)
    assert not_observed.any() and not not_observed.all()
    np.testing.assert_array_equal(not_observed, np.isin(classes, DEFAULT_SCL_CLASSES))


def test_a_pre_band_folder_elsewhere_is_said_not_to_overlap(tmp_path):
    """A pre product or band folder is cut to the post scene's footprint: far away, it failed as 'the post-event
    scene ... the area of interest does not overlap the Sentinel-2 scene'; the message now says what is wrong."""
    post, _ = pair(tmp_path)
    folder = tmp_path / "pre_bands"
    folder.mkdir()
    for band in ("B04", "B08"):
        write_scene(folder / f"T45RUL_20240701T044709_{band}_10m.tif", np.full((1, 20, 20), 1500.0, np.float32),
                    origin=(600000.0, 3100000.0))
    with pytest.raises(InputError, match=r"pre_bands: the pre-event scene does not overlap the post-event scene .*"
                                         r"post.*; give a pre-event scene of the same area"):
        lsmap.detect(post, models(), pre=str(folder), pre_offset=0, **KW)
