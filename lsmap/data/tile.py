"""Cut a scene into Landslide4Sense-style patches, with an index that puts them back on the map.

``tile_scene`` reads a GeoTIFF window by window (never the whole scene) along
:func:`lsmap.core.windows.window_grid` and writes each kept window as ``img/image_<id>.h5`` (and
``mask/mask_<id>.h5`` when a label raster is given), ids ``0, 1, ...`` in row-major window order.
The output folder also holds:

- ``index.gpkg`` (layer ``patches``): per patch its ``id``, the pixel window of the scene it covers
  (``row_off, col_off, height, width``), ``valid_fraction``, and the window's footprint polygon in
  the scene CRS (its four corners mapped: :func:`lsmap.core.windows.footprint`);
- ``tiles.json``: scene path, size, CRS (WKT), transform, patch size, overlap, band profile,
  scaling and fill conventions.

Conventions:

- Values: as stored in the scene (float32), or, with ``raw=True``, divided by the band profile's
  divisors to the L4S scale (:func:`lsmap.io.scene.scale_raw`). Use ``raw`` for raw Sentinel-2
  digital numbers; stacks from ``lsmap stack`` are already scaled.
- Invalid pixels (nodata in any band, see :mod:`lsmap.io.scene`) are written as :data:`FILL` (0.0, "no
  signal" on the L4S scale) in every band, and as 255 (ignored) in the mask. A patch with invalid
  (or padded) pixels also records them in its image file's ``valid`` dataset
  (:func:`lsmap.io.patches.read_observed`), labelled or not: refine's pseudo labels ignore them.
- Patches are north-up and east-right, as the models learn and read images: the windows of a south-up (or
  west-right) scene are turned over (``turned`` in ``tiles.json`` names the axes; the index keeps the scene's pixel
  windows and footprints).
- A scene smaller than ``size`` along an axis gives windows of the scene's size; they are padded at
  the bottom/right to ``size`` x ``size`` with :data:`FILL` (mask 255). ``height``/``width`` in the
  index are the unpadded window, so ``patch[:, :height, :width]`` is the scene window.
- ``valid_fraction`` is over the window's scene pixels (padding excluded); windows with
  ``valid_fraction < min_valid`` are skipped.
- Neighbouring windows share pixels: ``overlap`` of them, and more where the last row and column of
  windows is snapped back inside the scene (every patch is full of scene pixels). The images hold
  them all (context), but each pixel is labelled in one patch only, the one it lies furthest inside
  (:func:`lsmap.core.windows.owned_spans`); elsewhere the mask is 255. So ``lsmap evaluate`` counts
  every pixel once, and patches held out for validation share no label with the training ones. A
  window skipped by ``min_valid`` takes the labels of the pixels it owns with it.
- Labels must lie on the scene's grid: the same CRS, pixel size and pixel corners. They may cover
  more or less than the scene (a label raster of the whole tile for a scene cropped to an AOI);
  pixels they do not cover are 255. By default they must be 0/1 masks (255 and the label raster's
  nodata become 255); ``label_map`` maps other conventions, e.g. Chittagong's ``"0:255,1:0,2:1"``
  (0 unlabelled -> ignored, 1 non-landslide -> 0, 2 landslide -> 1).
- Labels may also be a landslide inventory: a vector file of polygons (GeoPackage, GeoJSON, Shapefile...,
  any CRS; :class:`PolygonLabels`). A pixel is 1 when its centre lies inside a polygon, else 0: the
  inventory is taken as complete over the scene (crop to the mapped area with ``aoi``).
- The scene may also be what ``lsmap stack`` takes (:mod:`lsmap.data.sources`: a Sentinel-2 product,
  a folder of band files, or ``stack_scene`` arguments): it is stacked first, with ``bands``, into a
  scratch folder beside ``out_dir``, and a product's own SCL masks by default, as in detection.
  An ``aoi`` crops a product before any work, and a GeoTIFF before it is cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lsmap.core.bands import BandProfile, get_profile
from lsmap.core.checks import check_int
from lsmap.core.constants import FILL, IGNORE_INDEX
from lsmap.core.labels import map_labels, parse_label_map, parse_label_where
from lsmap.core.windows import Window, footprint, north_up_turn, owned_spans, pad_to, window_grid
from lsmap.data.masks import check_masks, mask_spec, product_mask_layers, write_not_observed
from lsmap.data.sources import input_band_set, scene_inputs, source_name, stack_arguments, stack_source
from lsmap.errors import InputError, LsmapWarning, MissingInputError, user_level
from lsmap.io.aoi import AOI, as_aoi, crop_raster, geoms_to_crs, read_polygons
from lsmap.io.locks import owner_tag
from lsmap.io.outputs import (
    atomic_output,
    check_owned_dir,
    drop_new_parents_on_error,
    is_empty_dir,
    mark_owned,
    output_path,
)
from lsmap.io.patches import META_NAME, read_image, read_mask, write_patch
from lsmap.io.rasters import open_raster, read_window, row_cache_bytes
from lsmap.io.scene import open_scene, read_scene_window, scene_info, terrain_nodata_warning

#: Image value of nodata and padded pixels (L4S scale: 0 is "no signal").
INDEX_NAME = "index.gpkg"
INDEX_LAYER = "patches"
#: What ``lsmap tile`` writes into its folder: ``--overwrite`` replaces a folder holding nothing else.
OUTPUT_PATTERNS = ("img/image_*.h5", "mask/mask_*.h5", INDEX_NAME, META_NAME)


@dataclass(frozen=True)
class TileResult:
    """What :func:`tile_scene` wrote.

    Attributes:
        out_dir: The patch folder.
        n_patches: Patches written.
        n_windows: Windows in the grid.
        n_skipped: Windows skipped for too few valid pixels.
        n_padded: Patches padded because the scene is smaller than one patch.
        size: Patch size in pixels.
        overlap: Overlap of neighbouring windows in pixels.
        labelled: Masks were written.
    """

    out_dir: Path
    n_patches: int
    n_windows: int
    n_skipped: int
    n_padded: int
    size: int
    overlap: int
    labelled: bool

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


#: Largest misalignment of a label raster's pixel corners with the scene's, in pixels.
GRID_TOLERANCE_PX = 1e-6
#: Label files read as a landslide inventory (polygons), by extension; any other is a label raster.
VECTOR_LABELS = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml", ".gml", ".sqlite")


class PolygonLabels:
    """A landslide inventory (polygons, any CRS) as masks of scene windows: 1 where a pixel's centre lies
    inside a polygon, 0 elsewhere (the inventory is taken as complete over the scene).

    The polygons are transformed into the scene's CRS once; each window rasterises only those its
    bounds meet (an STRtree), so an inventory of a whole region costs little per patch.

    Raises:
        InputError: unreadable file, no polygon, or no polygon over the scene (a wrong CRS, most likely).
    """

    def __init__(self, path: Path, src, scene: Path | str, where: tuple[str, frozenset[str]] | None = None) -> None:
        import shapely
        from rasterio.windows import Window as RioWindow

        geoms, crs = read_polygons(path, "`labels`", "give the landslides as polygons, or a label raster", where)
        if where is None:
            warn_class_attribute(path)
        if src.crs is None:
            raise InputError(f"{scene}: the scene has no CRS, so the polygons of {path} cannot be placed on it")
        self.geoms = np.asarray(geoms_to_crs(geoms, crs, src.crs), dtype=object)
        self.tree = shapely.STRtree(self.geoms)
        self.transform = src.transform
        if not len(self.tree.query(footprint(RioWindow(0, 0, src.width, src.height), src.transform))):
            raise InputError(f"{path}: no polygon of the labels overlaps {scene}; check the file's CRS, or tile "
                             f"without `labels`")

    def read(self, window: Window) -> np.ndarray:
        """The ``(h, w)`` uint8 mask of ``window`` (scene pixels)."""
        from rasterio.features import rasterize
        from rasterio.windows import transform as window_transform

        shape = (int(window.height), int(window.width))
        hits = self.tree.query(footprint(window, self.transform))
        if not len(hits):
            return np.zeros(shape, np.uint8)
        return rasterize(((g, 1) for g in self.geoms[np.sort(hits)]), out_shape=shape,
                         transform=window_transform(window, self.transform), fill=0, dtype="uint8")


#: Attribute names of an inventory that say what a polygon is (landslide or not): :func:`warn_class_attribute`.
CLASS_ATTRIBUTE = re.compile(r"class|label|type|categor|landslide|status", re.IGNORECASE)


def warn_class_attribute(path: Path) -> None:
    """Warn when an inventory's polygons carry a class-like attribute with several values (Chittagong's
    ``class``: ``landslide`` and ``non_landslide``): every polygon is burned as a landslide."""
    import pyogrio

    try:
        table = pyogrio.read_dataframe(path, read_geometry=False)
    except Exception:  # noqa: BLE001 - read_polygons has read the file; a table it cannot give is no warning
        return
    for column in sorted(table.columns, key=lambda c: table[c].dtype != object):  # names (strings) first
        if not CLASS_ATTRIBUTE.search(str(column)):
            continue
        values = table[column].dropna().unique()
        if 2 <= len(values) <= 10:
            shown = ", ".join(sorted(str(v) for v in values))
            warnings.warn(f"{path}: its polygons carry '{column}' with {len(values)} values ({shown}), but every "
                          f"polygon is burned as a landslide; name the landslide ones with `label_where` "
                          f"{column}=VALUE", LsmapWarning, stacklevel=user_level())
            return


def label_shift(src, lab, labels: Path, scene: Path | str) -> tuple[int, int]:
    """``(rows, cols)`` from the scene's pixel ``(0, 0)`` to the same pixel of the label raster ``lab``.

    Raises:
        InputError: ``lab`` has several bands, another CRS, pixel size or rotation, pixel corners off the
            scene's, or no pixel over the scene.
    """
    if lab.count != 1:
        raise InputError(f"{labels}: label raster has {lab.count} bands; expected 1")
    s, t = src.transform, lab.transform
    col, row = ~t @ (s.c, s.f)  # the scene's top-left corner in label pixels
    tol = GRID_TOLERANCE_PX
    same = (lab.crs == src.crs and all(abs(a - b) <= tol * max(abs(s.a), abs(s.e)) for a, b in
                                       zip((t.a, t.b, t.d, t.e), (s.a, s.b, s.d, s.e), strict=True))
            and abs(col - round(col)) <= tol and abs(row - round(row)) <= tol)
    if not same:
        raise InputError(
            f"{labels}: labels are not on the grid of {scene} "
            f"({lab.width}x{lab.height} px, {lab.crs}, {tuple(t)[:6]} vs "
            f"{src.width}x{src.height} px, {src.crs}, {tuple(s)[:6]}); "
            f"resample them onto the scene's grid first (same CRS, pixel size and pixel corners)"
        )
    row, col = round(row), round(col)
    if row >= lab.height or col >= lab.width or row + src.height <= 0 or col + src.width <= 0:
        raise InputError(f"{labels}: labels do not cover any pixel of {scene}; give the labels of this area")
    return row, col


def _read_labels(lab, window: Window, mapping, path: Path, shift: tuple[int, int] = (0, 0),
                 seen: dict[str, int] | None = None) -> np.ndarray:
    """The mask of ``window`` (scene pixels) from the labels, ``shift`` (:func:`label_shift`) away; 255 where
    the label raster has no pixel or nodata. ``seen["255"]`` counts the label values of 255 (not nodata)."""
    r0, c0 = window.row_off + shift[0], window.col_off + shift[1]
    mask = np.full((window.height, window.width), IGNORE_INDEX, np.uint8)
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + window.height, lab.height), min(c0 + window.width, lab.width)
    if rr1 <= rr0 or cc1 <= cc0:
        return mask
    inside = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
    values = read_window(lab, 1, inside)
    ok = read_window(lab, 1, inside, masks=True) > 0
    part = mask[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0]
    if ok.any():
        if seen is not None:
            seen["255"] = seen.get("255", 0) + int((values[ok] == IGNORE_INDEX).sum())
        part[ok] = map_labels(values[ok], mapping, path)
    return mask


#: The smallest patch side (px): detection's smallest window (``lsmap.map.options``).
MIN_SIZE = 16


def tile_scene(
    scene: str | os.PathLike | Mapping,
    out_dir: str | os.PathLike,
    *,
    bands: str | BandProfile | None = None,
    size: int = 128,
    overlap: int = 0,
    labels: str | os.PathLike | None = None,
    label_map: str | Mapping[int, int] | None = None,
    label_where: str | None = None,
    min_valid: float = 0.5,
    raw: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    scl: str | os.PathLike | None = None,
    scl_mask: str | Sequence[int] | None = None,
    mask_raster: str | os.PathLike | None = None,
    cloud_prob_max: float | None = None,
    aoi: AOI | None = None,
    blue_max: float | None = None,
    dark_max: float | None = None,
    dem: Any = None,
    slope: str | os.PathLike | None = None,
    offset: float | None = None,
) -> TileResult:
    """Cut ``scene`` into ``size`` x ``size`` L4S patches in ``out_dir`` (conventions: module docstring).

    Args:
        scene: GeoTIFF with the bands of ``bands``, or what ``lsmap stack`` takes (a Sentinel-2 product,
            a folder of band files, a mapping of ``stack_scene`` arguments): stacked first with ``bands``.
        out_dir: Output patch folder (written atomically).
        bands: Band profile of the scene; ``None``: a GeoTIFF's band names (its descriptions, as ``lsmap stack``
            writes them; the L4S order for a 14-band file without them), or for stacking inputs every L4S band
            they can fill, as ``lsmap stack`` chooses (:func:`lsmap.data.sources.input_band_set`).
        size: Patch size in pixels.
        overlap: Pixels shared by neighbouring windows, in ``[0, size)``.
        labels: Optional labels -> masks: a single-band label raster on the scene's grid (any extent), or a
            landslide inventory as polygons (a vector file, :data:`VECTOR_LABELS`; any CRS): 1 inside, 0 outside.
        label_map: Label value -> mask value (text ``"0:255,1:0,2:1"`` or a dict); default 0/1 masks.
        label_where: Which polygons of a vector inventory are landslides, ``"FIELD=VALUE[,VALUE...]"``
            (e.g. ``"class=landslide"``; the others are background); default every polygon.
        min_valid: Skip windows whose fraction of valid pixels is below this, in ``[0, 1]``.
        raw: Divide values by the profile divisors (raw digital numbers -> L4S scale).
        overwrite: Replace an existing ``out_dir``.
        progress: Show a progress bar.
        scl: Scene classification (SCL) raster of the scene (any grid): its ``scl_mask`` classes are
            not observed (:mod:`lsmap.data.masks`).
        scl_mask: SCL classes not observed (default ``0,1,3,8,9,10,11``).
        mask_raster: Raster whose non-zero pixels are not observed (any grid). Not-observed pixels
            are invalid like nodata: filled, 255 (ignored) in the masks, and counted against
            ``min_valid`` (mostly-masked patches are skipped).
        cloud_prob_max: Also leave out pixels whose MSK_CLDPRB exceeds this (percent; products only).
        aoi: Area of interest (an AOI, a vector file or a lon/lat box: :func:`lsmap.io.aoi.as_aoi`): only its
            window is cut, pixels outside a vector AOI are nodata.
        blue_max: Also leave out, as cloud, pixels whose blue (B2) reflectance exceeds this and those
            around them (:mod:`lsmap.data.masks`; for scenes without an SCL).
        dark_max: Also leave out, as dark (cloud shadow or water), pixels whose SWIR (B11) reflectance is below
            this (:mod:`lsmap.data.masks`, with no margin by default; for scenes without an SCL).
        dem, slope, offset: Stacking inputs beside a product or band folder ``scene``, as ``--dem``, ``--slope`` and
            ``--offset`` are on the command line (:func:`lsmap.data.sources.scene_inputs`).

    Returns:
        Counts of what was written.

    Raises:
        OutputExistsError: ``out_dir`` exists and not ``overwrite`` (before any work).
        MissingInputError: the scene or label raster does not exist.
        BandMismatchError: the scene's band count does not fit ``bands``.
        InputError: bad options, unreadable files or products, labels on another grid or with unmapped
            values, or no window with enough valid pixels.
    """
    from lsmap.io.progress import progress_bar

    aoi = as_aoi(aoi)
    scene = scene_inputs(scene, dem, slope, offset)
    stack_args = stack_arguments(scene)
    profile = get_profile(bands) if bands is not None else input_band_set(scene, stack_args)
    source = source_name(stack_args) if stack_args is not None else str(Path(scene).resolve())
    out_dir = output_path(out_dir, directory=True, name="out_dir")
    if stack_args is not None and raw:
        raise InputError(f"{source}: a Sentinel-2 product or band files are stacked on the L4S scale; drop `raw`")
    size = check_int("size", size, MIN_SIZE)  # 3 px wrote 25,480 patches (CLI audit); detection's smallest window
    if not 0 <= overlap < size:
        raise InputError(f"`overlap` must be in [0, {size}) for `size` {size} (got {overlap})")
    if not 0.0 <= min_valid <= 1.0:
        raise InputError(f"`min_valid` must be in [0, 1] (got {min_valid})")
    mapping = parse_label_map(label_map)
    if mapping is not None and labels is None:
        raise InputError("`label_map` needs `labels`")
    vector = labels is not None and Path(labels).suffix.lower() in VECTOR_LABELS
    where = parse_label_where(label_where)
    if where is not None and not vector:
        raise InputError("`label_where` selects the landslide polygons of a vector inventory (`labels` FILE.gpkg, "
                         ".geojson, .shp...); a label raster takes `label_map`")
    if vector and mapping is not None:
        raise InputError(f"{labels}: `label_map` maps the values of a label raster; the polygons of a vector "
                         f"file are landslides (1) and the rest background (0): drop `label_map`")
    spec = mask_spec(scl, scl_mask, mask_raster, cloud_prob_max, blue_max=blue_max, dark_max=dark_max)
    layers = product_mask_layers(stack_args.get("s2") if stack_args is not None else scene, spec)
    scl_source = str(spec.scl) if spec.scl is not None else ("the product's SCL" if "SCL" in layers else None)
    check_owned_dir(out_dir, overwrite, "tile", OUTPUT_PATTERNS, manifests=(META_NAME,))
    check_tile_memory(profile.count, size, labels is not None)
    if stack_args is None:
        scene = Path(scene)
        check_masks(spec, scene_info(scene, profile))  # a wrong scene or mask fails before any work
    if labels is not None:
        labels = Path(labels)
        if not labels.exists():
            raise MissingInputError(f"{labels}: `labels` file does not exist")

    def still_ours(path: Path) -> None:  # re-checked under the lock, just before the old folder goes
        check_owned_dir(path, True, "tile", OUTPUT_PATTERNS, manifests=(META_NAME,))

    import rasterio

    nobs = crop = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(drop_new_parents_on_error(out_dir))
        if stack_args is not None or aoi is not None or spec.active:  # a scratch stack, crop or mask
            out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".lsmap-tile-{owner_tag()}-",
                                                                        dir=out_dir.absolute().parent)))
        if stack_args is not None:
            scene, spec = stack_source(stack_args, work, profile, spec, aoi=aoi, layers=layers, progress=progress)
        elif aoi is not None:
            scene, win = crop_raster(scene, aoi, work / scene.name)
            crop = [int(win.col_off), int(win.row_off), int(win.width), int(win.height)]
        if spec.active:
            nobs = write_not_observed(spec, scene_info(scene, profile), work / "not_observed.tif",
                                      bands=profile.bands)
        _check_scale(scene, profile, raw, nobs.path if nobs else None, source)
        src = stack.enter_context(open_scene(scene, profile))
        not_observed = stack.enter_context(open_raster(nobs.path, "not-observed mask")) if nobs else None
        lab = None
        shift = (0, 0)
        if vector:
            lab = PolygonLabels(labels, src, source, where)
        elif labels is not None:
            lab = stack.enter_context(open_scene(labels))
            shift = label_shift(src, lab, labels, source)
        grid = window_grid(src.height, src.width, size, overlap)
        own_rows, own_cols = owned_spans(src.height, size, overlap), owned_spans(src.width, size, overlap)
        turn = north_up_turn(src.transform)
        rows: list[dict] = []
        n_skipped = n_padded = 0
        seen: dict[str, int] = {}
        with atomic_output(out_dir, overwrite or is_empty_dir(out_dir), directory=True, lock=True,
                           before_replace=still_ours) as tmp, \
                rasterio.Env(GDAL_CACHEMAX=row_cache_bytes(src)):  # GDAL's default kept every block decoded
            mark_owned(tmp, "tile")
            for window in progress_bar(grid, desc=f"tile {Path(source).name}", unit="window", disable=not progress):
                data, valid = read_scene_window(src, window, profile, raw=raw, mask=not_observed)
                frac = float(valid.mean())
                if frac < min_valid:
                    n_skipped += 1
                    continue
                data[:, ~valid] = FILL
                mask = None
                if lab is not None:
                    mask = lab.read(window) if vector else _read_labels(lab, window, mapping, labels, shift, seen)
                    mask[~valid] = IGNORE_INDEX
                    disown(mask, window, own_rows, own_cols)
                    mask = pad_to(np.flip(mask, turn), size, IGNORE_INDEX)
                if turn:  # patches are north-up, as the models learn and read them
                    data, valid = np.ascontiguousarray(np.flip(data, turn)), np.flip(valid, turn)
                n_padded += (window.height, window.width) != (size, size)
                pid = str(len(rows))
                write_patch(tmp, pid, pad_to(data, size, FILL), mask, bands=profile.bands,
                            valid=pad_to(valid, size, False))
                row = {"id": pid, "row_off": window.row_off, "col_off": window.col_off, "height": window.height,
                       "width": window.width, "valid_fraction": frac}
                if mask is not None:
                    row["labelled_pixels"] = int((mask != IGNORE_INDEX).sum())
                    row["landslide_pixels"] = int((mask == 1).sum())
                rows.append(row)
            if not rows:
                raise InputError(
                    f"{source}: no window of {size} px has at least {min_valid:g} valid pixels "
                    f"({len(grid)} windows); lower `min_valid` or check the scene's nodata"
                )
            if lab is not None:
                _check_tiled_labels(labels, rows, seen.get("255", 0), mapping)
            _write_index(tmp / INDEX_NAME, rows, src.transform, src.crs)
            meta = {
                "scene": source,
                "stacked": stack_args is not None,
                "aoi": aoi.to_dict() if aoi is not None else None,
                "aoi_window": crop,
                "labels": str(labels.resolve()) if labels is not None else None,
                "label_map": {str(k): v for k, v in mapping.items()} if mapping is not None else None,
                "label_where": label_where,
                "height": src.height,
                "width": src.width,
                "crs": src.crs.to_wkt() if src.crs is not None else None,
                "transform": list(src.transform)[:6],
                "turned": [{-2: "rows", -1: "columns"}[d] for d in turn],
                "size": size,
                "overlap": overlap,
                "min_valid": min_valid,
                "raw": raw,
                "not_observed": ({"scl": scl_source, "scl_classes": list(spec.scl_classes),
                                  "mask_raster": str(spec.raster) if spec.raster else None,
                                  "cloud_prob_max": spec.cloud_prob_max, "blue_max": spec.blue_max,
                                  "dark_max": spec.dark_max, **nobs.counts}
                                 if nobs is not None else None),
                "fill": FILL,
                "bands": profile.to_dict(),
                "n_patches": len(rows),
                "n_windows": len(grid),
                "n_skipped": n_skipped,
                "index": INDEX_NAME,
            }
            (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return TileResult(out_dir, len(rows), len(grid), n_skipped, n_padded, size, overlap, lab is not None)


def _check_tiled_labels(labels: Path, rows: Sequence[dict], n255: int, mapping) -> None:
    """Refuse labels that left no landslide pixel while 255 values were read as "ignored" (a 0/255 export:
    ``train`` and ``evaluate`` refuse such folders; ``tile`` wrote them with exit 0, found by the CLI audit), and
    warn when the patches hold no landslide pixel at all (training refuses such a folder; stable ground alone is
    useful only beside other patches)."""
    if sum(r["landslide_pixels"] for r in rows):
        return
    if n255 and mapping is None:
        raise InputError(f"{labels}: no label pixel is 1 (landslide) but {n255:,} are 255, which lsmap reads as "
                         f"'ignored' (as Landslide4Sense does); if 255 marks the landslides (a 0/255 export), read "
                         f"them with `label_map` 0:0,255:1; if 255 is no data, declare it (rio edit-info --nodata 255); "
                         f"if it marks ignored pixels of ground without landslides, say so with `label_map` "
                         f"0:0,1:1,255:255")
    warnings.warn(f"{labels}: the patches hold no landslide pixel (every label is background or ignored); training "
                  f"refuses a folder without landslides: check the labels or `label_map`", LsmapWarning, stacklevel=user_level())


def _check_scale(scene: Path, profile: BandProfile, raw: bool, mask: Path | None, source: object) -> None:
    """Warn when the scene's values, read as ``raw`` says, look at the wrong scale (a sample of 1 M pixels,
    :func:`lsmap.data.scan.scale_warning`): patches of raw DNs or fractions train and score wrongly."""
    from dataclasses import replace

    from lsmap.data.scan import SCALE_MAX_PIXELS, scale_warning, scan_scene

    info = replace(scene_info(scene, profile), mask=mask)
    try:
        scan = scan_scene(info, profile, "raw" if raw else "l4s", max_pixels=SCALE_MAX_PIXELS, name=source)
    except InputError:  # no valid pixel: the cut says so, with the windows it tried
        return
    for why in (scale_warning(scan, profile, source, "`raw`"), terrain_nodata_warning(scene, profile, source)):
        if why is not None:
            warnings.warn(why, LsmapWarning, stacklevel=user_level())


def disown(mask: np.ndarray, window: Window, own_rows: dict, own_cols: dict) -> None:
    """Set to ignored the pixels of ``mask`` (the window's labels, unpadded) that another patch labels.

    Neighbouring windows share pixels (``overlap``, and the last row and column of windows, snapped
    back inside the scene); each pixel keeps its label in one patch only (:func:`owned_spans`), so a
    metric over the patches counts it once and a held-out patch shares no label with a training one.
    """
    r0, c0 = int(window.row_off), int(window.col_off)
    (rs, re), (cs, ce) = own_rows[r0], own_cols[c0]
    mask[: rs - r0] = IGNORE_INDEX
    mask[re - r0:] = IGNORE_INDEX
    mask[:, : cs - c0] = IGNORE_INDEX
    mask[:, ce - c0:] = IGNORE_INDEX


def check_tile_memory(bands: int, size: int, labelled: bool) -> None:
    """Refuse a patch size whose patches cannot be held in memory (a few copies of one patch).

    Raises:
        TooLargeError: the estimate exceeds the memory available.
    """
    from lsmap.io.resources import check_memory

    per_patch = bands * size * size * 4 + (size * size if labelled else 0)
    check_memory(4 * per_patch, f"`size` {size}", f"patches of {size} x {size} px x {bands} bands",
                 "use a smaller --size (L4S patches are 128)")


def _write_index(path: Path, rows: list[dict], transform, crs) -> None:
    import geopandas as gpd
    from rasterio.windows import Window as RioWindow

    geoms = [footprint(RioWindow(r["col_off"], r["row_off"], r["width"], r["height"]), transform) for r in rows]
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs)
    gdf.to_file(path, layer=INDEX_LAYER, driver="GPKG", engine="pyogrio")


class Assembled(NamedTuple):
    """A scene rebuilt from its patches.

    Attributes:
        image: ``(C, H, W)`` float32; pixels no patch covers hold the ``fill`` asked for.
        mask: ``(H, W)`` uint8, 255 where no patch covers (``None`` for unlabelled patches).
        covered: ``(H, W)`` bool, true where some patch covers the pixel.
    """

    image: np.ndarray
    mask: np.ndarray | None
    covered: np.ndarray


def read_index(out_dir: str | os.PathLike):
    """Read the patch index (``index.gpkg``) of a folder written by :func:`tile_scene` as a GeoDataFrame.

    Raises:
        MissingInputError: the folder has no index.
    """
    import geopandas as gpd

    path = Path(out_dir) / INDEX_NAME
    if not path.exists():
        raise MissingInputError(f"{path}: no patch index; write the folder with 'lsmap tile'")
    return gpd.read_file(path, layer=INDEX_LAYER, engine="pyogrio")


def read_tiles_meta(out_dir: str | os.PathLike) -> dict:
    """Read ``tiles.json`` of a folder written by :func:`tile_scene`.

    Raises:
        MissingInputError: the folder has no ``tiles.json``.
        InputError: the file is not valid JSON.
    """
    path = Path(out_dir) / META_NAME
    if not path.exists():
        raise MissingInputError(f"{path}: no tiles.json; write the folder with 'lsmap tile'")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e}); re-run 'lsmap tile'") from None


def assemble_patches(out_dir: str | os.PathLike, fill: float = np.nan) -> Assembled:
    """Rebuild the scene from a folder written by :func:`tile_scene` (patches + index).

    Holds the whole scene in memory: meant for tests and small scenes. Where patches overlap they
    hold the same scene pixels, so the order of placement does not matter; each pixel's label comes
    from the one patch that labels it (the others hold 255 there).

    Args:
        out_dir: Folder written by :func:`tile_scene`.
        fill: Image value of pixels no patch covers (skipped windows).

    Shape:
        image ``(C, H, W)``, mask and covered ``(H, W)``.
    """
    out_dir = Path(out_dir)
    meta = read_tiles_meta(out_dir)
    index = read_index(out_dir)
    n_bands, height, width = len(meta["bands"]["bands"]), meta["height"], meta["width"]
    image = np.full((n_bands, height, width), fill, np.float32)
    covered = np.zeros((height, width), bool)
    labelled = (out_dir / "mask").is_dir()
    turn = tuple({"rows": -2, "columns": -1}[a] for a in meta.get("turned", []))  # patches of a south-up scene
    mask = np.full((height, width), IGNORE_INDEX, np.uint8) if labelled else None
    for row in index.itertuples():
        w = Window(col_off=int(row.col_off), row_off=int(row.row_off), width=int(row.width), height=int(row.height))
        patch, _ = read_image(out_dir / "img" / f"image_{row.id}.h5")
        image[(slice(None), *w.toslices())] = np.flip(patch[:, : w.height, : w.width], turn)
        covered[w.toslices()] = True
        if mask is not None:
            labels = np.flip(read_mask(out_dir / "mask" / f"mask_{row.id}.h5")[: w.height, : w.width], turn)
            mask[w.toslices()] = np.where(labels != IGNORE_INDEX, labels, mask[w.toslices()])
    return Assembled(image, mask, covered)
