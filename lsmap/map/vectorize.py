"""Probability raster -> landslide polygons with attributes, block by block.

The probability raster is read in square blocks; in each block the pixels above the threshold
are labelled into 4-connected components (``scipy.ndimage.label``), polygonised with
``rasterio.features.shapes`` in *pixel* coordinates (integers, so polygons from neighbouring
blocks share exactly equal edges), and summarised (pixel count, sum and maximum of the
probability, sum of the uncertainty). Components that touch across a block border are joined with
a union-find over the border pixels, and only those are dissolved (``shapely.union_all``); so a
landslide split by block borders comes out as one polygon, and no whole-scene array is ever held.
Polygons are then mapped to the scene's CRS.

Areas are true square metres: planar areas times the squared unit factor for projected CRSs,
geodesic areas on the CRS's ellipsoid (``pyproj.Geod.geometry_area_perimeter``) for geographic
ones. ``simplify`` tolerances are metres, converted to degrees (1 degree = 111 320 m) for
geographic CRSs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.errors import InputError, OutputExistsError

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

    out = []
    for g in geoms:
        if max_area_m2 <= 0 or not g.interiors:
            out.append(g)
            continue
        holes = [Polygon(r) for r in g.interiors]
        keep = [h.exterior for h, a in zip(holes, areas_m2(holes, crs), strict=False) if a >= max_area_m2]
        out.append(Polygon(g.exterior, keep))
    return out


class UnionFind:
    """Disjoint sets of items ``0..n-1`` (path halving; a set's root is its smallest item)."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> None:
        """Add ``n`` new items, each in a set of its own."""
        self.parent.extend(range(len(self.parent), len(self.parent) + n))

    def find(self, i: int) -> int:
        """The root of ``i``'s set."""
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Join the sets of ``a`` and ``b``."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def label_block(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """4-connected components of ``prob > threshold``.

    Shape:
        ``prob``: ``(h, w)``; returns ``(h, w)`` int32 labels (0 = none) and the component count.
    """
    from scipy import ndimage

    labels, n = ndimage.label(prob > threshold)
    return labels.astype(np.int32, copy=False), int(n)


def vectorize(prob: str | os.PathLike, *, threshold: float = 0.5, uncertainty: str | os.PathLike | None = None,
              block: int = 1024, min_area: float = 0.0, simplify: float = 0.0, fill_holes: float = 0.0):
    """Polygons of the pixels whose probability exceeds ``threshold``, one feature per landslide.

    Args:
        prob: Probability raster (float; values <= ``threshold`` and nodata are background).
        threshold: Probability above which a pixel is a landslide.
        uncertainty: Optional uncertainty raster on the same grid: adds ``mean_unc``.
        block: Block size in pixels (memory is about ``block**2`` pixels, not the scene).
        min_area: Drop polygons smaller than this (m2, after hole filling).
        simplify: Simplification tolerance in metres (0: none; topology preserved).
        fill_holes: Fill holes smaller than this (m2).

    Returns:
        GeoDataFrame in the raster's CRS with columns ``id``, ``area_m2``, ``mean_prob``,
        ``max_prob`` (and ``mean_unc``), sorted top-left to bottom-right.

    Raises:
        InputError: unreadable raster, or the uncertainty raster is on another grid.
    """
    import geopandas as gpd
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.features import shapes
    from rasterio.windows import Window as RioWindow
    from shapely.geometry import shape

    from lsmap.io.rasters import GDAL_CACHE_MB

    if block < 2:
        raise InputError(f"vectorize block must be at least 2 pixels (got {block})")
    uf = UnionFind()
    geoms: list = []
    count: list[np.ndarray] = []
    psum: list[np.ndarray] = []
    pmax: list[np.ndarray] = []
    usum: list[np.ndarray] = []
    try:
        env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20)
        with env, rasterio.open(prob) as src:
            usrc = rasterio.open(uncertainty) if uncertainty is not None else None
            try:
                if usrc is not None and (usrc.shape != src.shape or usrc.transform != src.transform):
                    raise InputError(f"{uncertainty}: uncertainty raster is not on the grid of {prob}")
                H, W = src.height, src.width
                crs, transform = src.crs, src.transform
                bottom = np.zeros(W, np.int64)  # global ids (+1) of the last row of the block row above
                for r0 in range(0, H, block):
                    h = min(block, H - r0)
                    right = None
                    for c0 in range(0, W, block):
                        w = min(block, W - c0)
                        win = RioWindow(c0, r0, w, h)
                        p = src.read(1, window=win, out_dtype="float64")
                        labels, n = label_block(p, threshold)
                        base = len(uf.parent)
                        ids = np.where(labels > 0, labels.astype(np.int64) + base, 0)  # global id + 1
                        if n:
                            uf.add(n)
                            flat = labels.ravel()
                            count.append(np.bincount(flat, minlength=n + 1)[1:])
                            psum.append(np.bincount(flat, weights=p.ravel(), minlength=n + 1)[1:])
                            block_max = np.full(n + 1, -np.inf)
                            np.maximum.at(block_max, flat, p.ravel())
                            pmax.append(block_max[1:])
                            if usrc is not None:
                                u = usrc.read(1, window=win, out_dtype="float64")
                                usum.append(np.bincount(flat, weights=u.ravel(), minlength=n + 1)[1:])
                            block_geoms: list = [None] * n
                            for g, v in shapes(labels, mask=labels > 0, connectivity=4,
                                               transform=Affine.translation(c0, r0)):
                                block_geoms[int(v) - 1] = shape(g)
                            geoms.extend(block_geoms)
                        # join components across the left and top block borders (4-connectivity)
                        for a, b in ((right, ids[:, 0]) if c0 > 0 else (None, None),
                                     (bottom[c0:c0 + w], ids[0, :]) if r0 > 0 else (None, None)):
                            if a is None:
                                continue
                            both = (a > 0) & (b > 0)
                            if both.any():
                                for x, y in np.unique(np.stack([a[both], b[both]], 1), axis=0):
                                    uf.union(int(x) - 1, int(y) - 1)
                        right = ids[:, -1].copy()
                        bottom[c0:c0 + w] = ids[-1, :]
            finally:
                if usrc is not None:
                    usrc.close()
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{prob}: cannot read probability raster ({e})") from None

    columns = list(COLUMNS) + (["mean_unc"] if uncertainty is not None else [])
    if not geoms:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    roots = np.array([uf.find(i) for i in range(len(uf.parent))])
    count_a, psum_a, pmax_a = np.concatenate(count), np.concatenate(psum), np.concatenate(pmax)
    usum_a = np.concatenate(usum) if usum else None
    uniq, inv = np.unique(roots, return_inverse=True)
    k = len(uniq)
    g_count = np.bincount(inv, weights=count_a, minlength=k)
    g_psum = np.bincount(inv, weights=psum_a, minlength=k)
    g_pmax = np.full(k, -np.inf)
    np.maximum.at(g_pmax, inv, pmax_a)
    members: list[list[int]] = [[] for _ in range(k)]
    for i, gi in enumerate(inv):
        members[gi].append(i)
    out_geoms = [geoms[m[0]] if len(m) == 1 else shapely.union_all([geoms[i] for i in m]) for m in members]
    # raster order (top row first, then left column), whatever the block size
    bounds = shapely.bounds(np.asarray(out_geoms, dtype=object))
    order = np.lexsort((bounds[:, 2], bounds[:, 3], bounds[:, 0], bounds[:, 1]))
    out_geoms = [out_geoms[i] for i in order]
    g_count, g_psum, g_pmax = g_count[order], g_psum[order], g_pmax[order]
    g_usum = np.bincount(inv, weights=usum_a, minlength=k)[order] if usum_a is not None else None
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    out_geoms = shapely.transform(
        np.asarray(out_geoms, dtype=object),
        lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]),
    )
    data = {"mean_prob": g_psum / g_count, "max_prob": g_pmax}
    if g_usum is not None:
        data["mean_unc"] = g_usum / g_count
    geom_list = fill_small_holes(list(out_geoms), crs, fill_holes)
    area = areas_m2(geom_list, crs)
    keep = area >= min_area
    geom_arr = np.asarray(geom_list, dtype=object)[keep]
    if simplify > 0 and len(geom_arr):
        geom_arr = shapely.simplify(geom_arr, metres_to_crs_units(simplify, crs), preserve_topology=True)
        area_kept = areas_m2(list(geom_arr), crs)
    else:
        area_kept = area[keep]
    n_out = int(keep.sum())
    table = {"id": np.arange(1, n_out + 1), "area_m2": area_kept}
    table.update({name: v[keep] for name, v in data.items()})
    return gpd.GeoDataFrame({c: table[c] for c in columns}, geometry=gpd.GeoSeries(list(geom_arr), crs=crs), crs=crs)


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


def write_vector(gdf, path: str | os.PathLike, overwrite: bool = False, *,
                 geometry_type: str | None = "Polygon") -> Path:
    """Write ``gdf`` atomically; the format follows the extension (GeoPackage, GeoJSON, Shapefile).

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
    from lsmap.io.rasters import atomic_output

    path = check_vector_output(path, overwrite)
    driver, sidecars = vector_driver(path)
    with atomic_output(path, overwrite) as tmp:
        gdf.to_file(tmp, driver=driver, engine="pyogrio", geometry_type=geometry_type)
        for s in sidecars:  # sidecars go first; the main file's rename completes the output
            if tmp.with_suffix(s).exists():
                shutil.move(tmp.with_suffix(s), path.with_suffix(s))
    return path
