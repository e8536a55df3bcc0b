"""Test-only check of the QGIS style lsmap writes into GeoPackages (lsmap.io.qgis_style)."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing

from lsmap.core.display import PROB_CLASSES
from lsmap.io.qgis_style import STYLE_NAME

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
