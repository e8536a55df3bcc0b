"""Probability raster -> landslide polygons with attributes, block by block.

The landslides are found block by block as connected components in pixel coordinates
(:mod:`lsmap.map.components`: labelled, summarised and traced on worker threads, parts that touch
across block borders dissolved, no whole-scene array ever held); here they are mapped to the
scene's CRS, measured, filtered and written. :func:`vectorize` reads the blocks from a probability
raster; detection feeds the same :class:`lsmap.map.components.BlockStream` from its blender instead,
while the models still run.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.ground import distorted, ground_metres_per_unit, pyproj_crs, to_lonlat
from lsmap.core.windows import block_grid
from lsmap.errors import InputError, LsmapWarning, OutputExistsError, user_level
from lsmap.io.qgis_style import write_layer_style
from lsmap.io.rasters import GDAL_CACHE_MB, atomic_output
from lsmap.map.components import BlockStream, Landslides, default_workers

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


def areas_m2(geoms: Sequence[Any], crs: Any) -> np.ndarray:
    """Area of each polygon in square metres, for projected and geographic CRSs alike.

    Geographic CRSs: geodesic areas on the CRS's ellipsoid. Projected CRSs: planar areas in the CRS's unit,
    unless its area scale departs from 1 by more than :data:`lsmap.core.ground.MAP_SCALE_TOLERANCE` over the
    polygons' extent (Web Mercator away from the equator): then geodesic areas too, so they are ground m2.

    Args:
        geoms: Shapely polygons in ``crs`` coordinates (x = easting/longitude).
        crs: Any CRS pyproj understands (rasterio CRS, EPSG code, WKT).
    """
    import shapely

    geoms = list(geoms)
    if not geoms:
        return np.zeros(0)
    pcrs = pyproj_crs(crs)
    if pcrs.is_geographic:
        # pyproj sums signed ring areas: exteriors counter-clockwise and holes clockwise, or the parts of a
        # MultiPolygon wound both ways cancel (found by a review: a not-observed layer's traced and dissolved
        # parts gave 27,381 m2 for 58,186)
        geod = pcrs.get_geod()
        oriented = shapely.orient_polygons(np.asarray(geoms, dtype=object), exterior_cw=False)
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in oriented], np.float64)
    arr = np.asarray(geoms, dtype=object)
    if distorted(pcrs, tuple(shapely.total_bounds(arr))):  # map m2 are not ground m2 here (e.g. EPSG:3857)
        lonlat, geodetic = to_lonlat(arr, pcrs)
        return areas_m2(list(lonlat), geodetic)
    factor = pcrs.axis_info[0].unit_conversion_factor
    return shapely.area(arr) * factor**2


def metres_to_crs_units(metres: float, crs: Any, bounds: tuple[float, float, float, float] | None = None) -> float:
    """A length in metres in ``crs`` units (degrees via :data:`METRES_PER_DEGREE` when geographic); with the
    ``bounds`` of the data, ground metres where a projected CRS's map metres are not
    (:func:`lsmap.core.ground.ground_metres_per_unit`: Web Mercator away from the equator)."""
    pcrs = pyproj_crs(crs)
    if pcrs.is_geographic:
        return metres / METRES_PER_DEGREE
    if bounds is not None:
        return metres / ground_metres_per_unit(pcrs, bounds)
    return metres / pcrs.axis_info[0].unit_conversion_factor


def fill_small_holes(geoms: Sequence[Any], crs: Any, max_area_m2: float) -> list:
    """Remove interior rings smaller than ``max_area_m2`` from each polygon.

    Vectorised over the polygons that have holes (their rings taken apart, the holes measured, the rings
    kept put back together), without a Python step per polygon: 153 k polygons of a fragmented mask took
    1.06 s one by one (BENCHMARKS.md). Polygons without holes are returned as they are.
    """
    import shapely

    out = np.empty(len(geoms), dtype=object)
    out[:] = list(geoms)
    if max_area_m2 <= 0:
        return list(out)
    holed = np.flatnonzero(shapely.get_num_interior_rings(out) > 0)
    if len(holed):
        rings, owner = shapely.get_rings(out[holed], return_index=True)  # each exterior, then its holes
        keep = np.ones(len(rings), bool)
        inner = np.flatnonzero(np.r_[False, owner[1:] == owner[:-1]])
        keep[inner] = areas_m2(shapely.polygons(rings[inner]), crs) >= max_area_m2
        out[holed] = shapely.polygons(rings[keep], indices=owner[keep])
    return list(out)


#: Holes above which a polygon is left unsimplified (:func:`simplify_polygons`): GEOS's topology-preserving
#: simplifier grows faster than linearly with the holes beside a long exterior (2.6 s for 20,000, 9.7 s for
#: 40,000, 98 s for 154,192 holes and 1.06 M vertices; not done in 5 min for a dense scene's 372,580:
#: BENCHMARKS.md).
SIMPLIFY_MAX_HOLES = 20_000


def simplify_polygons(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Topology-preserving simplification (``tolerance`` in CRS units) of each polygon, on threads; polygons
    with more than :data:`SIMPLIFY_MAX_HOLES` holes are left as they are, with one :class:`LsmapWarning`
    saying how many and what to do (filling small holes first bounds the simplifier's work)."""
    import warnings

    import shapely

    holes = shapely.get_num_interior_rings(geoms)
    big = holes > SIMPLIFY_MAX_HOLES
    out = geoms.copy()
    if (~big).any():
        out[~big] = geos_on_threads(lambda g: shapely.simplify(g, tolerance, preserve_topology=True), geoms[~big])
    if big.any():
        warnings.warn(f"{int(big.sum())} polygon(s) with more than {SIMPLIFY_MAX_HOLES:,} holes (up to "
                      f"{int(holes.max()):,}) left unsimplified: GEOS would take hours on them; fill small holes "
                      "first (--fill-holes, e.g. 500 m2), or check the input (a mask this dense often means "
                      "offset or mis-scaled bands)", LsmapWarning, stacklevel=user_level())
    return out


#: Polygons per extra thread of :func:`geos_on_threads` (fewer polygons in all: run on the calling thread).
GEOS_CHUNK = 4096


def geos_on_threads(fn: Callable[[np.ndarray], np.ndarray], geoms: np.ndarray, workers: int | None = None) -> np.ndarray:
    """``fn`` (a vectorised shapely function, one output per geometry) over ``geoms`` in pieces on
    ``workers`` threads (default :func:`lsmap.map.components.default_workers`): GEOS releases the GIL, so
    e.g. simplifying 153 k polygons took 0.67-0.72 s on 2 threads against 1.20-1.31 s on one (BENCHMARKS.md).
    Same output as ``fn(geoms)``, in order."""
    from concurrent.futures import ThreadPoolExecutor

    workers = min(workers or default_workers(), -(-len(geoms) // GEOS_CHUNK))
    if workers <= 1:
        return fn(geoms)
    with ThreadPoolExecutor(workers, thread_name_prefix="lsmap-geos") as pool:
        return np.concatenate(list(pool.map(fn, np.array_split(geoms, 4 * workers))))


def vectorize(prob: str | os.PathLike, *, threshold: float = 0.5, uncertainty: str | os.PathLike | None = None,
              block: int = 1024, min_area: float = 0.0, simplify: float = 0.0, fill_holes: float = 0.0,
              workers: int | None = None):
    """Polygons of the pixels whose probability exceeds ``threshold``, one feature per landslide.

    Blocks are read in this thread and labelled, summarised and traced by ``workers`` threads
    (:class:`lsmap.map.components.BlockStream`: numpy and scipy work), then joined in block order,
    so the output does not depend on the number of workers; a few blocks are in flight at a time.

    Args:
        prob: Probability raster (float; values <= ``threshold`` and nodata are background).
        threshold: Probability above which a pixel is a landslide.
        uncertainty: Optional uncertainty raster on the same grid: adds ``mean_unc``.
        block: Block size in pixels (memory is about ``block**2`` pixels per worker, not the scene).
        min_area: Drop polygons smaller than this (m2, after hole filling).
        simplify: Simplification tolerance in metres (0: none; topology preserved).
        fill_holes: Fill holes smaller than this (m2).
        workers: Threads tracing blocks (default: the CPU cores this process may use, at most
            :data:`lsmap.map.components.MAX_WORKERS`).

    Returns:
        GeoDataFrame in the raster's CRS with columns ``id``, ``area_m2``, ``mean_prob``,
        ``max_prob`` (and ``mean_unc``), sorted top-left to bottom-right.

    Raises:
        InputError: unreadable raster, the uncertainty raster is on another grid, or a bad ``block``
            or ``workers``.
    """
    import rasterio

    if block < 2:
        raise InputError(f"vectorize block must be at least 2 pixels (got {block})")
    if workers is not None and workers < 1:
        raise InputError(f"vectorize workers must be positive (got {workers})")
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), rasterio.open(prob) as src, \
                contextlib.ExitStack() as es:
            usrc = es.enter_context(rasterio.open(uncertainty)) if uncertainty is not None else None
            if usrc is not None and (usrc.shape != src.shape or usrc.transform != src.transform):
                raise InputError(f"{uncertainty}: uncertainty raster is not on the grid of {prob}")
            crs, transform = src.crs, src.transform
            stream = BlockStream(src.height, src.width, threshold, block=block, with_uncertainty=usrc is not None,
                                 workers=workers, finish_workers=workers)
            es.callback(stream.close)
            for win in block_grid(src.height, src.width, block):
                # as stored (float32): the sums are taken in float64
                stream.add(win.row_off, win.col_off, src.read(1, window=win),
                           usrc.read(1, window=win) if usrc is not None else None)
            for f in (src, usrc):  # their cached blocks go while the landslides are joined
                if f is not None:
                    f.close()
            found = stream.landslides(transform)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{prob}: cannot read probability raster ({e})") from None
    return landslide_table(found, crs, min_area=min_area, simplify=simplify, fill_holes=fill_holes,
                           with_uncertainty=uncertainty is not None)


def not_observed_polygons(path: str | os.PathLike, *, block: int = 1024, workers: int | None = None):
    """The reason raster at ``path`` (:func:`lsmap.data.masks.write_not_observed`) as polygons, one (multi)polygon
    per reason.

    Each reason's pixels are traced as landslides are (:mod:`lsmap.map.components`: 4-connected components block
    by block on ``workers`` threads, rings from numpy, only the components that cross block borders dissolved),
    then gathered into one MultiPolygon (components are disjoint or touch at corners). Dissolving every traced
    polygon of a reason with ``union_all`` took 8.9 of the 10.6 s for a 4096^2 cloud mask with speckle
    (BENCHMARKS.md).

    Returns:
        GeoDataFrame with ``reason`` and ``area_m2``, in the raster's CRS (empty when all is observed).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import geopandas as gpd
    import rasterio
    import shapely

    from lsmap.data.masks import REASONS
    from lsmap.io.rasters import open_raster, read_window
    from lsmap.map.components import BlockGrid, Parts, block_parts

    def trace(win, codes: np.ndarray) -> list:
        return [(int(k), block_parts(win, (codes == k).view(np.uint8), None, 0.5))
                for k in np.flatnonzero(np.bincount(codes.ravel())) if k]

    parts: dict[int, Parts] = {}

    def join(cell, found: list) -> None:  # cells without a reason add nothing: there is nothing of it to join
        for k, bp in found:
            parts.setdefault(k, Parts(with_uncertainty=False)).add(cell, bp)

    workers = workers or default_workers()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), open_raster(path, "not-observed raster") as src, \
            ThreadPoolExecutor(workers, thread_name_prefix="lsmap-trace") as pool:
        crs, transform = src.crs, src.transform
        grid = BlockGrid(src.height, src.width, block)
        waiting: deque = deque()
        for cell in [(i, j) for i in range(len(grid.rows) - 1) for j in range(len(grid.cols) - 1)]:
            win = grid.window(cell)  # read here (a dataset is not shared by threads), traced on the pool
            waiting.append((cell, pool.submit(trace, win, read_window(src, 1, win))))
            while len(waiting) > 2 * workers:
                join(waiting[0][0], waiting.popleft()[1].result())
        while waiting:
            join(waiting[0][0], waiting.popleft()[1].result())
    rows = []
    for k in sorted(parts):
        geoms = parts[k].landslides(transform).geoms
        rows.append((REASONS.get(k, "other"), geoms[0] if len(geoms) == 1 else shapely.multipolygons(list(geoms))))
    gdf = gpd.GeoDataFrame({"reason": [r for r, _ in rows]}, geometry=[g for _, g in rows], crs=crs)
    gdf["area_m2"] = areas_m2(list(gdf.geometry), crs) if len(gdf) else np.zeros(0)
    return gdf


def landslide_table(found: Landslides, crs, *, min_area: float = 0.0, simplify: float = 0.0,
                    fill_holes: float = 0.0, with_uncertainty: bool = False):
    """The landslides as a GeoDataFrame in the scene's CRS, with areas and attributes.

    Args:
        found: The landslides in ``crs`` coordinates, from :meth:`lsmap.map.components.BlockStream.landslides`
            with the raster's transform.
        crs: The raster's CRS.
        min_area: Drop polygons smaller than this (m2, after hole filling).
        simplify: Simplification tolerance in metres (0: none; topology preserved).
        fill_holes: Fill holes smaller than this (m2).
        with_uncertainty: Add ``mean_unc`` (``found`` has uncertainty sums).
    """
    import geopandas as gpd

    columns = list(COLUMNS) + (["mean_unc"] if with_uncertainty else [])
    if not len(found.geoms):
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    data = {"mean_prob": found.psum / found.count, "max_prob": found.pmax}
    if with_uncertainty:
        data["mean_unc"] = found.usum / found.count
    geom_list = fill_small_holes(list(found.geoms), crs, fill_holes)
    area = areas_m2(geom_list, crs)
    keep = area >= min_area
    geom_arr = np.asarray(geom_list, dtype=object)[keep]
    if simplify > 0 and len(geom_arr):
        import shapely

        tolerance = metres_to_crs_units(simplify, crs, tuple(shapely.total_bounds(geom_arr)))
        geom_arr = simplify_polygons(geom_arr, tolerance)
        area_kept = areas_m2(list(geom_arr), crs)
    else:
        area_kept = area[keep]
    table = {"id": np.arange(1, int(keep.sum()) + 1), "area_m2": area_kept}
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
    """Refuse an existing output (and, for shapefiles, existing sidecars) unless ``overwrite``, and a location
    that cannot be written (:func:`lsmap.io.outputs.check_writable`: a parent that is a file, a read-only
    folder), before any work."""
    from lsmap.io.outputs import check_writable, output_path

    path = output_path(path)
    _, sidecars = vector_driver(path)
    if not overwrite:
        for p in [path, *(path.with_suffix(s) for s in sidecars)]:
            if p.exists():
                raise OutputExistsError(p)
    check_writable(path)
    return path


#: Shapefile field names of lsmap's columns longer than the format's 10 characters (others are cut to 10).
SHAPEFILE_NAMES = {"pre_not_observed": "pre_no_obs", "near_not_observed": "near_no_ob", "landslide_pixels": "ls_pixels"}


def shapefile_columns(columns) -> dict[str, str]:
    """The renaming a shapefile needs: each column of more than 10 characters -> its :data:`SHAPEFILE_NAMES`
    name, else its first 10 characters, made unique."""
    out: dict[str, str] = {}
    taken = {c for c in columns if len(c) <= 10}
    for c in columns:
        if len(c) <= 10 or c == "geometry":
            continue
        name = SHAPEFILE_NAMES.get(c, c[:10])
        k = 1
        while name in taken:
            name, k = f"{c[:8]}_{k}", k + 1
        taken.add(name)
        out[c] = name
    return out


#: The most bytes a shapefile's text field holds.
SHAPEFILE_TEXT_BYTES = 254


def _shapefile_text(gdf, path: Path):
    """``gdf`` with text longer than a shapefile holds cut to :data:`SHAPEFILE_TEXT_BYTES` (whole UTF-8 characters,
    ending in ``...``), said in one warning: GDAL cut them itself, with one raw warning per value (a merged
    event layer's ``scene`` and ``scene_ids`` list every scene and polygon they came from)."""
    import warnings

    from pandas.api.types import is_object_dtype, is_string_dtype

    cut: dict[str, int] = {}
    limit = SHAPEFILE_TEXT_BYTES - 3
    for c in gdf.columns:
        if c == gdf.geometry.name or not (is_object_dtype(gdf[c]) or is_string_dtype(gdf[c])):
            continue
        nbytes = gdf[c].map(lambda v: len(v.encode()) if isinstance(v, str) else 0)
        if (long := nbytes > SHAPEFILE_TEXT_BYTES).any():
            if not cut:
                gdf = gdf.copy()
            gdf.loc[long, c] = gdf.loc[long, c].map(lambda v: v.encode()[:limit].decode(errors="ignore") + "...")
            cut[c] = int(long.sum())
    if cut:
        warnings.warn(f"{path}: a shapefile holds text of at most {SHAPEFILE_TEXT_BYTES} bytes: "
                      f"{', '.join(f'{n} value(s) of {c}' for c, n in cut.items())} cut (ending in ...); write a .gpkg "
                      f"to keep them whole", LsmapWarning, stacklevel=user_level())
    return gdf


def write_layer(gdf, tmp: str | os.PathLike, path: str | os.PathLike, *, geometry_type: str | None = "Polygon",
                metadata: dict[str, str] | None = None) -> None:
    """Write ``gdf`` at ``tmp``, the temporary name of the output ``path`` (same extension).

    The one writer of lsmap's polygon layers: the format follows the extension; shapefile sidecars
    are moved beside ``path`` (the caller's rename of ``tmp`` completes the output); a GeoPackage
    with ``mean_prob`` gets its QGIS style (:func:`lsmap.io.qgis_style.write_layer_style`).
    GeoJSON is written as RFC 7946 asks: WGS 84 longitude/latitude (EPSG:4326), no ``crs``
    member; the attributes (``area_m2`` included, computed in the scene's CRS) are unchanged.
    GeoPackages and shapefiles keep the layer's CRS. ``metadata`` (what produced the layer) becomes a
    GeoPackage's layer metadata; the other formats hold none.
    """
    tmp, path = Path(tmp), Path(path)
    driver, sidecars = vector_driver(path)
    options = None
    if driver == "GeoJSON":
        if gdf.crs is not None:
            gdf = gdf.to_crs("EPSG:4326")
        options = {"RFC7946": "YES"}
    if driver == "ESRI Shapefile" and (short := shapefile_columns([c for c in gdf.columns if c != gdf.geometry.name])):
        import warnings

        # said in lsmap's words, with the names the file holds (a raw pyogrio warning before; an audit)
        warnings.warn(f"{path}: a shapefile holds field names of at most 10 characters: "
                      f"{', '.join(f'{a} -> {b}' for a, b in short.items())}; write a .gpkg to keep the full names",
                      LsmapWarning, stacklevel=user_level())
        gdf = gdf.rename(columns=short)
    if driver == "ESRI Shapefile":
        gdf = _shapefile_text(gdf, path)
    extra = {"layer_metadata": {k: str(v) for k, v in metadata.items()}} if metadata and driver == "GPKG" else {}
    gdf.to_file(tmp, driver=driver, engine="pyogrio", geometry_type=geometry_type, layer_options=options, **extra)
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
