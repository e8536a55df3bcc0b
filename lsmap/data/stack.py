"""Assemble Sentinel-2 bands, a DEM and slope on one 10 m grid, scaled like Landslide4Sense.

:func:`stack_scene` turns a Sentinel-2 input, a DEM in any CRS/resolution (one file or tiles) and
optionally a slope raster into one float32 GeoTIFF whose bands follow a band set and hold
``(DN + offset) * 10000 / quantification / divisor`` for Sentinel-2 bands, ``raw / divisor`` for
terrain; the band names are written as the band descriptions. Without a band set it writes the
fullest set in L4S order (B1..B12 without B8A, slope, DEM) that the inputs can fill: every L4S band
that has a file (an L2A product has no B10), and slope and DEM only with a DEM (slope also from a
slope raster alone).

Inputs: a Sentinel-2 product or loose band files, resolved to band files by name and their DN
offsets by :func:`lsmap.io.bandfiles.resolve_s2` (loose band files without ``offset``: a warning
when their DNs look offset, no DN below 1000 in any band). The offset is applied to the source
pixels before resampling, so an offset product and the same scene without offset stack to
identical values. Several DEM files or a folder of tiles are mosaicked as
a VRT (:mod:`lsmap.io.mosaic`). With an area of interest (:mod:`lsmap.io.aoi`) only the window of
the 10 m grid covering it is read and written, computed exactly as in a whole-scene run. Product
layers (SCL, MSK_CLDPRB) can be written on the same grid and window, nearest neighbour.

Grid: the grid of a 10 m band (B2, B3, B4 or B8, in that order of preference), or the 10 m
subdivision of the finest band's grid when no 10 m file is present. Bands on another grid
(20/60 m bands, the DEM, a slope raster) are resampled onto it bilinearly at the output pixel
centres, NaN-aware and independent of the block (:mod:`lsmap.data.resample`).

Streaming: the output is written block by block (``block`` x ``block`` pixels); for each block
only the source windows under it (plus the interpolation margin and the slope halo) are read,
so memory stays bounded whatever the scene size. Block size 16 and 1024 give identical files
(tested).

Nodata: a source pixel is invalid when it equals the file's nodata value (for Sentinel-2 files
without a declared nodata, the profile's raw nodata, 0), or, in a uint16 Sentinel-2 band, the saturated
value 65535 (:data:`lsmap.core.constants.S2_SATURATED`: its reflectance is unknown). An output pixel is written as
:data:`lsmap.io.rasters.OUTPUT_NODATA` (-9999) in *every* band when any of its bands is invalid, so a
model never sees a half-filled pixel stack; outside the DEM's footprint pixels are nodata too.

Slope: when no slope raster is given it is computed from the DEM in degrees with Horn's (1981)
3 x 3 method (:func:`lsmap.core.terrain.horn_slope`, in ground metres) **on the DEM's own grid**
and then resampled bilinearly onto the 10 m grid, each block from a DEM window with a one-pixel
halo so block borders are seamless. Why the source grid: it is what ``gdaldem slope`` does, and
what the slope of the real Jiuzhaigou data (``DEM_030_SLOPE.tif``) is: Horn on the native 30 m
grid reproduces that file to 4e-6 deg. Measured against ``DEM_030_SLOPE.tif`` resampled
bilinearly (by GDAL) to a 3 km x 3 km, 10 m grid inside the AOI (tests/data/test_stack.py, realdata):

- 10 m grid in EPSG:32648 (the DEM's zone): source-grid Horn (used) median 0.0, p90 2e-6;
  Horn on the 10 m grid median 0.98, p90 3.34;
- 10 m grid in EPSG:32647 (the neighbouring zone, a rotated grid): source-grid Horn median 7e-4,
  p90 3e-3; Horn on the 10 m grid median 0.97, p90 3.03

(absolute errors in degrees; the test asserts median < 0.05 and p90 < 0.2 deg, and that the
source-grid slope beats the alternative). Horn on the bilinearly resampled DEM is worse
because the interpolated DEM's facets give 10 m gradients that swing around the 30 m ones.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsmap.core.bands import S2_RESOLUTION, TERRAIN_BANDS, BandProfile, get_profile
from lsmap.core.constants import S2_SATURATED
from lsmap.core.encoding import STACK_ENCODINGS, UINT16_NODATA, encode_uint16, scales_offsets
from lsmap.core.terrain import horn_slope
from lsmap.core.windows import block_grid
from lsmap.data.resample import Grid, Layer, overlaps
from lsmap.errors import InputError, LsmapWarning, MissingInputError, user_level
from lsmap.io.aoi import AOI, aoi_inside, aoi_window, as_aoi
from lsmap.io.bandfiles import fullest_band_set, resolve_s2
from lsmap.io.mosaic import coverage, dem_files, dem_mosaic
from lsmap.io.outputs import (
    atomic_output,
    check_output,
    check_outputs_apart,
    gdal_write_check,
    input_paths,
    output_path,
    verify_geotiff,
)
from lsmap.io.rasters import (
    OUTPUT_NODATA,
    decode_in_caller,
    gdal_source,
    geotiff_profile,
    open_raster,
    set_band_descriptions,
)
from lsmap.io.s2product import L4S_QUANTIFICATION
from lsmap.io.scene import OFFSET_TAG, STACK_TAG

#: 10 m bands whose grid becomes the output grid, in order of preference.
REFERENCE_BANDS = ("B2", "B3", "B4", "B8")
#: Nodata value of each product layer written beside a stack (SCL class 0 is "no data").
LAYER_NODATA = {"SCL": 0, "MSK_CLDPRB": 255}
#: Loose band files whose smallest DN over the scene is at least this look offset (baseline >= 04.00 adds 1000).
OFFSET_DN_HINT = 1000.0
#: ... or, more robustly, whose valid pixels fall below it at most this often (the median over the spectral
#: bands): dark water in an offset product has DNs under 1000 (4.9 % in the median band of a 6 km box of
#: T29UNU, 0.3 % in a sample of the whole tile), where bands that are not offset have most of their blue,
#: green and red pixels there. A bright scene that is not offset (a desert) can look offset by this rule, as by
#: the older one (no DN below 1000); the message says to give `offset` 0 then.
OFFSET_BELOW_SHARE = 0.2
#: A given ``offset`` is refused when, in the median spectral band, more than this share of the valid pixels
#: falls below zero reflectance with it: the files were not offset (in offset products, only dark water and
#: deep shadow dip below zero).
NEGATIVE_SHARE_MAX = 0.25
#: Band files whose spectral bands reach at most this (the median of their maxima) hold reflectance as a
#: fraction, not digital numbers: refused, since the stack's uint16 codes would keep 2 or 3 values of them.
FRACTION_MAX = 2.0
#: Uncovered fraction of the scene/AOI below which a DEM counts as covering it (edge rounding).
DEM_COVER_TOLERANCE = 1e-3
#: GDAL creation options of uint16 stacks (chosen by bench/stack_encoding.py; BENCHMARKS.md). ZSTD level 3, not
#: GDAL's default 9: a quarter to a half of the compression CPU for files 2-10 % larger, decoded as fast.
UINT16_OPTIONS = {"compress": "zstd", "predictor": 2, "zstd_level": 3}


@dataclass(frozen=True)
class StackResult:
    """What :func:`stack_scene` wrote.

    Attributes:
        path: The output GeoTIFF.
        profile: Band profile name.
        bands: Band names in file order (also the band descriptions).
        width: Output width in pixels.
        height: Output height in pixels.
        crs: Output CRS as a string (EPSG code when there is one).
        resolution: Pixel size ``(x, y)`` in CRS units.
        sources: Band name -> the file it came from (slope: the DEM when computed).
        nodata: Output nodata value (of the stored values: 0 for uint16 codes).
        encoding: ``uint16`` (codes with a GDAL scale/offset, :mod:`lsmap.core.encoding`) or ``float32``.
        valid_fraction: Fraction of output pixels with every band valid.
        left_out: L4S bands the stack lacks, each with why (when the band set was chosen from the inputs).
        kind: What the Sentinel-2 input was: ``files``, ``SAFE``, ``SAFE zip`` or ``STAC``.
        offsets: Sentinel-2 band -> DN offset applied.
        offsets_known: Whether the offsets came from the input (metadata, ``offset``) rather than a default 0.
        quantification: DN per unit reflectance of the input (10000 for every product so far).
        product: Product metadata (SAFE inputs).
        window: ``(col_off, row_off, width, height)`` of the output in the scene's full 10 m grid
            (with an AOI), else ``None``.
        aoi: The area of interest (JSON form), if any.
        layers: Product layer -> the file it was written to.
        notes: Remarks on the input (e.g. bands read from coarser files than the product lists).
        warnings: The warnings issued.
    """

    path: Path
    profile: str
    bands: tuple[str, ...]
    width: int
    height: int
    crs: str
    resolution: tuple[float, float]
    sources: dict[str, str] = field(default_factory=dict)
    nodata: float = OUTPUT_NODATA
    encoding: str = "float32"
    valid_fraction: float = 0.0
    left_out: dict[str, str] = field(default_factory=dict)
    kind: str = "files"
    offsets: dict[str, float] = field(default_factory=dict)
    offsets_known: bool = False
    quantification: float = 10000.0
    product: dict | None = None
    window: tuple[int, int, int, int] | None = None
    aoi: dict | None = None
    layers: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        d["bands"] = list(self.bands)
        d["resolution"] = list(self.resolution)
        d["window"] = list(self.window) if self.window is not None else None
        d["notes"], d["warnings"] = list(self.notes), list(self.warnings)
        return d


def _single_band(src, what: str) -> None:
    if src.count != 1:
        raise InputError(f"{src.name}: {what} file has {src.count} bands; expected one band per file")


# --- the stack -------------------------------------------------------------------------------


def _tiff_name(path: str | os.PathLike, what: str) -> Path:
    """``path``, refused unless it ends in .tif/.tiff: the stack is a GeoTIFF whatever its name (a ``.png`` or
    ``.gpkg`` name gave a GeoTIFF under it; found by the audits)."""
    path = output_path(path, name=what)  # an empty path first: Path('').with_suffix raised a ValueError
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"{path}: the stack is a GeoTIFF; give `{what}` a .tif name (e.g. {path.with_suffix('.tif')})")
    return path


def stack_scene(
    s2: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    dem: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    slope: str | os.PathLike | None = None,
    bands: str | BandProfile | None = None,
    overwrite: bool = False,
    block: int = 1024,
    progress: bool = False,
    creation_options: dict | None = None,
    offset: float | None = None,
    aoi: AOI | None = None,
    layers: Mapping[str, str | os.PathLike] | None = None,
    encoding: str = STACK_ENCODINGS[0],
    strict_offset: bool = False,
) -> StackResult:
    """Build the L4S-scaled stack of a Sentinel-2 scene on its 10 m grid.

    Args:
        s2: A Sentinel-2 product (``.SAFE`` folder, ``.SAFE.zip`` read in place, STAC Item JSON file
            or URL), or loose band files / folders of them (searched recursively, GeoTIFF or JPEG
            2000; bands recognised by name: ``..._B04_10m.jp2``, ``B4.tif``, ``B8A`` is never ``B8``).
        out: Output GeoTIFF.
        dem: DEM in metres, any CRS/resolution: one file, several files or a folder of tiles
            (mosaicked on the fly). Needed when the profile has a ``DEM`` band, or a ``slope`` band
            and no ``slope`` raster.
        slope: Slope raster in degrees (any CRS/resolution); computed from ``dem`` when absent.
        bands: Band set: a profile name (``l4s14``, ``l2a-terrain``, ``l2a``, ``rgbn``, ...), a comma
            list of band names, or a profile; ``None``: the fullest L4S-ordered set the inputs can
            fill (:func:`lsmap.io.bandfiles.fullest_band_set`; what was left out is in the result).
        overwrite: Replace existing outputs.
        block: Output block size in pixels (memory grows with ``block**2 * bands``).
        progress: Show progress (a bar on a terminal, lines elsewhere: :mod:`lsmap.io.progress`) over blocks.
        creation_options: Extra or overriding GDAL GeoTIFF creation options.
        offset: DN offset of loose band files (e.g. ``-1000`` for processing baseline >= 04.00);
            products declare theirs. Stacked values are ``(DN + offset) * 10000 / quantification / divisor``.
        aoi: Area of interest (an AOI, a vector file or a lon/lat box: :func:`lsmap.io.aoi.as_aoi`): only the window of the 10 m grid that covers it is read and written
            (pixels identical to the full scene's); a vector AOI also sets pixels outside it to nodata.
        layers: Product layers to write on the same grid (nearest neighbour, full resolution):
            ``{"SCL": "scl.tif", "MSK_CLDPRB": "cldprb.tif"}``; uint8, nodata 0 (SCL) / 255 (MSK_CLDPRB).
        encoding: ``"uint16"``: codes with a per-band GDAL scale and offset, nodata 0, within
            :func:`lsmap.core.encoding.max_error` of the float32 values and several times faster to
            decode (:mod:`lsmap.core.encoding`); ``"float32"``: the L4S values themselves, nodata -9999.
        strict_offset: Refuse (instead of warn about) loose band files whose DNs look offset when no
            ``offset`` is given: for callers that go on to detect, tile or measure the stack themselves,
            where a warning scrolls by and the results are wrong (on the real Wayanad bands, 0.08 km2 of
            landslides instead of 0.36 km2, and the debris-flow track masked as cloud by ``blue_max``).

    Returns:
        A :class:`StackResult` describing the output.

    Raises:
        OutputExistsError: an output exists and not ``overwrite`` (before reading anything).
        MissingInputError: an input or a needed band file does not exist.
        InputError: unreadable/corrupt inputs or products, multi-band band files, a DEM or slope raster
            that does not overlap the scene (or does not cover the AOI), a missing ``dem``, an unknown
            profile or layer, an AOI outside the scene, a bad ``block``.

        InputError: also loose band files whose DNs look offset and no ``offset`` with ``strict_offset``.

    Warns:
        LsmapWarning: loose band files whose DNs look offset (no value below 1000 in any band) and no
            ``offset`` given (``offset=0`` says they are not); a DEM that covers only part of the scene.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from lsmap.core.checks import is_empty_path
    from lsmap.io.progress import progress_bar

    items = [s2] if isinstance(s2, (str, os.PathLike)) else s2
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, os.PathLike)) for i in items):
        raise InputError(f"`s2` must be a Sentinel-2 product, a band folder or band files as paths (got "
                         f"{type(s2).__name__})")
    if any(is_empty_path(i) for i in items):  # Path("") is '.': the working folder's band files were stacked
        raise InputError("`s2` holds an empty path; give a Sentinel-2 product, a band folder or band files")
    if offset is not None and not math.isfinite(offset):
        raise InputError(f"`offset` {offset}: give a finite number of DNs (-1000 for processing baseline 04.00 "
                         f"and later, 0 for earlier products)")
    out = check_output(_tiff_name(out, "out"), overwrite)
    aoi = as_aoi(aoi)
    layer_outs = {}
    for name, path in (layers or {}).items():
        if name not in LAYER_NODATA:
            raise InputError(f"unknown product layer '{name}'; choose from: {', '.join(LAYER_NODATA)}")
        layer_outs[name] = check_output(_tiff_name(path, f"layers[{name!r}]"), overwrite)
    if len({p.resolve() for p in [out, *layer_outs.values()]}) != 1 + len(layer_outs):
        raise InputError("the stack and the layer outputs must be different files")
    check_outputs_apart([out, *layer_outs.values()], input_paths(s2, dem, slope))
    left_out: dict[str, str] = {}
    if bands is None:
        profile, left_out = fullest_band_set(s2, dem, slope)
    else:
        profile = get_profile(bands)
        if (dem or slope) and not TERRAIN_BANDS & set(profile.bands):  # dropped without a word (the CLI audit)
            raise InputError(f"`dem` is given but the band set `bands` {profile.name} has no slope or DEM band; "
                             f"choose one with them (e.g. `bands` l2a-terrain or a list ending in slope,DEM) or drop "
                             f"`dem`")
    if encoding not in STACK_ENCODINGS:
        raise InputError(f"unknown stack `encoding` '{encoding}'; choose one of: {', '.join(STACK_ENCODINGS)}")
    if block < 16:
        raise InputError(f"block size {block} is too small; use at least 16 pixels (default 1024)")
    needs_dem = "DEM" in profile.bands or ("slope" in profile.bands and slope is None)
    if needs_dem and dem is None:
        raise InputError(f"band set {profile.label} needs a DEM; pass `dem` (and optionally `slope`)")
    source = resolve_s2(s2, profile.sentinel2_bands, offset)
    for name in layer_outs:
        if name not in source.layers:
            raise MissingInputError(f"{source.where}: this {source.kind} input has no {name} layer; "
                                    f"drop the {name} output (SAFE L2A products and STAC Items have SCL)")
    dem_files_ = dem_files(dem) if needs_dem else []
    found: list[str] = []

    with contextlib.ExitStack() as stack:
        stack.enter_context(decode_in_caller())  # a damaged block fails the read instead of stacking garbage
        opened = {b: stack.enter_context(open_raster(p, f"Sentinel-2 band {b}")) for b, p in source.files.items()}
        for b, src in opened.items():
            _single_band(src, f"Sentinel-2 band {b}")
        ref_band = _ref_band(opened)
        ref = opened[ref_band]
        grid = _ten_metre_grid(ref)
        off = [b for b, src in opened.items() if src is not ref and not overlaps(src, grid)]
        if off:
            raise InputError(
                f"{', '.join(gdal_source(source.files[b]) for b in off)}: band file{'s' if len(off) > 1 else ''} "
                f"{', '.join(off)} do{'es' if len(off) == 1 else ''} not overlap the scene's 10 m grid "
                f"({gdal_source(source.files[ref_band])}); give the band files of one scene"
            )
        if aoi is not None:
            win = aoi_window(aoi, grid.crs, grid.transform, grid.width, grid.height,
                             where=f"the Sentinel-2 scene ({source.where})")
            aoi_grid = aoi.to_crs(grid.crs) if aoi.mask else None
        else:
            win, aoi_grid = Window(0, 0, grid.width, grid.height), None
        out_grid = Grid(grid.crs, window_transform(win, grid.transform), int(win.width), int(win.height))
        area = "area of interest" if aoi is not None else "Sentinel-2 scene"
        layers_: dict[str, Layer] = {}
        sources: dict[str, str] = {}
        for b, src in opened.items():
            nodata = src.nodata if src.nodata is not None else profile.nodata
            layers_[b] = Layer(src, b, nodata, grid, offset=source.dn_offset(b),
                                gain=L4S_QUANTIFICATION / source.quantification,
                                saturated=S2_SATURATED if src.dtypes[0] == "uint16" else None)
            sources[b] = gdal_source(source.files[b])
        dem_src = None
        if needs_dem:
            if len(dem_files_) > 1:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lsmap-dem-")))
                dem_path = dem_mosaic(dem_files_, tmp / "dem.vrt")
                dem_label = f"{len(dem_files_)} DEM tiles ({', '.join(str(p) for p in dem_files_[:3])}" \
                            f"{', ...' if len(dem_files_) > 3 else ''})"
            else:
                dem_path = dem_label = dem_files_[0]
            dem_src = stack.enter_context(open_raster(dem_path, "DEM"))
            _single_band(dem_src, "DEM")
            if not overlaps(dem_src, out_grid):
                what = gdal_source(source.files[ref_band]) if aoi is None else aoi.source
                raise InputError(f"{dem_label}: DEM does not overlap the {area} ({what}); give the DEM of this area")
            covered = coverage(dem_files_, out_grid.crs, out_grid.transform, out_grid.width, out_grid.height)
            if covered < 1 - DEM_COVER_TOLERANCE:
                msg = (f"{dem_label}: the DEM covers {100 * covered:.1f} % of the {area}; pixels outside it are "
                       f"nodata")
                if aoi is not None:
                    raise InputError(f"{msg}: add the DEM tiles of the whole area of interest")
                warnings.warn(f"{msg} (add the missing DEM tiles if the scene has data there)", LsmapWarning,
                              stacklevel=user_level())
                found.append(msg)
        if "DEM" in profile.bands:
            layers_["DEM"] = Layer(dem_src, "DEM", dem_src.nodata, grid)
            sources["DEM"] = str(dem_label)
        if "slope" in profile.bands:
            if slope is not None:
                slope_src = stack.enter_context(open_raster(slope, "slope"))
                _single_band(slope_src, "slope")
                if not overlaps(slope_src, out_grid):
                    raise InputError(
                        f"{slope}: slope raster does not overlap the {area}; give the slope of this area"
                    )
                layers_["slope"] = Layer(slope_src, "slope", slope_src.nodata, grid)
                sources["slope"] = str(slope)
            else:
                def derive(arr: np.ndarray, row0: int, _src=dem_src) -> np.ndarray:
                    return horn_slope(arr, _src.transform, _src.crs, row_offset=row0)

                layers_["slope"] = Layer(dem_src, "slope", dem_src.nodata, grid, derive=derive, halo=1)
                sources["slope"] = f"Horn slope of {dem_label}"
        for name in layer_outs:
            src = stack.enter_context(open_raster(source.layers[name], f"{name} layer"))
            _single_band(src, f"{name} layer")
            layers_[name] = Layer(src, name, None, grid, nearest=True)
            sources[name] = gdal_source(source.layers[name])

        divisors = np.asarray(profile.divisors, np.float32).reshape(-1, 1, 1)
        spectral = [b in profile.sentinel2_bands for b in profile.bands]
        coded = encoding == "uint16"
        out_profile = geotiff_profile(
            crs=out_grid.crs, transform=out_grid.transform, width=out_grid.width, height=out_grid.height,
            count=profile.count, dtype=encoding, nodata=UINT16_NODATA if coded else OUTPUT_NODATA,
            creation_options={**(UINT16_OPTIONS if coded else {}), **(creation_options or {})},
        )
        # blocks of the output window, in the coordinates of the full 10 m grid: a pixel's value
        # is computed exactly as in a full-scene run; disjoint: each pixel written and counted once
        windows = [Window(w.col_off + int(win.col_off), w.row_off + int(win.row_off), w.width, w.height)
                   for w in block_grid(out_grid.height, out_grid.width, block)]
        from lsmap.io.resources import check_memory

        # x2: the next block is resampled while this one is encoded and written (_blocks_ahead)
        check_memory(2 * block * block * (profile.count * 4 * 3 + 8 * len(groups_of(profile, layers_))), f"`block` {block}",
                     f"blocks of {block} x {block} px x {profile.count} bands", "use a smaller `block`")
        # bands are resampled in parallel, one thread per source file at a time (a dataset handle
        # is not for two threads at once: slope and DEM read the same file, so go together)
        groups: dict[int, list[str]] = {}
        for b in [*profile.bands, *layer_outs]:
            groups.setdefault(id(layers_[b].src), []).append(b)
        pool = stack.enter_context(ThreadPoolExecutor(min(len(groups), os.cpu_count() or 1),
                                                      thread_name_prefix="lsmap-stack"))
        n_valid = 0
        band_valid = dict.fromkeys(profile.bands, 0)
        dn_min = np.full(sum(spectral), np.inf)
        check_given = offset not in (None, 0)  # an offset the user gave (products declare theirs): checked
        below_zero, seen = np.zeros(sum(spectral), np.int64), 0
        dn_max = np.full(sum(spectral), -np.inf)
        below_hint, n_spec = np.zeros(sum(spectral), np.int64), 0
        import rasterio

        tmp_layers = {name: stack.enter_context(atomic_output(p, overwrite, lock=True)) for name, p in layer_outs.items()}
        with atomic_output(out, overwrite, lock=True) as tmp:
            with gdal_write_check(out) as written, rasterio.open(tmp, "w", **out_profile) as dst, \
                    contextlib.ExitStack() as lay:
                set_band_descriptions(dst, profile.bands)
                if coded:
                    dst.scales, dst.offsets = scales_offsets(profile)
                dst.update_tags(**{STACK_TAG: profile.name}, LSMAP_ENCODING=encoding, LSMAP_SCALING="(raw + offset) * 10000 / "
                                "quantification / L4S divisors", LSMAP_SOURCE=source.kind,
                                LSMAP_DN_OFFSETS=",".join(f"{b}:{source.dn_offset(b):g}" for b in
                                                           profile.sentinel2_bands))
                lay_dst = {}
                for name, path in tmp_layers.items():
                    lp = geotiff_profile(crs=out_grid.crs, transform=out_grid.transform, width=out_grid.width,
                                         height=out_grid.height, count=1, dtype="uint8", nodata=LAYER_NODATA[name])
                    lay_dst[name] = lay.enter_context(rasterio.open(path, "w", **lp))
                    set_band_descriptions(lay_dst[name], [name])
                ahead = _blocks_ahead(windows, lambda w: _resample_block(layers_, groups.values(), w, pool), lay)
                for w, parts in progress_bar(ahead, total=len(windows), desc="stack", unit="block", disable=not progress):
                    raw = np.stack([parts[b] for b in profile.bands])
                    finite = np.isfinite(raw)
                    for k, b in enumerate(profile.bands):
                        band_valid[b] += int(finite[k].sum())
                    invalid = ~finite.all(axis=0)
                    where = Window(w.col_off - win.col_off, w.row_off - win.row_off, w.width, w.height)
                    outside = None  # of the AOI's polygon, inside its bounding box: nodata in the layers too
                    if aoi_grid is not None:
                        outside = ~aoi_inside(aoi_grid, grid.crs, window_transform(where, out_grid.transform),
                                              (w.height, w.width))
                        invalid |= outside
                    if source.offsets is None and not invalid.all():
                        dn_min = np.minimum(dn_min, raw[spectral][:, ~invalid].min(axis=1))
                        below_hint += (raw[spectral][:, ~invalid] < OFFSET_DN_HINT).sum(axis=1)
                        n_spec += int((~invalid).sum())
                    if not invalid.all():
                        dn_max = np.maximum(dn_max, raw[spectral][:, ~invalid].max(axis=1))
                    if check_given and not invalid.all():
                        below_zero += (raw[spectral][:, ~invalid] < 0).sum(axis=1)
                        seen += int((~invalid).sum())
                    if coded:
                        arr = encode_uint16(raw, invalid, profile)
                    else:
                        arr = raw / divisors
                        arr[:, invalid] = OUTPUT_NODATA
                    n_valid += int(invalid.size - invalid.sum())
                    dst.write(arr, window=where)
                    written.check()  # a full disk stops at the first failed block
                    for name, ldst in lay_dst.items():
                        v = parts[name]
                        lv = np.where(np.isfinite(v), v, LAYER_NODATA[name]).astype(np.uint8)
                        if outside is not None:
                            lv[outside] = LAYER_NODATA[name]
                        ldst.write(lv[None], window=where)
                looks_offset = (source.offsets is None and n_spec > 0
                                and float(np.median(below_hint / n_spec)) <= OFFSET_BELOW_SHARE)
                if looks_offset:  # whatever reads this stack says so again (lsmap.io.scene.scene_info)
                    share = float(np.median(below_hint / n_spec))
                    seen_dn = (f"none below {int(dn_min.min())}" if share == 0 else
                               f"{100 * share:.1f} % of the valid pixels below {OFFSET_DN_HINT:g}")
                    dst.update_tags(**{OFFSET_TAG: seen_dn})
            if n_valid == 0:
                empty = [b for b, n in band_valid.items() if n == 0]
                named = ", ".join(f"{b} ({sources.get(b, '?')})" for b in empty) or "no single band"
                raise InputError(
                    f"{out}: the stack would have no valid pixel; bands without any valid pixel on the grid: "
                    f"{named}; check that every input covers the {area} and its nodata value"
                )
            if np.isfinite(dn_max).all() and np.median(dn_max) <= FRACTION_MAX:
                raise InputError(f"{source.where}: the bands' values reach only {np.median(dn_max):.3g} (the median of "
                                 f"their maxima over the {area}): reflectance as a fraction (0-1), which the stack's "
                                 f"digital numbers would round away; lsmap stacks Sentinel-2 digital numbers "
                                 f"(reflectance x 10000): multiply the band files by 10000 first")
            if check_given and seen and np.median(below_zero / seen) > NEGATIVE_SHARE_MAX:
                names = [b for b, k in zip(profile.bands, spectral, strict=True) if k]
                shares = ", ".join(f"{b} {100 * n / seen:.0f} %" for b, n in zip(names, below_zero, strict=True))
                raise InputError(f"{source.where}: with `offset` {offset:g}, the valid pixels below zero reflectance "
                                 f"are {shares}: these band files do not look offset; stack them without `offset` "
                                 f"(or with `offset` 0)")
            if looks_offset:
                said = (f"{source.where}: the digital numbers look offset: "
                        + (f"no value below {int(dn_min.min())} in any band" if share == 0 else
                           f"{100 * share:.1f} % of the valid pixels below {OFFSET_DN_HINT:g} (the median band)")
                        + f" over the {area} (products of processing baseline 04.00 and later add 1000)")
                if strict_offset:  # nothing is written: the caller's results would be wrong
                    raise InputError(f"{said}; give `offset` -1000 if they are, or `offset` 0 if they are not "
                                     f"(SAFE products and STAC Items carry their offset)")
            verify_geotiff(tmp, out)
            for name, path in tmp_layers.items():
                verify_geotiff(path, layer_outs[name])
    if looks_offset:
        msg = f"{said}; if they are, stack again with `offset` -1000 (SAFE products and STAC Items carry their offset)"
        warnings.warn(msg, LsmapWarning, stacklevel=user_level())
        found.append(msg)

    crs = grid.crs.to_string() if grid.crs is not None else ""
    return StackResult(
        path=out, profile=profile.name, bands=profile.bands, width=out_grid.width, height=out_grid.height,
        crs=crs, resolution=(abs(grid.transform.a), abs(grid.transform.e)), sources=sources,
        nodata=UINT16_NODATA if coded else OUTPUT_NODATA, encoding=encoding, valid_fraction=n_valid / float(out_grid.width * out_grid.height), left_out=left_out,
        kind=source.kind, offsets={b: source.dn_offset(b) for b in profile.sentinel2_bands},
        offsets_known=source.offsets is not None, quantification=source.quantification,
        product=source.metadata.to_dict() if source.metadata is not None else None,
        window=None if aoi is None else (int(win.col_off), int(win.row_off), int(win.width), int(win.height)),
        aoi=aoi.to_dict() if aoi is not None else None, layers={k: str(v) for k, v in layer_outs.items()},
        notes=source.notes, warnings=tuple(found),
    )


def groups_of(profile: BandProfile, layers: dict) -> list[str]:
    """Distinct source files among the layers (the resampling threads)."""
    return list({id(layers[b].src): b for b in profile.bands}.values())


def _ten_metre_grid(ref) -> Grid:
    """The output grid: ``ref``'s grid, or its 10 m subdivision when ``ref`` is a coarser band (20/60 m) of a
    metric grid, e.g. a product whose 10 m files are absent: Sentinel-2 tile grids share their corner."""
    t = ref.transform
    k = abs(t.a) / 10.0
    metric = ref.crs is not None and ref.crs.is_projected and ref.crs.linear_units in ("metre", "meter", "m")
    if metric and t.b == 0 and t.d == 0 and k > 1 + 1e-9 and abs(k - round(k)) < 1e-9 \
            and math.isclose(abs(t.e), abs(t.a), rel_tol=1e-9):
        from rasterio.transform import Affine

        k = round(k)
        return Grid(ref.crs, Affine(10.0, 0.0, t.c, 0.0, -10.0 if t.e < 0 else 10.0, t.f), ref.width * k,
                     ref.height * k)
    return Grid(ref.crs, t, ref.width, ref.height)


def _blocks_ahead(windows: Sequence, resample: Callable, es: contextlib.ExitStack):
    """``(window, resample(window))`` in order, each block resampled on another thread while the caller
    encodes and writes the one before (one block ahead, never two: a source file is read by one
    block's threads at a time). The thread is shut down when ``es`` closes."""
    from concurrent.futures import ThreadPoolExecutor

    one = es.enter_context(ThreadPoolExecutor(1, thread_name_prefix="lsmap-stack-ahead"))
    es.callback(lambda: [f.cancel() for _, f in pending])  # an error: the queued block is not read
    pending = deque()
    for w in windows:
        pending.append((w, one.submit(resample, w)))
        if len(pending) > 1:
            done, fut = pending.popleft()
            yield done, fut.result()
    while pending:
        done, fut = pending.popleft()
        yield done, fut.result()


def _resample_block(layers: dict, groups, w, pool) -> dict[str, np.ndarray]:
    """Every layer on output window ``w``; each group of layers (one source file) in one thread."""
    cache: dict = {}  # pixel-centre coordinates per source CRS, shared by the layers

    def group(names: list[str]) -> dict[str, np.ndarray]:
        return {b: layers[b].block(w, cache) for b in names}

    parts: dict[str, np.ndarray] = {}
    for done in pool.map(group, groups):
        parts.update(done)
    return parts


def _ref_band(opened: dict) -> str:
    """The band whose grid becomes the output grid: a 10 m band, else the finest band."""
    for b in REFERENCE_BANDS:
        if b in opened:
            return b
    return min(opened, key=lambda b: (abs(opened[b].transform.a), S2_RESOLUTION[b]))
