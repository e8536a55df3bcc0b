"""Change and terrain evidence: was the ground vegetated before the event, and is it steep enough to slide?

A detector that sees one post-event image flags everything that looks like fresh bare ground:
river gravel bars, rock outcrops, quarries, fields. Analysts drop those look-alikes with two
questions, and this module asks them of every landslide polygon (and, for ``gate``, of every
pixel):

- **NDVI drop**: the pre-event scene (``pre``) is reprojected onto the post-event scene's grid and
  both scenes' NDVI, ``(NIR - red) / (NIR + red)`` of bands B8 and B4 found by name, are compared.
  A new scar was vegetated before (high NDVI) and is bare now; a gravel bar or a rock outcrop was
  bare in both scenes.
- **Slope**: the post scene's ``slope`` band (degrees; L4S-scaled values are multiplied by the
  slope divisor of :mod:`lsmap.core.bands`), or Horn's slope of its ``DEM`` band
  (:func:`lsmap.core.terrain.horn_slope`). Gravel bars and fields lie on flat ground.

Per polygon (:func:`polygon_evidence`): ``ndvi_post`` (mean over the polygon's pixels),
``ndvi_pre`` and ``dndvi`` (means over the pixels observed in both scenes; ``dndvi`` is the mean
drop ``ndvi_pre - ndvi_post`` of those pixels, positive when vegetation was lost),
``pre_not_observed`` (the share of the polygon where the pre scene has no data: outside it,
nodata, masked, cloud) and ``mean_slope`` (degrees). :func:`judge` drops a polygon whose
``dndvi`` is below ``min_ndvi_drop`` or whose ``mean_slope`` is below ``min_slope``, with the
reason. A polygon that the pre scene saw on less than half of its pixels
(:data:`MAX_PRE_NOT_OBSERVED`) is not judged on NDVI: missing evidence never drops a landslide.

Reflectances: NDVI is only comparable between scenes in one radiometric unit, so both scenes'
red and NIR are taken back to digital numbers before it is computed (an L4S-scaled value times
its band's divisor; raw scenes as they are; products' DN offsets are removed when stacking).
Which one a scene holds is decided from its values as for detection
(:func:`lsmap.data.scan.scan_scene`, ``input_scale="auto"``).

Streaming: everything is read block by block on the post scene's grid (``block`` pixels a side).
The pre scene is read only around each block (the block's footprint in its CRS plus a margin),
masked by the one validity rule of :mod:`lsmap.io.scene`, and warped onto the block's grid with
rasterio's ``reproject`` (bilinear, invalid pixels left out of the kernel); a pre scene on the post
grid, or shifted from it by whole pixels, is read directly. Per-polygon sums are gathered by
rasterising each block's polygons (:func:`rasterio.features.rasterize`, pixel centres), and only
blocks that hold polygons are read. Memory is a few blocks, whatever the scene size.

Defaults (:data:`lsmap.core.constants.MIN_NDVI_DROP`, :data:`~lsmap.core.constants.MIN_SLOPE`) were measured on the sample scene pair, the
real Puthumala 2019 scar and the real Landslide4Sense patches: see ``docs/evidence.md``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.bands import BandProfile, get_profile
from lsmap.core.constants import MIN_NDVI_DROP, MIN_SLOPE
from lsmap.core.terrain import horn_slope
from lsmap.core.windows import Window, block_grid
from lsmap.data.masks import BLUE_BAND
from lsmap.data.scan import scan_scene
from lsmap.data.sources import stack_arguments
from lsmap.errors import InputError, MissingBandError
from lsmap.io.rasters import GDAL_CACHE_MB, open_raster, read_window
from lsmap.io.scene import (
    SceneInfo,
    open_scene_mask,
    read_scene_window,
    scene_band_indices,
    scene_band_names,
    scene_info,
)

#: Red and near-infrared bands, by name.
RED, NIR = "B4", "B8"
#: A polygon whose pre-scene share of unobserved pixels exceeds this is not judged on NDVI.
MAX_PRE_NOT_OBSERVED = 0.5
#: Columns added to the polygons (``ndvi_pre``, ``dndvi``, ``pre_not_observed`` only with a pre scene).
COLUMNS = ("ndvi_pre", "ndvi_post", "dndvi", "pre_not_observed", "mean_slope")
#: Reasons a polygon is rejected (the ``reason`` column of the ``rejected`` layer; several joined by ",").
REASONS = ("ndvi_drop", "slope")
#: Pixels of margin read around a block's footprint in the pre scene (bilinear needs one).
_MARGIN = 2


@dataclass(frozen=True)
class PreScene:
    """The pre-event scene, checked: where its red and NIR bands are and what scale they hold.

    Attributes:
        info: The scene.
        indexes: 1-based band indexes of red and NIR.
        raw: Digital numbers (``True``) or L4S-scaled values.
        shift: ``(row, col)`` of the post grid's origin in the pre grid when the pre grid is the post
            grid shifted by whole pixels (read without warping); ``None``: warped.
    """

    info: SceneInfo
    indexes: tuple[int, int]
    raw: bool
    shift: tuple[int, int] | None


@dataclass(frozen=True)
class SlopeSource:
    """Where the post scene's slope comes from: its ``slope`` band or Horn's slope of its ``DEM`` band."""

    band: str
    index: int


@dataclass
class EvidencePlan:
    """What the evidence stage reads and tests, settled before any work (:func:`plan_evidence`).

    Attributes:
        post: The post-event scene.
        post_indexes: 1-based indexes of its red and NIR bands (``None``: it has none; NDVI not computed).
        pre: The pre-event scene (``None``: slope evidence only).
        slope: The slope source (``None``: the scene has no terrain band; slope not tested).
        min_ndvi_drop: Polygons (pixels, with ``gate``) whose NDVI drop is below it are rejected (``None``: not tested).
        min_slope: Polygons (pixels) whose slope is below it (degrees) are rejected (``None``: not tested).
        post_raw: Whether the post scene holds digital numbers (set once the scene is scanned).
        seconds: Time spent, by step.
    """

    post: SceneInfo
    post_indexes: tuple[int, int] | None
    pre: PreScene | None
    slope: SlopeSource | None
    min_ndvi_drop: float | None
    min_slope: float | None
    post_raw: bool = False
    seconds: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready description (for the run summary)."""
        return {
            "pre": str(self.pre.info.path) if self.pre is not None else None,
            "pre_input_scale": ("raw" if self.pre.raw else "l4s") if self.pre is not None else None,
            "pre_warped": self.pre.shift is None if self.pre is not None else None,
            "slope_source": self.slope.band if self.slope is not None else None,
            "min_ndvi_drop": self.min_ndvi_drop, "min_slope": self.min_slope,
            "max_pre_not_observed": MAX_PRE_NOT_OBSERVED, "timings": dict(self.seconds),
        }


def _pair(bands: Sequence[str]) -> BandProfile:
    return get_profile(list(bands))


def open_pre(path: str | os.PathLike, post: SceneInfo | None = None, bands: Any = None) -> PreScene:
    """Check the pre-event scene: readable, georeferenced, with red and NIR, overlapping ``post``.

    Args:
        path: Stacked pre-event GeoTIFF (band descriptions name its bands, as ``lsmap stack`` writes them).
        post: The post-event scene; ``None`` checks the pre scene alone (the overlap and the grid
            are settled by a second call once the post scene is known).
        bands: The pre scene's bands in file order, for a file without band descriptions.

    Raises:
        MissingInputError: no such file.
        InputError: unreadable, no CRS, no red (B4) or NIR (B8) band, or no overlap with ``post``;
            the message names the file and the fix.
    """
    info = scene_info(path)
    try:
        names = scene_band_names(info, bands)
    except InputError as e:  # the pre scene's band names are `pre_bands`, not the post scene's `bands`
        raise InputError(str(e).replace("`bands`", "`pre_bands`")) from None
    try:
        idx = scene_band_indices(names, (RED, NIR), source=info.path)
    except MissingBandError as e:
        raise InputError(f"{info.path}: the pre-event scene has no band {', '.join(e.bands)} (it has "
                         f"{', '.join(names)}); `pre` needs red ({RED}) and NIR ({NIR}): stack them, e.g. "
                         f"'lsmap stack PRE_BANDS --bands rgbn'") from None
    pre = PreScene(info, (idx[0], idx[1]), False, None)
    if post is not None:
        pre = _on_post_grid(pre, post)
    return dataclasses.replace(pre, raw=_is_raw(info, idx))


def _on_post_grid(pre: PreScene, post: SceneInfo) -> PreScene:
    """``pre`` checked to overlap ``post``, with its whole-pixel shift from the post grid (if any)."""
    if not _overlaps(pre.info, post):
        raise InputError(f"{pre.info.path}: the pre-event scene does not overlap the post-event scene {post.path}; "
                         f"give a pre-event scene of the same area")
    return dataclasses.replace(pre, shift=_whole_pixel_shift(pre.info, post))


def _overlaps(a: SceneInfo, b: SceneInfo) -> bool:
    """Do the footprints of two scenes intersect (``a``'s bounds taken into ``b``'s CRS)?"""
    from rasterio.warp import transform_bounds
    from rasterio.windows import bounds

    try:
        left, bottom, right, top = transform_bounds(a.crs, b.crs, *bounds(Window(0, 0, a.width, a.height),
                                                                          a.transform), densify_pts=21)
    except Exception:  # noqa: BLE001 - CRSs PROJ cannot relate cannot overlap either
        return False
    bl, bb, br, bt = bounds(Window(0, 0, b.width, b.height), b.transform)
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        return False
    return left < br and right > bl and bottom < bt and top > bb


def _whole_pixel_shift(pre: SceneInfo, post: SceneInfo) -> tuple[int, int] | None:
    """``(row, col)`` of the post grid's origin in the pre grid when both are one grid (same CRS and
    pixel size, origins whole pixels apart); ``None`` otherwise."""
    a, b = pre.transform, post.transform
    if pre.crs != post.crs or not np.allclose([a.a, a.b, a.d, a.e], [b.a, b.b, b.d, b.e], rtol=0, atol=1e-9):
        return None
    if a.b != 0 or a.d != 0:
        return None
    col, row = (b.c - a.c) / a.a, (b.f - a.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _is_raw(info: SceneInfo, indexes: Sequence[int]) -> bool:
    """Digital numbers or L4S-scaled values in these bands (the ``auto`` rule of detection)."""
    return scan_scene(info, _pair((RED, NIR)), "auto", indexes=indexes).raw


def plan_evidence(post: SceneInfo, post_bands: Sequence[str], *, pre: str | os.PathLike | PreScene | None = None,
                  pre_bands: Any = None, min_ndvi_drop: float | None = None,
                  min_slope: float | None = None) -> EvidencePlan:
    """Check what the evidence stage needs and settle its thresholds, before any work.

    Args:
        post: The post-event scene.
        post_bands: Its band names in file order (:func:`lsmap.io.scene.scene_band_names`).
        pre: The pre-event scene (path or :func:`open_pre` result); ``None``: slope evidence only.
        pre_bands: The pre scene's bands, for a file without band descriptions.
        min_ndvi_drop: NDVI drop below which a polygon is rejected; ``None``: :data:`MIN_NDVI_DROP`
            with a pre scene. Needs ``pre``.
        min_slope: Mean slope (degrees) below which a polygon is rejected; ``None``: :data:`MIN_SLOPE`
            with a pre scene when the post scene has a slope or DEM band; ``0``: not tested.

    Raises:
        InputError: ``min_ndvi_drop`` without a pre scene; a pre scene and a post scene without red
            or NIR; ``min_slope`` given and the post scene has neither slope nor DEM; a bad pre scene
            (:func:`open_pre`).
    """
    if pre is None and min_ndvi_drop is not None:
        raise InputError("`min_ndvi_drop` needs a pre-event scene; pass `pre`")
    if min_slope is not None and min_slope < 0:
        raise InputError(f"`min_slope` must not be negative (got {min_slope})")
    try:
        post_idx = scene_band_indices(post_bands, (RED, NIR), source=post.path)
    except MissingBandError:
        post_idx = None
    if pre is not None and post_idx is None:
        raise InputError(f"{post.path}: the post-event scene has no {RED} and {NIR} bands (it has "
                         f"{', '.join(post_bands)}); `pre` compares their NDVI: restack it with them")
    slope = _slope_source(post_bands)
    if slope is None and min_slope:
        raise InputError(f"{post.path}: `min_slope` needs a slope or DEM band and the scene has "
                         f"{', '.join(post_bands)}; restack it with a DEM (lsmap stack --dem)")
    pre_scene = None
    if pre is not None:
        pre_scene = _on_post_grid(pre, post) if isinstance(pre, PreScene) else open_pre(pre, post, pre_bands)
        if min_ndvi_drop is None:
            min_ndvi_drop = MIN_NDVI_DROP
        if min_slope is None and slope is not None:
            min_slope = MIN_SLOPE
    if min_slope == 0:
        min_slope = None
    return EvidencePlan(post, (post_idx[0], post_idx[1]) if post_idx else None, pre_scene, slope,
                        min_ndvi_drop, min_slope)


def _slope_source(names: Sequence[str]) -> SlopeSource | None:
    for band in ("slope", "DEM"):
        if band in names:
            return SlopeSource(band, names.index(band) + 1)
    return None


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """``(nir - red) / (nir + red)`` of reflectances in one unit; NaN where undefined (sum <= 0, NaN input).

    Shape:
        ``(h, w)``, ``(h, w)`` -> ``(h, w)`` float32.
    """
    red = np.asarray(red, np.float32)
    nir = np.asarray(nir, np.float32)
    s = nir + red
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (nir - red) / s
    out[~(s > 0)] = np.nan
    return out


@dataclass
class PixelEvidence:
    """The evidence of one block of the post grid (NaN where unknown).

    Attributes:
        ndvi_post: Post-event NDVI (NaN where the post scene has no data).
        ndvi_pre: Pre-event NDVI warped onto the block (NaN where the pre scene has no data).
        slope: Slope in degrees (NaN where unknown).
    """

    ndvi_post: np.ndarray | None
    ndvi_pre: np.ndarray | None
    slope: np.ndarray | None

    def rejected(self, min_ndvi_drop: float | None, min_slope: float | None) -> np.ndarray:
        """Pixels whose evidence fails: NDVI drop below ``min_ndvi_drop`` (where both scenes saw the
        pixel) or slope below ``min_slope`` (where it is known)."""
        shape = next(a.shape for a in (self.ndvi_post, self.ndvi_pre, self.slope) if a is not None)
        out = np.zeros(shape, bool)
        with np.errstate(invalid="ignore"):
            if min_ndvi_drop is not None and self.ndvi_pre is not None:
                out |= (self.ndvi_pre - self.ndvi_post) < min_ndvi_drop  # False where either is NaN
            if min_slope is not None and self.slope is not None:
                out |= self.slope < min_slope
        return out


class EvidenceReader:
    """Reads the :class:`PixelEvidence` of blocks of the post grid (open with ``with``)."""

    def __init__(self, plan: EvidencePlan) -> None:
        self.plan = plan
        self._es = contextlib.ExitStack()
        self._extra: dict[str, Any] = {}
        self.post_src = self.pre_src = self.pre_mask = None

    def __enter__(self) -> EvidenceReader:
        self.post_src = self._es.enter_context(open_raster(self.plan.post.path, "post-event scene"))
        if self.plan.pre is not None:
            self.pre_src = self._es.enter_context(open_raster(self.plan.pre.info.path, "pre-event scene"))
            self.pre_mask = self._es.enter_context(open_scene_mask(self.plan.pre.info))  # its clouds (mask_pre)
        return self

    def __exit__(self, *exc) -> None:
        self._es.close()

    def extra(self, path: str | os.PathLike):
        """Another raster opened (once) with this reader, e.g. the probability raster being gated."""
        key = str(path)
        if key not in self._extra:
            self._extra[key] = self._es.enter_context(open_raster(path, "raster"))
        return self._extra[key]

    def block(self, win: Window, need_ndvi: bool = True, need_slope: bool = True) -> PixelEvidence:
        """The evidence of one window of the post grid."""
        plan = self.plan
        ndvi_post = ndvi_pre = slope = None
        if need_ndvi and plan.post_indexes is not None:
            ndvi_post = self._post_ndvi(win)
            if plan.pre is not None:
                ndvi_pre = self._pre_ndvi(win)
        if need_slope and plan.slope is not None:
            slope = self._slope(win)
        return PixelEvidence(ndvi_post, ndvi_pre, slope)

    def _post_ndvi(self, win: Window) -> np.ndarray:
        plan = self.plan
        pair = _pair((RED, NIR))
        data, valid = read_scene_window(self.post_src, win, pair, declared=plan.post.declares_nodata,
                                        indexes=plan.post_indexes)
        dn = _to_dn(data, pair, plan.post_raw)
        out = ndvi(dn[0], dn[1])
        out[~valid] = np.nan
        return out

    def _pre_ndvi(self, win: Window) -> np.ndarray:
        pre = self.plan.pre
        pair = _pair((RED, NIR))
        h, w = int(win.height), int(win.width)
        if pre.shift is not None:  # one grid: read the overlapping part directly
            out = np.full((2, h, w), np.nan, np.float32)
            r0, c0 = int(win.row_off) + pre.shift[0], int(win.col_off) + pre.shift[1]
            rr0, cc0 = max(r0, 0), max(c0, 0)
            rr1, cc1 = min(r0 + h, pre.info.height), min(c0 + w, pre.info.width)
            if rr1 > rr0 and cc1 > cc0:
                part = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
                data, valid = read_scene_window(self.pre_src, part, pair, declared=pre.info.declares_nodata,
                                                indexes=pre.indexes, mask=self.pre_mask)
                dn = _to_dn(data, pair, pre.raw)
                dn[:, ~valid] = np.nan
                out[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = dn
        else:
            out = self._warp_pre(win, pair)
        return ndvi(out[0], out[1])

    def _warp_pre(self, win: Window, pair: BandProfile) -> np.ndarray:
        """Pre red/NIR digital numbers warped onto the post window (NaN where not observed)."""
        from rasterio.enums import Resampling
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import bounds, from_bounds
        from rasterio.windows import transform as window_transform

        pre, post = self.plan.pre, self.plan.post
        h, w = int(win.height), int(win.width)
        out = np.full((2, h, w), np.nan, np.float32)
        try:
            left, bottom, right, top = transform_bounds(post.crs, pre.info.crs, *bounds(win, post.transform),
                                                        densify_pts=21)
        except Exception:  # noqa: BLE001 - a block PROJ cannot map is not observed
            return out
        src_win = from_bounds(left, bottom, right, top, pre.info.transform)
        r0 = max(int(math.floor(src_win.row_off)) - _MARGIN, 0)
        c0 = max(int(math.floor(src_win.col_off)) - _MARGIN, 0)
        r1 = min(int(math.ceil(src_win.row_off + src_win.height)) + _MARGIN, pre.info.height)
        c1 = min(int(math.ceil(src_win.col_off + src_win.width)) + _MARGIN, pre.info.width)
        if r1 <= r0 or c1 <= c0:
            return out
        part = Window(c0, r0, c1 - c0, r1 - r0)
        data, valid = read_scene_window(self.pre_src, part, pair, declared=pre.info.declares_nodata,
                                        indexes=pre.indexes, mask=self.pre_mask)
        if not valid.any():
            return out
        dn = _to_dn(data, pair, pre.raw)
        dn[:, ~valid] = np.nan
        reproject(dn, out, src_transform=window_transform(part, pre.info.transform), src_crs=pre.info.crs,
                  src_nodata=np.nan, dst_transform=window_transform(win, post.transform), dst_crs=post.crs,
                  dst_nodata=np.nan, resampling=Resampling.bilinear, init_dest_nodata=True)
        return out

    def _slope(self, win: Window) -> np.ndarray:
        from rasterio.windows import Window as RioWindow

        plan = self.plan
        src = plan.slope
        post = plan.post
        prof = get_profile([src.band])
        if src.band == "slope":
            data, valid = read_scene_window(self.post_src, win, prof, declared=post.declares_nodata,
                                            indexes=(src.index,))
            deg = data[0] * (1.0 if plan.post_raw else np.float32(prof.divisors[0]))
            deg[~valid] = np.nan
            return deg.astype(np.float32)
        # the DEM with a one-pixel halo (NaN beyond the scene), Horn's slope, the halo cut off
        r0, c0 = int(win.row_off) - 1, int(win.col_off) - 1
        h, w = int(win.height) + 2, int(win.width) + 2
        dem = np.full((h, w), np.nan, np.float64)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, post.height), min(c0 + w, post.width)
        part = RioWindow(cc0, rr0, cc1 - cc0, rr1 - rr0)
        data, valid = read_scene_window(self.post_src, part, prof, declared=post.declares_nodata,
                                        indexes=(src.index,))
        metres = data[0].astype(np.float64) * (1.0 if plan.post_raw else prof.divisors[0])
        metres[~valid] = np.nan
        dem[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = metres
        return horn_slope(dem, post.transform, post.crs, row_offset=r0)[1:-1, 1:-1]


def _map_blocks(plan: EvidencePlan, items: Sequence, fn, workers: int | None = None) -> Iterator:
    """``fn(reader, item)`` for each item, in item order, run by ``workers`` threads (decoding, warping
    and NumPy release the GIL); each item gets an :class:`EvidenceReader` opened and closed in its
    thread (rasterio datasets must be closed where they were opened). At most ``2 * workers``
    results wait, so memory stays a few blocks."""
    from concurrent.futures import ThreadPoolExecutor

    import rasterio

    def one(item):
        with EvidenceReader(plan) as reader:
            return fn(reader, item)

    workers = max(1, workers or min(4, os.cpu_count() or 1))
    pending: collections.deque = collections.deque()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20, GDAL_NUM_THREADS=1), \
            ThreadPoolExecutor(workers, thread_name_prefix="lsmap-evidence") as pool:
        try:
            for item in items:
                pending.append(pool.submit(one, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def _to_dn(data: np.ndarray, profile: BandProfile, raw: bool) -> np.ndarray:
    """Values as read -> digital numbers (float32): raw values as they are, L4S-scaled ones times the divisors."""
    if raw:
        return np.asarray(data, np.float32).copy()
    div = np.asarray(profile.divisors, np.float64).reshape(-1, 1, 1)
    return (np.asarray(data, np.float64) * div).astype(np.float32)


# --- pixels: the gate --------------------------------------------------------------------------


def gate_probability(plan: EvidencePlan, prob: str | os.PathLike, out: str | os.PathLike, *,
                     block: int = 1024, nodata: float = -1.0) -> dict:
    """Write ``prob`` with the probability set to 0 wherever the pixel's evidence fails.

    A pixel fails when both scenes saw it and its NDVI dropped by less than ``min_ndvi_drop``, or
    its slope is below ``min_slope``; pixels without evidence (pre not observed, slope unknown) and
    nodata pixels (``nodata``) keep their value.

    Returns:
        ``{"gated_pixels": n, "seconds": s}``: pixels above 0 that were set to 0.
    """
    import rasterio

    t0 = time.perf_counter()
    gated = 0
    with rasterio.open(prob) as src:
        profile, shape = src.profile, src.shape

    def one(reader: EvidenceReader, win: Window) -> tuple[Window, np.ndarray, int]:
        p = read_window(reader.extra(prob), 1, win)
        ev = reader.block(win, need_ndvi=plan.min_ndvi_drop is not None, need_slope=plan.min_slope is not None)
        fail = ev.rejected(plan.min_ndvi_drop, plan.min_slope) & (p != nodata) & (p > 0)
        return win, np.where(fail, np.zeros((), p.dtype), p), int(fail.sum())

    with rasterio.open(out, "w", **profile) as dst:
        for win, p, n in _map_blocks(plan, block_grid(*shape, block), one):
            gated += n
            dst.write(p, 1, window=win)
    seconds = time.perf_counter() - t0
    plan.seconds["gate"] = seconds
    return {"gated_pixels": gated, "seconds": seconds}


# --- polygons ---------------------------------------------------------------------------------


def polygon_evidence(plan: EvidencePlan, geoms: Sequence[Any], *, block: int = 1024) -> dict[str, np.ndarray]:
    """Per-polygon evidence (the columns of the module docstring), streamed block by block.

    Args:
        plan: The evidence plan.
        geoms: Disjoint polygons in the post scene's CRS (the detection's polygons).
        block: Block size in pixels.

    Returns:
        ``{column: values}`` for :data:`COLUMNS` that the plan can compute (``ndvi_pre``, ``dndvi``,
        ``pre_not_observed`` with a pre scene; ``ndvi_post`` when the post scene has red and NIR;
        ``mean_slope`` with a slope source); NaN where a polygon has no pixel with the evidence.
    """
    from rasterio.features import rasterize
    from rasterio.windows import transform as window_transform

    t0 = time.perf_counter()
    geoms = list(geoms)
    n = len(geoms)
    post = plan.post
    keys = ("post", "ndvi_post", "both", "ndvi_pre", "drop", "slope_n", "slope")
    sums = {k: np.zeros(n + 1) for k in keys}

    def one(reader: EvidenceReader, item: tuple[Window, np.ndarray]) -> dict[str, np.ndarray]:
        win, idx = item
        labels = rasterize(((geoms[i], int(i) + 1) for i in idx), out_shape=(int(win.height), int(win.width)),
                           transform=window_transform(win, post.transform), fill=0, dtype="int32")
        inside = labels.ravel() > 0
        part: dict[str, np.ndarray] = {}
        if not inside.any():
            return part
        lab = labels.ravel()[inside]
        ev = reader.block(win)

        def px(a: np.ndarray) -> np.ndarray:
            return a.ravel()[inside].astype(np.float64)

        def add(key: str, ok: np.ndarray, values: np.ndarray | None = None) -> None:
            part[key] = np.bincount(lab[ok], weights=None if values is None else values[ok], minlength=n + 1)

        if ev.ndvi_post is not None:
            post_v = px(ev.ndvi_post)
            post_ok = np.isfinite(post_v)
            add("post", post_ok)
            add("ndvi_post", post_ok, post_v)
            if ev.ndvi_pre is not None:
                pre_v = px(ev.ndvi_pre)
                both = post_ok & np.isfinite(pre_v)
                add("both", both)
                add("ndvi_pre", both, pre_v)
                add("drop", both, pre_v - post_v)
        if ev.slope is not None:
            slope_v = px(ev.slope)
            slope_ok = np.isfinite(slope_v)
            add("slope_n", slope_ok)
            add("slope", slope_ok, slope_v)
        return part

    for part in _map_blocks(plan, list(_blocks_with_polygons(geoms, post, block)), one):
        for k, v in part.items():  # folded in block order: the same sums whatever the thread count
            sums[k] += v

    def mean(total: str, count: str) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums[count] > 0, sums[total] / np.maximum(sums[count], 1), np.nan)[1:]

    out: dict[str, np.ndarray] = {}
    if plan.pre is not None:
        out["ndvi_pre"] = mean("ndvi_pre", "both")
    if plan.post_indexes is not None:
        out["ndvi_post"] = mean("ndvi_post", "post")
    if plan.pre is not None:
        out["dndvi"] = mean("drop", "both")
        with np.errstate(invalid="ignore", divide="ignore"):
            out["pre_not_observed"] = np.where(sums["post"] > 0, 1.0 - sums["both"] / np.maximum(sums["post"], 1),
                                               np.nan)[1:]
    if plan.slope is not None:
        out["mean_slope"] = mean("slope", "slope_n")
    plan.seconds["polygons"] = time.perf_counter() - t0
    return out


def _blocks_with_polygons(geoms: Sequence[Any], post: SceneInfo, block: int) -> Iterator[tuple[Window, np.ndarray]]:
    """The blocks of the post grid that some polygon's bounding box reaches, with those polygons."""
    import shapely

    if not geoms:
        return
    b = shapely.bounds(np.asarray(geoms, dtype=object))  # (n, 4): minx, miny, maxx, maxy
    inv = ~post.transform
    corners = [inv @ (b[:, i], b[:, j]) for i, j in ((0, 1), (0, 3), (2, 1), (2, 3))]
    cols = np.stack([c[0] for c in corners])
    rows = np.stack([c[1] for c in corners])
    c0, c1 = np.floor(cols.min(0)), np.ceil(cols.max(0))
    r0, r1 = np.floor(rows.min(0)), np.ceil(rows.max(0))
    for win in block_grid(post.height, post.width, block):
        wr0, wc0 = win.row_off, win.col_off
        wr1, wc1 = wr0 + win.height, wc0 + win.width
        hit = np.flatnonzero((r1 > wr0) & (r0 < wr1) & (c1 > wc0) & (c0 < wc1))
        if len(hit):
            yield win, hit


def judge(table: dict[str, np.ndarray], plan: EvidencePlan) -> np.ndarray:
    """The reason each polygon is rejected (``""``: kept), from :func:`polygon_evidence`'s table.

    NDVI: rejected when ``dndvi < min_ndvi_drop`` and the pre scene saw at least
    ``1 - MAX_PRE_NOT_OBSERVED`` of the polygon. Slope: rejected when ``mean_slope < min_slope``.
    A polygon without the evidence (NaN) is kept.
    """
    n = len(next(iter(table.values()))) if table else 0
    reasons = [[] for _ in range(n)]
    with np.errstate(invalid="ignore"):
        if plan.min_ndvi_drop is not None and "dndvi" in table:
            judged = table["pre_not_observed"] <= MAX_PRE_NOT_OBSERVED
            for i in np.flatnonzero(judged & (table["dndvi"] < plan.min_ndvi_drop)):
                reasons[i].append("ndvi_drop")
        if plan.min_slope is not None and "mean_slope" in table:
            for i in np.flatnonzero(table["mean_slope"] < plan.min_slope):
                reasons[i].append("slope")
    return np.array([",".join(r) for r in reasons], dtype=object)


def apply_evidence(gdf, plan: EvidencePlan, *, block: int = 1024):
    """Add the evidence columns to the detection's polygons and split off the rejected ones.

    Returns:
        ``(kept, rejected)`` GeoDataFrames; ``rejected`` has a ``reason`` column (:data:`REASONS`,
        several joined by ``","``). Both keep the polygons' ``id``.
    """
    import geopandas as gpd

    table = polygon_evidence(plan, list(gdf.geometry), block=block)
    gdf = gdf.copy()
    for k, v in table.items():
        gdf[k] = v
    reason = judge(table, plan) if len(gdf) else np.zeros(0, dtype=object)
    bad = np.array([bool(r) for r in reason], bool)
    kept = gpd.GeoDataFrame(gdf[~bad].reset_index(drop=True), geometry="geometry", crs=gdf.crs)
    rejected = gpd.GeoDataFrame(gdf[bad].reset_index(drop=True), geometry="geometry", crs=gdf.crs)
    rejected["reason"] = np.asarray(reason[bad], dtype=object) if bad.any() else np.zeros(0, dtype=object)
    cols = [c for c in rejected.columns if c != "geometry"] + ["geometry"]
    return kept, rejected[cols]


#: Post-scene pixels added around its footprint when a pre-event product is cropped to it (the warp's kernel).
PRE_MARGIN_PX = 4


def post_footprint(post: SceneInfo, margin: int = PRE_MARGIN_PX):
    """The post scene's footprint (plus ``margin`` pixels) as an :class:`~lsmap.io.aoi.AOI` in its CRS."""
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    from lsmap.io.aoi import AOI

    w, s, e, n = array_bounds(post.height, post.width, post.transform)
    pad = margin * max(abs(post.transform.a), abs(post.transform.e))
    return AOI(box(w - pad, s - pad, e + pad, n + pad), post.crs, f"the post-event scene {post.path.name}", mask=False)


def stack_pre(inputs: Any, work: Path, post: SceneInfo | None = None, offset: float | None = None,
              blue_max: float | None = None):
    """Stack the red and NIR bands of pre-event stacking inputs (a product, a band folder, or ``lsmap stack``
    arguments: :func:`lsmap.data.sources.stack_arguments`) into ``work/pre``; ``offset``: the DN offset of loose
    band files (detect's ``pre_offset``), whose messages name it so; ``blue_max``: also stack B2, for the
    bright-blue cloud test (:func:`mask_pre`).

    With ``post``, only the part of the pre-event product over the post scene (its footprint plus
    :data:`PRE_MARGIN_PX` pixels) is read: a whole tile is never stacked for a small AOI. An ``aoi``
    among the inputs wins.

    Returns:
        ``(stack path, not-observed spec)``: the spec holds the product's own SCL (written beside the stack)
        and ``blue_max``; :func:`mask_pre` applies it.
    """
    from lsmap.data.masks import mask_spec, product_mask_layers
    from lsmap.data.sources import stack_source

    kwargs = stack_arguments(inputs)
    if kwargs is None:
        raise InputError(f"{inputs}: a stacked pre-event GeoTIFF is read as it is (open_pre), not stacked")
    kwargs["bands"] = ",".join((BLUE_BAND, RED, NIR) if blue_max is not None else (RED, NIR))
    kwargs.pop("dem", None)
    kwargs.pop("slope", None)
    if offset is not None:
        kwargs["offset"] = offset
    from_post = post is not None and kwargs.get("aoi") is None and kwargs.get("bbox") is None
    if from_post:
        kwargs["aoi"] = post_footprint(post)
    spec = mask_spec(blue_max=blue_max)
    folder = work / "pre"
    folder.mkdir(exist_ok=True)
    try:  # an offset left in would bias the NDVI drop: refused (stack_source stacks strictly)
        path, spec = stack_source(kwargs, folder, kwargs["bands"], spec,
                                  layers=product_mask_layers(kwargs.get("s2"), spec))
    except InputError as e:  # the pre scene's offset is detect's `pre_offset`, not the scene's `offset`
        if "does not overlap" in str(e) and from_post:  # the post scene's footprint cut the pre product
            raise InputError(f"{kwargs.get('s2')}: the pre-event scene does not overlap the post-event scene "
                             f"{post.path}; give a pre-event scene of the same area") from None
        if "`offset`" not in str(e):
            raise
        raise type(e)(str(e).replace("`offset`", "`pre_offset`")) from None
    return path, spec


def mask_pre(plan: EvidencePlan, spec, work: Path, bands: Sequence[str] | None = None) -> EvidencePlan:
    """``plan`` with its pre scene's clouds not observed: the not-observed raster of ``spec`` (a pre product's SCL,
    the bright-blue test: :mod:`lsmap.data.masks`) written on the pre scene's grid in ``work`` and read with it,
    so that ``pre_not_observed`` counts them and a polygon the pre scene saw mostly through clouds is not judged on
    its NDVI (found with a real cloudy pre scene: a landslide under a pre-event cloud was dropped for "no NDVI
    drop"). The blue test needs the pre scene's B2: without it, the plan is returned as it is.
    """
    from lsmap.data.masks import write_not_observed

    if plan.pre is None or spec is None or not spec.active:
        return plan
    try:
        names = scene_band_names(plan.pre.info, bands)
    except InputError:  # bands without names (open_pre found red and NIR by position): no B2 to test
        names = ()
    if spec.blue_max is not None and BLUE_BAND not in names:
        spec = dataclasses.replace(spec, blue_max=None)
        if not spec.active:
            return plan
    nobs = write_not_observed(spec, plan.pre.info, work / "pre_not_observed.tif", bands=names)
    pre = dataclasses.replace(plan.pre, info=dataclasses.replace(plan.pre.info, mask=nobs.path))
    return dataclasses.replace(plan, pre=pre)
