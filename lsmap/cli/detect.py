"""lsmap detect: landslide polygons of one scene or many."""

from __future__ import annotations

import os

import click

from lsmap.cli.options import (
    aoi_opts,
    bands_option,
    blue_max_opt,
    cli_message,
    cloud_prob_opt,
    dark_max_opt,
    device_opt,
    echo_json,
    handle_errors,
    json_opt,
    mask_opts,
    overwrite_opt,
    progress_default,
    scene_source,
    stacking_opts,
)
from lsmap.core.constants import MIN_NDVI_DROP, MIN_SLOPE
from lsmap.core.norms import norm_choices
from lsmap.map.options import INPUT_SCALES, DetectOptions

_D = DetectOptions()  # the library's defaults


_PER_SCENE = "run 'lsmap detect' per scene"
#: What to do instead of an option that takes one scene, when several are given.
_MANY_FIX = {
    "--offset": "stack each scene first ('lsmap stack FOLDER --offset -1000 -o SCENE.tif') and pass the stacks",
    "--dem": "stack each scene first ('lsmap stack SCENE --dem DEM -o SCENE.tif') and pass the stacks",
    "--slope": "stack each scene first ('lsmap stack SCENE --dem DEM --slope SLOPE -o SCENE.tif') and pass the stacks",
    "--prob": f"{_PER_SCENE}, or call lsmap.detect_many(..., prob=True) from Python",
    "--mask": f"{_PER_SCENE}, or call lsmap.detect_many(..., mask=True) from Python",
}

@click.command("detect")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("-o", "--output", "--out", "out", required=True, type=click.Path(),
              help="Polygon output: .gpkg (default format; scene CRS), .geojson/.json (EPSG:4326, RFC 7946) or "
                   ".shp (scene CRS); with several scenes (or a glob or @list.txt) the output FOLDER.")
@click.option("--model", "models", multiple=True, type=click.Path(),
              help="Checkpoint (.safetensors/.json/stem); repeat for an ensemble (probabilities averaged; the "
                   "models may take different bands) [default: the first shipped model whose bands the scene "
                   "has, see 'lsmap info'].")
@bands_option(None, "The scene's bands in file order, for a file without band descriptions "
                    "[default: its descriptions, as 'lsmap stack' writes them].")
@stacking_opts
@aoi_opts
@mask_opts
@cloud_prob_opt
@blue_max_opt
@dark_max_opt
@click.option("--tta", is_flag=True, help="Also average over horizontal/vertical flips.")
@click.option("--window", type=click.IntRange(16), default=_D.window,
              help="Window size (pixels) [default for fully convolutional models (U-Nets, DeepLabV3+): the size "
                   "in 384-640 whose windows cover the scene with the least work (scale-promoted models: enlarged "
                   "inputs of at most 640 on a CPU, windows of at most 512 on a GPU); 128 otherwise (SegFormer)].")
@click.option("--overlap", type=click.IntRange(0), default=_D.overlap, show_default=True,
              help="Overlap of neighbouring windows (pixels), blended with Hann ramps.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Windows per batch (default: sized for the device).")
@click.option("--norm", type=click.Choice(norm_choices(auto=True)), default=_D.norm, show_default=True,
              help="own: the scene's own band statistics (the 1st place's recipe); model: the models' training "
                   "statistics; auto: as the models were trained (their cards say).")
@click.option("--stats", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Band statistics JSON (L4S scale) to normalise with instead of the scene's own.")
@click.option("--input-scale", type=click.Choice(INPUT_SCALES), default=_D.input_scale, show_default=True,
              help="Scene values: raw (DN, degrees, metres; divided by the profile's divisors), L4S-scaled, or auto.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Landslide probability threshold: a pixel is a landslide where p > it (default: the models' card "
                   "thresholds, averaged).")
@click.option("--prob", type=click.Path(dir_okay=False), default=None,
              help="Also write probabilities as a uint8 COG: round(254 p), 255 = nodata.")
@click.option("--mask", type=click.Path(dir_okay=False), default=None,
              help="Also write the pixel mask as a uint8 COG: 1 landslide, 0 background, 255 nodata.")
@click.option("--quicklook", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG map: the scene in natural colour with the landslide outlines, coordinates, "
                   "scale bar, north arrow and legend.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write an HTML report (one file, works offline): interactive map, sortable polygon table, "
                   "summary and model card.")
@click.option("--uncertainty", is_flag=True,
              help="Add mean_unc: variance across models/flips (p(1-p) for a single pass).")
@click.option("--min-area", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Drop polygons below this area (m2).")
@click.option("--simplify", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Simplification tolerance (m).")
@click.option("--fill-holes", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Fill holes below this area (m2).")
@click.option("--crf", is_flag=True,
              help="Sharpen each window's probabilities with a dense CRF before blending (needs lsmap[crf]).")
@click.option("--pre", metavar="PRE", default=None,
              help="Pre-event scene of the same area (a stacked GeoTIFF, or a Sentinel-2 product, STAC Item or band "
                   "folder, stacked first; only red B4 and "
                   "NIR B8 are used): adds ndvi_pre, ndvi_post, dndvi, pre_not_observed and mean_slope to each "
                   f"polygon and drops polygons whose NDVI did not drop (--min-ndvi-drop, default {MIN_NDVI_DROP}) "
                   f"or that lie on flat ground (--min-slope, default {MIN_SLOPE:g} with a slope or DEM band).")
@click.option("--pre-bands", metavar="SET", default=None,
              help="The pre-event scene's bands in file order, for a file without band descriptions.")
@click.option("--pre-offset", type=float, default=None,
              help="DN offset of a pre-event folder of band files, e.g. -1000 for processing baseline >= 04.00 "
                   "(as --offset is for the scene's own).")
@click.option("--min-ndvi-drop", type=click.FloatRange(-2, 2), default=None,
              help=f"Drop polygons whose mean NDVI drop from --pre is below this [default: {MIN_NDVI_DROP}].")
@click.option("--min-slope", type=click.FloatRange(0, 90), default=None,
              help=f"Drop polygons whose mean slope is below this many degrees [default with --pre: {MIN_SLOPE:g}; "
                   "0: off]; works without --pre too.")
@click.option("--keep-rejected", is_flag=True,
              help="Write the dropped polygons, with a reason, to a second GeoPackage layer 'rejected'.")
@click.option("--gate", is_flag=True,
              help="Also set the probability to 0 at pixels whose own NDVI drop / slope fails, before the "
                   "polygons are made (the rasters and polygons agree).")
@click.option("--scheduler", default="local", show_default=True,
              help="Several scenes: 'local' (one after another here) or a Dask scheduler address "
                   "(tcp://host:8786; needs lsmap[cluster] and a filesystem the workers share).")
@click.option("--merged", default="event.gpkg", show_default=True,
              help="Several scenes: file name (in the output folder) of the merged event layer; 'none' writes "
                   "no merged layer.")
@device_opt
@overwrite_opt
@json_opt
@handle_errors
def detect(scenes, out, models, bands, dem, slope, bbox, bbox_crs, aoi_file, offset, scl, scl_mask, mask_raster,
           cloud_prob_max, blue_max, dark_max, tta, window, overlap, batch_size, norm, stats, input_scale, threshold, prob, mask, quicklook,
           report, uncertainty, min_area, simplify, fill_holes, crf, pre, pre_bands, pre_offset, min_ndvi_drop, min_slope, keep_rejected, gate, scheduler,
           merged, device, overwrite, as_json):
    """Map the landslides of a scene: polygons with area and probability.

    SCENE is a stacked GeoTIFF (raw or L4S-scaled values; see --input-scale), or what 'lsmap stack'
    takes, stacked first: a Sentinel-2 product (.SAFE folder, .SAFE.zip, STAC Item file or URL), or a
    folder of band files (with --dem for terrain bands). --bbox/--aoi crop every input before any
    other work (with several scenes, each one; scenes outside the area are listed, not failed). Nodata pixels never become landslides, nor do not-observed ones (clouds, shadows, snow:
    the product's SCL, --scl, --mask-raster), which a GeoPackage gets as its layer 'not_observed'.

    \b
    $ lsmap detect sample_data/scene_l4s14.tif -o out/slides.gpkg --quicklook out/slides.png --overwrite
    $ lsmap detect scene.tif -o slides.gpkg --model unet.safetensors
    $ lsmap detect scene.tif -o slides.gpkg --model a.safetensors --model b.safetensors --tta \\
          --prob prob.tif --uncertainty --min-area 200 --simplify 5
    $ lsmap detect scene.tif -o slides.gpkg --model unet.safetensors --crf
    $ lsmap detect S2_folder/ --dem dem.tif -o slides.geojson --model unet.safetensors
    $ lsmap detect S2B_MSIL2A_....SAFE.zip --dem dem_tiles/ --bbox 85.30,27.70,85.50,27.90 -o slides.gpkg \\
          --model unet.safetensors
    $ lsmap detect scene.tif --aoi valley.gpkg -o slides.gpkg --prob prob.tif
    $ lsmap detect scene.tif --scl scl_20m.tif --mask-raster clouds.tif -o slides.gpkg
    $ lsmap detect S2B_MSIL2A_....SAFE.zip --cloud-prob-max 50 -o slides.gpkg
    $ lsmap detect post.tif --pre pre.tif -o slides.gpkg --keep-rejected
    $ lsmap detect post.tif --pre pre_S2_folder/ --min-ndvi-drop 0.2 --min-slope 0 --gate --prob prob.tif -o slides.gpkg

    Without --model the first shipped default model whose bands the scene has is used (l4s14-default,
    then l2a-terrain-default, then l2a-default); --model takes a checkpoint or a shipped model's name
    (--model default is l4s14-default; see 'lsmap info').

    Several scenes (paths, a quoted glob, or @list.txt with one path per line; a .txt or .lst path is
    such a list with or without the @): -o is a folder that
    gets one layer per scene plus the merged event layer; complete scenes are skipped on a re-run
    (--overwrite redoes them); the exit status is non-zero when a scene failed. Products bring their
    own SCL; --scl-mask, --cloud-prob-max and one --mask-raster apply to every scene (one --scl file
    is refused); the merged GeoPackage gets the scenes' 'not_observed' layers dissolved.

    \b
    $ lsmap detect scenes/*.tif -o event/ --model unet.safetensors
    $ lsmap detect @scenes.txt -o event/ --model unet.safetensors --scheduler tcp://head:8786
    $ lsmap detect 'products/*.SAFE.zip' -o event/ --mask-raster external_clouds.tif
    """
    from lsmap.map.detect import detect as run_detect
    from lsmap.map.regional.scenelist import LIST_SUFFIXES, names_many
    from lsmap.map.vectorize import VECTOR_DRIVERS

    settings = dict(bands=bands, tta=tta, overlap=overlap, window=window, batch_size=batch_size, norm=norm,
                    stats=stats, input_scale=input_scale, threshold=threshold, uncertainty=uncertainty,
                    min_area=min_area, simplify=simplify, fill_holes=fill_holes, crf=crf, device=device,
                    min_ndvi_drop=min_ndvi_drop, min_slope=min_slope, keep_rejected=keep_rejected, gate=gate)
    if names_many(scenes, out):
        lists = [s for s in scenes if not s.startswith("@") and os.path.splitext(s)[1].lower() in LIST_SUFFIXES]
        if len(scenes) == 1 and lists and os.path.splitext(str(out))[1].lower() in VECTOR_DRIVERS:  # a typo read as a list (audit)
            raise click.BadParameter(f"{lists[0]} is read as a list of scenes (one path per line), which writes a "
                                     f"folder of layers, but -o {out} names one file; give -o a folder, or a raster "
                                     f"as SCENE", param_hint="SCENES")
        for flag, value in (("--dem", dem or None), ("--slope", slope), ("--prob", prob), ("--mask", mask),
                            ("--quicklook", quicklook), ("--report", report),
                            ("--offset", offset), ("--pre", pre), ("--pre-bands", pre_bands), ("--pre-offset", pre_offset)):
            if value is not None:
                raise click.BadParameter(f"{flag} works with one scene; with several, {_MANY_FIX.get(flag, _PER_SCENE)}",
                                         param_hint=flag)
        masks = {k: v for k, v in (("scl", scl), ("scl_mask", scl_mask), ("mask_raster", mask_raster),
                                   ("cloud_prob_max", cloud_prob_max), ("blue_max", blue_max),
                                   ("dark_max", dark_max)) if v is not None}
        from lsmap.io.aoi import aoi_from_options

        area = aoi_from_options(bbox, bbox_crs, aoi_file)
        merged = None if merged.lower() == "none" else merged  # the library's merged=None (its messages offer it)
        _detect_many(scenes, out, models, scheduler, merged, overwrite, as_json, **settings, **masks,
                     **({"aoi": area} if area is not None else {}))
        return
    scene = scenes[0]

    from lsmap.io.aoi import aoi_from_options

    source = scene_source(scene, dem, slope, offset)
    aoi = aoi_from_options(bbox, bbox_crs, aoi_file)
    settings.update(pre_offset=pre_offset, pre_bands=pre_bands)  # without --pre, refused by name (--pre-bands was
    # dropped silently: the CLI audit)
    if pre is not None:  # a product or a folder of band files is stacked (red and NIR only); a file is a stack
        settings.update(pre=pre)
    ctx = click.get_current_context()
    for name, flag in (("merged", "--merged"), ("scheduler", "--scheduler")):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.BadParameter(f"{flag} applies to several scenes (a folder -o); one scene writes its polygons "
                                     f"to -o itself: drop {flag}", param_hint=flag)
    gdf = run_detect(source, list(models) or None, out=out, prob=prob, mask=mask, quicklook=quicklook, report=report,
                     overwrite=overwrite, progress=progress_default(as_json), aoi=aoi, scl=scl, scl_mask=scl_mask,
                     mask_raster=mask_raster, cloud_prob_max=cloud_prob_max, blue_max=blue_max, dark_max=dark_max,
                     **settings)
    summary = gdf.attrs["lsmap"]
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['polygons']} landslide polygons, {summary['landslide_area_m2'] / 1e6:.4f} km2 "
               f"(threshold {summary['threshold']:.2f}) -> {out}")
    click.echo(f"{summary['scene_km2']:.2f} km2 in {summary['seconds']:.1f} s ({summary['km2_per_s']:.2f} km2/s), "
               f"{summary['windows']} window{'s' if summary['windows'] != 1 else ''} of {summary['window']} px "
               f"({summary['window_choice']}) on {summary['device']}, "
               f"input {summary['input_scale']}, "
               f"norm {summary['norm']}")
    ev = summary.get("evidence")
    if ev is not None:
        tests = [f"NDVI drop >= {ev['min_ndvi_drop']:g}" if ev["min_ndvi_drop"] is not None else None,
                 f"slope >= {ev['min_slope']:g} deg" if ev["min_slope"] is not None else None]
        unjudged = (f" ({ev['unjudged']} of them not judged on NDVI: the pre scene did not see them)"
                    if ev.get("unjudged") else "")
        click.echo(f"evidence ({', '.join(t for t in tests if t) or 'columns only'}): {ev['kept']} kept{unjudged}, "
                   f"{ev['rejected']} rejected" + (" (layer 'rejected')" if keep_rejected else ""))
    click.echo("wrote: " + ", ".join(_written(summary["outputs"])))
    if summary.get("not_observed") is None and summary["polygons"]:
        click.echo("note: no cloud mask was used (the scene brought no SCL and no mask was given): bright clouds "
                   "can be mapped as landslides; add --blue-max 0.2, --scl SCL.tif or --mask-raster CLOUDS.tif",
                   err=True)


def _written(outputs: dict) -> list[str]:
    """Every file detect wrote: its outputs, with a shapefile's sidecars."""
    from pathlib import Path

    from lsmap.map.vectorize import vector_driver

    files = []
    for kind, path in outputs.items():
        files.append(str(path))
        if kind == "polygons":
            sidecars = (Path(path).with_suffix(s) for s in vector_driver(path)[1])
            files += [str(p) for p in sidecars if p.exists()]
    return files



def _detect_many(scenes, out, models, scheduler, merged, overwrite, as_json, **kwargs) -> None:
    """Several scenes: run :func:`lsmap.map.regional.run.detect_many` and render its result."""
    from lsmap.map.regional.run import detect_many

    res = detect_many(list(scenes), list(models) or None, out, scheduler=scheduler, merged=merged,
                      overwrite=overwrite, progress=progress_default(as_json), **kwargs)
    if as_json:
        echo_json(res.to_dict())
    else:
        done = len(res.outputs) - len(res.skipped)
        outside = f", {len(res.outside)} outside the area of interest" if res.outside else ""
        click.echo(f"{len(res.scenes)} scenes: {done} done, {len(res.skipped)} already complete (skipped), "
                   f"{len(res.failures)} failed{outside}")
        if res.merged is not None:
            area = float(res.gdf["area_m2"].sum()) if len(res.gdf) else 0.0
            crs = "EPSG:4326, lon/lat" if res.merged.suffix.lower() in (".geojson", ".json") else res.crs
            click.echo(f"{len(res.gdf)} landslide polygons, {area / 1e6:.4f} km2 ({crs}) -> {res.merged}")
        km2 = res.km2()
        if km2["not_observed_km2"] is not None and res.merged is not None:
            click.echo(f"not observed (clouds, shadows, snow, no data, masks): {km2['not_observed_union_km2']:.4f} km2"
                       f" in the merged layer 'not_observed'; observed {km2['observed_km2']:.4f} km2 summed over "
                       f"the scenes")
        written = [str(p) for s, p in res.outputs.items() if s not in res.skipped]
        written += [str(res.merged)] if res.merged is not None else []
        if written:
            click.echo("wrote: " + ", ".join(written))
    unlike = res.unlike_training()
    if unlike:  # the scenes' own warnings stay on Dask workers, and skipped scenes do not run again
        click.echo(f"warning: {len(unlike)} scene(s) unlike the models' training data (standard deviations from the "
                   f"training means), whose maps need checking against the imagery (docs/detect.md, 'Scenes unlike "
                   f"the training data'): " + "; ".join(f"{os.path.basename(k)}: {v}" for k, v in unlike.items()),
                   err=True)
    command = click.get_current_context().command
    for _scene, message in res.failures.items():  # in this command's flags, as its own errors are
        click.echo(f"failed: {cli_message(message, command)}", err=True)
    if res.failures:
        raise click.ClickException(f"{len(res.failures)} of {len(res.scenes)} scenes failed: "
                                   + ", ".join(os.path.basename(s) for s in res.failures))
