"""Scene rasters: open a GeoTIFF with its band profile checked, and read it window by window.

This is the one place that decides which pixels of a scene are *valid* (:func:`valid_pixels`)
and how a window of a scene is read (:func:`read_scene_window`); ``lsmap tile``, ``lsmap stats``,
``lsmap detect`` and the quick-look all read scenes through it. Files are opened through
:func:`lsmap.io.rasters.open_raster` and read through :func:`lsmap.io.rasters.read_window`, which turn GDAL
failures into errors naming the file.

Valid pixel: every band holds data, that is, no band is

- masked by GDAL: the band's declared nodata value, or an internal / alpha / dataset mask;
- non-finite (NaN, inf);
- and, only when the file declares no nodata value and no mask at all (:func:`declares_nodata`),
  equal to the band profile's raw nodata value (:attr:`lsmap.core.bands.BandProfile.nodata`, 0 for
  Sentinel-2, whose digital number 0 means "no data" in every band) in any *spectral* band, or, in a
  uint16 file, to Sentinel-2's saturated value 65535 (:data:`lsmap.core.constants.S2_SATURATED`, as
  ``lsmap stack`` takes it). Terrain bands (slope, DEM) are not tested: 0 degrees or 0 m are real values.

Band names: a scene's bands are known by name from its band descriptions (``lsmap stack`` writes
them; :func:`band_names`), so a reader can take any band set from it in any order
(:func:`scene_band_indices`, ``indexes`` of :func:`read_scene_window`); validity is then judged on
the bands read.
Not observed: a scene may carry a not-observed raster (``SceneInfo.mask``, written by
:mod:`lsmap.data.masks` from SCL and/or a user mask); its non-zero pixels are invalid as well, in
every reader that passes it to :func:`read_scene_window`.

Values are returned as float32. Integer bands with a GDAL scale or offset (the uint16 codes of
``lsmap stack``, :mod:`lsmap.core.encoding`; any tool's scaled integers) are returned unscaled,
``code * scale + offset`` (:func:`band_scaling`), validity judged on the stored codes; float bands
and bands without scale/offset are returned as stored, so older float32 stacks read unchanged. With ``raw=True`` they are brought to the Landslide4Sense scale
by dividing each band by its profile divisor, computed in float64 and then rounded once to
float32 (:func:`scale_raw`); otherwise they are returned as stored (cast to float32), which is
right for stacks written by ``lsmap stack``, already on the L4S scale.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.bands import L4S_BANDS, BandProfile, band_indices, canonical_band, get_profile
from lsmap.core.constants import S2_SATURATED
from lsmap.core.windows import Window
from lsmap.errors import InputError, user_level
from lsmap.io.rasters import GDAL_CACHE_MB, open_raster, read_window


@dataclass(frozen=True)
class SceneInfo:
    """What a scene raster is: size, georeferencing, whether it declares nodata or masks, and its
    band names (from the band descriptions; ``None`` when they do not name every band)."""

    path: Path
    height: int
    width: int
    count: int
    crs: Any
    transform: Any
    declares_nodata: bool
    bands: tuple[str, ...] | None = None
    #: Not-observed reason raster on the scene's grid (:mod:`lsmap.data.masks`; non-zero = invalid), or ``None``.
    mask: Path | None = None


def scale_raw(data: np.ndarray, profile: BandProfile) -> np.ndarray:
    """Raw values ``(C, H, W)`` -> L4S-scaled float32: ``float32(float64(data) / divisor)`` per band."""
    div = np.asarray(profile.divisors, np.float64).reshape(-1, *([1] * (data.ndim - 1)))
    return (np.asarray(data, np.float64) / div).astype(np.float32)


@contextlib.contextmanager
def open_scene(path: str | os.PathLike, profile: BandProfile | str | None = None) -> Iterator:
    """Open a raster for reading, checking its band count against ``profile``.

    Yields:
        The open ``rasterio`` dataset.

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: the file is not a readable raster.
        BandMismatchError: the band count does not fit ``profile``.
    """
    with open_raster(path, "raster") as src:
        if profile is not None:
            profile = get_profile(profile)
            profile.check_count(src.count, Path(path))
            check_band_order(src.descriptions, profile, path)
        yield src


def band_name(text: str | None) -> str | None:
    """A band description as a band name (``"B04"`` -> ``"B4"``, ``"dem"`` -> ``"DEM"``), or ``None``
    when it names no known band."""
    import re

    from lsmap.core.bands import S2_RESOLUTION

    if not text:
        return None
    t = text.strip()
    m = re.fullmatch(r"[Bb](\d{1,2})([Aa]?)", t)
    if m:
        name = f"B{int(m.group(1))}{m.group(2).upper()}"
        return name if name in S2_RESOLUTION else None
    return {"slope": "slope", "dem": "DEM", "elevation": "DEM"}.get(t.lower())


def check_band_order(descriptions, profile: BandProfile, path: object) -> None:
    """Refuse a raster whose band descriptions name the profile's bands in another order (or other bands).

    Only descriptions that all name known bands are read (``lsmap stack`` writes them; other tools
    may write free text, which is ignored).

    Raises:
        InputError: the descriptions say the bands are in another order, or are other bands.
    """
    names = [band_name(d) for d in descriptions or ()]
    if not names or any(n is None for n in names) or tuple(names) == profile.bands:
        return
    if sorted(names) == sorted(profile.bands):
        raise InputError(
            f"{path}: band descriptions say the bands are in the order {', '.join(names)}, but profile "
            f"'{profile.name}' expects {', '.join(profile.bands)}; restack the scene in the profile's order "
            f"(lsmap stack) or reorder its bands (gdal_translate -b ...)"
        )
    raise InputError(
        f"{path}: band descriptions say the bands are {', '.join(names)}, but profile '{profile.name}' expects "
        f"{', '.join(profile.bands)}; choose the matching `bands` profile or restack the scene"
    )


#: Tag of a stack made from band files whose DNs look offset, stacked without an offset: their smallest DN
#: (:func:`lsmap.data.stack.stack_scene` warned; :func:`scene_info` warns again whenever the stack is read).
OFFSET_TAG = "LSMAP_DN_LOOKS_OFFSET"
#: Tag `lsmap stack` writes on every stack (its band profile's name). Such a stack marks a pixel nodata in every
#: band when any of its inputs was invalid (:mod:`lsmap.data.stack`), so any one band tells the validity.
STACK_TAG = "LSMAP_PROFILE"


def scene_info(path: str | os.PathLike, profile: BandProfile | str | None = None) -> SceneInfo:
    """Describe the georeferenced scene at ``path``, checking it against ``profile``.

    Raises:
        MissingInputError: no such file.
        InputError: unreadable, or without a CRS.
        BandMismatchError: the band count differs from ``profile``'s.

    Warns:
        LsmapWarning: the scene is a stack of band files whose DNs looked offset, stacked without an
            offset (:data:`OFFSET_TAG`): its values, and what is made of them, are likely off by 0.1
            reflectance.
    """
    path = Path(path)
    with open_scene(path, profile) as src:
        info = SceneInfo(path, src.height, src.width, src.count, src.crs, src.transform, declares_nodata(src),
                         band_names(src))
        dn_min = src.tags().get(OFFSET_TAG)
    if dn_min is not None:
        import warnings

        from lsmap.errors import LsmapWarning

        seen = f"none below {dn_min}" if dn_min.isdigit() else dn_min  # stacks before session 14 wrote the minimum
        warnings.warn(f"{path}: stacked from band files whose digital numbers look offset ({seen}) "
                      f"without an offset, so its values are likely 0.1 too bright; restack with `offset` -1000 "
                      f"(or `offset` 0 if they are not offset)", LsmapWarning, stacklevel=user_level())
    if info.crs is None:
        raise InputError(f"{path}: scene has no coordinate reference system; georeference it (e.g. gdal_edit.py -a_srs)")
    return info


def band_names(src) -> tuple[str, ...] | None:
    """The band names of an open dataset from its band descriptions (canonical spelling), or
    ``None`` unless every band is described by a distinct known band name."""
    names = tuple(canonical_band(d) if d else None for d in src.descriptions)
    if not names or None in names or len(set(names)) != len(names):
        return None
    return names


def scene_band_names(info: SceneInfo, given: str | Sequence[str] | BandProfile | None = None,
                     assume: BandProfile | None = None) -> tuple[str, ...]:
    """The names of ``info``'s bands, in file order.

    From, in this order: the band descriptions; ``given`` (``--bands``, for a file without
    descriptions); ``assume`` when its band count fits (what a caller expects, e.g. the one band set of
    the models); the Landslide4Sense order for a 14-band file.

    Raises:
        InputError: ``given`` contradicts the descriptions or the band count, or the names cannot be told.
    """
    if given is not None:
        want = get_profile(given)
        if info.bands is not None and want.bands != info.bands:
            raise InputError(f"{info.path}: `bands` {want.name} ({', '.join(want.bands)}) but the file's band "
                             f"descriptions say {', '.join(info.bands)}; leave `bands` out or restack")
        want.check_count(info.count, info.path)
        return want.bands
    if info.bands is not None:
        return info.bands
    if assume is not None and assume.count == info.count:
        return assume.bands
    if info.count == len(L4S_BANDS):
        return L4S_BANDS
    raise InputError(f"{info.path}: {info.count} bands without band names (no band descriptions); pass `bands` "
                     f"with the file's bands in order, e.g. `bands` B4,B3,B2,B8, or restack it with 'lsmap stack'")


def scene_band_indices(names: Sequence[str], wanted: BandProfile | str | Sequence[str], *, source: object,
                       user: object = None) -> tuple[int, ...]:
    """1-based band indexes (for :func:`read_scene_window`) of ``wanted``'s bands among ``names``.

    Raises:
        MissingBandError: a band of ``wanted`` is not in the scene; the message names it, the scene and ``user``.
    """
    return tuple(i + 1 for i in band_indices(names, wanted, source=source, user=user))


def declares_nodata(src) -> bool:
    """Whether some band of the open dataset has a nodata value or a mask (GDAL mask flags)."""
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in flags for flags in src.mask_flag_enums)


def valid_pixels(src, stored: np.ndarray, window: Window | None, profile: BandProfile,
                 declared: bool | None = None, indexes: Sequence[int] | None = None) -> np.ndarray:
    """Valid-pixel mask of a window read from ``src`` (the rule in the module docstring).

    Args:
        src: Open dataset the values were read from.
        stored: The window's values as stored (before any scaling), any dtype.
        window: The window they were read from (for GDAL masks); ``None``: the whole raster, read
            at the shape of ``stored`` (an overview, :func:`read_scene_overview`).
        profile: Band profile of ``stored`` (raw nodata value, spectral bands).
        declared: :func:`declares_nodata` of ``src``, when the caller already knows it.
        indexes: The 1-based bands of ``src`` that ``stored`` holds (``None``: all).

    Shape:
        ``stored`` ``(C, h, w)`` -> ``(h, w)`` bool.

    Raises:
        InputError: the masks cannot be read (corrupt file); the message names the file.
    """
    from rasterio.enums import MaskFlags

    if stored.dtype.kind in "fc":
        valid = np.isfinite(stored).all(axis=0)
    else:  # integer bands cannot hold NaN/inf
        valid = np.ones(stored.shape[1:], bool)
    if declared is None:
        declared = declares_nodata(src)
    if declared:
        bands = list(indexes) if indexes is not None else list(range(1, src.count + 1))
        if all(src.mask_flag_enums[i - 1] == [MaskFlags.nodata] for i in bands):
            # nodata values only: comparing the values GDAL would compare needs no second decode
            for b, i in enumerate(bands):
                value = _nodata_as(src.nodatavals[i - 1], stored.dtype)
                if value is not None:
                    valid &= stored[b] != value
        else:  # internal/alpha/dataset masks (or mixed): ask GDAL
            which = None if indexes is None else bands
            shape = None if window is not None else (len(bands), *stored.shape[1:])
            valid &= (read_window(src, which, window, masks=True, out_shape=shape) > 0).all(axis=0)
    elif profile.nodata is not None and profile.spectral_indices:
        spectral = stored[list(profile.spectral_indices)]
        valid &= ~(spectral == profile.nodata).any(axis=0)
        if stored.dtype == np.uint16:  # Sentinel-2's saturated digital number, as `lsmap stack` takes it
            valid &= ~(spectral == S2_SATURATED).any(axis=0)
    return valid


def band_scaling(src, indexes: Sequence[int] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """GDAL scale and offset of the bands at the 1-based ``indexes`` (``None``: all) of an open dataset
    with integer bands, or ``None`` when the values are to be taken as stored (float bands, or no band
    scaled or offset)."""
    if np.dtype(src.dtypes[0]).kind not in "iu":
        return None
    bands = list(indexes) if indexes is not None else list(range(1, src.count + 1))
    scales = tuple(float(src.scales[i - 1]) for i in bands)
    offsets = tuple(float(src.offsets[i - 1]) for i in bands)
    if all(s == 1.0 for s in scales) and all(o == 0.0 for o in offsets):
        return None
    return scales, offsets


def _values(src, stored: np.ndarray, indexes: Sequence[int] | None, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values as float32 (in ``out`` when given), unscaled when the bands carry a scale/offset
    (:func:`band_scaling`)."""
    from lsmap.core.encoding import decode

    scaling = band_scaling(src, indexes)
    if scaling is not None:
        return decode(stored, *scaling, out=out)
    if out is None:
        return stored.astype(np.float32, copy=False)
    np.copyto(out, stored, casting="unsafe")
    return out


def read_scene_window(src, window: Window, profile: BandProfile, *, raw: bool = False,
                      declared: bool | None = None,
                      indexes: Sequence[int] | None = None, mask=None,
                      out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one window of an open scene: values and valid-pixel mask (see the module docstring).

    Invalid pixels keep the values stored in the file (callers fill them).

    Args:
        src: Dataset from :func:`open_scene`.
        window: Pixel window inside the raster.
        profile: Band set of the bands read (divisors, raw nodata, spectral bands).
        raw: Scale raw values by the profile divisors (:func:`scale_raw`).
        declared: :func:`declares_nodata` of ``src``, when the caller already knows it.
        indexes: 1-based bands to read, in this order (:func:`scene_band_indices`; ``None``: all).
        mask: Open not-observed reason raster on the scene's grid (``SceneInfo.mask``, opened with
            :func:`open_scene_mask`): its non-zero pixels are invalid too (clouds, shadows...).
        out: float32 ``(C, h, w)`` array to hold the values (a strip buffer: no copy of the window);
            returned as ``data``.

    Returns:
        ``(data, valid)``: float32 ``(C, h, w)`` and bool ``(h, w)``.

    Raises:
        InputError: the window cannot be read (corrupt file); the message names the file.
    """
    stored = read_window(src, list(indexes) if indexes is not None else None, window)
    valid = valid_pixels(src, stored, window, profile, declared, indexes)
    if raw:
        scaling = band_scaling(src, indexes)
        data = scale_raw(stored if scaling is None else _values(src, stored, indexes), profile)
        if out is not None:
            out[...] = data
            data = out
    else:
        data = _values(src, stored, indexes, out)
    if stored.dtype.kind in "fc" and stored.dtype != np.float32:  # float64 beyond float32's range becomes inf
        valid &= np.isfinite(data).all(axis=0)
    if mask is not None:
        valid &= read_window(mask, 1, window) == 0
    return data, valid


def open_scene_mask(scene: SceneInfo):
    """A context manager opening ``scene.mask`` (the not-observed raster), or giving ``None`` without one."""
    return open_raster(scene.mask, "not-observed mask") if scene.mask is not None else contextlib.nullcontext()


def read_scene_overview(src, profile: BandProfile, max_side: int, bands: tuple[int, ...] | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole scene decimated so that its longer side is at most ``max_side`` pixels.

    Values are block averages (GDAL's average resampling, which leaves nodata out), read as stored
    through a GDAL block cache of :data:`lsmap.io.rasters.GDAL_CACHE_MB`: GDAL resamples band by band, a
    row of blocks at a time, so each block is decoded once (its default cache, 5 % of the RAM, kept the
    scene's decoded blocks: +1.46 GB for a 14-band full tile, measured). Validity is :func:`valid_pixels` on
    the decimated values and masks of every band, so a display shows the same pixels as missing as the
    rest of lsmap skips, up to the decimation. A stack `lsmap stack` wrote (:data:`STACK_TAG`) has one
    nodata mask for all its bands: only the ``bands`` asked are then read, their validity is the scene's.

    Args:
        src: Dataset from :func:`open_scene`.
        profile: Band profile of the scene (the validity rule needs every band).
        max_side: Longest side of the overview.
        bands: 0-based indices of the bands to return (default: all).

    Returns:
        ``(data, valid)``: float32 ``(len(bands), h, w)`` and bool ``(h, w)``.

    Raises:
        InputError: the scene cannot be read (corrupt file); the message names the file.
    """
    import rasterio
    from rasterio.enums import Resampling

    f = max(1.0, max(src.width, src.height) / max_side)
    shape = (max(1, round(src.height / f)), max(1, round(src.width / f)))
    joint = bands is not None and STACK_TAG in src.tags() and declares_nodata(src)
    which = [b + 1 for b in bands] if joint else None  # else every band, for the validity
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
        stored = read_window(src, which, None, out_shape=(len(which) if joint else src.count, *shape),
                             resampling=Resampling.average)
        valid = valid_pixels(src, stored, None, profile, indexes=which)
    if bands is None:
        return _values(src, stored, None), valid
    picked = stored if joint else stored[list(bands)]
    return _values(src, picked, [b + 1 for b in bands]), valid


def _nodata_as(nodata: float | None, dtype: np.dtype):
    """The nodata value as GDAL compares it to pixels of ``dtype``; ``None`` when no pixel can equal it
    (none declared, NaN: caught by the finiteness test, or outside an integer type's range)."""
    if nodata is None or np.isnan(nodata):
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            return None
    return np.asarray(nodata).astype(dtype)




#: :func:`terrain_nodata_warning`: share of the pixels with image data at which a terrain band may hold the file's
#: nodata value before it is said (real voids of a DEM are rarer; slope 0 on flat ground is often more).
TERRAIN_NODATA_SHARE = 0.001


def terrain_nodata_warning(path: str | os.PathLike, profile: BandProfile, name: object,
                           indexes: Sequence[int] | None = None, max_pixels: int = 1 << 20) -> str | None:
    """Why a terrain band's pixels are masked as nodata where they may hold real values, or ``None``.

    A GeoTIFF has one nodata value for all its bands. A stack made with another tool that declares
    Sentinel-2's 0 as nodata therefore masks every pixel where slope is 0 (flat ground) or the DEM is 0 m (the
    coast), in every band, without a word. Said when, on a sample of about ``max_pixels`` pixels, a terrain
    band equals the declared value at :data:`TERRAIN_NODATA_SHARE` or more of the pixels where every spectral
    band has data, and that value lies within (or just below) the band's other values there. Stacks of
    ``lsmap stack`` (:data:`STACK_TAG`: nodata in every band at once) are not checked.

    Args:
        path: The scene GeoTIFF.
        profile: Band profile of the bands read (``indexes``: their 1-based bands; ``None``: all, in order).
        name: What the message calls the scene.
    """
    with open_raster(path, "scene") as src:
        return _terrain_nodata(src, profile, name, indexes, max_pixels)


def _terrain_nodata(src, profile: BandProfile, name: object, indexes: Sequence[int] | None, max_pixels: int
                    ) -> str | None:
    from rasterio.enums import MaskFlags

    from lsmap.core.windows import spread_sample

    bands = list(indexes) if indexes is not None else list(range(1, src.count + 1))
    terrain = [k for k in range(profile.count) if k not in profile.spectral_indices]
    if STACK_TAG in src.tags() or not terrain or not profile.spectral_indices:
        return None
    values = {k: _nodata_as(src.nodatavals[bands[k] - 1], np.dtype(src.dtypes[bands[k] - 1])) for k in terrain}
    values = {k: v for k, v in values.items()
              if v is not None and src.mask_flag_enums[bands[k] - 1] == [MaskFlags.nodata]}
    if not values:
        return None
    spectral = {k: _nodata_as(src.nodatavals[bands[k] - 1], np.dtype(src.dtypes[bands[k] - 1]))
                for k in profile.spectral_indices}
    hits = dict.fromkeys(values, 0)
    low = dict.fromkeys(values, np.inf)
    high = dict.fromkeys(values, -np.inf)
    seen = 0
    for win in spread_sample(src.height, src.width, 256, max_pixels):
        stored = read_window(src, bands, win)
        image = np.ones(stored.shape[1:], bool)
        for k, v in spectral.items():
            image &= np.isfinite(stored[k]) & ((stored[k] != v) if v is not None else True)
        seen += int(image.sum())
        for k, v in values.items():
            band = stored[k][image]
            at = band == v
            hits[k] += int(at.sum())
            rest = band[~at & np.isfinite(band)]
            if rest.size:
                low[k], high[k] = min(low[k], float(rest.min())), max(high[k], float(rest.max()))
    for k, v in values.items():
        value, lo, hi = float(v), low[k], high[k]
        if seen and hits[k] >= 10 and hits[k] / seen >= TERRAIN_NODATA_SHARE and np.isfinite(lo) \
                and lo - 0.05 * (hi - lo) <= value <= hi:
            fix = (f"unset it (rio edit-info --unset-nodata {name}, installed with lsmap: lsmap then takes 0 as no data in the spectral bands "
                   "only)" if value == profile.nodata else "stack the inputs with `lsmap stack`, which marks nodata "
                   "in every band at once")
            return (f"{name}: its nodata value {value:g} is also a {profile.bands[k]} value: {profile.bands[k]} holds "
                    f"it at {100 * hits[k] / seen:.2g} % of the pixels where the image has data ({lo:g} to {hi:g} "
                    f"elsewhere), and those pixels are left out in every band; if it is real {profile.bands[k]} "
                    f"there (slope 0 on flat ground, a DEM's 0 m at the coast), {fix}")
    return None
