"""Not-observed masks: where a scene shows clouds, shadows, snow or no data instead of the ground.

The one owner of the rule "which pixels of a scene are not observed". Two sources, which combine:

- **SCL** (the Sentinel-2 L2A scene classification: from a SAFE/zip/STAC product through
  :mod:`lsmap.data.stack`, or ``--scl FILE`` beside loose bands or a stacked scene). Classes
  :data:`DEFAULT_SCL_CLASSES` are masked by default: no data / defective (0, 1), cloud shadow (3),
  cloud medium / high probability (8, 9), thin cirrus (10) and snow (11).
- **A mask raster** (``--mask-raster FILE``): any grid, any integer (or integer-valued float) band;
  non-zero = not observed (its declared nodata value counts as observed).
- **Cloud probability** (``--cloud-prob-max P``): the L2A product's ``MSK_CLDPRB`` (0-100 %, from a
  SAFE/zip ``QI_DATA`` or a STAC asset); pixels whose probability exceeds ``P`` are ``cloud``. Off by
  default (the SCL cloud classes are derived from the same probability; BENCHMARKS.md says what
  it adds on a real product).
- **Bright blue** (``--blue-max R``), for scenes without an SCL (loose bands, exports): pixels whose
  blue (B2) surface reflectance exceeds ``R`` are ``cloud``, and so are the pixels within
  ``blue_buffer`` (:data:`BLUE_BUFFER_PX`) of them, which catches the thinner cloud edges. Measured in
  BENCHMARKS.md against the real SCL of a cloudy L2A tile, and on real landslide pixels (none of the
  Landslide4Sense patches' exceeds 0.2). The scene's values must be offset-corrected (as ``lsmap
  stack`` writes them); raw digital numbers are told from L4S values as detection tells them.
- **Dark** (``--dark-max R``), for the cloud shadows of scenes without an SCL: pixels whose SWIR
  (:data:`DARK_BAND`) surface reflectance is below ``R`` are ``dark`` (shadow or water: the test
  cannot tell them apart), and so are the pixels within ``dark_buffer`` (:data:`DARK_BUFFER_PX`, none by
  default) of them. Measured in BENCHMARKS.md against the real SCL of a cloudy L2A tile (NIR and SWIR
  compared: SWIR finds more shadow for the clear land it costs), on real landslide pixels (none of the
  labelled Landslide4Sense patches' is below 0.04 in B11) and on real scenes without SCL. The same value
  rules as the blue test; the dark test masks the scene only, not a pre-event scene.

Both are resampled by nearest neighbour onto the scene's grid (a GDAL warped VRT read at full
resolution, window by window: memory stays flat in the scene's size) and written once as a uint8
*reason raster* (:func:`write_not_observed`): 0 = observed, else a code of :data:`REASONS`. Every
reader of a scene then honours it at one place, :func:`lsmap.io.scene.read_scene_window`
(``SceneInfo.mask``): not-observed pixels are invalid exactly like nodata pixels, so they are left
out of the per-scene statistics, filled before the model, nodata in the probability and mask
rasters, and never landslides.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.windows import Window, block_grid
from lsmap.errors import InputError
from lsmap.io.rasters import decode_in_caller, geotiff_profile, open_raster, read_window
from lsmap.io.s2product import is_product, open_product

#: Scene classification classes of Sentinel-2 L2A (ESA's SCL legend).
SCL_CLASSES = {
    0: "no data", 1: "saturated or defective", 2: "dark area pixels", 3: "cloud shadows", 4: "vegetation",
    5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud medium probability",
    9: "cloud high probability", 10: "thin cirrus", 11: "snow",
}
#: SCL classes masked by default.
DEFAULT_SCL_CLASSES = (0, 1, 3, 8, 9, 10, 11)
#: Reason codes of the reason raster (0 = observed).
REASONS = {1: "no data", 2: "cloud", 3: "shadow", 4: "snow", 5: "mask", 6: "other", 7: "dark"}
#: Reason code of each SCL class when masked.
_SCL_REASON = {0: 1, 1: 1, 3: 3, 8: 2, 9: 2, 10: 2, 11: 4}
_MASK_REASON = 5
_CLOUD_REASON = 2
#: Reason code of the dark test: shadow or water (it cannot tell them apart).
_DARK_REASON = 7
#: The band of the bright-blue cloud test, and the pixels around its clouds also masked.
BLUE_BAND = "B2"
BLUE_BUFFER_PX = 3
#: The band of the dark (shadow) test, and the pixels around its dark pixels also masked: none by default,
#: as against the real SCL of T29UNU a margin bought less shadow per pixel of clear land lost than a
#: higher threshold (BENCHMARKS.md).
DARK_BAND = "B11"
DARK_BUFFER_PX = 0
#: Nodata value of ``MSK_CLDPRB`` as ``lsmap stack`` writes it (valid values are 0-100).
CLDPRB_NODATA = 255


def parse_scl_classes(value: str | Sequence[int] | None) -> tuple[int, ...]:
    """SCL classes from ``"0,1,3,8"`` (or a sequence; ``None``: :data:`DEFAULT_SCL_CLASSES`; ``"none"``: none).

    Raises:
        InputError: a class that is not a number or not an SCL class (0-11).
    """
    if value is None:
        return DEFAULT_SCL_CLASSES
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return ()
        items: Iterable[Any] = [t.strip() for t in text.split(",") if t.strip()]
    else:
        items = value
    out = []
    for item in items:
        try:
            c = int(item)
        except (TypeError, ValueError):
            c = None
        if c is None or c not in SCL_CLASSES or str(item).strip() not in (str(c), f"{c}.0"):
            raise InputError(f"`scl_mask`: '{item}' is not a scene classification class; choose from 0-11 "
                             f"(default {','.join(map(str, DEFAULT_SCL_CLASSES))})")
        out.append(c)
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class MaskSpec:
    """What masks a scene: an SCL raster with the classes to mask, and/or a mask raster."""

    scl: Path | None = None
    scl_classes: tuple[int, ...] = DEFAULT_SCL_CLASSES
    raster: Path | None = None
    #: ``MSK_CLDPRB`` raster (0-100 %) and the probability above which a pixel is cloud.
    cloud_prob: Path | None = None
    cloud_prob_max: float | None = None
    #: Blue (B2) surface reflectance above which a pixel is cloud, and the pixels around it also masked.
    blue_max: float | None = None
    blue_buffer: int = BLUE_BUFFER_PX
    #: SWIR (:data:`DARK_BAND`) surface reflectance below which a pixel is dark (shadow or water), and the
    #: pixels around it also masked.
    dark_max: float | None = None
    dark_buffer: int = DARK_BUFFER_PX

    @property
    def active(self) -> bool:
        """Whether anything is masked at all."""
        return ((self.scl is not None and bool(self.scl_classes)) or self.raster is not None
                or (self.cloud_prob is not None and self.cloud_prob_max is not None) or self.blue_max is not None
                or self.dark_max is not None)

    def to_dict(self) -> dict:
        """JSON-ready description (the run summaries record it)."""
        return {"scl": str(self.scl) if self.scl else None, "scl_classes": list(self.scl_classes),
                "mask_raster": str(self.raster) if self.raster else None,
                "cloud_prob": str(self.cloud_prob) if self.cloud_prob else None,
                "cloud_prob_max": self.cloud_prob_max, "blue_max": self.blue_max,
                "blue_buffer": self.blue_buffer if self.blue_max is not None else None, "dark_max": self.dark_max,
                "dark_band": DARK_BAND if self.dark_max is not None else None,
                "dark_buffer": self.dark_buffer if self.dark_max is not None else None}


def _threshold(value: Any, ok, message: str) -> float | None:
    """``value`` as a float for which ``ok(value)`` holds (``None``: not used); else ``InputError(message)``."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not ok(v):  # NaN fails every comparison
        raise InputError(message.format(value=value))
    return v


def check_cloud_prob_max(value: Any) -> float | None:
    """``value`` as a cloud probability threshold in percent (``None``: not used).

    Raises:
        InputError: not a number in [0, 100).
    """
    return _threshold(value, lambda p: 0.0 <= p < 100.0,
                      "`cloud_prob_max` must be a probability in percent in [0, 100) (got {value!r}); pixels whose "
                      "MSK_CLDPRB exceeds it are masked as cloud, e.g. 50")


def check_blue_max(value: Any) -> float | None:
    """``value`` as the blue reflectance above which a pixel is cloud (``None``: not used).

    Raises:
        InputError: not a reflectance in (0, 2).
    """
    return _threshold(value, lambda r: 0.0 < r < 2.0,
                      "`blue_max` must be a blue surface reflectance in (0, 2) (got {value!r}); pixels whose B2 "
                      "reflectance exceeds it are masked as cloud, e.g. 0.2")


def check_dark_max(value: Any) -> float | None:
    """``value`` as the SWIR reflectance below which a pixel is dark: shadow or water (``None``: not used).

    Raises:
        InputError: not a reflectance in (0, 1).
    """
    return _threshold(value, lambda r: 0.0 < r < 1.0,
                      f"`dark_max` must be a SWIR ({DARK_BAND}) surface reflectance in (0, 1) (got {{value!r}}); "
                      f"pixels whose {DARK_BAND} reflectance is below it are masked as dark (shadow or water), "
                      f"e.g. 0.04")


def mask_spec(scl: str | os.PathLike | None = None, scl_mask: str | Sequence[int] | None = None,
              mask_raster: str | os.PathLike | None = None, cloud_prob_max: Any = None,
              cloud_prob: str | os.PathLike | None = None, blue_max: Any = None,
              dark_max: Any = None) -> MaskSpec:
    """The :class:`MaskSpec` of the user's options, checked (types and values; files by :func:`check_masks`).

    Raises:
        InputError: an unknown SCL class, ``scl`` given with ``scl_mask`` ``"none"``, a bad ``cloud_prob_max``,
            ``blue_max`` or ``dark_max``.
    """
    spec = MaskSpec(Path(scl) if scl is not None else None, parse_scl_classes(scl_mask),
                    Path(mask_raster) if mask_raster is not None else None,
                    Path(cloud_prob) if cloud_prob is not None else None, check_cloud_prob_max(cloud_prob_max),
                    check_blue_max(blue_max), dark_max=check_dark_max(dark_max))
    if spec.scl is not None and not spec.scl_classes:
        raise InputError("`scl_mask` is 'none' but an SCL raster is given; drop `scl` or choose the classes")
    return spec


def product_mask_layers(s2: Any, spec: MaskSpec) -> dict[str, str]:
    """The product layers (``SCL``, ``MSK_CLDPRB``) to stack beside the bands of the product ``s2`` for ``spec``.

    ``SCL`` when the product has one and no ``scl`` file is given (and ``scl_classes`` is not empty);
    ``MSK_CLDPRB`` with ``cloud_prob_max``.

    Raises:
        InputError: ``cloud_prob_max`` on an input without ``MSK_CLDPRB`` (not a product, or a product
            without the layer).
    """
    product = isinstance(s2, (str, os.PathLike)) and is_product(s2)
    layers = open_product(s2).layers if product else {}
    want = []
    if spec.scl is None and spec.scl_classes and "SCL" in layers:
        want.append("SCL")
    if spec.cloud_prob_max is not None and spec.cloud_prob is None:
        if "MSK_CLDPRB" not in layers:
            what = "this product has no MSK_CLDPRB layer" if product else "it is not a Sentinel-2 L2A product"
            raise InputError(f"{s2}: `cloud_prob_max` reads the product's cloud probability (MSK_CLDPRB), but {what}; "
                             f"give an L2A SAFE/zip product, or a cloud mask as `mask_raster`")
        want.append("MSK_CLDPRB")
    return {k: layers[k] for k in want}


@dataclass(frozen=True)
class NotObserved:
    """The reason raster written for a scene and its pixel counts per reason."""

    path: Path
    counts: dict[str, int]
    pixel_area_m2: float

    @property
    def pixels(self) -> int:
        """Not-observed pixels."""
        return sum(self.counts.values())

    @property
    def km2(self) -> float:
        """Not-observed area in km2."""
        return self.pixels * self.pixel_area_m2 / 1e6


def _grid_bounds(transform, width: int, height: int) -> tuple[float, float, float, float]:
    xs = [transform.c, transform.c + transform.a * width]
    ys = [transform.f, transform.f + transform.e * height]
    return min(xs), min(ys), max(xs), max(ys)


def _overlaps(src, info) -> bool:
    """Whether ``src`` covers some of the scene ``info``'s grid (bounds compared in the scene's CRS)."""
    from rasterio.warp import transform_bounds

    if src.crs is None:
        return False
    b = transform_bounds(src.crs, info.crs, *src.bounds, densify_pts=21)
    s = _grid_bounds(info.transform, info.width, info.height)
    return b[0] < s[2] and b[2] > s[0] and b[1] < s[3] and b[3] > s[1]


def check_masks(spec: MaskSpec, info, *, block: int = 1024) -> None:
    """Check ``spec``'s rasters against the scene ``info`` before any work (``None``: no overlap test).

    Raises:
        MissingInputError: a mask file does not exist.
        InputError: a mask raster with several bands, without CRS, not overlapping the scene, or of a
            float type holding non-integer values (a probability, not a mask).
    """
    for path, what, flag in ((spec.scl, "scene classification (SCL)", "`scl`"),
                             (spec.raster, "mask raster", "`mask_raster`"),
                             (spec.cloud_prob, "cloud probability (MSK_CLDPRB)", "`cloud_prob_max`")):
        if path is None:
            continue
        with open_raster(path, what) as src:
            if src.count != 1:
                raise InputError(f"{path}: {what} has {src.count} bands; give a single-band raster ({flag})")
            if info is not None and not _overlaps(src, info):
                raise InputError(f"{path}: {what} does not overlap the scene ({info.path}); give the {flag} of "
                                 f"this area")
            if np.dtype(src.dtypes[0]).kind in "fc":
                for win in block_grid(src.height, src.width, block):
                    v = read_window(src, 1, win)
                    v = v[np.isfinite(v)]
                    if v.size and not np.array_equal(v, np.round(v)):
                        raise InputError(f"{path}: {what} holds non-integer values ({src.dtypes[0]}, e.g. "
                                         f"{float(v[v != np.round(v)][0]):g}); give class numbers or 0/1 "
                                         f"(threshold a probability first) ({flag})")
            elif flag == "`scl`" and np.dtype(src.dtypes[0]).kind not in "iu":
                raise InputError(f"{path}: {what} is of type {src.dtypes[0]}; give the product's SCL band")


@contextlib.contextmanager
def _on_grid(path: Path, what: str, info) -> Iterator[Any]:
    """``path`` opened as a warped VRT on the scene's grid (nearest neighbour, no overviews used)."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with open_raster(path, what) as src:
        same = (src.crs == info.crs and src.transform == info.transform and src.width == info.width
                and src.height == info.height)
        if same:
            yield src
            return
        with WarpedVRT(src, crs=info.crs, transform=info.transform, width=info.width, height=info.height,
                       resampling=Resampling.nearest, nodata=src.nodata) as vrt:
            yield vrt


def reasons_block(scl: np.ndarray | None, scl_classes: Sequence[int], raster: np.ndarray | None,
                  raster_nodata: float | None = None, cloud_prob: np.ndarray | None = None,
                  cloud_prob_max: float | None = None) -> np.ndarray:
    """Reason codes ``(h, w)`` uint8 of one window from its SCL, mask-raster and cloud-probability values
    (any may be ``None``).

    SCL reasons come first; cloud probabilities above ``cloud_prob_max`` (valid values 0-100; others,
    such as the nodata 255, are left out) mark the rest ``cloud``; the mask raster marks the rest of
    its non-zero pixels ``mask``.
    """
    shape = next(a for a in (scl, raster, cloud_prob) if a is not None).shape
    out = np.zeros(shape, np.uint8)
    if raster is not None:
        hit = (raster != 0) & np.isfinite(raster) if raster.dtype.kind == "f" else raster != 0
        if raster_nodata is not None and not np.isnan(raster_nodata):
            hit &= raster != raster_nodata
        out[hit] = _MASK_REASON
    if cloud_prob is not None and cloud_prob_max is not None:
        out[(cloud_prob > cloud_prob_max) & (cloud_prob <= 100)] = _CLOUD_REASON
    if scl is not None:
        for c in scl_classes:
            out[scl == c] = _SCL_REASON.get(c, 6)
    return out


def write_not_observed(spec: MaskSpec, info, out: str | os.PathLike, *, block: int = 1024,
                       bands: Sequence[str] | None = None) -> NotObserved:
    """Write the reason raster of the scene ``info`` (uint8 on its grid, 0 = observed) at ``out``.

    Read and written window by window; the inputs are checked first (:func:`check_masks`).

    Args:
        bands: The scene's band names in file order, where the file does not name them (``info.bands``);
            the bright-blue test reads its B2, the dark test its :data:`DARK_BAND`.

    Returns:
        The raster's path and its pixel counts per reason (:data:`REASONS`).

    Raises:
        InputError: bad mask inputs; with ``blue_max``, a scene without a B2 band; with ``dark_max``, one
            without :data:`DARK_BAND`.
    """
    import rasterio

    check_masks(spec, info)
    blue = _BandTest(info, bands, BLUE_BAND, spec.blue_max, spec.blue_buffer, "blue_max", "blue", "clouds") \
        if spec.blue_max is not None else None
    dark = _BandTest(info, bands, DARK_BAND, spec.dark_max, spec.dark_buffer, "dark_max", "SWIR", "shadows",
                     below=True) if spec.dark_max is not None else None
    out = Path(out)
    counts = np.zeros(len(REASONS) + 1, np.int64)
    with contextlib.ExitStack() as es:
        es.enter_context(decode_in_caller())  # a damaged SCL block fails the read instead of masking garbage
        scl = es.enter_context(_on_grid(spec.scl, "scene classification (SCL)", info)) \
            if spec.scl is not None and spec.scl_classes else None
        ras = es.enter_context(_on_grid(spec.raster, "mask raster", info)) if spec.raster is not None else None
        cld = es.enter_context(_on_grid(spec.cloud_prob, "cloud probability (MSK_CLDPRB)", info)) \
            if spec.cloud_prob is not None and spec.cloud_prob_max is not None else None
        profile = geotiff_profile(crs=info.crs, transform=info.transform, width=info.width, height=info.height,
                                  count=1, dtype="uint8")
        profile.pop("nodata", None)
        dst = es.enter_context(rasterio.open(out, "w", **profile))
        scene = es.enter_context(open_raster(info.path, "scene")) if blue is not None or dark is not None else None
        dst.set_band_description(1, "not observed: " + ", ".join(f"{k} {v}" for k, v in REASONS.items()))
        for win in block_grid(info.height, info.width, block):
            s = read_window(scl, 1, win) if scl is not None else None
            r = read_window(ras, 1, win) if ras is not None else None
            c = read_window(cld, 1, win) if cld is not None else None
            codes = reasons_block(s, spec.scl_classes, r, ras.nodata if ras is not None else None, c,
                                  spec.cloud_prob_max) if (s is not None or r is not None or c is not None) else \
                np.zeros((int(win.height), int(win.width)), np.uint8)
            if blue is not None:
                codes[(codes == 0) & blue.hit(scene, win)] = _CLOUD_REASON
            if dark is not None:  # after the clouds: a cloud's margin over its shadow stays cloud
                codes[(codes == 0) & dark.hit(scene, win)] = _DARK_REASON
            counts += np.bincount(codes.ravel(), minlength=counts.size)[:counts.size]
            dst.write(codes[None], window=win)
    from lsmap.core.ground import mean_pixel_area_m2

    area = mean_pixel_area_m2(info.transform, info.crs, info.height, info.width)
    return NotObserved(out, {REASONS[k]: int(counts[k]) for k in REASONS if counts[k]}, area)


class _BandTest:
    """A one-band threshold test of one scene, window by window: the bright-blue cloud test (B2 surface
    reflectance above ``blue_max``) and the dark test (:data:`DARK_BAND` below ``dark_max``), grown by
    ``buffer`` pixels (read with that margin, so a window's result does not depend on the windows)."""

    def __init__(self, info, bands: Sequence[str] | None, band: str, threshold: float, buffer: int, user: str,
                 what: str, masks: str, *, below: bool = False) -> None:
        from lsmap.core.bands import get_profile
        from lsmap.data.scan import SCALE_MAX_PIXELS, scan_scene
        from lsmap.errors import MissingBandError
        from lsmap.io.scene import scene_band_indices

        names = tuple(bands) if bands is not None else info.bands
        if names is None:
            raise InputError(f"{info.path}: `{user}` reads the scene's {band} band, but its bands have no "
                             f"names; name them (`bands`) or stack the scene with 'lsmap stack'")
        try:
            (self.index,) = scene_band_indices(names, (band,), source=info.path, user=f"`{user}`")
        except MissingBandError:
            raise InputError(f"{info.path}: `{user}` reads the {what} band {band}, which the scene does not "
                             f"have (it has {', '.join(names)}); stack {band} too, or mask {masks} with "
                             f"`mask_raster`") from None
        self.profile = get_profile([band])
        self.info, self.threshold, self.buffer, self.below = info, threshold, max(0, int(buffer)), below
        # digital numbers or L4S values, told as detection tells them (the median of the valid values)
        self.raw = scan_scene(replace(info, mask=None), self.profile, "auto", max_pixels=SCALE_MAX_PIXELS,
                              indexes=(self.index,)).raw

    def hit(self, src, win: Window) -> np.ndarray:
        """``(h, w)`` bool: the test's pixels and their margin, in window ``win`` of the open scene ``src``."""
        from scipy import ndimage

        from lsmap.io.scene import read_scene_window

        k = self.buffer
        r0, c0 = max(0, int(win.row_off) - k), max(0, int(win.col_off) - k)
        r1 = min(self.info.height, int(win.row_off + win.height) + k)
        c1 = min(self.info.width, int(win.col_off + win.width) + k)
        data, valid = read_scene_window(src, Window(c0, r0, c1 - c0, r1 - r0), self.profile, raw=self.raw,
                                        declared=self.info.declares_nodata, indexes=(self.index,))
        reflectance = data[0].astype(np.float64) * self.profile.divisors[0] / 10000.0  # L4S value -> DN / 10000
        hit = valid & ((reflectance < self.threshold) if self.below else (reflectance > self.threshold))
        if k and hit.any():
            hit = ndimage.binary_dilation(hit, structure=np.ones((3, 3), bool), iterations=k)
        i, j = int(win.row_off) - r0, int(win.col_off) - c0
        return hit[i:i + int(win.height), j:j + int(win.width)]


def _mask_parts(not_observed):
    """The polygons of the not-observed (multi)polygons, and a spatial index (STRtree) over them: each
    landslide is then compared with the few mask polygons near it, not the whole dissolved mask (a
    fragmented cloud mask has thousands of polygons; comparing each of 123 k landslides with all of them took
    11-17 s, BENCHMARKS.md)."""
    import shapely

    parts = shapely.get_parts(np.asarray(not_observed.geometry.values, dtype=object))
    return parts, shapely.STRtree(parts)


def near_not_observed(polygons, not_observed, distance: float) -> np.ndarray:
    """Whether each of ``polygons`` lies within ``distance`` (CRS units) of ``not_observed`` area."""
    near = np.zeros(len(polygons), bool)
    if not len(polygons) or not len(not_observed):
        return near
    _, tree = _mask_parts(not_observed)
    hit, _ = tree.query(np.asarray(polygons.geometry.values, dtype=object), predicate="dwithin", distance=distance)
    near[hit] = True
    return near


def cut_not_observed(geoms: Sequence[Any], not_observed) -> np.ndarray:
    """``geoms`` with the ``not_observed`` area cut out of those that overlap it (by a positive area: a
    shared edge cuts nothing); the others as they are. A polygon inside it comes back empty.

    Returns:
        ``(n,)`` object array of geometries.
    """
    import shapely

    from lsmap.core.graph import groups

    out = np.empty(len(geoms), dtype=object)
    out[:] = list(geoms)
    if not len(out) or not len(not_observed):
        return out
    parts, tree = _mask_parts(not_observed)
    gi, pi = tree.query(out, predicate="intersects")
    overlap = shapely.area(shapely.intersection(out[gi], parts[pi])) > 0
    gi, pi = gi[overlap], pi[overlap]
    for members in groups(gi):
        i = gi[members[0]]
        out[i] = shapely.difference(out[i], shapely.union_all(parts[pi[members]]))
    return out


def read_mask_window(src, window: Window) -> np.ndarray:
    """Observed pixels ``(h, w)`` bool of one window of an open reason raster."""
    return read_window(src, 1, window) == 0
