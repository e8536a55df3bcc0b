"""The streaming statistics pass over a scene: per-band statistics of its valid pixels, raw or scaled.

Detection normalises each scene by its own statistics (the 1st-place solution's separated
normalisation). :func:`scan_scene` reads the scene in blocks with a few threads (each with its own
dataset handle; decoding and NumPy release the GIL) and folds the blocks' statistics in block
order, so the result is the same, to the bit, as one thread's. Scenes larger than
:data:`STATS_MAX_PIXELS` are summarised from cells spread over the scene
(:func:`lsmap.core.windows.spread_sample`).

Input scale: models see L4S-scaled values. ``"auto"`` decides from the statistics: raw (Sentinel-2
digital numbers, slope in degrees, DEM in metres; divided by the profile's divisors when read) when
the median over the spectral bands of the valid-pixel means exceeds :data:`RAW_THRESHOLD`
(L4S-scaled reflectances average about 1, raw digital numbers hundreds to thousands).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lsmap.core.bands import BandProfile
from lsmap.core.normalize import _MIN_STD, BandStats, RunningStats
from lsmap.core.windows import Window, block_grid, spread_sample
from lsmap.errors import InputError
from lsmap.io.rasters import GDAL_CACHE_MB, open_raster, read_window
from lsmap.io.scene import SceneInfo, read_scene_window

#: "auto" input scale: raw when the median spectral-band mean of valid pixels exceeds this.
RAW_THRESHOLD = 20.0
#: Scene statistics are computed over all pixels up to this many (4.2 M, 2048 x 2048); larger scenes
#: are summarised from about this many pixels in cells spread over the scene (:func:`scan_scene`).
STATS_MAX_PIXELS = 1 << 22
#: Pixels sampled when the pass only decides the input scale and the valid share (the models are
#: normalised with their training statistics or given ones): 1 M, 16 cells of 256 px. Raw digital
#: numbers and L4S values differ by two orders of magnitude, so a small sample tells them apart.
SCALE_MAX_PIXELS = 1 << 20
INPUT_SCALES = ("auto", "raw", "l4s")
#: Median spectral-band mean of a Sentinel-2 scene on the L4S scale (after reading raw DNs as such): about
#: 0.5-3 (the L4S training patches: 0.9-1.4). Outside these bounds the scene was almost surely read at the
#: wrong scale (:func:`scale_warning`): reflectance as a fraction (0-1) read as L4S values is about 10x below,
#: DNs multiplied once more about 10,000x above.
PLAUSIBLE_L4S = (0.15, 30.0)


@dataclass(frozen=True)
class SceneScan:
    """Result of the streaming statistics pass over a scene.

    Attributes:
        stats: Per-band statistics of the valid pixels, in L4S scale.
        raw: Whether the scene holds raw values (divided by the profile's divisors when read).
        valid_pixels: Valid pixels seen by the pass.
        sampled: Whether only a subset of blocks was read (very large scenes).
        seen_pixels: Pixels the pass read (valid or not); with ``sampled``, the scene's valid
            pixels are about ``valid_pixels * height * width / seen_pixels``.
    """

    stats: BandStats
    raw: bool
    valid_pixels: int
    sampled: bool
    seen_pixels: int = 0


def scan_scene(scene: SceneInfo, profile: BandProfile, input_scale: str = "auto", *, block: int = 512,
               max_pixels: int | None = STATS_MAX_PIXELS, sample_block: int = 256, workers: int | None = None,
               progress: bool = False, indexes: Sequence[int] | None = None, count_nodata: bool = False,
               desc: str = "statistics", name: object = None) -> SceneScan:
    """Streaming pass over the valid pixels: per-band statistics (L4S scale) and raw-or-scaled.

    Blocks of ``block`` pixels are summarised by ``workers`` threads (each with its own dataset
    handle; decoding and NumPy release the GIL) and folded into one :class:`RunningStats` in block
    order, so the result is the same, to the bit, as a single-threaded pass. A scene larger than
    ``max_pixels`` is summarised from cells of ``sample_block`` pixels (lsmap's GeoTIFF tile size,
    so each cell decodes its own tiles only) spread over the scene by
    :func:`lsmap.core.windows.spread_sample`, about ``max_pixels`` in all (with a full pass when the
    sample finds no valid pixel).

    With ``progress`` a bar shows the blocks read (the full pass over a large, mostly empty scene
    can take long: it says why it runs).

    ``profile`` is the band set read: all the scene's bands in file order, or the bands at the
    1-based ``indexes`` (:func:`lsmap.io.scene.scene_band_indices`), validity judged on those.

    ``max_pixels=None`` reads every block (``lsmap stats``). ``count_nodata`` counts nodata pixels
    with their stored values (``lsmap stats --all-pixels``); not-observed pixels (``scene.mask``)
    never count. ``desc`` labels the progress bar; ``name`` is what messages call the scene (default
    its path: a caller that stacked a product names the product).

    Raises:
        InputError: the scene has no valid pixel, or ``input_scale`` is unknown.
    """
    import rasterio

    from lsmap.io.progress import progress_bar

    if input_scale not in INPUT_SCALES:
        raise InputError(f"unknown input scale '{input_scale}'; choose one of: {', '.join(INPUT_SCALES)}")
    if block < 1:
        raise InputError(f"block size must be positive (got {block})")
    blocks = block_grid(scene.height, scene.width, block)
    sampled = max_pixels is not None and scene.height * scene.width > max_pixels
    chosen = spread_sample(scene.height, scene.width, sample_block, max_pixels) if sampled else blocks
    workers = workers or min(4, os.cpu_count() or 1)
    rs = RunningStats(profile.count)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20, GDAL_NUM_THREADS=1):
        label = f"{desc} (sample)" if sampled else desc
        for part in progress_bar(_block_stats(scene, profile, chosen, workers, indexes, count_nodata), total=len(chosen),
                         desc=label, unit="block", disable=not progress, leave=False):
            rs.merge(part)  # == rs.update(data, valid) of the block: same formula, same order
        if rs.n == 0 and sampled:  # the sample missed the data: look everywhere
            sampled = False
            label = f"{desc}: the sample of {len(chosen)} cells found no valid pixel, reading all"
            for part in progress_bar(_block_stats(scene, profile, blocks, workers, indexes, count_nodata), total=len(blocks),
                             desc=label, unit="block", disable=not progress):
                rs.merge(part)
    if rs.n == 0:
        raise InputError(
            f"{name or scene.path}: the scene has no valid pixel (every pixel is nodata, masked or non-finite); "
            f"check its nodata value and extent"
        )
    raw_stats = rs.result(profile.bands)
    if input_scale == "auto":
        spec = [raw_stats.mean[i] for i in profile.spectral_indices] or list(raw_stats.mean)
        raw = float(np.median(spec)) > RAW_THRESHOLD
    else:
        raw = input_scale == "raw"
    if raw:
        d = profile.divisors
        stats = BandStats(tuple(m / q for m, q in zip(raw_stats.mean, d, strict=False)),
                          tuple(s / q for s, q in zip(raw_stats.std, d, strict=False)), raw_stats.count, profile.bands)
    else:
        stats = raw_stats
    seen = sum(w.height * w.width for w in (chosen if sampled else blocks))
    return SceneScan(stats, raw, rs.n, sampled, seen)


def scale_warning(scan: SceneScan, profile: BandProfile, name: object, raw_option: str = "`input_scale` raw") -> str | None:
    """Why the scene's values look read at the wrong scale, or ``None`` (see :data:`PLAUSIBLE_L4S`);
    ``raw_option`` is how the caller is told to read raw digital numbers."""
    spec = [scan.stats.mean[i] for i in profile.spectral_indices]
    if not spec:
        return None
    level = float(np.median(spec))
    low, high = PLAUSIBLE_L4S
    if low <= level <= high:
        return None
    read = "raw digital numbers" if scan.raw else "L4S values"
    if level < low:
        fix = ("reflectance as a fraction (0-1)? lsmap takes Sentinel-2 digital numbers (reflectance x 10000) or "
               "stacks from `lsmap stack`")
    elif not scan.raw:
        fix = f"raw digital numbers read as L4S values? give {raw_option}"
    else:
        fix = "values scaled twice? lsmap takes digital numbers as Sentinel-2 stores them, or stacks from `lsmap stack`"
    return (f"{name}: its spectral bands average {level:.3g} on the L4S scale (read as {read}), where Sentinel-2 "
            f"scenes average about 0.5-3: {fix}. Results on it are likely wrong")


#: Detect warns when a band's scene mean lies more than this many of the training data's standard deviations from
#: the training mean, with the models normalised by their training statistics (``norm`` model). Between the 29
#: labelled Landslide4Sense patches here, each patch's mean stays within 2.5 of the shipped models' statistics in
#: every band but the cirrus band B10 (6.7 in two hazy patches); a whole scene averages more ground than a
#: patch. Measured against it: the real Puthumala L2A scene 7.3 (B9), the cloudy Wayanad scene 12.6 (B9), 6.9
#: (B3) (``docs/detect.md``, "Scenes unlike the training data").
SHIFT_SIGMAS = 4.0
#: Bands left out of that warning (still reported): the cirrus band varies with haze between Landslide4Sense's own
#: patches (6.7 in two of them).
SHIFT_EXEMPT = frozenset({"B10"})


def band_shift(scene: BandStats, trained: BandStats) -> np.ndarray:
    """Per band, how many of the training data's standard deviations the scene's mean lies from the training
    mean (signed: above is positive). A constant training band (std 0) is divided by the floor the models'
    normalisation puts under it, so its shift is what the models see, not a division by zero.

    Shape:
        two statistics of ``C`` bands -> ``(C,)``.
    """
    return (np.asarray(scene.mean, np.float64) - np.asarray(trained.mean, np.float64)) \
        / np.maximum(np.asarray(trained.std, np.float64), _MIN_STD)


def far_bands(shift: dict[str, float] | None) -> str | None:
    """The bands of a :func:`band_shift` record beyond :data:`SHIFT_SIGMAS` (outside :data:`SHIFT_EXEMPT`), most
    shifted first, as said to users (``"B9 +7.3, B1 -4.2"``), or ``None``."""
    far = sorted(((b, z) for b, z in (shift or {}).items() if abs(z) > SHIFT_SIGMAS and b not in SHIFT_EXEMPT),
                 key=lambda bz: -abs(bz[1]))
    if not far:
        return None
    return ", ".join(f"{b} {z:+.1f}" for b, z in far[:4]) + (f" and {len(far) - 4} more" if len(far) > 4 else "")


def shift_warning(shift: dict[str, float] | None, name: object) -> str | None:
    """Why a scene is unlike the models' training data (a band beyond :data:`SHIFT_SIGMAS`), or ``None``;
    ``shift`` maps band names to :func:`band_shift` values."""
    said = far_bands(shift)
    if said is None:
        return None
    return (f"{name}: unlike the models' training data: {said} standard deviations from the training means "
            f"(Landslide4Sense's own patches stay within 2.5; the limit is {SHIFT_SIGMAS:g}), so the map may miss "
            f"landslides or flag false ones: check it against the imagery. Clouds or haze (mask them), surface "
            f"reflectance (L2A) against the top-of-atmosphere training data, or land unlike the training regions can "
            f"cause it; see docs/detect.md, 'Scenes unlike the training data'")


def _block_stats(scene: SceneInfo, profile: BandProfile, windows: Sequence[Window], workers: int,
                 indexes: Sequence[int] | None = None, count_nodata: bool = False) -> Iterator[RunningStats]:
    """Statistics of each window's valid pixels (raw values), in window order, read by ``workers`` threads
    (with ``count_nodata``: of its observed pixels, nodata or not)."""
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()
    opened: list = []

    def one(win: Window) -> RunningStats:
        src = getattr(local, "src", None)
        if src is None:
            src = local.src = open_raster(scene.path, "scene")
            opened.append(src)
            local.mask = open_raster(scene.mask, "not-observed mask") if scene.mask is not None else None
            if local.mask is not None:
                opened.append(local.mask)
        data, valid = read_scene_window(src, win, profile, declared=scene.declares_nodata, indexes=indexes,
                                        mask=local.mask)
        if count_nodata:
            valid = read_window(local.mask, 1, win) == 0 if local.mask is not None else None
        part = RunningStats(profile.count)
        part.update(data, valid)
        return part

    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="lsmap-scan")
    try:
        yield from pool.map(one, windows)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for src in opened:
            src.close()


def check_stats(stats: BandStats, profile: BandProfile, source: object) -> BandStats:
    """``stats`` for ``profile``'s bands: taken by name when the statistics name their bands (they
    may hold more), else checked by band count.

    Raises:
        InputError: naming ``source`` and the mismatch.
    """
    if stats.bands is not None and set(profile.bands) <= set(stats.bands) and len(set(stats.bands)) == len(stats.bands):
        return stats.take([tuple(stats.bands).index(b) for b in profile.bands])
    if len(stats.mean) != profile.count:
        raise InputError(f"{source}: statistics have {len(stats.mean)} bands but the scene's profile "
                         f"'{profile.name}' has {profile.count}; compute them on matching data")
    bad = [(b, m, sd) for b, m, sd in zip(stats.bands or profile.bands, stats.mean, stats.std, strict=False)
           if not (np.isfinite(m) and np.isfinite(sd) and sd >= 0)]
    if bad:
        b, m, sd = bad[0]
        raise InputError(f"{source}: statistics of band {b} are not usable (mean {m}, std {sd}); "
                         f"recompute them with 'lsmap stats'")
    if stats.bands is not None and tuple(stats.bands) != profile.bands:
        raise InputError(f"{source}: statistics are for bands {', '.join(stats.bands)}, the scene has "
                         f"{', '.join(profile.bands)}")
    return stats
