"""Per-scene polygon layers -> one event layer, and true (geodesic) polygon areas.

:func:`merge_layers` brings the layers to one CRS (the first scene's, or EPSG:4326 when the scenes
have different CRSs) and replaces polygons from different scenes that intersect (scene overlaps, or
a landslide cut by a scene border) by their union, once; ``scene`` lists the scene names they came
from, comma-joined. :func:`true_area_m2` gives the geodesic area on the CRS's ellipsoid, which
``area_m2`` of the merged layer is recomputed with. :func:`merge_not_observed` dissolves the scenes'
``not_observed`` layers (clouds, shadows, snow, no data) into one, per reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lsmap.core.graph import components, groups
from lsmap.errors import InputError


def true_area_m2(geoms) -> Any:
    """Geodesic area in m2 of each geometry of a GeoSeries, on its CRS's ellipsoid.

    Correct for geographic CRSs and for projected ones whatever their distortion.

    Raises:
        InputError: the GeoSeries has no CRS.
    """
    import numpy as np

    if geoms.crs is None:
        raise InputError("polygon layer has no CRS; cannot compute areas in m2")
    crs = geoms.crs
    lonlat = geoms if crs.is_geographic else geoms.to_crs(crs.geodetic_crs)
    geod = crs.get_geod()
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) if g is not None and not g.is_empty else 0.0
                     for g in lonlat], dtype="float64")


def _common_crs(layers: Mapping[str, Any]):
    from pyproj import CRS

    crss = [g.crs for g in layers.values() if g.crs is not None]
    if not crss:
        raise InputError("no scene layer has a CRS; cannot merge them")
    first = crss[0]
    return first if all(CRS(c) == CRS(first) for c in crss) else CRS.from_epsg(4326)


def _in_common_crs(layers: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(crs, layers)``: every scene layer in the one CRS :func:`_common_crs` picks (a layer without a CRS is
    taken to be in it)."""
    crs = _common_crs(layers)
    return crs, {name: g.to_crs(crs) if g.crs is not None and g.crs != crs else g.set_crs(crs, allow_override=True)
                 for name, g in layers.items()}


def _components(n: int, left, right) -> list[list[int]]:
    """Connected components of ``n`` items joined by the pairs ``(left[k], right[k])``, in item order."""
    return groups(components(n, left, right))


def merge_layers(layers: Mapping[str, Any]):
    """Merge per-scene polygon layers into one event layer.

    Polygons of different scenes that overlap or share an edge (a landslide in a scene overlap, or cut by a scene
    border) are joined, transitively, and replaced by their union; polygons within one scene are otherwise kept as
    they are. Touching at a corner does not join: two landslides that meet at a pixel corner are two in each scene
    (4-connected), and were glued into one MultiPolygon across the overlap before (found by an audit). Attributes
    of joined polygons are combined: columns named ``max*`` by maximum, ``min*`` by minimum, true/false columns
    (``near_not_observed``) by "any", other numbers by an area-weighted mean. ``id`` is renumbered 1..n in the
    event layer (each scene numbers its own from 1); ``scene_ids`` says which polygons of which scenes each one
    is (``a:3,b:7``). ``area_m2`` is recomputed as the true area.

    Args:
        layers: ``{scene name: GeoDataFrame}`` in scene order.

    Returns:
        GeoDataFrame with ``id``, ``scene`` (comma-joined names for joined polygons), ``scene_ids``, ``n_parts``,
        ``area_m2`` and the layers' other attributes, in the first scene's CRS, or EPSG:4326 when the
        scenes' CRSs differ.
    """
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely

    layers = {k: v for k, v in layers.items() if v is not None}
    if not layers:
        return gpd.GeoDataFrame({"id": [], "scene": [], "scene_ids": [], "n_parts": [], "area_m2": []}, geometry=[],
                                crs="EPSG:4326")
    crs, layers = _in_common_crs(layers)
    frames = []
    for name, g in layers.items():
        g = g.copy()
        g["scene"] = name
        frames.append(g)
    allp = pd.concat(frames, ignore_index=True)
    allp = gpd.GeoDataFrame(allp, geometry=allp.geometry.name, crs=crs)
    allp = allp[~(allp.geometry.isna() | allp.geometry.is_empty)].reset_index(drop=True)
    geoms = shapely.make_valid(allp.geometry.values)
    allp = allp.set_geometry(gpd.GeoSeries(geoms, crs=crs))
    scenes = allp["scene"].to_numpy()
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    cross = np.flatnonzero(scenes[left] != scenes[right])
    # more than a corner in common: the interiors overlap, or the boundaries share a line
    a, b = geoms[left[cross]], geoms[right[cross]]
    joins = cross[shapely.relate_pattern(a, b, "T********") | shapely.relate_pattern(a, b, "****1****")]
    groups = _components(len(allp), left[joins], right[joins])
    order = {name: i for i, name in enumerate(layers)}
    own_id = allp["id"].to_numpy() if "id" in allp else np.arange(1, len(allp) + 1)
    value_cols = [c for c in allp.columns
                  if c not in (allp.geometry.name, "id", "scene", "scene_ids", "area_m2", "n_parts")]
    # polygons alone in their group (nearly all) are taken as they are, column by column; only the joined
    # groups take a Python step (40 k polygons took 17 s one group at a time, BENCHMARKS.md)
    first = np.array([idx[0] for idx in groups], dtype=np.int64)
    columns = {c: list(allp[c].iloc[first]) for c in value_cols}
    scene_col = list(scenes[first])
    ids = [f"{scenes[i]}:{own_id[i]}" for i in first]
    geometry = list(allp.geometry.values[first])
    joined = [k for k, idx in enumerate(groups) if len(idx) > 1]
    members = np.concatenate([groups[k] for k in joined]) if joined else np.zeros(0, np.int64)
    weights = np.zeros(len(allp))
    weights[members] = true_area_m2(allp.geometry.iloc[members])  # only the joined polygons are weighted
    for k in joined:
        idx = groups[k]
        part = allp.iloc[idx]
        for c in value_cols:
            col = part[c]
            if pd.api.types.is_bool_dtype(col):
                columns[c][k] = bool(col.any())
            elif pd.api.types.is_numeric_dtype(col):
                low = c.lower()
                if low.startswith("max"):
                    columns[c][k] = col.max()
                elif low.startswith("min"):
                    columns[c][k] = col.min()
                else:
                    w = weights[idx]
                    columns[c][k] = (float(np.average(col.to_numpy(dtype="float64"), weights=w)) if w.sum() > 0
                                     else col.mean())
        scene_col[k] = ",".join(sorted(set(part["scene"]), key=order.__getitem__))
        ids[k] = ",".join(f"{scenes[i]}:{own_id[i]}" for i in sorted(idx, key=lambda i: (order[scenes[i]], i)))
        geometry[k] = shapely.union_all(part.geometry.values)
    out = gpd.GeoDataFrame({**columns, "scene": scene_col, "scene_ids": ids, "n_parts": [len(idx) for idx in groups]},
                           geometry=gpd.GeoSeries(geometry, crs=crs), crs=crs)
    out["area_m2"] = true_area_m2(out.geometry)
    out["id"] = np.arange(1, len(out) + 1)
    return out[["id", "scene", "scene_ids", "n_parts", "area_m2", *value_cols, "geometry"]]


def merge_not_observed(layers: Mapping[str, Any]):
    """Dissolve per-scene ``not_observed`` layers into one event layer, one (multi)polygon per reason.

    Conservative where scenes overlap: an area one scene did not observe stays in the layer even
    where another scene saw the ground (the polygons that scene found are in the event layer); the
    layer says where at least one scene's map says nothing. Where the reasons of two scenes overlap,
    each reason keeps its area (a pixel cloudy in one scene and in shadow in another is in both).

    Args:
        layers: ``{scene name: GeoDataFrame with reason}`` in scene order (``None`` or empty: the
            scene had no not-observed area).

    Returns:
        GeoDataFrame with ``reason``, ``scene`` (comma-joined names of the scenes it comes from) and
        ``area_m2`` (true area), in the CRS :func:`merge_layers` chooses for the same scenes.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely

    layers = {k: v for k, v in layers.items() if v is not None and len(v)}
    if not layers:
        return gpd.GeoDataFrame({"reason": [], "scene": [], "area_m2": []}, geometry=[], crs="EPSG:4326")
    crs, layers = _in_common_crs(layers)
    frames = []
    for name, g in layers.items():
        frames.append(gpd.GeoDataFrame({"reason": g["reason"].astype(str).to_numpy(), "scene": name},
                                       geometry=shapely.make_valid(g.geometry.values), crs=crs))
    allp = pd.concat(frames, ignore_index=True)
    order = {name: i for i, name in enumerate(layers)}
    rows = []
    for reason, part in allp.groupby("reason", sort=True):
        rows.append({"reason": reason,
                     "scene": ",".join(sorted(set(part["scene"]), key=order.__getitem__)),
                     "geometry": shapely.union_all(part.geometry.values)})
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    out["area_m2"] = true_area_m2(out.geometry)
    return out[["reason", "scene", "area_m2", "geometry"]]


def union_area_m2(gdf) -> float:
    """True area in m2 of the union of ``gdf``'s geometries (overlaps counted once)."""
    import geopandas as gpd
    import shapely

    if gdf is None or not len(gdf):
        return 0.0
    union = gpd.GeoSeries([shapely.union_all(gdf.geometry.values)], crs=gdf.crs)
    return float(true_area_m2(union)[0])
