"""QGIS styles in the GeoPackages lsmap writes (lsmap.io.qgis_style), through every polygon writer."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing

import geopandas as gpd
import pyogrio
import pytest
from detect_fixtures import Band0Model, member, smooth_scene, write_scene
from shapely.geometry import box

import lsmap
from lsmap.core.display import PROB_CLASSES
from lsmap.errors import InputError
from lsmap.io.qgis_style import STYLE_NAME, graduated_qml, write_layer_style
from lsmap.map.vectorize import write_vector

#: Columns of QGIS's layer_styles table (QgsOgrProviderMetadata::saveStyle).
QGIS_COLUMNS = ["id", "f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName",
                "styleQML", "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time"]


def styles(path) -> list[dict]:
    with closing(sqlite3.connect(path)) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM layer_styles")]


def check_styled(path, layer: str) -> None:
    """``path`` holds a valid default QGIS style for ``layer``: graduated on mean_prob in the lsmap classes."""
    with closing(sqlite3.connect(path)) as con:
        cols = [r[1] for r in con.execute("PRAGMA table_info(layer_styles)")]
        contents = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchall()
        geom_col = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                               (layer,)).fetchone()[0]
    assert cols == QGIS_COLUMNS
    assert contents == [("attributes",)]  # registered, so GDAL and QGIS list it
    rows = [r for r in styles(path) if r["f_table_name"] == layer]
    assert len(rows) == 1
    row = rows[0]
    assert row["f_geometry_column"] == geom_col and row["useAsDefault"] == 1 and row["styleName"] == STYLE_NAME
    assert row["f_table_catalog"] == "" and row["f_table_schema"] == "" and row["update_time"].endswith("Z")
    root = ET.fromstring(row["styleQML"])  # valid XML (the DOCTYPE line included)
    assert root.tag == "qgis"
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and renderer.get("attr") == "mean_prob"
    assert renderer.get("graduatedMethod") == "GraduatedColor"
    ranges = renderer.findall("ranges/range")
    bounds = [(float(r.get("lower")), float(r.get("upper"))) for r in ranges]
    assert bounds == [(c.lower, c.upper) for c in PROB_CLASSES]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    assert {r.get("symbol") for r in ranges} == set(symbols) and len(symbols) == len(PROB_CLASSES)
    for r, c in zip(ranges, PROB_CLASSES, strict=True):
        layers = symbols[r.get("symbol")].findall("layer")
        assert layers and all(lay.get("class") == "SimpleFill" for lay in layers)
        top = {o.get("name"): o.get("value") for o in layers[-1].findall("Option/Option")}
        assert top["outline_color"] == "{},{},{},255".format(*c.rgb)
        assert {p.get("k"): p.get("v") for p in layers[-1].findall("prop")} == top  # QGIS < 3.26 reads these


@pytest.fixture
def layer():
    return gpd.GeoDataFrame({"id": [1, 2], "area_m2": [4e4, 9e4], "mean_prob": [0.55, 0.95], "max_prob": [0.7, 1.0]},
                            geometry=[box(0, 0, 200, 200), box(400, 0, 700, 300)], crs="EPSG:32645")


def test_qml_is_a_graduated_style_on_mean_prob():
    ET.fromstring(graduated_qml())
    assert 'attr="area_m2"' in graduated_qml("area_m2")


def test_write_vector_styles_geopackages(tmp_path, layer):
    out = write_vector(layer, tmp_path / "slides.gpkg")
    check_styled(out, "slides")
    back = gpd.read_file(out, layer="slides")  # the polygons are untouched
    assert len(back) == 2 and back["mean_prob"].tolist() == [0.55, 0.95]
    listed = dict(pyogrio.list_layers(out))
    assert listed["slides"] == "Polygon" and "layer_styles" in listed
    assert len(pyogrio.read_dataframe(out, layer="layer_styles", read_geometry=False)) == 1
    # rewritten, not duplicated; other formats get no style
    write_vector(layer, tmp_path / "slides.gpkg", overwrite=True)
    assert len(styles(out)) == 1
    write_vector(layer, tmp_path / "slides.geojson")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slides.geojson", "slides.gpkg"]
    # a layer without mean_prob (e.g. lsmap tile's index) is left unstyled
    write_vector(layer.drop(columns="mean_prob"), tmp_path / "plain.gpkg")
    assert "layer_styles" not in dict(pyogrio.list_layers(tmp_path / "plain.gpkg"))


def test_restyling_keeps_other_styles_but_one_default(tmp_path, layer):
    out = write_vector(layer, tmp_path / "s.gpkg")
    write_layer_style(out, "s", name="mine")
    rows = styles(out)
    assert sorted((r["styleName"], r["useAsDefault"]) for r in rows) == [(STYLE_NAME, 0), ("mine", 1)]


def test_layer_must_exist_and_be_unambiguous(tmp_path, layer):
    out = tmp_path / "two.gpkg"
    layer.to_file(out, layer="a", engine="pyogrio")
    layer.to_file(out, layer="b", engine="pyogrio", append=False)
    with pytest.raises(InputError, match="2 feature tables"):
        write_layer_style(out)
    with pytest.raises(InputError, match="no feature table 'c'"):
        write_layer_style(out, "c")
    write_layer_style(out, "b")
    check_styled(out, "b")


def test_detect_and_the_merged_regional_layer_are_styled(tmp_path, rng):
    data = smooth_scene(rng, h=96, w=96)
    data[0, 20:50, 30:70] = 3.0
    scene = write_scene(tmp_path / "scene.tif", data)
    gdf = lsmap.detect(scene, [member(Band0Model())], out=tmp_path / "slides.gpkg", norm="model", window=64,
                       overlap=16, device="cpu")
    assert len(gdf) >= 1
    check_styled(tmp_path / "slides.gpkg", "slides")

    from test_regional import threshold_detector
    from test_regional import write_scene as regional_scene

    from lsmap.map.regional.run import detect_many

    scenes = [regional_scene(tmp_path / "a.tif", 0), regional_scene(tmp_path / "b.tif", 64)]
    ck = _tiny_rgbn_checkpoint(tmp_path)
    res = detect_many(scenes, [ck], tmp_path / "event", detector=threshold_detector, progress=False)
    assert res.merged is not None and len(res.gdf)
    check_styled(res.merged, res.merged.stem)


def _tiny_rgbn_checkpoint(tmp_path):
    from lsmap.core.bands import get_profile
    from lsmap.learn.models import ModelCard, build_model, save_checkpoint

    p = get_profile("rgbn")
    card = ModelCard("tiny-unet", p.to_dict(), {"mean": [1.0] * 4, "std": [1.0] * 4, "count": 1})
    return save_checkpoint(tmp_path / "tiny", build_model("tiny-unet", 4), card)


def test_style_write_failure_leaves_no_output(tmp_path, layer, monkeypatch):
    """The style is written on the temporary file: a failure there leaves no half-styled output."""
    import lsmap.io.qgis_style

    def boom(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(lsmap.io.qgis_style, "write_layer_style", boom)
    with pytest.raises(sqlite3.OperationalError):
        write_vector(layer, tmp_path / "s.gpkg")
    assert list(tmp_path.iterdir()) == []
