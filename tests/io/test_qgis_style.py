"""QGIS styles in the GeoPackages lsmap writes (lsmap.io.qgis_style), through every polygon writer."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import geopandas as gpd
import pyogrio
import pytest
from _qgis import check_styled, styles
from detect_fixtures import Band0Model, member, smooth_scene, write_scene
from shapely.geometry import box

import lsmap
from lsmap.errors import InputError
from lsmap.io.qgis_style import STYLE_NAME, graduated_qml, write_layer_style
from lsmap.map.vectorize import write_vector


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


def test_detect_writes_a_styled_layer(tmp_path, rng):
    data = smooth_scene(rng, h=96, w=96)
    data[0, 20:50, 30:70] = 3.0
    scene = write_scene(tmp_path / "scene.tif", data)
    gdf = lsmap.detect(scene, [member(Band0Model())], out=tmp_path / "slides.gpkg", norm="model", window=64,
                       overlap=16, device="cpu")
    assert len(gdf) >= 1
    check_styled(tmp_path / "slides.gpkg", "slides")



def test_style_write_failure_leaves_no_output(tmp_path, layer, monkeypatch):
    """The style is written on the temporary file: a failure there leaves no half-styled output."""
    import lsmap.map.vectorize

    def boom(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(lsmap.map.vectorize, "write_layer_style", boom)
    with pytest.raises(sqlite3.OperationalError):
        write_vector(layer, tmp_path / "s.gpkg")
    assert list(tmp_path.iterdir()) == []
