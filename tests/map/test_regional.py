"""Regional mapping: scene lists, resumability, merging, and the Dask cluster path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lsmap.cli import main
from lsmap.errors import InputError, MissingInputError, OutputExistsError
from lsmap.io.rasters import atomic_output
from lsmap.map.regional.merge import merge_layers, true_area_m2
from lsmap.map.regional.run import detect_many
from lsmap.map.regional.scenelist import expand_scenes, is_scene_list, scene_stems

UTM = "EPSG:32646"
PIX = 10.0
X0, Y0 = 400_000.0, 2_500_000.0


# --- fixtures: tiny scenes and a tiny model -----------------------------------------------------


def write_scene(path: Path, col_off: int, size: int = 96, crs: str = UTM, nodata_block: int = 21) -> Path:
    """A 4-band (rgbn) uint16 scene whose pixels are bright inside a world-fixed rectangle.

    Its top-left ``nodata_block`` x ``nodata_block`` pixels are nodata (0).
    """
    import rasterio
    from rasterio.transform import from_origin

    x0 = X0 + col_off * PIX
    transform = from_origin(x0, Y0, PIX, PIX)
    cols = x0 + (np.arange(size) + 0.5) * PIX
    rows = Y0 - (np.arange(size) + 0.5) * PIX
    xx, yy = np.meshgrid(cols, rows)
    # the "landslide": x in [X0+500, X0+1100), y in (Y0-600, Y0-200]: crosses scene overlaps
    slide = (xx >= X0 + 500) & (xx < X0 + 1100) & (yy > Y0 - 600) & (yy <= Y0 - 200)
    # a second one near each scene's own left edge, seen by one scene only when scenes are 64 px apart
    slide |= (xx >= x0 + 50) & (xx < x0 + 150) & (yy > Y0 - 900) & (yy <= Y0 - 800)
    data = np.where(slide, 3000, 500).astype("uint16")
    data[:nodata_block, :nodata_block] = 0
    data = np.repeat(data[None], 4, axis=0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                       crs=crs, transform=transform, nodata=0) as dst:
        dst.write(data)
    return path


@pytest.fixture
def scenes(tmp_path) -> list[Path]:
    d = tmp_path / "scenes"
    d.mkdir()
    a = write_scene(d / "a.tif", 0)
    b = write_scene(d / "b.tif", 64)
    c = d / "c.tif"
    c.write_bytes(b"II*\x00 this is not a GeoTIFF")
    return [a, b, c]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from lsmap.core.bands import get_profile
    from lsmap.learn.models import ModelCard, build_model, save_checkpoint

    p = get_profile("rgbn")
    card = ModelCard("tiny-unet", p.to_dict(), {"mean": [1.0] * 4, "std": [1.0] * 4, "count": 1})
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", build_model("tiny-unet", 4), card)


def threshold_detector(scene, members, *, out, overwrite, threshold=1000, log=None, kill_marker=None, **kw):
    """Stand-in single-scene detector: polygons where band 1 exceeds ``threshold``.

    With ``kill_marker``: on the first call for scene a (marker absent) it writes half a layer under a
    temporary name and kills its own process, as a worker dying mid-scene would.
    """
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    from lsmap.learn.ensemble import Member

    if not members or not all(isinstance(m, Member) for m in members):
        raise TypeError(f"expected loaded ensemble members, got {members!r}")
    if log is not None:
        with open(log, "a") as f:
            f.write(f"{Path(scene).name} {os.getpid()}\n")
    with rasterio.open(scene) as src:
        band = src.read(1)
        transform, crs = src.transform, src.crs
    mask = (band > threshold).astype("uint8")
    geoms = [shape(g) for g, v in shapes(mask, mask=mask.astype(bool), transform=transform) if v == 1]
    gdf = gpd.GeoDataFrame({"mean_prob": [0.8] * len(geoms), "max_prob": [0.9] * len(geoms)},
                           geometry=geoms, crs=crs)
    gdf["area_m2"] = gdf.area
    with atomic_output(out, overwrite) as tmp:
        if kill_marker is not None and Path(scene).name == "a.tif" and not Path(kill_marker, "a.tif").exists():
            Path(kill_marker, Path(scene).name).write_text("killed once\n")
            tmp.write_bytes(b"half a geopackage")
            os._exit(1)
        gdf.to_file(tmp, engine="pyogrio")
    return gdf


def always_killing_detector(scene, members, *, out, overwrite, **kw):
    """Stand-in detector whose process dies on every scene named a*, after half-writing the layer."""
    if Path(scene).name.startswith("a"):
        with atomic_output(out, overwrite) as tmp:
            tmp.write_bytes(b"half a geopackage")
            os._exit(1)
    return threshold_detector(scene, members, out=out, overwrite=overwrite, **kw)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes on loopback; a dying task is rescheduled once.

    Worker saturation 1.0: a worker holds one scene at a time, so a scene that kills its worker
    never takes a scene queued behind it down too (the default 1.1 queues two per worker).
    """
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}):
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                      dashboard_address=None) as lc, distributed.Client(lc, set_as_default=False) as client:
            yield client


def read(path):
    import geopandas as gpd

    return gpd.read_file(path, engine="pyogrio")


def union_of(gdfs, crs):
    import shapely

    return shapely.union_all([g for gdf in gdfs for g in gdf.to_crs(crs).geometry])


# --- scene lists ----------------------------------------------------------------------------------


def test_expand_scenes_globs_lists_and_duplicates(tmp_path, scenes):
    d = scenes[0].parent
    assert expand_scenes(str(d / "*.tif")) == [s.absolute() for s in scenes]
    lst = tmp_path / "list.txt"
    lst.write_text("# event scenes\nscenes/b.tif\n\n  scenes/a.tif  \nscenes/b.tif\n")
    assert expand_scenes(f"@{lst}") == [scenes[1], scenes[0]]
    assert expand_scenes(lst) == [scenes[1], scenes[0]]
    assert expand_scenes([scenes[0], str(d / "?.tif")]) == [scenes[0], scenes[1], scenes[2]]
    with pytest.raises(MissingInputError, match=r"nothing\*\.tif"):
        expand_scenes(str(d / "nothing*.tif"))
    with pytest.raises(MissingInputError, match="missing.txt"):
        expand_scenes("@" + str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="no scene"):
        expand_scenes([])


def test_scene_stems_unique_and_stable():
    paths = [Path("/e/t1/S2.tif"), Path("/e/t2/S2.tif"), Path("/e/x.tif"), Path("/f/event.tif")]
    assert scene_stems(paths, reserved=["event"]) == ["t1_S2", "t2_S2", "x", "event-2"]
    assert scene_stems([Path("/a/s.tif"), Path("/a/s.tiff")]) == ["s", "s-2"]


def test_stac_item_urls_are_scenes_on_the_command_line_and_in_lists(tmp_path, scenes):
    """URLs are kept as given (never made paths, never globbed although '?' starts a query)."""
    item = "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/S2B_43PFN_20190809_0_L2A"
    query = "https://example.org/stac/item?id=S2A_1&f=json"
    lst = tmp_path / "list.txt"
    lst.write_text(f"{item}\nscenes/a.tif\n{query}\n{item}\n")
    assert expand_scenes([f"@{lst}"]) == [item, scenes[0], query]
    assert expand_scenes([item, str(scenes[0])]) == [item, scenes[0]]
    assert not is_scene_list(query) and not is_scene_list(item)  # one Item each: `-o` stays a file
    names = scene_stems([item, query, "http://127.0.0.1:8000/a/item.json", "http://127.0.0.1:8000/b/item.json"])
    assert names == ["S2B_43PFN_20190809_0_L2A", "item_id_S2A_1_f_json", "a_item", "b_item"]


def test_regional_run_over_stac_item_urls(tmp_path):
    """Two STAC Items served over HTTP: one layer each, named after their URLs, merged; a re-run skips both."""
    from detect_fixtures import tiny_checkpoint
    from products_fixtures import make_stac_item, serve

    keys = {"red": "B4", "green": "B3", "blue": "B2", "nir": "B8"}
    make_stac_item(tmp_path / "root" / "a", keys, seed=1)
    make_stac_item(tmp_path / "root" / "b", keys, seed=2)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", "rgbn")
    kw = dict(threshold=1e-6, window=32, overlap=8, device="cpu", progress=False)
    with serve(tmp_path / "root") as (url, _):
        urls = [f"{url}/a/item.json", f"{url}/b/item.json"]
        res = detect_many(urls, [ckpt], tmp_path / "ev", **kw)
        assert res.ok, res.failures
        assert {k: v.name for k, v in res.outputs.items()} == {urls[0]: "a_item.gpkg", urls[1]: "b_item.gpkg"}
        assert len(res.gdf) > 0 and res.merged.is_file() and not res.skipped
        again = detect_many(urls, [ckpt], tmp_path / "ev", **kw)
        cli = CliRunner().invoke(main, ["detect", *urls, "-o", str(tmp_path / "ev2"), "--model", str(ckpt), "--window",
                                        "32", "--overlap", "8", "--threshold", "1e-6", "--device", "cpu", "--json"])
    assert again.ok and again.skipped == urls
    assert cli.exit_code == 0, cli.output
    assert sorted(Path(p).name for p in json.loads(cli.output)["outputs"].values()) == ["a_item.gpkg", "b_item.gpkg"]


# --- merging ------------------------------------------------------------------------------------


def test_merge_joins_across_scenes_only_and_recomputes_true_area():
    import geopandas as gpd
    from shapely.geometry import box as _box

    def box(x0, y0, x1, y1):  # near the UTM central meridian, where planar ~ geodesic area
        return _box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)

    a = gpd.GeoDataFrame({"mean_prob": [0.6, 0.9], "max_prob": [0.7, 0.95]},
                         geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100)], crs=UTM)  # touching, same scene
    b = gpd.GeoDataFrame({"mean_prob": [0.8], "max_prob": [0.99]}, geometry=[box(50, 0, 150, 300)], crs=UTM)
    c = gpd.GeoDataFrame({"mean_prob": [0.5], "max_prob": [0.5]}, geometry=[box(1000, 1000, 1100, 1100)], crs=UTM)
    m = merge_layers({"a": a, "b": b, "c": c})
    assert len(m) == 2 and m.crs == a.crs
    joined = m[m.scene == "a,b"].iloc[0]
    assert joined.n_parts == 3 and joined.max_prob == 0.99
    assert joined.geometry.area == pytest.approx(200 * 100 + 100 * 200)
    assert 0.6 < joined.mean_prob < 0.9
    # geodesic area on the ellipsoid: within the UTM scale error of the planar area
    assert m.area_m2.to_numpy() == pytest.approx(m.area.to_numpy(), rel=2e-3)
    alone = merge_layers({"a": a})
    assert len(alone) == 2 and list(alone.scene) == ["a", "a"]  # same-scene neighbours stay apart


def test_merge_does_not_join_at_a_corner():
    """Two landslides meeting at a pixel corner are two in each scene (4-connected); seen in a scene overlap they
    were glued into one MultiPolygon with averaged attributes (found by an audit). An edge or an overlap joins."""
    import geopandas as gpd
    from shapely.geometry import box as _box

    def box(x0, y0, x1, y1):
        return _box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)

    one, two = box(0, 0, 100, 100), box(100, 100, 200, 200)  # corner to corner
    a = gpd.GeoDataFrame({"id": [1, 2], "mean_prob": [0.6, 0.9]}, geometry=[one, two], crs=UTM)
    b = gpd.GeoDataFrame({"id": [1, 2], "mean_prob": [0.7, 0.8]}, geometry=[one, two], crs=UTM)  # seen again
    m = merge_layers({"a": a, "b": b})
    assert len(m) == 2 and list(m.n_parts) == [2, 2] and set(m.geom_type) == {"Polygon"}
    assert list(m.scene_ids) == ["a:1,b:1", "a:2,b:2"]
    edge = gpd.GeoDataFrame({"id": [5]}, geometry=[box(100, 0, 150, 100)], crs=UTM)  # cut by a border: an edge
    assert list(merge_layers({"a": a.iloc[:1], "c": edge}).n_parts) == [2]


def test_merge_different_crs_goes_to_wgs84_and_areas_are_true():
    import geopandas as gpd
    from shapely.geometry import box

    a = gpd.GeoDataFrame(geometry=[box(X0, Y0, X0 + 1000, Y0 + 1000)], crs=UTM)
    b = a.to_crs("EPSG:3857")
    m = merge_layers({"a": a, "b": b})
    assert m.crs.to_epsg() == 4326 and len(m) == 1 and m.scene.iloc[0] == "a,b"
    assert m.area_m2.iloc[0] == pytest.approx(1e6, rel=2e-3)  # not the degrees^2 area
    assert true_area_m2(b.geometry)[0] == pytest.approx(1e6, rel=2e-3)  # not the inflated Mercator area


def test_merge_of_nothing_is_empty():
    assert len(merge_layers({})) == 0


# --- local runs, failures, resumability -----------------------------------------------------------


def test_local_run_outputs_failure_and_merged_union(tmp_path, scenes, model):
    out = tmp_path / "event"
    res = detect_many(scenes, [model], out, detector=threshold_detector, progress=False)
    a, b, c = (str(s) for s in scenes)
    assert set(res.outputs) == {a, b} and set(res.failures) == {c}
    assert "c.tif" in res.failures[c]
    assert res.outputs[a] == out / "a.gpkg" and (out / "a.done.json").is_file()
    assert not (out / "c.gpkg").exists() and not (out / "c.done.json").exists()
    assert res.merged == out / "event.gpkg"
    merged = read(res.merged)
    per_scene = [read(p) for p in res.outputs.values()]
    assert merged.crs == per_scene[0].crs
    assert merged.geometry.union_all().symmetric_difference(union_of(per_scene, merged.crs)).area < 1e-6
    # the rectangle crossing the a/b overlap is one polygon from both scenes; the edge ones are single
    both = merged[merged.scene == "a,b"]
    assert len(both) == 1 and both.geometry.iloc[0].area == pytest.approx(600 * 400)
    assert sorted(merged.scene) == ["a", "a,b", "b"]
    assert merged.area_m2.sum() == pytest.approx(merged.area.sum(), rel=2e-3)
    assert not res.ok and res.to_dict()["polygons"] == 3


def test_rerun_skips_complete_scenes_and_overwrite_redoes(tmp_path, scenes, model):
    out, log = tmp_path / "event", tmp_path / "calls.log"
    kw = dict(detector=threshold_detector, progress=False, log=str(log))
    detect_many(scenes[:2], [model], out, **kw)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].*")}
    assert len(log.read_text().splitlines()) == 2
    res = detect_many(scenes[:2], [model], out, **kw)
    assert len(log.read_text().splitlines()) == 2  # nothing ran
    assert sorted(res.skipped) == sorted(str(s) for s in scenes[:2]) and res.ok
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].*")} == mtimes
    assert len(read(res.merged)) == 3
    detect_many(scenes[:2], [model], out, overwrite=True, **kw)
    assert len(log.read_text().splitlines()) == 4
    # other parameters: the layers are another run's results, refused before any work; overwrite redoes them
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].*")}
    with pytest.raises(OutputExistsError, match=r"a.gpkg: output exists; pass `overwrite` to replace it and redo 2 "
                                                r"scene\(s\) \(a, b; the first detected with other options "
                                                r"\(`threshold` default -> 2000\)\), or write to another folder"):
        detect_many(scenes[:2], [model], out, threshold=2000, **kw)
    assert len(log.read_text().splitlines()) == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].*")} == mtimes  # nothing touched
    res = detect_many(scenes[:2], [model], out, threshold=2000, overwrite=True, **kw)
    assert len(log.read_text().splitlines()) == 6 and not res.skipped
    # a layer without its marker (a run killed between the two, or a file lsmap did not write) is refused too
    (out / "a.done.json").unlink()
    with pytest.raises(OutputExistsError, match=r"redo 1 scene\(s\) \(a; the first without its completion record "
                                                r"a.done.json\)"):
        detect_many(scenes[:2], [model], out, threshold=2000, **kw)
    res = detect_many(scenes[:2], [model], out, threshold=2000, overwrite=True, **kw)
    assert len(log.read_text().splitlines()) == 8 and res.ok


def test_models_load_once_per_process_locally(tmp_path, scenes, model):
    import lsmap.map.regional.scenejob as scenejob

    before = scenejob._ENSEMBLE_LOADS
    scenejob._ENSEMBLES.clear()
    detect_many(scenes[:2], [model], tmp_path / "o", detector=threshold_detector, progress=False)
    assert scenejob._ENSEMBLE_LOADS == before + 1


def test_bad_arguments(tmp_path, scenes, model, monkeypatch):
    import lsmap.map.regional.run

    monkeypatch.setattr(lsmap.map.regional.run, "CONNECT_TIMEOUT", "2s")  # nothing listens there: fail fast
    with pytest.raises(MissingInputError, match="nope"):
        detect_many(scenes, [tmp_path / "nope"], tmp_path / "o", detector=threshold_detector)
    with pytest.raises(InputError, match="plain values"):
        detect_many(scenes, [model], tmp_path / "o", detector=threshold_detector, thing=object())
    try:
        import distributed  # noqa: F401

        expected = "cannot reach the Dask scheduler"
    except ImportError:
        expected = r"Dask distributed is not installed; pip install 'lsmap\[cluster\]'"
    with pytest.raises(InputError, match=expected) as e:
        detect_many(scenes, [model], tmp_path / "o", detector=threshold_detector, progress=False,
                    scheduler="tcp://127.0.0.1:9")
    assert str(e.value).startswith("`scheduler` tcp://127.0.0.1:9") or "not installed" in str(e.value)  # not a flag
    with pytest.raises(InputError, match=r"no model given; pass `models` \(one or more checkpoints\)"):
        detect_many(scenes, [], tmp_path / "o", progress=False)


def test_missing_scene_is_one_failure(tmp_path, scenes, model):
    res = detect_many([scenes[0], tmp_path / "gone.tif"], [model], tmp_path / "o",
                      detector=threshold_detector, progress=False)
    assert list(res.outputs) == [str(scenes[0])]
    assert "gone.tif" in res.failures[str(tmp_path / "gone.tif")]


# --- Dask cluster ---------------------------------------------------------------------------------


def test_cluster_matches_local(tmp_path, scenes, model, cluster):
    local = detect_many(scenes, [model], tmp_path / "local", detector=threshold_detector, progress=False)
    dist = detect_many(scenes, [model], tmp_path / "dist", detector=threshold_detector, progress=False,
                       scheduler=cluster.scheduler.address)
    assert set(dist.outputs) == set(local.outputs) and set(dist.failures) == set(local.failures)
    assert "c.tif" in dist.failures[str(scenes[2])]
    assert all(s.worker.startswith("tcp://127.0.0.1") for s in dist.scenes if not s.error)
    lm, dm = read(local.merged), read(dist.merged)
    assert sorted(lm.scene) == sorted(dm.scene)
    assert lm.geometry.union_all().symmetric_difference(dm.geometry.union_all()).area < 1e-6
    assert dm.area_m2.sum() == pytest.approx(lm.area_m2.sum())
    per_scene = [read(p) for p in dist.outputs.values()]
    assert dm.geometry.union_all().symmetric_difference(union_of(per_scene, dm.crs)).area < 1e-6
    # models were loaded at most once per worker process
    loads = cluster.run(lambda: __import__("importlib").import_module("lsmap.map.regional.scenejob")._ENSEMBLE_LOADS)
    assert 1 <= sum(loads.values()) <= len(loads)


def test_cluster_worker_killed_mid_scene_is_retried(tmp_path, scenes, model, cluster):
    marker = tmp_path / "kills"
    marker.mkdir()
    out = tmp_path / "event"
    res = detect_many(scenes[:2], [model], out, detector=threshold_detector, progress=False,
                      scheduler=cluster, kill_marker=str(marker))
    assert (marker / "a.tif").exists()  # the worker running a died once
    assert res.ok and len(res.outputs) == 2
    for p in res.outputs.values():
        assert len(read(p)) >= 1
    assert not list(out.glob(".*.tmp"))  # the half-written temporary was cleared by the retry
    assert sorted(read(res.merged).scene) == ["a", "a,b", "b"]


def test_cluster_worker_dying_every_time_is_reported(tmp_path, scenes, model, cluster):
    out = tmp_path / "event"
    res = detect_many(scenes[:2], [model], out, detector=always_killing_detector, progress=False,
                      scheduler=cluster)
    a, b = str(scenes[0]), str(scenes[1])
    assert list(res.outputs) == [b]
    assert "a.tif" in res.failures[a] and "died" in res.failures[a]
    assert not (out / "a.gpkg").exists() and not (out / "a.done.json").exists()
    assert sorted(read(res.merged).scene) == ["b", "b"]


# --- with the real single-scene detection -----------------------------------------------------------

#: threshold 1e-6 (0 is refused): every valid pixel is a landslide to the untrained model, so the layers are the
#: scenes' valid footprints
REAL = dict(threshold=1e-6, window=64, overlap=16, device="cpu")
#: union of the footprints of a (x 0..960 m) and b (x 640..1600 m), 960 m tall, minus a's nodata
#: corner (210 m square; b's lies inside a's footprint)
FOOTPRINT_M2 = 1600 * 960 - 210 * 210


def check_real_event(res, scenes):
    a, b, c = (str(s) for s in scenes)
    assert set(res.outputs) == {a, b} and list(res.failures) == [c]
    assert "c.tif" in res.failures[c]
    merged, layers = read(res.merged), [read(p) for p in res.outputs.values()]
    assert [len(g) for g in layers] == [1, 1]
    assert layers[0].area.iloc[0] == pytest.approx(960 * 960 - 210 * 210)
    assert len(merged) == 1 and merged.scene.iloc[0] == "a,b" and merged.n_parts.iloc[0] == 2
    assert merged.area.iloc[0] == pytest.approx(FOOTPRINT_M2)
    assert merged.area_m2.iloc[0] == pytest.approx(FOOTPRINT_M2, rel=2e-3)
    assert merged.geometry.union_all().symmetric_difference(union_of(layers, merged.crs)).area < 1e-6
    assert {"mean_prob", "max_prob"} <= set(merged.columns)
    return merged


def test_real_detect_local_and_cluster_agree(tmp_path, scenes, model, cluster):
    local = detect_many(scenes, [model], tmp_path / "local", progress=False, **REAL)
    dist = detect_many(scenes, [model], tmp_path / "dist", progress=False, scheduler=cluster, **REAL)
    lm, dm = check_real_event(local, scenes), check_real_event(dist, scenes)
    assert lm.geometry.iloc[0].symmetric_difference(dm.geometry.iloc[0]).area < 1e-6
    assert dm.max_prob.iloc[0] == pytest.approx(lm.max_prob.iloc[0], abs=1e-3)
    done = json.loads((tmp_path / "dist" / "a.done.json").read_text())
    assert done["scene"] == str(scenes[0]) and done["params"]["threshold"] == 1e-6 and done["polygons"] == 1


def test_an_invalid_area_polygon_is_repaired_not_taken_for_outside(tmp_path, scenes, model):
    """A polygon with a hole drawn twice (invalid; a union does not repair it) was refused as "does not overlap the
    scene", which a several-scene run took for a scene outside the area: ok, nothing mapped (found by a review).
    read_aoi repairs it with a warning; the scene inside is mapped. Outside is now a type (OutsideError), not a
    message to match."""
    import geopandas as gpd
    import shapely
    from rasterio.transform import from_origin

    from lsmap.errors import LsmapWarning
    from lsmap.io.aoi import AOI, aoi_window, read_aoi

    x0, y0 = X0 + 10, Y0 - 900
    shell = [(x0, y0), (x0 + 490, y0), (x0 + 490, y0 + 800), (x0, y0 + 800)]
    hole = [(x0 + 100, y0 + 100), (x0 + 200, y0 + 100), (x0 + 200, y0 + 200), (x0 + 100, y0 + 200)]
    bad = shapely.Polygon(shell, [hole, hole])
    assert not bad.is_valid
    gpd.GeoDataFrame(geometry=[bad], crs=UTM).to_file(tmp_path / "area.gpkg")
    with pytest.warns(LsmapWarning, match=r"area.gpkg: the area of interest was not a valid polygon \(.*\); repaired"):
        area = read_aoi(tmp_path / "area.gpkg")
    assert area.geometry.is_valid
    res = detect_many(scenes[:2], [model], tmp_path / "ev", aoi=area, progress=False, **REAL)
    assert res.ok and list(res.outputs) == [str(scenes[0])] and res.outside == [str(scenes[1])], res.failures
    with pytest.raises(InputError, match=r"built: the area of interest is not a valid polygon \(.*\); repair it"):
        aoi_window(AOI(bad, UTM, "built"), UTM, from_origin(X0, Y0, 10, 10), 64, 64)


def test_the_end_of_a_run_removes_only_dead_processes_temporaries(tmp_path, scenes, model):
    """A run ended by removing every temporary in its folder, those of a live `lsmap detect` or another run writing
    there too (found by a code review: their scratch folder and output temporary went mid-run). Only those whose
    process is gone go now."""
    import subprocess
    import sys

    from lsmap.io.locks import owner_tag

    out = tmp_path / "ev"
    out.mkdir()
    live = [out / f".lsmap-detect-{owner_tag()}-abc", out / f".other.gpkg.{owner_tag()}.tmp"]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tag = owner_tag().replace(f"-{os.getpid()}-", f"-{int(gone.stdout)}-")
    dead = [out / f".lsmap-detect-{dead_tag}-abc", out / f".other.gpkg.{dead_tag}.tmp"]
    for p in live + dead:
        p.mkdir()
        (p / "part").write_text("x")
    res = detect_many(scenes[:1], [model], out, progress=False, **REAL)
    assert res.ok
    assert all(p.exists() for p in live) and not any(p.exists() for p in dead)


def test_a_merged_layer_the_folder_did_not_write_is_not_replaced(tmp_path, scenes, model):
    """A field inventory named event.gpkg in the output folder, or any --merged path, was replaced without
    --overwrite; an --aoi file even with it (found by the failure audit). A rerun still replaces its own layer."""
    import geopandas as gpd
    import shapely

    from lsmap.io.aoi import read_aoi

    out = tmp_path / "ev"
    out.mkdir()
    gpd.GeoDataFrame(geometry=[shapely.box(X0, Y0 - 500, X0 + 500, Y0)], crs=UTM).to_file(out / "event.gpkg")
    before = (out / "event.gpkg").read_bytes()
    with pytest.raises(OutputExistsError, match="event.gpkg: output exists; .*no run of this folder wrote it"):
        detect_many(scenes[:1], [model], out, progress=False, **REAL)
    assert (out / "event.gpkg").read_bytes() == before and not (out / "a.gpkg").exists()  # refused before any work
    first = detect_many(scenes[:1], [model], out, merged="mine.gpkg", progress=False, **REAL)
    again = detect_many(scenes[:1], [model], out, merged="mine.gpkg", progress=False, **REAL)  # its own: replaced
    assert first.merged == again.merged == out / "mine.gpkg"
    area = tmp_path / "area.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(X0, Y0 - 900, X0 + 500, Y0)], crs=UTM).to_file(area)
    with pytest.raises(InputError, match="area.gpkg: this output is the input"):
        detect_many(scenes[:1], [model], tmp_path / "ev2", merged=str(area), aoi=read_aoi(area), overwrite=True,
                    progress=False, **REAL)


def test_cli_merged_none_writes_no_merged_layer(tmp_path, scenes, model):
    """The refusal of a merged layer the folder did not write says 'give another --merged name, or none', but
    --merged none was refused as a file without a vector extension (the docs audit): it writes no merged layer."""
    import geopandas as gpd
    import shapely

    out = tmp_path / "ev"
    out.mkdir()
    gpd.GeoDataFrame(geometry=[shapely.box(X0, Y0 - 500, X0 + 500, Y0)], crs=UTM).to_file(out / "event.gpkg")
    before = (out / "event.gpkg").read_bytes()
    args = ["detect", str(scenes[0]), str(scenes[1]), "-o", str(out), "--model", str(model), "--window", "64",
            "--overlap", "16", "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "no run of this folder wrote it (give another --merged name, or none)" in r.output
    r = CliRunner().invoke(main, [*args, "--merged", "none", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["merged"] is None and (out / "a.gpkg").is_file() and (out / "b.gpkg").is_file()
    assert (out / "event.gpkg").read_bytes() == before and not (out / "none").exists()


def test_cluster_with_an_area_of_interest(tmp_path, scenes, model, cluster):
    """The area travels to the workers (a picklable dataclass): the same crop and the same scene outside as a local
    run."""
    import geopandas as gpd

    from lsmap.io.aoi import parse_bbox

    area = parse_bbox([X0 + 10, Y0 - 900, X0 + 500, Y0 - 100], UTM)  # inside scene a only
    local = detect_many(scenes[:2], [model], tmp_path / "local", aoi=area, progress=False, **REAL)
    dist = detect_many(scenes[:2], [model], tmp_path / "dist", aoi=area, progress=False, scheduler=cluster, **REAL)
    assert dist.ok and dist.outside == local.outside == [str(scenes[1])], dist.failures
    lm, dm = (gpd.read_file(r.outputs[str(scenes[0])]) for r in (local, dist))
    assert len(dm) == len(lm) > 0
    assert dm.geometry.union_all().symmetric_difference(lm.geometry.union_all()).area < 1e-6


def test_real_detect_prob_and_mask_rasters_per_scene(tmp_path, scenes, model):
    out = tmp_path / "event"
    res = detect_many(scenes[:2], [model], out, progress=False, prob=True, mask=True, **REAL)
    assert res.ok and {p.name for p in out.glob("*.tif")} == {"a.prob.tif", "a.mask.tif", "b.prob.tif", "b.mask.tif"}
    (out / "b.mask.tif").unlink()  # an output missing: the scene is not complete
    res = detect_many(scenes[:2], [model], out, progress=False, prob=True, mask=True, **REAL)
    assert res.skipped == [str(scenes[0])] and (out / "b.mask.tif").is_file()


def test_cli_many_scenes_glob_failure_and_resume(tmp_path, scenes, model):
    out = tmp_path / "event"
    args = ["detect", str(scenes[0].parent / "*.tif"), "-o", str(out), "--model", str(model),
            "--threshold", "1e-6", "--window", "64", "--overlap", "16", "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "1 of 3 scenes failed: c.tif" in r.output and "2 done" in r.output
    assert (out / "a.gpkg").is_file() and (out / "b.gpkg").is_file() and (out / "event.gpkg").is_file()
    mtime = (out / "a.gpkg").stat().st_mtime_ns
    lst = tmp_path / "scenes.txt"
    lst.write_text("scenes/a.tif\nscenes/b.tif\n")
    r = CliRunner().invoke(main, ["detect", f"@{lst}", *args[2:], "--merged", "all.geojson", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert len(summary["skipped"]) == 2 and summary["polygons"] == 1 and summary["merged"].endswith("all.geojson")
    assert (out / "a.gpkg").stat().st_mtime_ns == mtime
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), str(scenes[1]), *args[2:], "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "2 done, 0 already complete" in r.output and (out / "a.gpkg").stat().st_mtime_ns != mtime


def test_cli_one_scene_stays_single_and_many_refuse_prob(tmp_path, scenes, model):
    opts = ["--model", str(model), "--threshold", "1e-6", "--window", "64", "--device", "cpu"]
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), "-o", str(tmp_path / "a.gpkg"), *opts])
    assert r.exit_code == 0, r.output
    assert len(read(tmp_path / "a.gpkg")) == 1 and not (tmp_path / "event.gpkg").exists()
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), str(scenes[1]), "-o", str(tmp_path / "ev"), *opts,
                                  "--prob", str(tmp_path / "p.tif")])
    assert r.exit_code == 2 and "--prob works with one scene" in r.output and "detect_many(..., prob=True)" in r.output
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), str(scenes[1]), "-o", str(tmp_path / "ev"), *opts,
                                  "--offset", "-1000"])  # the fix is to stack each scene, not a Python call
    assert r.exit_code == 2 and "--offset works with one scene" in r.output and "lsmap stack" in r.output
    assert "detect_many" not in r.output


def test_cli_scheduler_address(tmp_path, scenes, model, cluster):
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), str(scenes[1]), "-o", str(tmp_path / "ev"),
                                  "--model", str(model), "--threshold", "1e-6", "--window", "64", "--device", "cpu",
                                  "--scheduler", cluster.scheduler.address])
    assert r.exit_code == 0, r.output
    assert "2 done" in r.output and len(read(tmp_path / "ev" / "event.gpkg")) == 1


def test_lazy_api():
    import lsmap

    assert lsmap.detect_many is detect_many and callable(lsmap.detect)


def test_merged_layer_is_styled_for_qgis(tmp_path, scenes, model):
    from _qgis import check_styled

    res = detect_many(scenes[:2], [model], tmp_path / "event", detector=threshold_detector, progress=False)
    assert res.merged is not None and len(res.gdf)
    check_styled(res.merged, res.merged.stem)


def test_merge_of_many_polygons_takes_the_lone_ones_as_they_are():
    """Law: with many polygons, a polygon no other scene's touches comes out as it went in (geometry and
    attributes, dtypes kept), and each joined group as its union with max / min / area-weighted means."""
    import geopandas as gpd
    import shapely

    def layer(seed, x0, n=400):
        r = np.random.default_rng(seed)
        g = shapely.buffer(shapely.points(r.random((n, 2)) * 4000 + [X0 + x0, Y0]), r.random(n) * 30 + 10)
        return gpd.GeoDataFrame({"id": np.arange(1, n + 1), "mean_prob": r.random(n), "max_prob": r.random(n),
                                 "near_not_observed": r.random(n) < 0.2}, geometry=g, crs=UTM)

    a, b = layer(1, 0), layer(2, 3000)
    m = merge_layers({"a": a, "b": b})
    lone = m[m.n_parts == 1]
    assert len(lone) > 600 and (m.n_parts > 1).sum() > 5
    for _, row in lone.iterrows():
        src = (a if row.scene == "a" else b)
        hit = src[src.geometry.apply(lambda g, r=row: g.equals_exact(r.geometry, 0))]
        assert len(hit) == 1
        s = hit.iloc[0]
        assert (row.scene_ids, row.mean_prob, row.max_prob, row.near_not_observed) == (
            f"{row.scene}:{s.id}", s.mean_prob, s.max_prob, s.near_not_observed)
    both = pd.concat([a.assign(scene="a"), b.assign(scene="b")], ignore_index=True)
    for _, row in m[m.n_parts > 1].iterrows():
        parts = both[both.intersects(row.geometry) & both.within(row.geometry.buffer(1e-6))]
        assert len(parts) == row.n_parts and row.scene == "a,b"
        assert row.geometry.equals(shapely.union_all(parts.geometry.values))
        assert row.max_prob == parts.max_prob.max()
        w = true_area_m2(parts.geometry)
        assert row.mean_prob == pytest.approx(np.average(parts.mean_prob, weights=w))
        assert row.near_not_observed == parts.near_not_observed.any()  # kept the first part's before
        assert sorted(row.scene_ids.split(",")) == sorted(f"{p.scene}:{p.id}" for p in parts.itertuples())
    assert m["near_not_observed"].dtype == bool and m["mean_prob"].dtype == np.float64
    assert list(m.id) == list(range(1, len(m) + 1))  # one numbering for the event (a float mean, repeated, before)


def test_without_a_model_each_scene_takes_the_default_model_that_fits_its_bands(tmp_path, rng):
    # found on real data: a 14-band stack and an L2A one (11 bands, no B10, no terrain) in one run both failed,
    # the run passing every shipped default to every scene as one ensemble
    from tests.detect_fixtures import smooth_scene
    from tests.detect_fixtures import write_scene as write_stack

    l4s = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM"]
    l2a = [b for b in l4s if b not in ("B10", "slope", "DEM")]
    a = write_stack(tmp_path / "l4s.tif", smooth_scene(rng, 14, 64, 64), bands=l4s)
    b = write_stack(tmp_path / "l2a.tif", smooth_scene(rng, 11, 64, 64), bands=l2a)
    res = detect_many([a, b], None, tmp_path / "out", progress=False, merged=None)
    assert not res.failures, res.failures
    assert sorted(Path(p).name for p in res.outputs) == ["l2a.tif", "l4s.tif"]
    for stem, model in (("l4s", "l4s14-default"), ("l2a", "l2a-default")):  # the record names the model that ran
        done = json.loads((tmp_path / "out" / f"{stem}.done.json").read_text())
        assert [Path(m).stem for m in done["models"]] == [model]
    again = detect_many([a, b], None, tmp_path / "out", progress=False, merged=None)  # the same key: done
    assert len(again.skipped) == 2


def test_bad_options_and_scenes_fail_before_any_work(tmp_path, scenes, model):
    # found by the API audit: window=-5 failed every scene one by one (in .failures) and left an empty folder;
    # an array as a scene was a TypeError from pathlib
    with pytest.raises(InputError, match=r"`window` must be an integer of at least 16 \(got -5\)"):
        detect_many(scenes[:1], model, tmp_path / "a", window=-5, progress=False)
    with pytest.raises(InputError, match=r"each scene must be a path.*\(got ndarray\)"):
        detect_many([np.zeros(3)], model, tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # found by the API audit: one scene's outputs and misspelt options were passed to every scene (a quick-look
    # replaced a file of the user's; `treshold` failed every scene in .failures)
    (tmp_path / "mine.png").write_text("my map")
    for kw, match in (({"quicklook": str(tmp_path / "mine.png")}, "`quicklook` is one scene's map"),
                      ({"report": "r.html"}, "`report` is one scene's page"),
                      ({"treshold": 0.3}, "unknown detection option.s. treshold; valid: .*threshold"),
                      ({"out": "x.gpkg"}, "each scene's layer is written in `out_dir`")):
        with pytest.raises(InputError, match=match):
            detect_many(scenes[:1], model, tmp_path / "c", progress=False, **kw)
    assert (tmp_path / "mine.png").read_text() == "my map" and not (tmp_path / "c").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="afile: is a file, and several scenes write a folder"):
        detect_many(scenes[:1], model, tmp_path / "afile", progress=False)


def test_cli_many_scenes_failures_name_flags_and_a_geojson_merge_says_lon_lat(tmp_path, scenes, model):
    """Failures of single scenes are said in the command's flags (they leaked `min_slope`), and the summary of a
    merged .geojson names the lon/lat it is written in (it named the scenes' CRS)."""
    base = ["detect", str(scenes[0]), str(scenes[1]), "--model", str(model), "--threshold", "1e-6", "--window", "64",
            "--overlap", "16", "--device", "cpu"]
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "a"), "--min-slope", "10"])
    assert r.exit_code == 1 and "failed: " in r.output
    assert "--min-slope" in r.output and "`min_slope`" not in r.output, r.output
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "b"), "--merged", "event.geojson"])
    assert r.exit_code == 0, r.output
    assert "(EPSG:4326, lon/lat) -> " in r.output


def test_an_area_of_interest_crops_every_scene_and_lists_those_outside(tmp_path, scenes, model):
    """`detect_many(aoi=...)` / several scenes with --bbox (refused before): each scene is cropped as one scene's
    run is, a scene outside the area is listed as outside (not failed), and the area is in the completion key."""
    import geopandas as gpd
    import shapely

    from lsmap.io.aoi import parse_bbox, read_aoi

    box = [X0 + 10, Y0 - 900, X0 + 500, Y0 - 100]  # inside scene a only (b starts at X0 + 640)
    res = detect_many(scenes[:2], [model], tmp_path / "ev", aoi=parse_bbox(box, UTM), progress=False, **REAL)
    assert res.ok and res.outside == [str(scenes[1])] and list(res.outputs) == [str(scenes[0])], res.failures
    x0, y0, x1, y1 = gpd.read_file(res.outputs[str(scenes[0])]).total_bounds
    assert x0 >= box[0] and y0 >= box[1] and x1 <= box[2] and y1 <= box[3]  # cropped to the area
    assert res.to_dict()["outside"] == [str(scenes[1])]
    again = detect_many(scenes[:2], [model], tmp_path / "ev", aoi=parse_bbox(box, UTM), progress=False, **REAL)
    assert again.skipped == [str(scenes[0])] and again.outside == [str(scenes[1])]
    with pytest.raises(OutputExistsError, match="detected with other options"):  # another area: another run
        detect_many(scenes[:2], [model], tmp_path / "ev", aoi=parse_bbox([X0 + 10, Y0 - 900, X0 + 400, Y0 - 100], UTM),
                    progress=False, **REAL)
    with pytest.raises(InputError, match="`aoi` must be an area of interest"):
        detect_many(scenes[:2], [model], tmp_path / "x", aoi=object(), progress=False, **REAL)
    with pytest.raises(InputError, match="not longitudes/latitudes"):  # four numbers are a lon/lat box
        detect_many(scenes[:2], [model], tmp_path / "x", aoi=box, progress=False, **REAL)
    area = tmp_path / "area.geojson"  # a vector area, then another shape within the same bounds
    square = [X0 + 10, Y0 - 900, X0 + 500, Y0 - 100]
    gpd.GeoDataFrame(geometry=[shapely.box(*square)], crs=UTM).to_file(area)
    detect_many(scenes[:1], [model], tmp_path / "va", aoi=read_aoi(area), progress=False, **REAL)
    gpd.GeoDataFrame(geometry=[shapely.Polygon([(square[0], square[1]), (square[2], square[1]), (square[2], square[3]),
                                                (square[0], square[3]), (X0 + 250, Y0 - 500)])], crs=UTM).to_file(area)
    assert read_aoi(area).geometry.bounds == shapely.box(*square).bounds
    with pytest.raises(OutputExistsError, match=r"`aoi` '.*area.geojson' \(its area changed\)"):
        detect_many(scenes[:1], [model], tmp_path / "va", aoi=read_aoi(area), progress=False, **REAL)
    again = detect_many(scenes[:1], [model], tmp_path / "vb", aoi=read_aoi(area), progress=False, **REAL)
    by_path = detect_many(scenes[:1], [model], tmp_path / "vb", aoi=str(area), progress=False, **REAL)  # its path
    assert by_path.skipped == [str(scenes[0])] and again.outputs == by_path.outputs
    r = CliRunner().invoke(main, ["detect", str(scenes[0]), str(scenes[1]), "--model", str(model), "--bbox",
                                  ",".join(map(str, box)), "--bbox-crs", UTM, "--threshold", "1e-6", "--window", "64",
                                  "--overlap", "16", "--device", "cpu", "-o", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    assert "2 scenes: 1 done, 0 already complete (skipped), 0 failed, 1 outside the area of interest" in r.output


@pytest.mark.filterwarnings("ignore:--bbox")
def test_a_scene_outside_the_area_is_not_opened_again(tmp_path, scenes, model, monkeypatch):
    """A re-run opened every scene outside the area once more to find it outside again (a STAC Item fetched, a
    product read; noticed in sessions 15-16). Its completion record now says outside, keyed like a layer's: the
    re-run does not run it, another area or `overwrite` does."""
    import lsmap.map.regional.run as run_module
    from lsmap.io.aoi import parse_bbox

    box = parse_bbox([X0 + 10, Y0 - 900, X0 + 500, Y0 - 100], UTM)  # inside scene a only
    first = detect_many(scenes[:2], [model], tmp_path / "ev", aoi=box, progress=False, **REAL)
    assert first.outside == [str(scenes[1])]
    records = [json.loads(f.read_text()) for f in (tmp_path / "ev").glob("*.done.json")]
    assert [r["scene"] for r in records if r.get("outside")] == [str(scenes[1])]
    ran = []
    real = run_module.run_scene
    monkeypatch.setattr(run_module, "run_scene", lambda job: ran.append(job.scene) or real(job))
    again = detect_many(scenes[:2], [model], tmp_path / "ev", aoi=box, progress=False, **REAL)
    assert ran == [] and again.outside == [str(scenes[1])] and again.skipped == [str(scenes[0])]
    assert again.ok and list(again.outputs) == [str(scenes[0])]
    redo = detect_many(scenes[:2], [model], tmp_path / "ev", aoi=box, progress=False, overwrite=True, **REAL)
    assert ran == [str(scenes[0]), str(scenes[1])] and redo.outside == [str(scenes[1])]
    wider = parse_bbox([X0 + 10, Y0 - 900, X0 + 700, Y0 - 100], UTM)  # now reaching scene b: mapped, not skipped
    ran.clear()
    res = detect_many(scenes[1:2], [model], tmp_path / "ev", aoi=wider, progress=False, **REAL)
    assert ran == [str(scenes[1])] and res.outside == [] and list(res.outputs) == [str(scenes[1])], res.failures


@pytest.mark.filterwarnings("ignore:.*unlike the models")
def test_scenes_unlike_the_training_data_are_said_after_the_run(tmp_path, model):
    """A scene's shift warning stayed on the Dask worker that ran it, and a skipped scene does not run again: the
    several-scene run now keeps each scene's shift (its completion record too) and names the scenes beyond the
    limit, in the result, its JSON and the command's stderr."""
    from detect_fixtures import smooth_scene
    from detect_fixtures import write_scene as write_l4s

    rng = np.random.default_rng(3)
    plain = smooth_scene(rng, bands=4, h=64, w=64)
    shifted = plain.copy()
    shifted[0] += 6.0  # B4 of rgbn: 6 training standard deviations (the model's card: mean 1, std 1)
    d = tmp_path / "in"
    d.mkdir()
    paths = [write_l4s(d / "plain.tif", plain, bands=("B4", "B3", "B2", "B8")),
             write_l4s(d / "shifted.tif", shifted, bands=("B4", "B3", "B2", "B8"), origin=(500640.0, 3000000.0))]
    kw = dict(norm="model", window=32, overlap=8, device="cpu", progress=False)
    res = detect_many(paths, [model], tmp_path / "ev", **kw)
    assert res.ok and list(res.unlike_training()) == [str(paths[1])]
    assert res.unlike_training()[str(paths[1])].startswith("B4 +6.")
    assert res.to_dict()["unlike_training"] == res.unlike_training()
    again = detect_many(paths, [model], tmp_path / "ev", **kw)  # skipped: from the completion records
    assert again.skipped == [str(p) for p in paths] and again.unlike_training() == res.unlike_training()
    r = CliRunner().invoke(main, ["detect", *map(str, paths), "--model", str(model), "--norm", "model", "--window",
                                  "32", "--overlap", "8", "--device", "cpu", "-o", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert "warning: 1 scene(s) unlike the models' training data" in r.stderr and "shifted.tif: B4 +6." in r.stderr


def test_a_band_folder_rewritten_in_place_is_detected_again(tmp_path, model):
    """A folder's own size and time do not change when a band file in it is rewritten, so a rerun skipped a band or
    .SAFE folder whose bands had changed (found by the failure audit). Its files are fingerprinted."""
    import time

    from lsmap.map.regional.scenejob import job_key

    folder = tmp_path / "s2"
    folder.mkdir()
    (folder / "B04.tif").write_bytes(b"a" * 100)
    (folder / "B08.tif").write_bytes(b"b" * 100)
    before = job_key(folder, [str(model)], {}, None)
    time.sleep(0.01)
    with open(folder / "B04.tif", "r+b") as f:  # in place: same size, the folder's own time unchanged
        f.write(b"c" * 100)
    assert job_key(folder, [str(model)], {}, None) != before


def test_a_text_file_given_as_the_scene_with_a_file_output_says_it_is_read_as_a_list(tmp_path):
    """`lsmap detect text.txt -o out.gpkg` said "several scenes write a folder" with no word of the list it read
    (the CLI audit): plain .txt/.lst files are scene lists, as @list.txt is."""
    (tmp_path / "text.txt").write_text("hello\n")
    r = CliRunner().invoke(main, ["detect", str(tmp_path / "text.txt"), "-o", str(tmp_path / "out.gpkg")])
    assert r.exit_code == 2 and "text.txt is read as a list of scenes (one path per line)" in r.output, r.output
    assert not (tmp_path / "out.gpkg").exists()
