"""QGIS styles inside GeoPackages: the landslide layers open coloured by their mean probability.

QGIS looks for a table ``layer_styles`` in a GeoPackage and applies the row of a layer marked
``useAsDefault`` when the layer is opened (its "save style in the database" format; columns as QGIS
creates them). :func:`write_layer_style` adds that table (registered in ``gpkg_contents`` as an
attributes table, so GDAL and QGIS list it) with one graduated style on ``mean_prob``
(:func:`graduated_qml`): a fill per class of :data:`lsmap.core.display.PROB_CLASSES`, the colours
of the quick-look and the HTML report, with a dark halo under the coloured outline so it stays
visible on imagery.

Every GeoPackage of landslide polygons lsmap writes goes through
:func:`lsmap.map.vectorize.write_layer`, which calls :func:`write_layer_style`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from lsmap.core.display import PROB_CLASSES, ProbClass
from lsmap.errors import InputError

#: Name of the style lsmap writes (one per layer; rewritten on each write).
STYLE_NAME = "lsmap mean_prob"
#: Opacity (0..255) of the polygon fill; the outline is opaque.
FILL_ALPHA = 70

# The table as QGIS creates it (QgsOgrProviderMetadata::saveStyle, GeoPackage).
_CREATE = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)
"""


def _fill_layer(options: dict[str, str]) -> str:
    """One ``SimpleFill`` symbol layer; its properties both as an ``Option`` map (QGIS >= 3.26) and as ``prop``s."""
    opts = "".join(f'\n          <Option name="{k}" type="QString" value={quoteattr(v)}/>' for k, v in options.items())
    props = "".join(f"\n        <prop k=\"{k}\" v={quoteattr(v)}/>" for k, v in options.items())
    return (f'      <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n        <Option type="Map">{opts}\n'
            f"        </Option>{props}\n      </layer>\n")


def _symbol(name: str, cls: ProbClass) -> str:
    r, g, b = cls.rgb
    common = {"joinstyle": "round", "offset": "0,0", "offset_unit": "MM", "outline_style": "solid",
              "outline_width_unit": "MM"}
    halo = {**common, "color": "0,0,0,0", "style": "no", "outline_color": "0,0,0,200", "outline_width": "0.9"}
    main = {**common, "color": f"{r},{g},{b},{FILL_ALPHA}", "style": "solid", "outline_color": f"{r},{g},{b},255",
            "outline_width": "0.45"}
    return (f'    <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
            + _fill_layer(halo) + _fill_layer(main) + "    </symbol>\n")


def graduated_qml(column: str = "mean_prob", classes: Sequence[ProbClass] = PROB_CLASSES) -> str:
    """QGIS style (QML) of a polygon layer: graduated colours on ``column`` in ``classes``.

    Returns:
        The QML document (XML text).
    """
    ranges = "".join(f'      <range lower="{c.lower:.6f}" upper="{c.upper:.6f}" symbol="{i}" '
                     f'label={quoteattr(c.label)} render="true"/>\n' for i, c in enumerate(classes))
    symbols = "".join(_symbol(str(i), c) for i, c in enumerate(classes))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="Symbology">\n'
            f'  <renderer-v2 type="graduatedSymbol" attr={quoteattr(column)} graduatedMethod="GraduatedColor" '
            'symbollevels="0" forceraster="0" enableorderby="0">\n'
            f"    <ranges>\n{ranges}    </ranges>\n"
            f"    <symbols>\n{symbols}    </symbols>\n"
            '    <classificationMethod id="Fixed"/>\n'
            "  </renderer-v2>\n"
            "  <blendMode>0</blendMode>\n"
            "  <featureBlendMode>0</featureBlendMode>\n"
            "  <layerOpacity>1</layerOpacity>\n"
            "</qgis>\n")


def write_layer_style(gpkg: str | os.PathLike, layer: str | None = None, *, column: str = "mean_prob",
                      name: str = STYLE_NAME) -> None:
    """Store the graduated ``column`` style as the default QGIS style of ``layer`` in ``gpkg``.

    Creates ``layer_styles`` when missing (and registers it in ``gpkg_contents``); an earlier
    style of the same ``name`` for the layer is replaced, other styles are kept but no longer
    default.

    Args:
        gpkg: GeoPackage path (closed by its writer).
        layer: Feature table to style; ``None``: the GeoPackage's only feature table.
        column: Attribute the colours follow.
        name: Style name shown in QGIS.

    Raises:
        InputError: no such layer, or ``layer`` is ``None`` and the file has several.
    """
    path = Path(gpkg)
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        geoms = dict(con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())
        if layer is None:
            if len(geoms) != 1:
                raise InputError(f"{path}: {len(geoms)} feature tables; name the layer to style")
            layer = next(iter(geoms))
        if layer not in geoms:
            raise InputError(f"{path}: no feature table '{layer}' (found: {', '.join(geoms) or 'none'})")
        con.execute(_CREATE)
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                    "SELECT 'layer_styles', 'attributes', 'layer_styles', '', ? WHERE NOT EXISTS "
                    "(SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles')", (now,))
        con.execute("DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?", (layer, name))
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                    "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)",
                    (layer, geoms[layer], name, graduated_qml(column),
                     f"landslide polygons coloured by {column} (lsmap)", now))
