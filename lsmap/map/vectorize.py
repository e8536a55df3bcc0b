"""Probability raster -> landslide polygons with attributes, block by block.

The probability raster is read in square blocks; in each block the pixels above the threshold
are labelled into 4-connected components (``scipy.ndimage.label``), polygonised with
``rasterio.features.shapes`` in *pixel* coordinates (integers, so polygons from neighbouring
blocks share exactly equal edges), and summarised (pixel count, sum and maximum of the
probability, sum of the uncertainty). Components that touch across a block border are joined as
the connected components of the pairs of parts that touch across a border (:mod:`lsmap.core.graph`), and only those are dissolved (``shapely.union_all``); so a
landslide split by block borders comes out as one polygon, and no whole-scene array is ever held.
Polygons are then mapped to the scene's CRS.

Areas are true square metres, computed in the scene's CRS: planar areas times the squared unit
factor for projected CRSs, geodesic areas on the CRS's ellipsoid
(``pyproj.Geod.geometry_area_perimeter``) for geographic ones. ``simplify`` tolerances are metres,
converted to degrees (1 degree = 111 320 m) for geographic CRSs. GeoJSON files are written in
EPSG:4326 (RFC 7946), the other formats in the scene's CRS (:func:`write_layer`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.graph import components, groups
from lsmap.core.windows import block_grid
from lsmap.errors import InputError, OutputExistsError
from lsmap.io.qgis_style import write_layer_style
from lsmap.io.rasters import GDAL_CACHE_MB, atomic_output

#: Output formats by file extension: (pyogrio driver, sidecar extensions written with it).
VECTOR_DRIVERS = {
    ".gpkg": ("GPKG", ()),
    ".geojson": ("GeoJSON", ()),
    ".json": ("GeoJSON", ()),
    ".shp": ("ESRI Shapefile", (".shx", ".dbf", ".prj", ".cpg")),
}
#: Metres per degree used to convert simplification tolerances for geographic CRSs.
METRES_PER_DEGREE = 111_320.0
COLUMNS = ("id", "area_m2", "mean_prob", "max_prob")


def _pyproj_crs(crs):
    import pyproj

    return pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def areas_m2(geoms: Sequence[Any], crs: Any) -> np.ndarray:
    """Area of each polygon in square metres, for projected and geographic CRSs alike.

    Args:
        geoms: Shapely polygons in ``crs`` coordinates (x = easting/longitude).
        crs: Any CRS pyproj understands (rasterio CRS, EPSG code, WKT).
    """
    import shapely

    geoms = list(geoms)
    if not geoms:
        return np.zeros(0)
    pcrs = _pyproj_crs(crs)
    if pcrs.is_geographic:
        geod = pcrs.get_geod()
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms], np.float64)
    factor = pcrs.axis_info[0].unit_conversion_factor
    return shapely.area(np.asarray(geoms, dtype=object)) * factor**2


def metres_to_crs_units(metres: float, crs: Any) -> float:
    """A length in metres in ``crs`` units (degrees via :data:`METRES_PER_DEGREE` when geographic)."""
    pcrs = _pyproj_crs(crs)
    if pcrs.is_geographic:
        return metres / METRES_PER_DEGREE
    return metres / pcrs.axis_info[0].unit_conversion_factor


def fill_small_holes(geoms: Sequence[Any], crs: Any, max_area_m2: float) -> list:
    """Remove interior rings smaller than ``max_area_m2`` from each polygon."""
    from shapely.geometry import Polygon

    if max_area_m2 <= 0:
        return list(geoms)
    out = []
    for g in geoms:
        if max_area_m2 <= 0 or not g.interiors:
            out.append(g)
            continue
        holes = [Polygon(r) for r in g.interiors]
        keep = [h.exterior for h, a in zip(holes, areas_m2(holes, crs), strict=False) if a >= max_area_m2]
        out.append(Polygon(g.exterior, keep))
    return out


def label_block(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """4-connected components of ``prob > threshold`` (compared in float64, whatever ``prob``'s dtype).

    Shape:
        ``prob``: ``(h, w)``; returns ``(h, w)`` int32 labels (0 = none) and the component count.
    """
    from scipy import ndimage

    labels, n = ndimage.label(prob > np.float64(threshold))
    return labels.astype(np.int32, copy=False), int(n)


def _label_polygons(labels: np.ndarray, counts: np.ndarray, col_off: int, row_off: int,
                    where: np.ndarray | None = None) -> np.ndarray:
    """The polygon of each component ``1..n`` of a label image, in pixel coordinates of the scene.

    ``rasterio.features.shapes`` traces the components (GDAL's polygonizer, exact integer vertices);
    their polygons are built by shapely's vectorised constructors from all the rings' coordinates at
    once rather than by one ``shape()`` call per polygon (two thirds of the time on a fragmented
    mask). Components that fill their bounding box (single pixels, dominoes, small squares: most of
    a speckled mask's) are not traced: their rectangle is written directly, as GDAL traces it (from
    the top-left corner down, then right, up and back). Same coordinates, rings and ring order
    either way, so the same polygons (tested).

    Args:
        labels: ``(h, w)`` labels ``1..n`` (0 = none), from :func:`label_block`.
        counts: ``(n,)`` pixels of each label.
        where: The flat indices of the labelled pixels, when the caller has them (``np.flatnonzero(labels)``).

    Returns:
        ``(n,)`` object array: element ``i`` is the polygon of label ``i + 1``.
    """
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    out = np.empty(len(counts), dtype=object)
    n = len(counts)
    lab = labels.ravel()
    where = np.flatnonzero(lab) if where is None else where
    ids = lab[where].astype(np.int64) - 1
    rows, cols = np.divmod(where, labels.shape[1])
    r0 = np.full(n, labels.shape[0], np.int64)
    c0 = np.full(n, labels.shape[1], np.int64)
    r1 = np.zeros(n, np.int64)
    c1 = np.zeros(n, np.int64)
    np.minimum.at(r0, ids, rows)
    np.minimum.at(c0, ids, cols)
    np.maximum.at(r1, ids, rows + 1)
    np.maximum.at(c1, ids, cols + 1)
    rect = (r1 - r0) * (c1 - c0) == counts  # the component fills its bounding box
    if rect.any():
        k = np.flatnonzero(rect)
        x0, x1 = (c0[k] + col_off).astype(np.float64), (c1[k] + col_off).astype(np.float64)
        y0, y1 = (r0[k] + row_off).astype(np.float64), (r1[k] + row_off).astype(np.float64)
        ring = np.stack([np.stack([x0, x0, x1, x1, x0], 1), np.stack([y0, y1, y1, y0, y0], 1)], axis=-1)
        out[k] = shapely.polygons(shapely.linearrings(ring))  # (m, 5, 2): GDAL's corner order
    if rect.all():
        return out
    traced = np.concatenate([[False], ~rect])[labels]  # the pixels of the other components
    coords: list = []
    ring_sizes: list[int] = []
    ring_owner: list[int] = []
    values: list[float] = []
    for k, (g, v) in enumerate(shapes(labels, mask=traced, connectivity=4,
                                      transform=Affine.translation(col_off, row_off))):
        values.append(v)
        for ring in g["coordinates"]:
            coords.extend(ring)
            ring_sizes.append(len(ring))
            ring_owner.append(k)
    xy = np.asarray(coords, np.float64).reshape(-1, 2)
    rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes))
    out[np.asarray(values, np.int64) - 1] = shapely.polygons(rings, indices=np.asarray(ring_owner, np.int64))
    return out


def vectorize(prob: str | os.PathLike, *, threshold: float = 0.5, uncertainty: str | os.PathLike | None = None,
              block: int = 1024, min_area: float = 0.0, simplify: float = 0.0, fill_holes: float = 0.0,
              workers: int | None = None):
    """Polygons of the pixels whose probability exceeds ``threshold``, one feature per landslide.

    Blocks are read in this thread and labelled, summarised and traced by ``workers`` threads
    (:func:`block_parts`: numpy, scipy and GDAL work), then joined in block order (:class:`_Parts`), so the
    output does not depend on the number of workers; at most ``workers + 1`` blocks are in flight.

    Args:
        prob: Probability raster (float; values <= ``threshold`` and nodata are background).
        threshold: Probability above which a pixel is a landslide.
        uncertainty: Optional uncertainty raster on the same grid: adds ``mean_unc``.
        block: Block size in pixels (memory is about ``block**2`` pixels per worker, not the scene).
        min_area: Drop polygons smaller than this (m2, after hole filling).
        simplify: Simplification tolerance in metres (0: none; topology preserved).
        fill_holes: Fill holes smaller than this (m2).
        workers: Threads tracing blocks (default: the CPU cores this process may use, at most
            :data:`MAX_WORKERS`).

    Returns:
        GeoDataFrame in the raster's CRS with columns ``id``, ``area_m2``, ``mean_prob``,
        ``max_prob`` (and ``mean_unc``), sorted top-left to bottom-right.

    Raises:
        InputError: unreadable raster, the uncertainty raster is on another grid, or a bad ``block``
            or ``workers``.
    """
    import rasterio

    from lsmap.map.stream import ordered_map

    if block < 2:
        raise InputError(f"vectorize block must be at least 2 pixels (got {block})")
    if workers is not None and workers < 1:
        raise InputError(f"vectorize workers must be positive (got {workers})")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = workers or max(1, min(cores, MAX_WORKERS))
    parts = _Parts(with_uncertainty=uncertainty is not None)
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), rasterio.open(prob) as src, \
                contextlib.ExitStack() as es:
            usrc = es.enter_context(rasterio.open(uncertainty)) if uncertainty is not None else None
            if usrc is not None and (usrc.shape != src.shape or usrc.transform != src.transform):
                raise InputError(f"{uncertainty}: uncertainty raster is not on the grid of {prob}")
            crs, transform = src.crs, src.transform

            def blocks():
                for win in block_grid(src.height, src.width, block):
                    p = src.read(1, window=win)  # as stored (float32): the sums are taken in float64
                    yield win, p, usrc.read(1, window=win) if usrc is not None else None

            results = ordered_map(lambda item: block_parts(*item, threshold), blocks(), workers)
            es.callback(results.close)
            for _, found in results:
                parts.add(found)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{prob}: cannot read probability raster ({e})") from None
    return parts.polygons(crs, transform, min_area=min_area, simplify=simplify, fill_holes=fill_holes)


#: Most threads tracing blocks in :func:`vectorize`.
MAX_WORKERS = 4


@dataclass
class BlockParts:
    """The connected components of one block (the parts of the landslides in it), in label order.

    Attributes:
        win: The block's window.
        count: ``(n,)`` pixels of each part.
        psum: ``(n,)`` float64 sums of the probability.
        pmax: ``(n,)`` maxima of the probability.
        usum: ``(n,)`` float64 sums of the uncertainty, or ``None``.
        geoms: ``(n,)`` object array of the parts' polygons in scene pixel coordinates.
        edges: The labels (``1..n``, 0 = none) along the block's top row, bottom row, left column and
            right column.
    """

    win: Any
    count: np.ndarray
    psum: np.ndarray
    pmax: np.ndarray
    usum: np.ndarray | None
    geoms: np.ndarray
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def block_parts(win, p: np.ndarray, u: np.ndarray | None, threshold: float) -> BlockParts:
    """Label one block's landslide pixels into parts, summarise and trace them (no state: any thread).

    Shape:
        ``p``, ``u``: ``(h, w)`` probability and uncertainty of the block ``win``.
    """
    labels, n = label_block(p, threshold)
    edges = (labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())
    if not n:
        empty = np.zeros(0)
        return BlockParts(win, np.zeros(0, np.int64), empty, empty, empty if u is not None else None,
                          np.empty(0, dtype=object), edges)
    # over the labelled pixels only (a few % of a block), in raster order: the same float64 sums
    on = np.flatnonzero(labels)
    flat = labels.ravel()[on] - 1
    pv = p.ravel()[on].astype(np.float64)
    counts = np.bincount(flat, minlength=n)
    pmax = np.full(n, -np.inf)
    np.maximum.at(pmax, flat, pv)
    usum = np.bincount(flat, weights=u.ravel()[on].astype(np.float64), minlength=n) if u is not None else None
    return BlockParts(win, counts, np.bincount(flat, weights=pv, minlength=n), pmax, usum,
                      _label_polygons(labels, counts, win.col_off, win.row_off, on), edges)


class _Parts:
    """The connected components of every block so far (the parts of the landslides), and which
    parts touch across block borders.

    Each part has a global number (in block order, then label order), its pixel geometry, its pixel
    count, probability sum and maximum, and uncertainty sum.
    """

    def __init__(self, with_uncertainty: bool) -> None:
        self.geoms: list[np.ndarray] = []  # per block: its parts' polygons (object arrays, label order)
        self.n_parts = 0
        self.count: list[np.ndarray] = []
        self.psum: list[np.ndarray] = []
        self.pmax: list[np.ndarray] = []
        self.usum: list[np.ndarray] | None = [] if with_uncertainty else None
        self.pairs: list[np.ndarray] = []
        self.bottom: np.ndarray | None = None  # part numbers (+1) of the last row of the block row above
        self.right: np.ndarray | None = None  # part numbers (+1) of the last column of the block on the left

    def add(self, found: BlockParts) -> None:
        """Number a block's parts after those of the blocks before it and join them to their neighbours."""
        n, win, base = len(found.count), found.win, self.n_parts
        if n:
            self.count.append(found.count)
            self.psum.append(found.psum)
            self.pmax.append(found.pmax)
            if self.usum is not None:
                self.usum.append(found.usum)
            self.geoms.append(found.geoms)
            self.n_parts += n

        def ids(edge: np.ndarray) -> np.ndarray:  # part number + 1 along a block edge (0: none)
            return np.where(edge > 0, edge.astype(np.int64) + base, 0)

        top, bottom, left, right = found.edges
        c0, c1 = win.col_off, win.col_off + win.width
        if self.bottom is None:
            self.bottom = np.zeros(c1, np.int64)
        elif len(self.bottom) < c1:
            self.bottom = np.concatenate([self.bottom, np.zeros(c1 - len(self.bottom), np.int64)])
        if c0 > 0:
            self._join(self.right, ids(left))
        if win.row_off > 0:
            self._join(self.bottom[c0:c1], ids(top))
        self.right = ids(right)
        self.bottom[c0:c1] = ids(bottom)

    def _join(self, a: np.ndarray, b: np.ndarray) -> None:
        """Record that the parts on either side of a block border touch (4-connectivity)."""
        both = (a > 0) & (b > 0)
        if both.any():
            self.pairs.append(np.unique(np.stack([a[both], b[both]], 1), axis=0) - 1)

    def polygons(self, crs, transform, *, min_area: float, simplify: float, fill_holes: float):
        """One polygon per landslide (touching parts dissolved), in the scene CRS, with attributes."""
        import geopandas as gpd
        import shapely

        columns = list(COLUMNS) + (["mean_unc"] if self.usum is not None else [])
        if not self.n_parts:
            return gpd.GeoDataFrame({c: [] for c in columns}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), np.int64)
        inv = components(self.n_parts, pairs[:, 0], pairs[:, 1])
        k = int(inv.max()) + 1
        g_count = np.bincount(inv, weights=np.concatenate(self.count), minlength=k)
        g_psum = np.bincount(inv, weights=np.concatenate(self.psum), minlength=k)
        g_pmax = np.full(k, -np.inf)
        np.maximum.at(g_pmax, inv, np.concatenate(self.pmax))
        geoms = np.concatenate(self.geoms)
        # parts alone in their landslide (nearly all of them) are taken as they are, without a Python
        # step per polygon; only the parts that touch across block borders are dissolved
        out_geoms = np.empty(k, dtype=object)
        alone = np.bincount(inv, minlength=k)[inv] == 1
        out_geoms[inv[alone]] = geoms[alone]
        if not alone.all():
            joined = np.flatnonzero(~alone)
            for m in groups(inv[joined]):
                members = joined[m]
                out_geoms[inv[members[0]]] = shapely.union_all(geoms[members].tolist())
        # raster order (top row first, then left column), whatever the block size
        bounds = shapely.bounds(out_geoms)
        order = np.lexsort((bounds[:, 2], bounds[:, 3], bounds[:, 0], bounds[:, 1]))
        out_geoms = out_geoms[order]
        g_count, g_psum, g_pmax = g_count[order], g_psum[order], g_pmax[order]
        data = {"mean_prob": g_psum / g_count, "max_prob": g_pmax}
        if self.usum is not None:
            data["mean_unc"] = np.bincount(inv, weights=np.concatenate(self.usum), minlength=k)[order] / g_count
        a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
        out_geoms = shapely.transform(
            out_geoms,
            lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]),
        )
        geom_list = fill_small_holes(list(out_geoms), crs, fill_holes)
        area = areas_m2(geom_list, crs)
        keep = area >= min_area
        geom_arr = np.asarray(geom_list, dtype=object)[keep]
        if simplify > 0 and len(geom_arr):
            geom_arr = shapely.simplify(geom_arr, metres_to_crs_units(simplify, crs), preserve_topology=True)
            area_kept = areas_m2(list(geom_arr), crs)
        else:
            area_kept = area[keep]
        table = {"id": np.arange(1, int(keep.sum()) + 1), "area_m2": area_kept}
        table.update({name: v[keep] for name, v in data.items()})
        return gpd.GeoDataFrame({c: table[c] for c in columns}, geometry=gpd.GeoSeries(list(geom_arr), crs=crs),
                                crs=crs)


def vector_driver(path: str | os.PathLike) -> tuple[str, tuple[str, ...]]:
    """The pyogrio driver (and sidecar extensions) for an output path, by extension.

    Raises:
        InputError: unsupported extension; the message lists the supported ones.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_DRIVERS:
        raise InputError(f"{path}: unknown vector format '{suffix}'; use one of: {', '.join(VECTOR_DRIVERS)}")
    return VECTOR_DRIVERS[suffix]


def check_vector_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output (and, for shapefiles, existing sidecars) unless ``overwrite``."""
    path = Path(path)
    _, sidecars = vector_driver(path)
    if not overwrite:
        for p in [path, *(path.with_suffix(s) for s in sidecars)]:
            if p.exists():
                raise OutputExistsError(p)
    return path


def write_layer(gdf, tmp: str | os.PathLike, path: str | os.PathLike, *, geometry_type: str | None = "Polygon") -> None:
    """Write ``gdf`` at ``tmp``, the temporary name of the output ``path`` (same extension).

    The one writer of lsmap's polygon layers: the format follows the extension; shapefile sidecars
    are moved beside ``path`` (the caller's rename of ``tmp`` completes the output); a GeoPackage
    with ``mean_prob`` gets its QGIS style (:func:`lsmap.io.qgis_style.write_layer_style`).
    GeoJSON is written as RFC 7946 asks: WGS 84 longitude/latitude (EPSG:4326), no ``crs``
    member; the attributes (``area_m2`` included, computed in the scene's CRS) are unchanged.
    GeoPackages and shapefiles keep the layer's CRS.
    """
    tmp, path = Path(tmp), Path(path)
    driver, sidecars = vector_driver(path)
    options = None
    if driver == "GeoJSON":
        if gdf.crs is not None:
            gdf = gdf.to_crs("EPSG:4326")
        options = {"RFC7946": "YES"}
    gdf.to_file(tmp, driver=driver, engine="pyogrio", geometry_type=geometry_type, layer_options=options)
    if driver == "GPKG" and "mean_prob" in gdf.columns:
        write_layer_style(tmp)
    for s in sidecars:  # sidecars go first; the main file's rename completes the output
        if tmp.with_suffix(s).exists():
            shutil.move(tmp.with_suffix(s), path.with_suffix(s))


def write_vector(gdf, path: str | os.PathLike, overwrite: bool = False, *,
                 geometry_type: str | None = "Polygon") -> Path:
    """Write ``gdf`` atomically (:func:`write_layer`); the format follows the extension (GPKG, GeoJSON, SHP).

    GeoJSON is written in EPSG:4326 (RFC 7946), the others in the layer's CRS (:func:`write_layer`).

    Args:
        gdf: The layer.
        path: Output path.
        overwrite: Replace an existing output.
        geometry_type: Layer geometry type declared to the driver; ``None``: taken from the
            geometries (Polygons and MultiPolygons mixed are promoted to MultiPolygon).

    Raises:
        OutputExistsError: ``path`` (or a shapefile sidecar) exists and not ``overwrite``.
        InputError: unsupported extension.
    """

    path = check_vector_output(path, overwrite)
    with atomic_output(path, overwrite) as tmp:
        write_layer(gdf, tmp, path, geometry_type=geometry_type)
    return path
