"""Scene in, landslide polygons out: the whole detection job as one Python call.

:func:`detect` loads the ensemble, stacks the scene first when given its Sentinel-2 + DEM inputs,
scans it once for per-band statistics and validity (:func:`lsmap.data.scan.scan_scene`), runs the
streamed sliding-window inference (:func:`lsmap.map.stream.predict_scene`) into a temporary
probability raster, vectorises it block by block (:func:`lsmap.map.vectorize.vectorize`), and writes
the requested outputs. Every output is checked for existence before any work and written under a
temporary name, renamed into place only when the whole job succeeded.

Example:
    >>> import lsmap
    >>> slides = lsmap.detect("scene.tif", ["model.safetensors"], out="slides.gpkg")  # doctest: +SKIP
    >>> slides[["area_m2", "mean_prob"]].describe()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.bands import BAND_NAMES, TERRAIN_BANDS, get_profile
from lsmap.core.checks import as_list, as_settings, check_bool, check_path
from lsmap.core.ground import mean_pixel_area_m2
from lsmap.core.normalize import BandStats
from lsmap.core.norms import ensemble_norm, norm_mode
from lsmap.core.windows import is_north_up
from lsmap.data.masks import (
    check_masks,
    cut_not_observed,
    mask_spec,
    near_not_observed,
    product_mask_layers,
    write_not_observed,
)
from lsmap.data.scan import (
    SCALE_MAX_PIXELS,
    STATS_MAX_PIXELS,
    band_shift,
    check_stats,
    scale_warning,
    scan_scene,
    shift_warning,
)
from lsmap.data.sources import scene_inputs, stack_arguments, stack_source
from lsmap.errors import (
    CheckpointError,
    InputError,
    LsmapWarning,
    MissingInputError,
    NoModelError,
    OutputError,
    OutputExistsError,
    user_level,
)
from lsmap.io.aoi import as_aoi, crop_raster
from lsmap.io.cog import write_mask_cog, write_probability_cog
from lsmap.io.locks import owner_tag
from lsmap.io.malloc import limit_malloc_arenas
from lsmap.io.outputs import (
    atomic_output,
    check_outputs_apart,
    drop_new_parents_on_error,
    input_paths,
    output_path,
    provenance,
)
from lsmap.io.resources import check_disk
from lsmap.io.scene import scene_band_names, scene_info, terrain_nodata_warning
from lsmap.learn.device import resolve_device
from lsmap.learn.ensemble import Member, folded_members, load_ensemble
from lsmap.learn.models import default_model_for, default_model_path, shipped_defaults
from lsmap.map.components import BlockStream
from lsmap.map.evidence import (
    PreScene,
    apply_evidence,
    gate_probability,
    mask_pre,
    open_pre,
    plan_evidence,
    stack_pre,
)
from lsmap.map.options import DetectOptions, DetectOutputs
from lsmap.map.quicklook import natural_colour, render_quicklook, scene_date
from lsmap.map.report import write_report
from lsmap.map.stream import PROB_NODATA, auto_window, band_plan, final_columns, last_window_row, predict_scene
from lsmap.map.vectorize import areas_m2, landslide_table, not_observed_polygons, vector_driver, vectorize, write_layer


def default_models() -> list[Path]:
    """The models shipped with lsmap (:data:`lsmap.learn.models.DEFAULT_MODELS`, installed ones, in
    that order); without a model, detection takes the first whose bands the scene has.

    Raises:
        CheckpointError: the installation has no default model.
    """

    try:
        return shipped_defaults() or [default_model_path()]
    except MissingInputError as e:
        raise CheckpointError(f"no default model: {e}") from None


#: Second layer of a GeoPackage output: the dissolved not-observed area, with its ``reason``.
NOT_OBSERVED_LAYER = "not_observed"
#: ``near_not_observed``: a polygon within this many pixels of not-observed area (its outline may be cut).
NEAR_PIXELS = 2


def _respect_not_observed(gdf, masked, info):
    """Cut not-observed area out of the polygons (hole filling and simplification may reach into it) and
    flag those near it (``near_not_observed``)."""
    pixel = float(np.hypot(info.transform.a, info.transform.d))
    if len(gdf) and len(masked):
        gdf = gdf.set_geometry(cut_not_observed(gdf.geometry.values, masked), crs=gdf.crs)
        gdf = gdf[~gdf.geometry.is_empty].copy()
        gdf["area_m2"] = areas_m2(list(gdf.geometry), gdf.crs)
    gdf = gdf.copy()
    gdf["near_not_observed"] = near_not_observed(gdf, masked, NEAR_PIXELS * pixel + 1e-6 * pixel)
    return gdf


def _check_args(scene: Any, models: Any, paths: Sequence[Any], overwrite: Any, progress: Any) -> list | None:
    """Check :func:`detect`'s arguments that are not options (types), with the CLI's messages.

    Returns:
        ``models`` as a list (one path given as a string is one model, never its characters).

    Raises:
        InputError: the first unusable argument.
    """
    if not isinstance(scene, (str, os.PathLike, Mapping)) and not hasattr(scene, "__dict__"):
        raise InputError(f"`scene` must be a GeoTIFF path or the inputs of 'lsmap stack' as a mapping (got "
                         f"{type(scene).__name__})")
    for name, value in zip(("out", "prob", "mask", "quicklook", "report"), paths, strict=True):
        check_path(name, value)
    check_bool("overwrite", overwrite)
    check_bool("progress", progress)
    models = as_list("models", models)
    for m in models or []:
        if not isinstance(m, (str, os.PathLike, Member)):
            raise InputError(f"`models` must be a checkpoint path or a loaded ensemble member (got {m!r} of type "
                             f"{type(m).__name__})")
    return models


def _check_scratch(work: Path, valid_pixels: int, info, rasters: int) -> None:
    """Refuse a scene whose scratch rasters (``rasters`` of them) cannot fit beside the output.

    The scratch probability (and uncertainty) rasters are compressed float32 (nodata areas compress to
    almost nothing): about 2 bytes per valid pixel is assumed for each.
    """
    if not rasters:
        return
    need = 2.0 * valid_pixels * rasters
    check_disk(work, need, f"the scratch rasters of a {info.width} x {info.height} px scene "
               f"({valid_pixels:,} valid pixels)", "free some space, or write the outputs on a larger disk")


#: Share of a scene's valid area above which detect warns that its landslides are implausible (:func:`warn_implausible`):
#: even dense landslide events leave most of 100 km2 or more standing, while a model given mis-scaled bands
#: flagged 44-46 % of a scene (BENCHMARKS.md).
IMPLAUSIBLE_SHARE = 0.25

#: Least valid area (km2) of a scene for that warning: a small area of interest drawn around a landslide may be
#: mostly landslide.
IMPLAUSIBLE_MIN_KM2 = 100.0


def warn_implausible(landslide_km2: float, valid_km2: float) -> None:
    """Warn (:class:`LsmapWarning`) when the landslides cover more than :data:`IMPLAUSIBLE_SHARE` of at least
    :data:`IMPLAUSIBLE_MIN_KM2` of valid scene: a sign of offset or mis-scaled bands, or of a model that does
    not fit the sensor, more often than of an event."""
    import warnings

    if valid_km2 >= IMPLAUSIBLE_MIN_KM2 and landslide_km2 > IMPLAUSIBLE_SHARE * valid_km2:
        warnings.warn(f"landslides cover {100 * landslide_km2 / valid_km2:.0f} % of the scene's valid area "
                      f"({landslide_km2:,.1f} of {valid_km2:,.1f} km2), implausible for an event: check the input "
                      "(`lsmap info` shows its DN offset and bands; loose band files may need --offset) and that the "
                      "model fits this sensor", LsmapWarning, stacklevel=user_level())


def _scene_area_km2(info) -> float:
    """The scene's footprint area (its four corners mapped: right for rotated and south-up grids too)."""
    from lsmap.core.windows import Window, footprint

    return float(areas_m2([footprint(Window(0, 0, info.width, info.height), info.transform)], info.crs)[0]) / 1e6


def detect(scene: str | os.PathLike | Mapping | Any, models: Sequence[Any] | None = None, *,
           out: str | os.PathLike | None = None, prob: str | os.PathLike | None = None,
           mask: str | os.PathLike | None = None, quicklook: str | os.PathLike | None = None,
           options: DetectOptions | None = None, overwrite: bool = False, progress: bool = False,
           report: str | os.PathLike | None = None, aoi: Any = None, scl: str | os.PathLike | None = None,
           scl_mask: str | Sequence[int] | None = None, mask_raster: str | os.PathLike | None = None,
           cloud_prob_max: float | None = None, blue_max: float | None = None, dark_max: float | None = None,
           dem: Any = None,
           slope: str | os.PathLike | None = None, offset: float | None = None, **settings: Any):
    """Map the landslides of a scene: polygons with area and probability attributes.

    Args:
        scene: A stacked GeoTIFF (raw or L4S-scaled values; its band descriptions name its bands, as
            ``lsmap stack`` writes them), or the inputs of ``lsmap stack``, stacked into a temporary file
            first (:mod:`lsmap.data.sources`): a Sentinel-2 product (``.SAFE`` folder, ``.SAFE.zip``, STAC
            Item file or URL; its own SCL masks), a folder of band files, or a mapping/namespace of
            ``lsmap.data.stack.stack_scene`` keyword arguments (``{"s2": folder, "dem": dem}``).
            Each model takes the bands its card names from it, in the card's order.
        models: Checkpoint paths (``.safetensors``/``.json``/stem) or loaded
            :class:`lsmap.learn.ensemble.Member` objects; several are averaged, and they may take
            different band sets. ``None``: the first shipped default model whose bands the scene has
            (:data:`lsmap.learn.models.DEFAULT_MODELS`).
        out: Polygon output (``.gpkg``, ``.geojson``/``.json``, ``.shp``); ``None`` writes nothing.
        options: A :class:`DetectOptions` (or a dict of its fields); keyword arguments named like its fields (below)
            override it.
        bands: The scene's bands in file order (a profile or a comma list), for a file without band
            descriptions; ``None``: the descriptions (or, without them, the models' one band set or
            the L4S order of a 14-band file).
        tta: Also average over horizontal/vertical flips.
        overlap: Window overlap in pixels (blended with Hann ramps).
        window: Window size in pixels; ``None``: chosen from the models (:func:`lsmap.map.stream.auto_window`:
            384-640 px for fully convolutional models, the size whose windows cover the scene with the
            least work, else 128), recorded in the summary as ``window_choice``.
        batch_size: Windows per batch (default: sized for the device).
        norm: ``"own"`` normalises with the scene's own per-band statistics (the 1st-place
            recipe), ``"model"`` with each model's training statistics
            (:data:`lsmap.core.normalize.NORMS`; ``"scene"`` is accepted for ``"own"``);
            ``"auto"`` (default): as the models were trained (:func:`lsmap.core.norms.ensemble_norm`:
            ``model`` when every member was trained with one global normalisation, else ``own``).
        stats: Statistics (BandStats JSON path or object, L4S scale) to normalise with instead of
            the scene's own (implies ``norm="own"``).
        input_scale: ``"auto"`` (decide from the data), ``"raw"`` (digital numbers, degrees,
            metres: divided by the profile's divisors) or ``"l4s"`` (already scaled).
        threshold: Landslide probability threshold (default: mean of the models' card thresholds).
        prob: Also write the probability as a uint8 COG (``round(254 p)``, 255 = nodata).
        mask: Also write the pixel mask as a uint8 COG (1 landslide, 0 background, 255 nodata).
        quicklook: Also write a PNG map of the scene in natural colour with the polygons drawn
            (:func:`lsmap.map.quicklook.render_quicklook`).
        report: Also write a self-contained HTML report: an interactive map of the polygons over
            the scene, a sortable table and the run's summary (:func:`lsmap.map.report.write_report`).
        uncertainty: Add ``mean_unc``: mean over the polygon of the variance of the probability
            across members and flips (``p (1 - p)`` with a single model without TTA).
        min_area: Drop polygons smaller than this many m2.
        simplify: Simplification tolerance in metres (0: none).
        fill_holes: Fill holes smaller than this many m2.
        crf: Sharpen each window's ensemble probability with a dense CRF before the windows are
            blended (:func:`lsmap.learn.crf.crf_refine`; needs ``lsmap[crf]``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        overwrite: Replace existing outputs.
        block: Vectorisation (and evidence) block size in pixels.
        progress: Show a progress bar.
        aoi: Area of interest (an AOI, a vector file or a lon/lat box: :func:`lsmap.io.aoi.as_aoi`): the scene (or its stacking inputs) is cropped
            to the window of its grid that covers it before any other work; outputs cover that window.
        scl: Scene classification (SCL) raster of the scene, any grid (nearest neighbour); a
            Sentinel-2 product's own SCL is used without it (:mod:`lsmap.data.masks`).
        scl_mask: SCL classes not observed (``"0,1,3,8,9,10,11"`` the default; ``"none"``: SCL unused).
        mask_raster: Raster whose non-zero pixels are not observed (any grid, nearest neighbour).
            Not-observed pixels are invalid like nodata: out of the statistics, filled before the
            model, nodata in ``prob``/``mask``, never landslides; a GeoPackage ``out`` gets a layer
            ``not_observed`` (dissolved polygons with ``reason``), polygons get ``near_not_observed``
            (within :data:`NEAR_PIXELS` pixels of it) and the summary ``observed_km2``/``not_observed_km2``.
        cloud_prob_max: Also mask as cloud the pixels whose cloud probability (the L2A product's
            ``MSK_CLDPRB``, 0-100 %) exceeds this (``scene`` must then be a SAFE/zip/STAC product
            with that layer); ``None``: not used.
        blue_max: Also mask as cloud the pixels whose blue (B2) surface reflectance exceeds this, and those
            within :data:`lsmap.data.masks.BLUE_BUFFER_PX` pixels of them: for scenes without an SCL
            (0.2 is measured in BENCHMARKS.md); ``None``: not used.
        dark_max: Also mask as ``dark`` (cloud shadow or water: the test cannot tell them apart) the pixels whose
            SWIR (:data:`lsmap.data.masks.DARK_BAND`, B11) surface reflectance is below this: for scenes without
            an SCL (0.04 is measured in BENCHMARKS.md); the scene only, not a ``pre`` scene; ``None``: not used.
        dem, slope, offset: Stacking inputs beside a product or band folder ``scene``, as ``--dem``, ``--slope`` and
            ``--offset`` are on the command line (:func:`lsmap.data.sources.scene_inputs`).
        pre: The pre-event scene, any input ``scene`` may be (a stacked GeoTIFF, or stacking
            inputs, of which only red and NIR are stacked): turns on the change evidence of
            :mod:`lsmap.map.evidence` (reprojected onto the scene's grid; needs bands B4 and B8 in
            both scenes). Adds ``ndvi_pre``, ``ndvi_post``, ``dndvi``, ``pre_not_observed`` and, with
            a slope or DEM band, ``mean_slope``; drops polygons that fail ``min_ndvi_drop`` /
            ``min_slope``.
        pre_bands: The pre scene's bands in file order, for a file without band descriptions.
        pre_offset: DN offset of a pre scene given as loose band files (-1000 for processing baseline
            04.00 and later), as ``offset`` is for the scene's own.
        min_ndvi_drop: Drop polygons whose mean NDVI drop is below this (``None``: with ``pre``,
            :data:`lsmap.map.evidence.MIN_NDVI_DROP`).
        min_slope: Drop polygons whose mean slope (degrees) is below this (``None``: with ``pre``,
            :data:`lsmap.map.evidence.MIN_SLOPE` when the scene has a slope or DEM band; without
            ``pre``, not tested; 0: not tested).
        keep_rejected: Write the dropped polygons, with a ``reason``, to a second layer
            ``rejected`` of the GeoPackage ``out``.
        gate: Also set the probability to 0 at pixels whose own evidence fails, before the
            polygons are made (so the probability and mask rasters and the polygons agree).

    Returns:
        GeoDataFrame in the scene's CRS with columns ``id``, ``area_m2``, ``mean_prob``,
        ``max_prob`` (+ ``mean_unc``, + the evidence columns); ``gdf.attrs["lsmap"]`` holds a run
        summary (windows, timings, km2/s, statistics used, outputs, evidence); with evidence,
        ``gdf.attrs["rejected"]`` holds the dropped polygons with their ``reason``.

    Raises:
        OutputExistsError: an output exists and not ``overwrite`` (before any work).
        MissingInputError: the scene or a model does not exist.
        CheckpointError: unreadable model, or no (fitting) default model.
        MissingBandError: a model needs a band the scene lacks (named, with the scene and the model).
        InputError: unreadable scene, band names that cannot be told, no valid pixel, bad options.
    """
    t0 = time.perf_counter()
    limit_malloc_arenas()  # before any thread of this run takes an arena of its own
    scene = scene_inputs(scene, dem, slope, offset)
    models = _check_args(scene, models, (out, prob, mask, quicklook, report), overwrite, progress)
    opts = _options(options, settings)
    outputs = DetectOutputs(*(output_path(p, name=n) if p is not None else None  # '' refused, not Path('.')
                              for n, p in zip(("out", "prob", "mask", "quicklook", "report"),
                                              (out, prob, mask, quicklook, report), strict=True)))
    opts.check()
    outputs.check(overwrite)
    aoi = as_aoi(aoi)
    # a model named by its stem or one of its two files is both files; an AOI file is read too (an audit replaced
    # a checkpoint's card and an AOI with --overwrite)
    from lsmap.learn.models import checkpoint_paths

    model_files = [checkpoint_paths(m) for m in models or [] if isinstance(m, (str, os.PathLike))]
    check_outputs_apart(list(vars(outputs).values()),
                        input_paths(scene, model_files, scl, mask_raster, opts.pre, opts.stats,
                                    getattr(aoi, "source", None)))
    t_check = time.perf_counter()
    stack_args = stack_arguments(scene)  # a product or band folder is stacked first, as a mapping of inputs is
    pre = _check_evidence(scene if stack_args is None else None, opts, outputs)
    t_check = time.perf_counter() - t_check
    stats = BandStats.load(opts.stats) if isinstance(opts.stats, (str, os.PathLike)) else opts.stats
    spec = mask_spec(scl, scl_mask, mask_raster, cloud_prob_max, blue_max=blue_max, dark_max=dark_max)
    layers = product_mask_layers(stack_args.get("s2") if stack_args else scene, spec)  # fails before any work
    dev, members = _load_members(models, opts)
    if stack_args is not None:  # before stacking: only the models' bands are stacked, and they must be there
        members = _default_for_inputs(stack_args, dev) if members is None else _check_input_bands(stack_args, members)

    work_parent = outputs.polygons.parent if outputs.polygons is not None else None
    with contextlib.ExitStack() as es:
        if work_parent is not None:  # a folder made for the outputs goes again if the run fails (a review)
            es.enter_context(drop_new_parents_on_error(outputs.polygons))
            work_parent.mkdir(parents=True, exist_ok=True)
        # every output gets its temporary name now (existence checked before any work) and is
        # renamed into place only when the block below completes
        tmp = _temporary_outputs(es, outputs, overwrite)
        work = Path(es.enter_context(tempfile.TemporaryDirectory(prefix=f".lsmap-detect-{owner_tag()}-",
                                                                 dir=work_parent)))
        es.enter_context(_scratch_named(work))
        crop = None  # the AOI's window in the scene's grid
        if stack_args is not None:
            scene_path, spec = stack_source(stack_args, work, _union(members, _test_bands(spec)), spec, aoi=aoi,
                                            layers=layers)
        elif aoi is not None:
            check_masks(spec, scene_info(scene))  # a wrong scene or mask fails before the crop
            scene_path, win = crop_raster(scene, aoi, work / Path(scene).name)  # keeps its name for the map title
            crop = (int(win.col_off), int(win.row_off), int(win.width), int(win.height))
        else:
            check_masks(spec, scene_info(scene))
            scene_path = Path(scene)
        info, plan = _match_bands(scene_path, members, opts, dev)
        if (outputs.quicklook is not None or outputs.report is not None) and not is_north_up(info.transform):
            raise InputError(f"{scene_path}: its grid is rotated or sheared, and the quick-look and report draw the "
                             f"scene north-up; warp it first (gdalwarp -t_srs EPSG:<its CRS> in.tif out.tif), or leave "
                             f"out `quicklook` and `report`")
        # folded once here, so that the unfolded models are freed before the scene is read (predict_scene
        # runs folded members as they are): a ResNet-18 U-Net is 57 MB of weights a copy
        plan = replace(plan, members=folded_members(plan.members))
        members = plan.members
        opts = replace(opts, norm="own" if stats is not None else ensemble_norm(opts.norm, [m.card.train for m in members]))
        if opts.window is None:
            window, window_choice = auto_window(members, info.height, info.width, opts.overlap, dev)
            opts = replace(opts, window=window)
        else:
            window_choice = "given"
            if opts.window > min(info.height, info.width):  # window_grid clips windows to the scene
                window_choice += (f"; larger than the scene, so windows of {min(opts.window, info.height)} x "
                                  f"{min(opts.window, info.width)} px")
        threshold = opts.threshold if opts.threshold is not None else float(np.mean([m.card.threshold for m in members]))
        nobs = write_not_observed(spec, info, work / "not_observed.tif", bands=plan.scene_bands) \
            if spec.active else None
        info = replace(info, mask=nobs.path if nobs is not None else None)
        t_plan = time.perf_counter()
        ev = _plan_evidence(info, plan.scene_bands, pre, opts, work, spec.blue_max) if opts.evidence else None
        if ev is not None:
            ev.seconds["check"] = t_check + time.perf_counter() - t_plan
        named = scene_path if stack_args is None else _inputs_path(stack_args)  # not a product's scratch stack
        try:
            scan, used, t_scan = _scan(info, plan, opts, stats, progress)
        except InputError:
            if nobs is None or not nobs.pixels:
                raise
            share = nobs.pixels / (info.height * info.width)
            reasons = ", ".join(f"{k} {100 * n / (info.height * info.width):.0f} %" for k, n in nobs.counts.items())
            raise InputError(f"{named}: no pixel is left to "
                             f"map: the not-observed mask covers {100 * share:.0f} % of the area ({reasons}) and the "
                             f"rest is nodata; choose another date or area, or map through the mask (`scl_mask` none "
                             f"for a product's SCL)") from None
        shift = _shift(scan, members) if used is None else None  # the models see the scene through their statistics
        scaled = scale_warning(scan, plan.profile, named)
        for why in (scaled, terrain_nodata_warning(info.path, plan.profile, named, plan.indexes),
                    shift_warning(shift, named) if scaled is None else None):
            if why is not None:
                warnings.warn(why, LsmapWarning, stacklevel=user_level())
        # the landslides are traced while the models run, unless the evidence gate changes the probabilities after
        stream = None if ev is not None and opts.gate else _block_stream(info, threshold, opts, dev)
        if stream is not None:
            es.callback(stream.close)
        pred = _predict(info, members, work, scan, used, opts, dev, progress, stream,
                        keep_prob=tmp.prob is not None or tmp.mask is not None)
        if ev is not None:
            ev.post_raw = scan.raw
            if opts.gate:
                gate_probability(ev, pred.prob, work / "prob_gated.tif", block=opts.block, nodata=PROB_NODATA)
                pred.prob = work / "prob_gated.tif"
        t_vec = time.perf_counter()
        gdf = _vectorize(pred, threshold, opts, info, stream)
        masked = None
        if nobs is not None:
            masked = not_observed_polygons(nobs.path)
            gdf = _respect_not_observed(gdf, masked, info)
        t_vec = time.perf_counter() - t_vec
        rejected = None
        if ev is not None:
            gdf, rejected = apply_evidence(gdf, ev, block=opts.block)
        t_write = time.perf_counter()
        made_by = provenance(scene=named, models=", ".join(str(m.source or m.card.model) for m in members),
                             threshold=f"{threshold:g}")
        _write_outputs(tmp, outputs, pred, gdf, threshold, masked, rejected if opts.keep_rejected else None, made_by)
        km2 = _scene_area_km2(info)
        px_km2 = mean_pixel_area_m2(info.transform, info.crs, info.height, info.width) / 1e6
        warn_implausible(float(gdf["area_m2"].sum()) / 1e6 if len(gdf) else 0.0, pred.valid_pixels * px_km2)
        summary = {
        "scene": str(scene) if isinstance(scene, (str, os.PathLike)) else "stacked inputs",
        "aoi": aoi.to_dict() if aoi is not None else None, "aoi_window": crop,
        "models": [m.source or m.card.model for m in members], "bands": plan.profile.name,
        "input_scale": "raw" if scan.raw else "l4s", "norm": norm_mode(opts.norm) if stats is None else "stats",
        "stats": used.to_dict() if used is not None else None, "stats_sampled": scan.sampled,
        "shift_sigmas": shift, "valid_pixels": scan.valid_pixels, "threshold": threshold, "tta": opts.tta, "crf": opts.crf,
        "window": opts.window, "window_choice": window_choice, "overlap": opts.overlap, "batch_size": pred.batch_size, "windows": pred.windows,
        "passes": pred.passes, "device": str(dev), "uncertainty": pred.uncertainty_method, "polygons": len(gdf),
        "landslide_area_m2": float(gdf["area_m2"].sum()) if len(gdf) else 0.0,
        "scene_km2": km2,
        "observed_km2": pred.valid_pixels * px_km2 if nobs is not None else None,
        "not_observed_km2": nobs.km2 if nobs is not None else None,
        "not_observed": ({**spec.to_dict(), "km2": {k: v * nobs.pixel_area_m2 / 1e6 for k, v in nobs.counts.items()}}
                         if nobs is not None else None)}
        if tmp.quicklook is not None or tmp.report is not None:
            _maps(stack_args, scene_path, gdf, plan.scene_bands, members, scan.raw, tmp, summary, opts,
                  nobs.path if nobs is not None else None, rejected)
        t_write = time.perf_counter() - t_write
    seconds = time.perf_counter() - t0
    gdf.attrs["lsmap"] = {
        **summary, "seconds": seconds, "km2_per_s": km2 / seconds if seconds > 0 else None,
        "timings": {"scan": t_scan, "predict": pred.seconds, "model": pred.model_seconds, **pred.timings,
                    "vectorize": t_vec, "trace": stream.seconds if stream is not None else None, "write": t_write},
        "outputs": outputs.named(),
        "evidence": None if ev is None else {**ev.summary(), "kept": len(gdf), "rejected": len(rejected),
                                             "unjudged": _unjudged(gdf, ev), "gate": opts.gate},
    }
    if rejected is not None:
        gdf.attrs["rejected"] = rejected
    return gdf


@contextlib.contextmanager
def _scratch_named(work: Path):
    """Errors about detect's scratch files say so, instead of naming a hidden temporary path the user never gave
    (found by the failure audit: a full disk was reported on '.lsmap-detect-HOST-PID-.../prob.tif')."""
    import re

    try:
        yield
    except (InputError, OutputError) as e:
        if str(work) not in str(e) or isinstance(e, OutputExistsError):
            raise
        text = re.sub(re.escape(str(work)) + r"/?([^\s:;,)]*)",
                      lambda m: f"detect's scratch file {m.group(1)} (in {work.parent})", str(e))
        raise type(e)(text) from None


def _unjudged(kept, plan) -> int | None:
    """Kept polygons the NDVI-drop test could not judge (the pre scene did not see enough of them), or ``None``
    without that test."""
    from lsmap.map.evidence import MAX_PRE_NOT_OBSERVED

    if plan.min_ndvi_drop is None or "dndvi" not in kept.columns:
        return None
    seen = (kept["pre_not_observed"] <= MAX_PRE_NOT_OBSERVED) & kept["dndvi"].notna()
    return int((~seen).sum())


def _check_evidence(scene: Path | None, opts: DetectOptions, outputs: DetectOutputs) -> PreScene | None:
    """Check the evidence options and a pre-event scene file before any work (its overlap too when
    the post scene is a file, ``scene``); returns the checked pre scene (``None``: none, or stacking inputs)."""
    if opts.keep_rejected and (outputs.polygons is None or vector_driver(outputs.polygons)[0] != "GPKG"):
        raise InputError("`keep_rejected` writes the rejected polygons as a second layer of a GeoPackage; "
                         "give `out` a .gpkg name")
    if opts.pre is None or stack_arguments(opts.pre) is not None:
        return None
    if opts.pre_offset is not None:
        raise InputError(f"{opts.pre}: `pre_offset` is for a pre-event product or band folder, which is stacked; "
                         f"this stacked GeoTIFF is read as it is (drop `pre_offset`)")
    post = scene_info(scene) if scene is not None else None
    return open_pre(opts.pre, post, opts.pre_bands)


def _plan_evidence(info, scene_bands: Sequence[str], pre: PreScene | None, opts: DetectOptions, work: Path,
                   blue_max: float | None = None):
    """The evidence plan on the scene's grid; a pre scene given as stacking inputs is stacked first (red, NIR,
    and blue for ``blue_max``). The pre scene's clouds are not observed (:func:`lsmap.map.evidence.mask_pre`): a
    pre product's own SCL, and the scene's bright-blue test (``blue_max``) where the pre scene has B2."""
    spec = mask_spec(blue_max=blue_max) if blue_max is not None else None
    if pre is None and opts.pre is not None:
        pre, spec = stack_pre(opts.pre, work, info, offset=opts.pre_offset, blue_max=blue_max)
    plan = plan_evidence(info, scene_bands, pre=pre, pre_bands=opts.pre_bands, min_ndvi_drop=opts.min_ndvi_drop,
                         min_slope=opts.min_slope)
    return mask_pre(plan, spec, work, opts.pre_bands)


def _options(options: DetectOptions | None, settings: Mapping[str, Any]) -> DetectOptions:
    """``options`` (default :class:`DetectOptions`) with the keyword ``settings`` applied."""
    known = {f.name for f in fields(DetectOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"unknown detection option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return replace(as_settings(options, DetectOptions, "options") or DetectOptions(), **settings)


def _load_members(models: Sequence[Any] | None, opts: DetectOptions):
    """``(device, members)``: the ensemble loaded on the device; ``None`` members when the default
    model is to be chosen from the scene's bands (checked to be installed)."""

    dev = resolve_device(opts.device) if isinstance(opts.device, str) else opts.device
    if opts.bands is not None:
        get_profile(opts.bands)
    if models is None:
        default_models()  # raises before any work when none is installed
        return dev, None
    if not models:
        raise NoModelError()
    paths = [m for m in models if not isinstance(m, Member)]
    return dev, [m for m in models if isinstance(m, Member)] + (load_ensemble(paths, dev) if paths else [])


def _default_for_inputs(stack_args: Mapping, dev) -> list:
    """The default model for stacking inputs (:func:`lsmap.data.sources.default_model_for_inputs`), loaded."""
    from lsmap.data.sources import default_model_for_inputs

    return load_ensemble([default_model_for_inputs(stack_args)], dev)


def _check_input_bands(stack_args: Mapping, members: list) -> list:
    """``members``, when stacking inputs give every band they need (else a :class:`MissingBandError` naming
    the input as the user gave it, the model and the bands missing, before anything is stacked)."""
    from lsmap.core.bands import band_indices
    from lsmap.data.sources import input_bands, source_name
    from lsmap.errors import MissingBandError

    have = input_bands(stack_args)
    for m in members:
        try:
            band_indices(have, m.card.profile, source=source_name(stack_args), user=m.source or m.card.model)
        except MissingBandError as e:
            terrain = TERRAIN_BANDS & set(e.bands) and stack_args.get("dem") is None
            raise MissingBandError(e.bands, e.source, e.user, e.available,
                                   fix="give inputs with them" + (" (a DEM as `dem` for slope and DEM)" if terrain else "")
                                   + ", or a model without them") from None
    return members


def _test_bands(spec) -> tuple[str, ...]:
    """The bands the not-observed tests of ``spec`` read (B2 for ``blue_max``, B11 for ``dark_max``)."""
    from lsmap.data.masks import BLUE_BAND, DARK_BAND

    return tuple(b for b, on in ((BLUE_BAND, spec.blue_max), (DARK_BAND, spec.dark_max)) if on is not None)


def _union(members, extra: Sequence[str] = ()) -> Any:
    """The band set to stack for ``members``, and the ``extra`` bands (those the masks read: a model without B11
    still has its shadows tested): their bands in canonical order (``None``: the fullest set)."""
    if members is None:
        return None
    needed = {b for m in members for b in m.card.bands} | set(extra)
    return get_profile([b for b in BAND_NAMES if b in needed])


def _match_bands(scene_path: Path, members, opts: DetectOptions, dev):
    """``(info, plan)``: the scene, and which of its bands each member takes (the default model,
    chosen from the scene's bands, when ``members`` is ``None``)."""
    info = scene_info(scene_path)
    if members is None:
        try:
            path = default_model_for(scene_band_names(info, opts.bands), scene_path)
        except MissingInputError as e:
            raise CheckpointError(f"no default model: {e}") from None
        members = load_ensemble([path], dev)
    return info, band_plan(info, members, opts.bands)


def _temporary_outputs(es: contextlib.ExitStack, outputs: DetectOutputs, overwrite: bool) -> DetectOutputs:
    """Enter an atomic output for each requested file, locked for the run (a second run on the same
    output fails at once); returns their temporary paths."""

    return DetectOutputs(*(es.enter_context(atomic_output(p, overwrite, lock=True)) if p is not None else None
                           for p in (outputs.polygons, outputs.prob, outputs.mask, outputs.quicklook,
                                     outputs.report)))


def _scan(info, plan, opts: DetectOptions, stats: BandStats | None, progress: bool = False):
    """The statistics pass over the bands read: ``(scan, normalisation statistics used, seconds)``;
    the not-observed raster travels with ``info`` (``info.mask``) to every reader. When the scene's own
    statistics do not normalise it, a large scene is sampled less (:data:`lsmap.data.scan.SCALE_MAX_PIXELS`:
    the pass then only decides the input scale and the valid share)."""

    t_scan = time.perf_counter()
    own = norm_mode(opts.norm) == "own" and stats is None  # the scene's statistics normalise it
    scan = scan_scene(info, plan.profile, opts.input_scale, progress=progress, indexes=plan.indexes,
                      max_pixels=STATS_MAX_PIXELS if own else SCALE_MAX_PIXELS)
    t_scan = time.perf_counter() - t_scan
    if norm_mode(opts.norm) == "own":
        used = check_stats(stats, plan.profile, "`stats`") if stats is not None else scan.stats
    else:
        used = None
    return scan, used, t_scan


def _shift(scan, members) -> dict[str, float] | None:
    """Per band, the scene mean's distance from the training mean in training standard deviations
    (:func:`lsmap.data.scan.band_shift`), the largest over the members; ``None`` without a valid pixel."""
    if not scan.valid_pixels:
        return None
    shift: dict[str, float] = {}
    for m in members:
        trained = m.card.band_stats
        if trained is None:
            continue
        scene = scan.stats.take(m.inputs) if m.inputs is not None else scan.stats
        for band, z in zip(m.card.profile.bands, band_shift(scene, trained).tolist(), strict=True):
            if math.isfinite(z) and abs(z) >= abs(shift.get(band, 0.0)):
                shift[band] = round(z, 2)
    return shift or None


def _block_stream(info, threshold: float, opts: DetectOptions, device) -> BlockStream:
    """What traces the landslides from the blender's output as it is written (blocks aligned with its
    column panels, so that none waits for the next panel, and cut where its last row of windows starts,
    so that the blocks left after the models are the fewest). Beside CPU model workers, which keep the
    cores busy, one tracing thread (two held 50-100 MB more at the peak for no gain, measured on a
    fragmented mask: BENCHMARKS.md), and every core for the blocks left after them; beside a GPU, the
    default."""
    return BlockStream(info.height, info.width, threshold, block=opts.block, with_uncertainty=opts.uncertainty,
                       col_edges=final_columns(info.height, info.width, opts.window, opts.overlap),
                       row_edges=[last_window_row(info.height, opts.window, opts.overlap)],
                       workers=1 if device.type == "cpu" else None)


# geopandas (with pandas: 0.4-0.45 s here) is first needed for the table of landslides after the models have run;
# on a scene whose prediction takes seconds it is imported on a thread while they run instead (the vectorising
# after the models of a 4096^2 scene, 151 231 polygons: 0.96-1.31 s -> 0.65-0.74 s; the whole call 16.9-17.5 s
# -> 16.2-17.2 s, 3 runs each, BENCHMARKS.md)
PREFETCH_MIN_PIXELS = 2048 * 2048


def _import_quietly(name: str) -> None:
    """Import ``name`` ahead of need; a failure is left for the import that needs it to report."""
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001  (reported where the module is needed)
        pass


def _predict(info, members, work: Path, scan, used: BandStats | None, opts: DetectOptions, dev, progress: bool,
             stream: BlockStream | None = None, keep_prob: bool = False):
    """Streamed ensemble inference, handing the output to ``stream`` as it is written. Scratch rasters in
    ``work`` only where something reads them afterwards: the probability for ``keep_prob`` (the
    probability and mask outputs) or without a stream (the evidence gate, then vectorising); the
    uncertainty without a stream. Not writing them saves their compression on the blending thread (about
    0.3 s per 4096^2 scene and 3 s per full tile, measured: BENCHMARKS.md) and their disk space."""

    fill = used.mean if used is not None else None
    valid = scan.valid_pixels
    if scan.sampled and scan.seen_pixels:  # the sample's valid fraction over the whole scene
        valid = int(valid * info.width * info.height / scan.seen_pixels)
    prob_out = work / "prob.tif" if keep_prob or stream is None else None
    unc_out = work / "unc.tif" if opts.uncertainty and stream is None else None
    _check_scratch(work, valid, info, sum(p is not None for p in (prob_out, unc_out)))
    if info.height * info.width >= PREFETCH_MIN_PIXELS:
        threading.Thread(target=_import_quietly, args=("geopandas",), name="lsmap-import", daemon=True).start()
    return predict_scene(info, members, prob_out, stats=used, raw=scan.raw, fill=fill, tta=opts.tta,
                         overlap=opts.overlap, window=opts.window, batch_size=opts.batch_size, device=dev,
                         uncertainty_out=unc_out, uncertainty=opts.uncertainty, crf=opts.crf,
                         compress=True, bands=opts.bands, progress=progress,
                         sink=stream.add if stream is not None else None)


def _vectorize(pred, threshold: float, opts: DetectOptions, info, stream: BlockStream | None = None):
    """The probability raster -> landslide polygons (traced already by ``stream``, when there is one)."""

    if stream is not None:
        return landslide_table(stream.landslides(info.transform), info.crs, min_area=opts.min_area,
                               simplify=opts.simplify, fill_holes=opts.fill_holes, with_uncertainty=opts.uncertainty)
    return vectorize(pred.prob, threshold=threshold, uncertainty=pred.uncertainty, block=opts.block,
                     min_area=opts.min_area, simplify=opts.simplify, fill_holes=opts.fill_holes)


def _write_outputs(tmp: DetectOutputs, outputs: DetectOutputs, pred, gdf, threshold: float, masked=None,
                   rejected=None, provenance: dict[str, str] | None = None) -> None:
    """Write the rasters and the polygons to their temporary names (renamed when the job completes);
    ``masked`` (not-observed polygons) and ``rejected`` polygons go to further GeoPackage layers. ``provenance``
    (what produced them) goes into the rasters' tags and the GeoPackage layer's metadata."""

    if tmp.prob is not None:
        write_probability_cog(pred.prob, tmp.prob, tags=provenance)
    if tmp.mask is not None:
        write_mask_cog(pred.prob, tmp.mask, threshold, tags=provenance)
    if tmp.polygons is not None:
        write_layer(gdf, tmp.polygons, outputs.polygons, metadata=provenance)
        if masked is not None and outputs.polygons.suffix.lower() == ".gpkg":
            masked.to_file(tmp.polygons, layer=NOT_OBSERVED_LAYER, driver="GPKG", engine="pyogrio", mode="a",
                           geometry_type="MultiPolygon", promote_to_multi=True)
        elif masked is not None and len(masked):
            warnings.warn(f"{outputs.polygons}: the not-observed area (clouds, nodata) is written only to a GeoPackage "
                          f"(layer '{NOT_OBSERVED_LAYER}'); the polygons' near_not_observed says which touch it. Use a "
                          f".gpkg name to keep it", LsmapWarning, stacklevel=user_level())
        if rejected is not None:
            rejected.to_file(tmp.polygons, driver="GPKG", engine="pyogrio", geometry_type="Polygon", layer="rejected")


def _maps(stack_args: dict | None, scene_path: Path, gdf, scene_bands: Sequence[str], members, raw: bool,
          tmp: DetectOutputs, summary: dict, opts: DetectOptions, not_observed: Path | None = None, rejected=None) -> None:
    """The quick-look PNG and the HTML report of a run, from one read of the scene's natural colour (with the
    polygons the evidence rejected, when any, drawn apart)."""

    source = scene_path if stack_args is None else _inputs_path(stack_args)
    image = natural_colour(scene_path, scene_bands, input_scale="raw" if raw else "l4s", not_observed=not_observed)
    date = scene_date(source, image.tags)
    if date is None and source.is_dir():  # a folder of band files: their names may hold the date
        date = next((d for f in sorted(source.iterdir())[:20] if (d := scene_date(f.name))), None)
    name = source.name or str(source)
    if tmp.quicklook is not None:
        render_quicklook(scene_path, gdf, tmp.quicklook, scene_bands, overwrite=True, models=members, scene_name=name,
                         date=date, image=image, rejected=rejected)
    if tmp.report is not None:
        options = {"min_area_m2": opts.min_area, "simplify_m": opts.simplify, "fill_holes_m2": opts.fill_holes}
        write_report(tmp.report, gdf, image, scene_name=name, date=date, models=members, summary=summary,
                     options=options, overwrite=True, rejected=rejected)


def _inputs_path(stack_args: Mapping) -> Path:
    """The Sentinel-2 input of stacked inputs (its product name usually holds the date)."""
    s2 = stack_args.get("s2") or "stacked inputs"
    s2 = s2[0] if isinstance(s2, (list, tuple)) and s2 else s2
    return Path(str(s2))
