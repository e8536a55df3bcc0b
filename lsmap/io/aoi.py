"""Areas of interest: a bounding box (``--bbox W,S,E,N``, any CRS) or a vector file (``--aoi FILE``).

An :class:`AOI` is a geometry with its CRS. :func:`aoi_window` turns it into the pixel window of a
grid that covers it: the AOI is transformed into the grid's CRS (its outline densified, so a
lon/lat box projected to UTM keeps its curved edges), and its bounds are snapped *outward* to
whole pixels of the grid and clipped to the grid. Cropping to that window keeps the grid: every
pixel of a cropped output is the pixel of the full output at the same place (``lsmap stack`` and
``lsmap detect`` read only the window). A vector AOI also masks: pixels whose centres fall outside
its polygons become nodata (:func:`aoi_inside`); a bounding box keeps the whole window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.errors import InputError, LsmapWarning, MissingInputError, OutsideError, user_level

#: CRS of ``--bbox`` when ``--bbox-crs`` is not given.
DEFAULT_BBOX_CRS = "EPSG:4326"
# snapping tolerance in pixels: a bound within this of a pixel edge is on it
_SNAP = 1e-6


@dataclass(frozen=True)
class AOI:
    """An area of interest.

    Attributes:
        geometry: Shapely geometry in ``crs``.
        crs: Its CRS (anything ``rasterio.crs.CRS.from_user_input`` takes).
        source: How the user gave it (for messages): ``"--bbox ..."`` or the vector file.
        mask: Pixels whose centres fall outside ``geometry`` are nodata (vector AOIs); a box only crops.
    """

    geometry: Any
    crs: Any
    source: str
    mask: bool = False

    def to_crs(self, crs) -> AOI:
        """The same AOI with its geometry transformed into ``crs`` (outline densified first)."""
        return AOI(_in_crs(self, crs), crs, self.source, self.mask)

    def to_dict(self) -> dict:
        """JSON-ready form: the source, CRS, bounds, and a digest of the geometry (the first 16 hex digits of the
        SHA-256 of its WKB), so that a polygon changed within the same bounds is told apart."""
        import hashlib

        import shapely

        digest = hashlib.sha256(shapely.to_wkb(self.geometry, byte_order=1)).hexdigest()[:16]
        return {"source": self.source, "crs": str(self.crs), "bounds": list(self.geometry.bounds), "mask": self.mask,
                "geometry_sha256": digest}


def parse_bbox(bbox: str | Sequence[float], crs: str | None = None) -> AOI:
    """``"W,S,E,N"`` (or four numbers) in ``crs`` (lon/lat by default) -> :class:`AOI`.

    Raises:
        InputError: not four numbers, west >= east or south >= north, lon/lat outside the globe,
            or an unknown CRS.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from shapely.geometry import box

    text = bbox if isinstance(bbox, str) else ",".join(str(v) for v in bbox)
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"`bbox` {text}: give four numbers W,S,E,N (e.g. `bbox` 76.13,11.46,76.18,11.50)")
    w, s, e, n = values
    if w >= e or s >= n:
        raise InputError(f"`bbox` {text}: west must be less than east and south less than north (order W,S,E,N)")
    try:
        crs_obj = CRS.from_user_input(crs or DEFAULT_BBOX_CRS)
    except CRSError as err:
        raise InputError(f"`bbox_crs` {crs}: unknown CRS ({err}); give e.g. EPSG:32643") from None
    if crs_obj.is_geographic and (w < -180 or e > 360 or s < -90 or n > 90):
        raise InputError(f"`bbox` {text}: not longitudes/latitudes; give the box in lon/lat (W,S,E,N) or "
                         f"name its CRS with `bbox_crs`")
    return AOI(box(w, s, e, n), crs_obj, f"--bbox {text}", mask=False)


def as_aoi(value: Any, what: str = "`aoi`") -> AOI | None:
    """An area of interest from what a script passes: an :class:`AOI`, a vector file's path (:func:`read_aoi`),
    or a box, ``"W,S,E,N"`` or four numbers in lon/lat (:func:`parse_bbox`); ``None`` stays ``None``.

    Raises:
        InputError: another type, a string that is neither an existing file nor a box, or an AOI without area.
        MissingInputError: a vector file's name that does not exist.
    """
    import shapely

    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if not os.path.exists(text) and isinstance(value, str) and text.count(",") == 3:
            return parse_bbox(text)
        if not os.path.exists(text):
            raise MissingInputError(f"{text}: area of interest file does not exist; give a vector file (GeoJSON, "
                                    f"GeoPackage, ...) or a box \"W,S,E,N\" in lon/lat")
        return read_aoi(text)
    if isinstance(value, (tuple, list)) and len(value) == 4:
        return parse_bbox(value)
    if not isinstance(value, AOI):
        raise InputError(f"{what} must be an area of interest: a vector file's path, a box (W,S,E,N in lon/lat) or "
                         f"an AOI (lsmap.io.aoi.parse_bbox or read_aoi), got {type(value).__name__}")
    if value.geometry is None or shapely.is_empty(value.geometry) or not shapely.area(value.geometry) > 0:
        raise InputError(f"{value.source}: the area of interest has no area; give a polygon or a box")
    return value


def read_aoi(path: str | os.PathLike) -> AOI:
    """Read a vector file (any format GDAL/OGR reads: GeoPackage, GeoJSON, Shapefile, KML...) as an AOI.

    All polygons of :func:`read_polygons` are merged; the file's CRS is honoured. An invalid polygon (a
    self-intersecting outline, a hole drawn twice: common digitising slips that a union does not repair) is
    repaired with ``shapely.make_valid`` and a warning giving GEOS's reason and the areas before and after; it
    was refused as "does not overlap the scene" (found by a review), which a several-scene run took for a scene
    outside the area.

    Raises:
        MissingInputError: no such file.
        InputError: unreadable, no polygon, no area left after the repair, or no CRS in a file whose coordinates
            are not lon/lat.
    """
    import warnings

    import shapely

    geoms, crs = read_polygons(path, "`aoi`", "draw the area of interest as a polygon")
    geom = shapely.union_all(geoms)
    if not geom.is_valid:
        why = shapely.is_valid_reason(geom)
        fixed = _polygonal(shapely.make_valid(geom))
        if fixed.is_empty:
            raise InputError(f"{path}: the area of interest is not a valid polygon ({why}) and has no area once "
                             f"repaired; redraw it")
        warnings.warn(f"{path}: the area of interest was not a valid polygon ({why}); repaired (area "
                      f"{geom.area:.6g} -> {fixed.area:.6g} in its CRS units); check it in a GIS", LsmapWarning,
                      stacklevel=user_level())
        geom = fixed
    return AOI(geom, crs, str(path), mask=True)


def _polygonal(geom):
    """The polygons of ``geom`` (``make_valid`` may return a collection with lines and points)."""
    import shapely

    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def read_polygons(path: str | os.PathLike, what: str, fix: str,
                  where: tuple[str, frozenset[str]] | None = None) -> tuple[np.ndarray, Any]:
    """The polygons of a vector file's first polygon layer, and its CRS.

    A GeoPackage lsmap wrote gives its landslides (QGIS's ``layer_styles`` table is never taken). A
    file without a CRS is taken as lon/lat when its coordinates are lon/lat, as GeoJSON's are.

    Args:
        path: The vector file (any format GDAL/OGR reads).
        what: The option it was given as, for messages (``"`aoi`"``).
        fix: What to do when it holds no polygon, for that message.
        where: ``(field, values)``: only the features whose ``field``, as text, is one of ``values``.

    Returns:
        ``(geoms, crs)``: an object array of the (multi)polygons, and a ``rasterio.crs.CRS``.

    Raises:
        MissingInputError: no such file.
        InputError: unreadable, no polygon, or no CRS in a file whose coordinates are not lon/lat.
    """
    import pyogrio
    from rasterio.crs import CRS

    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: {what} file does not exist")
    try:
        gdf = pyogrio.read_dataframe(path, layer=_polygon_layer(path))
    except Exception as e:  # noqa: BLE001 - pyogrio raises several DataSource errors
        raise InputError(f"{path}: cannot read the {what} vector file ({str(e).splitlines()[0]}); "
                         f"give a GeoPackage, GeoJSON or Shapefile") from None
    if where is not None:
        field, values = where
        if field not in gdf.columns:
            fields = ", ".join(str(c) for c in gdf.columns if c != "geometry") or "none"
            raise InputError(f"{path}: no field '{field}' to select polygons by (its fields: {fields})")
        chosen = gdf[field].astype(str).isin(values)
        if not chosen.any():
            found = ", ".join(sorted(gdf[field].astype(str).unique())[:10])
            raise InputError(f"{path}: no feature has {field} = {', '.join(sorted(values))} (its values: {found})")
        gdf = gdf[chosen]
    geoms = np.array([g for g in gdf.geometry if g is not None and not g.is_empty and g.geom_type.endswith("Polygon")],
                     dtype=object)
    if not len(geoms):
        raise InputError(f"{path}: the {what} file holds no polygon; {fix}")
    if gdf.crs is not None:
        return geoms, CRS.from_user_input(gdf.crs)
    x0, y0, x1, y1 = gdf.total_bounds
    if not (-180 <= x0 and x1 <= 360 and -90 <= y0 and y1 <= 90):
        raise InputError(f"{path}: the {what} file has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:32643)")
    return geoms, CRS.from_epsg(4326)


def _polygon_layer(path: Path) -> str | int:
    """The first layer of ``path`` with polygons (else its first layer): never QGIS's ``layer_styles`` table."""
    import pyogrio

    layers = [(str(n), str(t or "")) for n, t in pyogrio.list_layers(path)]
    poly = [n for n, t in layers if "Polygon" in t and n != "layer_styles"]
    return poly[0] if poly else 0


def aoi_from_options(bbox: str | Sequence[float] | None = None, bbox_crs: str | None = None,
                     aoi: str | os.PathLike | None = None) -> AOI | None:
    """The AOI of the ``--bbox`` / ``--bbox-crs`` / ``--aoi`` options (``None`` when none given).

    Raises:
        InputError: both ``--bbox`` and ``--aoi``, ``--bbox-crs`` without ``--bbox``, or a bad box/file.
    """
    if bbox is not None and aoi is not None:
        raise InputError("`bbox` and `aoi` both give the area of interest; pass one of them")
    if bbox_crs is not None and bbox is None:
        raise InputError("`bbox_crs` names the CRS of `bbox`; pass `bbox` W,S,E,N too")
    if bbox is not None:
        return parse_bbox(bbox, bbox_crs)
    if aoi is not None:
        return read_aoi(aoi)
    return None


def _in_crs(aoi: AOI, crs) -> Any:
    """The AOI geometry in ``crs``, its outline densified (100 points per edge) before transforming."""
    return geoms_to_crs(aoi.geometry, aoi.crs, crs)


def geoms_to_crs(geoms: Any, src: Any, dst: Any) -> Any:
    """Geometries (one, or an array) from CRS ``src`` to ``dst``, densified first: no segment longer than
    1/100 of their joint extent, so long straight edges keep their curvature."""
    from pyproj import Transformer
    from rasterio.crs import CRS
    from shapely import bounds, segmentize, transform

    src, dst = CRS.from_user_input(src), CRS.from_user_input(dst)
    if src == dst:
        return geoms
    b = np.asarray(bounds(geoms)).reshape(-1, 4)
    extent = max(b[:, 2].max() - b[:, 0].min(), b[:, 3].max() - b[:, 1].min())
    geoms = segmentize(geoms, extent / 100.0) if extent > 0 else geoms
    tr = Transformer.from_crs(src.to_wkt(), dst.to_wkt(), always_xy=True)
    return transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


#: An AOI whose bounding box the grid covers less than this share of gets a warning (:func:`aoi_window`).
PARTIAL_AOI_WARN = 0.99


def aoi_window(aoi: AOI, crs, transform, width: int, height: int, where: str = "the scene"):
    """The pixel window of a north-up grid covering ``aoi``, snapped outward to whole pixels.

    Args:
        aoi: Area of interest.
        crs: The grid's CRS.
        transform: The grid's affine transform (north-up).
        width: Grid width in pixels.
        height: Grid height in pixels.
        where: The input the grid belongs to (for messages).

    Returns:
        ``rasterio.windows.Window`` with integer offsets and sizes, inside the grid.

    Raises:
        OutsideError: the AOI does not overlap the grid (the message gives both extents in lon/lat).
        InputError: the AOI is not a valid polygon (one built in code: :func:`read_aoi` repairs those it reads).
    """
    import shapely
    from rasterio.windows import Window

    if not aoi.geometry.is_valid:
        raise InputError(f"{aoi.source}: the area of interest is not a valid polygon "
                         f"({shapely.is_valid_reason(aoi.geometry)}); repair it (shapely.make_valid, or QGIS "
                         f"'Fix geometries')")
    geom = _in_crs(aoi, crs)
    def outside(why: str = "") -> OutsideError:
        return OutsideError(
            f"{aoi.source}: the area of interest ({_lonlat(aoi.geometry.bounds, aoi.crs)}) does not overlap "
            f"{where} ({_lonlat(_grid_bounds(transform, width, height), crs)}){why}; check the coordinates, their "
            f"order (W,S,E,N) and `bbox_crs`, or give the product that covers the area")

    if not np.isfinite(shapely.get_coordinates(geom)).all():  # far outside the grid CRS's zone: a GEOS traceback
        raise outside(": it lies too far away to be projected into the grid's CRS")
    if not geom.is_valid:  # valid where drawn, pinched by the reprojection
        geom = _polygonal(shapely.make_valid(geom))
    x0, y0, x1, y1 = geom.bounds
    inv = ~transform
    cols, rows = zip(*(inv @ (x, y) for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))), strict=True)
    c0 = max(0, math.floor(min(cols) + _SNAP))
    c1 = min(width, math.ceil(max(cols) - _SNAP))
    r0 = max(0, math.floor(min(rows) + _SNAP))
    r1 = min(height, math.ceil(max(rows) - _SNAP))
    if c1 <= c0 or r1 <= r0 or not _touches_grid(geom, transform, width, height):
        raise outside()
    full = (max(cols) - min(cols)) * (max(rows) - min(rows))
    inside = (c1 - c0) * (r1 - r0)
    if full > 0 and inside < PARTIAL_AOI_WARN * full:
        import warnings

        from lsmap.errors import LsmapWarning

        warnings.warn(f"{aoi.source}: {where} covers only {100 * inside / full:.0f} % of the area of interest's "
                      f"bounding box ({_lonlat(aoi.geometry.bounds, aoi.crs)} against "
                      f"{_lonlat(_grid_bounds(transform, width, height), crs)}); the rest needs another product",
                      LsmapWarning, stacklevel=user_level())
    return Window(c0, r0, c1 - c0, r1 - r0)


def aoi_inside(aoi: AOI, crs, transform, shape: tuple[int, int]) -> np.ndarray:
    """Pixels (of a grid window with ``transform``) whose centres fall inside the AOI.

    Shape:
        ``(h, w)`` bool.
    """
    from rasterio.features import geometry_mask

    return geometry_mask([_in_crs(aoi, crs)], out_shape=shape, transform=transform, invert=True)


def _touches_grid(geom, transform, width: int, height: int) -> bool:
    from shapely.geometry import box

    return geom.intersects(box(*_grid_bounds(transform, width, height)))


def _grid_bounds(transform, width: int, height: int) -> tuple[float, float, float, float]:
    xs = [transform.c, transform.c + transform.a * width]
    ys = [transform.f, transform.f + transform.e * height]
    return min(xs), min(ys), max(xs), max(ys)


def _lonlat(bounds, crs) -> str:
    """Bounds as ``lon W..E, lat S..N`` (in the CRS's own units when they cannot be transformed)."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    try:
        w, s, e, n = transform_bounds(CRS.from_user_input(crs), CRS.from_epsg(4326), *bounds, densify_pts=21)
        return f"lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}"
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return f"x {bounds[0]:.1f}..{bounds[2]:.1f}, y {bounds[1]:.1f}..{bounds[3]:.1f} ({crs})"


def crop_raster(path: str | os.PathLike, aoi: AOI, out: str | os.PathLike, *, block: int = 1024) -> tuple[Path, Any]:
    """Copy the window of a raster that covers ``aoi`` to ``out`` (an uncompressed scratch GeoTIFF).

    Band descriptions, tags, nodata and band scales/offsets are kept; a vector AOI sets the pixels outside it to nodata
    (-9999 when the raster declares none). Read and written ``block`` rows at a time.

    Returns:
        ``(out, window)``: the cropped file and its ``rasterio.windows.Window`` in ``path``'s grid.

    Raises:
        InputError: the AOI does not overlap the raster; an unreadable raster.
    """
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from lsmap.io.rasters import OUTPUT_NODATA, geotiff_profile, open_raster, read_window

    out = Path(out)
    with open_raster(path, "scene") as src:
        win = aoi_window(aoi, src.crs, src.transform, src.width, src.height, where=f"the scene ({path})")
        inside_aoi = aoi.to_crs(src.crs) if aoi.mask else None
        nodata = src.nodata
        if nodata is None and inside_aoi is not None:
            nodata = OUTPUT_NODATA if np.dtype(src.dtypes[0]).kind == "f" else 0
        profile = geotiff_profile(crs=src.crs, transform=window_transform(win, src.transform), width=win.width,
                                  height=win.height, count=src.count, dtype=src.dtypes[0], nodata=nodata,
                                  creation_options={"compress": "none", "predictor": None})
        profile.pop("predictor")
        with rasterio.open(out, "w", **profile) as dst:
            for i, d in enumerate(src.descriptions, start=1):
                if d:
                    dst.set_band_description(i, d)
            dst.update_tags(**src.tags())
            dst.scales, dst.offsets = src.scales, src.offsets  # a uint16 stack's codes stay decodable
            for r in range(0, int(win.height), block):
                h = min(block, int(win.height) - r)
                part = Window(win.col_off, win.row_off + r, win.width, h)
                arr = read_window(src, None, part)
                if inside_aoi is not None:
                    keep = aoi_inside(inside_aoi, src.crs, window_transform(part, src.transform), (h, int(win.width)))
                    arr[:, ~keep] = nodata
                dst.write(arr, window=Window(0, r, win.width, h))
    return out, win
