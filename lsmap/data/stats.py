"""Per-band mean/std of a patch folder or a scene, streamed one patch / one block at a time.

Pixels counted:

- always only pixels whose bands are all finite (NaN/inf in L4S patches are left out, not filled);
- patch folders with ``valid_only``: also leave out pixels whose bands are all exactly
  :data:`lsmap.data.tile.FILL` (0.0), the value ``lsmap tile`` writes for nodata and padding;
- scenes with ``valid_only`` (the default for scenes): only valid pixels (not nodata in any band,
  see :mod:`lsmap.io.scene`); with ``valid_only=False`` nodata pixels count with their stored values.

Scenes are read in disjoint blocks of ``block`` x ``block`` pixels (:func:`lsmap.core.windows.block_grid`);
with ``raw`` their values are first brought to the L4S scale (:func:`lsmap.io.scene.scale_raw`), as
``lsmap tile --raw`` does. In a patch folder every patch counts fully, so pixels shared by
overlapping patches (``lsmap tile --overlap``) count once per patch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from lsmap.core.bands import BandProfile, get_profile
from lsmap.core.constants import FILL
from lsmap.core.normalize import BandStats, RunningStats
from lsmap.core.windows import block_grid
from lsmap.errors import InputError, MissingInputError
from lsmap.io.patches import NONFINITE_FILL, Patch, find_patches, read_patch_image
from lsmap.io.scene import open_scene, read_scene_window


def compute_stats(
    path: str | os.PathLike,
    bands: str | BandProfile = "l4s14",
    *,
    split: str = "train",
    valid_only: bool | None = None,
    raw: bool = False,
    block: int = 512,
    progress: bool = False,
) -> BandStats:
    """Per-band statistics of a patch folder (any layout of :func:`lsmap.io.patches.find_patches`) or a scene.

    Args:
        path: Patch folder / dataset root, or a GeoTIFF scene.
        bands: Band profile; the band count of every input is checked against it.
        split: Split to read from a dataset root.
        valid_only: Leave out nodata pixels (see the module docstring). ``None`` (default): scenes
            leave their nodata out (a declared -9999 fill must never count into a mean), patch
            folders count every pixel.
        raw: Scale a raw scene by the profile divisors (scenes only).
        block: Block size for reading scenes.
        progress: Show a progress bar.

    Returns:
        Mean and population standard deviation per band, with the band names.

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: unreadable inputs, wrong band count, ``raw`` on a patch folder, no valid pixel.
    """
    from tqdm.auto import tqdm

    profile = get_profile(bands)
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: input does not exist; give a patch folder or a GeoTIFF scene")
    if valid_only is None:
        valid_only = not path.is_dir()
    rs = RunningStats(profile.count)
    if path.is_dir():
        if raw:
            raise InputError(f"{path}: `raw` applies to scenes only; patches are already on the L4S scale")
        return patch_stats(find_patches(path, split), profile, valid_only=valid_only, fill=None, progress=progress,
                           desc=f"stats {path.name}")
    else:
        if block < 1:
            raise InputError(f"block size must be positive (got {block})")
        with open_scene(path, profile) as src:
            grid = block_grid(src.height, src.width, block)
            for window in tqdm(grid, desc=f"stats {path.name}", unit="block", disable=not progress):
                data, valid = read_scene_window(src, window, profile, raw=raw)
                rs.update(data, valid if valid_only else None)
    try:
        return rs.result(profile.bands)
    except InputError:
        raise InputError(f"{path}: no valid pixel to compute band statistics from") from None


def patch_stats(patches: Sequence[Patch], bands: str | BandProfile = "l4s14", *, valid_only: bool = False,
                fill: float | None = NONFINITE_FILL, progress: bool = False, desc: str = "statistics") -> BandStats:
    """Per-band statistics over ``patches``, streamed one patch at a time.

    These are the per-domain statistics of separated normalisation: training, evaluation and
    refinement compute the statistics of their source, validation and target patches here.

    Args:
        patches: The patches (:func:`lsmap.io.patches.find_patches`).
        bands: Band profile; every file's band count is checked against it.
        valid_only: Leave out pixels whose bands are all exactly :data:`~lsmap.core.constants.FILL`.
        fill: Value that replaces non-finite values before counting (the value the models see;
            a warning names the file); ``None`` leaves non-finite pixels out instead.
        progress: Show a progress bar.
        desc: Label of the progress bar.

    Raises:
        BandMismatchError: a file with another number of bands than the profile.
        InputError: a patch without any finite value (with ``fill``), or no pixel to count at all.
    """
    from tqdm.auto import tqdm

    profile = get_profile(bands)
    rs = RunningStats(profile.count)
    for p in tqdm(patches, desc=desc, unit="patch", disable=not progress, leave=False):
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
