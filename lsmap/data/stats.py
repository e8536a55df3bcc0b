"""Per-band mean/std of a patch folder or a scene, streamed one patch / one block at a time.

Pixels counted:

- always only pixels whose bands are all finite (NaN/inf in L4S patches are left out, not filled);
- patch folders with ``valid_only`` (the default, as training, evaluation and refinement count them): also leave
  out pixels whose bands are all exactly :data:`lsmap.data.tile.FILL` (0.0), the value ``lsmap tile`` writes for
  nodata and padding;
- scenes with ``valid_only`` (the default): only valid pixels (not nodata in any band,
  see :mod:`lsmap.io.scene`); with ``valid_only=False`` nodata pixels count with their stored values.

Not-observed pixels (:mod:`lsmap.data.masks`: ``scl`` with ``scl_mask``, ``mask_raster``,
``cloud_prob_max``) are always left out of a scene's statistics, as detection's scan leaves them out.
A Sentinel-2 product (SAFE folder, ``.SAFE.zip``, STAC Item) or a folder of band files (a folder in
which no patches are found) is stacked first (its bands of ``bands``, on the L4S scale, as ``lsmap stack``
writes them: :mod:`lsmap.data.sources`); a product's own SCL masks by default.

Scenes are read whole by detection's scan (:func:`lsmap.data.scan.scan_scene` with no sampling): disjoint
blocks of ``block`` x ``block`` pixels on a few threads, folded in block order; with ``raw`` the statistics
of the raw values are divided by the profile's divisors (the L4S scale of ``lsmap tile --raw``). In a patch
folder every patch counts fully, so pixels shared by overlapping patches (``lsmap tile --overlap``) count
once per patch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lsmap.core.bands import BandProfile, get_profile
from lsmap.core.constants import FILL
from lsmap.core.normalize import BandStats, RunningStats
from lsmap.data.masks import check_masks, mask_spec, product_mask_layers, write_not_observed
from lsmap.data.scan import scale_warning, scan_scene
from lsmap.data.sources import (
    holds_band_files,
    input_band_set,
    scene_inputs,
    source_name,
    stack_arguments,
    stack_source,
)
from lsmap.errors import InputError, LsmapWarning, MissingInputError, user_level
from lsmap.io.aoi import AOI, as_aoi, crop_raster
from lsmap.io.patches import NONFINITE_FILL, Patch, find_patches, read_patch_image
from lsmap.io.scene import scene_info, terrain_nodata_warning


def compute_stats(
    path: str | os.PathLike | Mapping,
    bands: str | BandProfile | None = None,
    *,
    split: str = "train",
    valid_only: bool | None = None,
    raw: bool = False,
    block: int = 512,
    progress: bool = False,
    scl: str | os.PathLike | None = None,
    scl_mask: str | Sequence[int] | None = None,
    mask_raster: str | os.PathLike | None = None,
    cloud_prob_max: float | None = None,
    aoi: AOI | None = None,
    scratch: str | os.PathLike | None = None,
    blue_max: float | None = None,
    dark_max: float | None = None,
    dem: Any = None,
    slope: str | os.PathLike | None = None,
    offset: float | None = None,
) -> BandStats:
    """Per-band statistics of a patch folder (any layout of :func:`lsmap.io.patches.find_patches`) or a scene.

    Args:
        path: Patch folder / dataset root, a GeoTIFF scene, or what ``lsmap stack`` takes (stacked first
            with ``bands``, on the L4S scale: :mod:`lsmap.data.sources`): a Sentinel-2 product, a folder of
            band files (a folder without patches), or a mapping of ``stack_scene`` arguments.
        bands: Band profile; the band count of every input is checked against it. ``None``: for patches the
            bands their folder records (``tiles.json``, as ``lsmap tile`` writes it), else the L4S bands; for a
            scene its band names or what stacking can give (:func:`lsmap.data.sources.input_band_set`).
        split: Split to read from a dataset root.
        valid_only: Leave out nodata pixels (see the module docstring). ``None`` (default): ``True`` (a declared
            -9999 fill must never count into a mean; patches' all-0.0 pixels are left out as training leaves
            them out).
        raw: Scale a raw scene by the profile divisors (scenes only).
        block: Block size for reading scenes.
        progress: Show a progress bar.
        scl: Scene classification (SCL) raster of the scene (any grid); a product's own SCL is used
            without it.
        scl_mask: SCL classes not observed (default ``0,1,3,8,9,10,11``; ``"none"``: SCL unused).
        mask_raster: Raster whose non-zero pixels are not observed (any grid).
        cloud_prob_max: Also leave out pixels whose MSK_CLDPRB exceeds this (percent; products only).
        aoi: Area of interest (an AOI, a vector file or a lon/lat box: :func:`lsmap.io.aoi.as_aoi`): a scene's
            statistics are those of its window (and, for a vector AOI, of the pixels inside it).
        blue_max: Also leave out, as cloud, pixels whose blue (B2) reflectance exceeds this and those
            around them (:mod:`lsmap.data.masks`; for scenes without an SCL).
        dark_max: Also leave out, as dark (cloud shadow or water), pixels whose SWIR (B11) reflectance is below
            this (:mod:`lsmap.data.masks`, with no margin by default; for scenes without an SCL).
        dem, slope, offset: Stacking inputs beside a product or band folder ``path``, as ``--dem``, ``--slope`` and
            ``--offset`` are on the command line (:func:`lsmap.data.sources.scene_inputs`).
        scratch: Folder for the scratch stack of stacked inputs (a whole tile's takes GBs; default: the
            system's temporary folder).

    Returns:
        Mean and population standard deviation per band, with the band names.

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: unreadable inputs, wrong band count, ``raw`` or masks on a patch folder, bad
            masks (before any work), no valid pixel.
    """
    spec = mask_spec(scl, scl_mask, mask_raster, cloud_prob_max, blue_max=blue_max, dark_max=dark_max)
    aoi = as_aoi(aoi)
    path = scene_inputs(path, dem, slope, offset, folders=False)
    args = stack_arguments(path, folders=False)  # a product or stack_scene arguments; a folder is decided below
    patches = None
    if args is None:
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"{path}: input does not exist; give a patch folder, a GeoTIFF scene, a "
                                    f"Sentinel-2 product or a folder of band files")
        if path.is_dir():
            try:
                patches = find_patches(path, split, masks=False)  # the images alone: a missing mask refused them
            except InputError:
                if not holds_band_files(path):
                    raise
                args = {"s2": path}  # a folder of band files, as lsmap stack reads it
    name = source_name(args) if args is not None else str(path)
    if bands is not None:
        profile = get_profile(bands)
    elif patches is not None:  # the bands the patch folder records (lsmap tile writes them), else the L4S bands
        profile = get_profile(patches[0].bands or "l4s14")
    else:  # a scene: its own band names, or what stacking can give (lsmap stack's choice)
        profile = input_band_set(path, args)
    if valid_only is None:
        valid_only = True
    if patches is not None:
        if raw:
            raise InputError(f"{path}: `raw` applies to scenes only; patches are already on the L4S scale")
        if spec.active or spec.cloud_prob_max is not None:
            raise InputError(f"{path}: masks (`scl`, `mask_raster`, `cloud_prob_max`, `blue_max`, `dark_max`) apply to scenes; "
                             f"'lsmap tile' writes not-observed pixels as 0.0, left out with `valid_only`")
        if aoi is not None:  # it was dropped without a word (found by a code review)
            raise InputError(f"{path}: `bbox`/`aoi` apply to scenes; a patch folder is summarised whole (tile the "
                             f"scene with the area of interest instead)")
        return patch_stats(patches, profile, valid_only=valid_only, fill=None, progress=progress,
                           desc=f"stats {path.name}")
    if args is not None and raw:
        raise InputError(f"{name}: a Sentinel-2 product or band files are stacked on the L4S scale; drop `raw`")
    layers = product_mask_layers(args.get("s2") if args is not None else path, spec)
    with contextlib.ExitStack() as es:
        scene = path
        if args is not None or spec.active or aoi is not None:
            work = Path(es.enter_context(tempfile.TemporaryDirectory(prefix=".lsmap-stats-", dir=scratch)))
        if args is not None:
            scene, spec = stack_source(args, work, profile, spec, aoi=aoi, layers=layers, progress=progress)
        elif aoi is not None:  # as detect and tile crop a GeoTIFF: a scratch copy of the AOI's window
            check_masks(spec, scene_info(path, profile))
            scene, _ = crop_raster(path, aoi, work / path.name)
        info = scene_info(scene, profile)
        if spec.active:
            check_masks(spec, info)
            nobs = write_not_observed(spec, info, work / "not_observed.tif", bands=profile.bands)
            info = replace(info, mask=nobs.path)
        # every block, read by the threads of detect's scan (the same validity, the same sums)
        scan = scan_scene(info, profile, "raw" if raw else "l4s", block=block, max_pixels=None,
                          count_nodata=not valid_only, progress=progress, desc=f"stats {Path(name).name}", name=name)
        terrain = terrain_nodata_warning(scene, profile, name)
    for why in (scale_warning(scan, profile, name, "`raw`"), terrain):
        if why is not None:
            warnings.warn(why, LsmapWarning, stacklevel=user_level())
    return scan.stats


def patch_stats(patches: Sequence[Patch], bands: str | BandProfile = "l4s14", *, valid_only: bool = True,
                fill: float | None = NONFINITE_FILL, progress: bool = False, desc: str = "statistics") -> BandStats:
    """Per-band statistics over ``patches``, streamed one patch at a time.

    These are the per-domain statistics of separated normalisation: training, evaluation and
    refinement compute the statistics of their source, validation and target patches here.

    Args:
        patches: The patches (:func:`lsmap.io.patches.find_patches`).
        bands: Band profile; every file's band count is checked against it.
        valid_only: Leave out pixels whose bands are all exactly :data:`~lsmap.core.constants.FILL` (the nodata
            ``lsmap tile`` writes; the default, as detection leaves a scene's nodata out).
        fill: Value that replaces non-finite values before counting (the value the models see;
            a warning names the file); ``None`` leaves non-finite pixels out instead.
        progress: Show a progress bar.
        desc: Label of the progress bar.

    Raises:
        BandMismatchError: a file with another number of bands than the profile.
        InputError: a patch without any finite value (with ``fill``), or no pixel to count at all.
    """
    from lsmap.io.progress import progress_bar

    profile = get_profile(bands)
    rs = RunningStats(profile.count)
    for p in progress_bar(patches, desc=desc, unit="patch", disable=not progress, leave=False):
        image, n_bad = read_patch_image(p, profile, fill=fill)
        if fill is not None and n_bad == image.size:
            raise InputError(f"{p.image}: patch has no finite value (all NaN/inf); remove it from the folder")
        if fill is not None and n_bad:
            warnings.warn(f"{p.image}: {n_bad} non-finite values replaced by {fill:g}", stacklevel=2)
        rs.update(image, ~(image == FILL).all(axis=0) if valid_only else None)
    try:
        return rs.result(profile.bands)
    except InputError:
        where = patches[0].image.parent if patches else "patch folder"
        raise InputError(f"{where}: no valid pixel to compute band statistics from; check the folder") from None
