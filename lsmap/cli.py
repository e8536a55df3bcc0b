"""Command-line interface: thin Click commands over the library.

Each command parses its options, calls one library function and renders the result. Library
errors (:class:`lsmap.errors.LsmapError`) become a one-line ``Error: ...`` message and exit code 1.
Shared options are defined once below so that a flag means the same in every command.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .bands import PROFILES
from .device import DEVICES
from .errors import LsmapError

# --- shared options ---------------------------------------------------------------------------

overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
bands_opt = click.option(
    "--bands", "bands", type=click.Choice(list(PROFILES)), default="l4s14", show_default=True,
    help="Band profile of the input.",
)
device_opt = click.option(
    "--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True,
    help="Where to run: auto picks CUDA when a GPU is visible, else the CPU.",
)
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random generator.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def handle_errors(fn):
    """Turn library errors into a one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LsmapError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def echo_json(obj) -> None:
    """Print ``obj`` as indented JSON."""
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lsmap")
def main() -> None:
    """Map landslides from Sentinel-2 scenes (Landslide4Sense 2022 winners' methods)."""


# --- stack (issue 2) ----------------------------------------------------------------------------


@main.command("stack")
@click.argument("s2", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dem", type=click.Path(path_type=Path), help="DEM in metres (any CRS/resolution).")
@click.option(
    "--slope", type=click.Path(path_type=Path), help="Slope raster in degrees; computed from --dem when absent.",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output GeoTIFF.")
@bands_opt
@click.option("--block", type=int, default=1024, show_default=True, help="Block size in pixels (memory bound).")
@overwrite_opt
@json_opt
@click.option("--progress/--no-progress", default=False, help="Show a progress bar.")
@handle_errors
def stack_cmd(s2, dem, slope, output, bands, block, overwrite, as_json, progress):
    """Stack Sentinel-2 band files, a DEM and slope on the 10 m grid, scaled like L4S.

    S2 is a folder of band files (searched recursively, .jp2 or .tif, bands recognised by
    name: ..._B04_10m.jp2, B4.tif, B8A.tif) or the band files themselves.

    \b
    $ lsmap stack S2_SAFE/GRANULE/L2A_T45QYF/IMG_DATA --dem dem.tif -o scene.tif
    $ lsmap stack B02.tif B03.tif B04.tif B08.tif --bands rgbn -o rgbn.tif
    $ lsmap stack bands/ --dem dem.tif --slope slope.tif -o scene.tif --overwrite --json
    """
    from .stack import stack_scene

    result = stack_scene(
        list(s2), output, dem=dem, slope=slope, bands=bands, overwrite=overwrite, block=block, progress=progress,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.path}: {len(result.bands)} bands ({result.profile}), {result.width} x {result.height} px "
            f"at {result.resolution[0]:g} m, {result.crs}, {100 * result.valid_fraction:.1f} % valid"
        )



# --- tile (issue 2) -----------------------------------------------------------------------------


def _progress(as_json: bool) -> bool:
    """Progress bars only on an interactive terminal, never with --json."""
    return not as_json and sys.stderr.isatty()


@main.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Patch folder to write."
)
@click.option("--size", type=int, default=128, show_default=True, help="Patch size in pixels.")
@click.option("--overlap", type=int, default=0, show_default=True, help="Pixels shared by neighbouring patches.")
@click.option(
    "--labels", type=click.Path(dir_okay=False), default=None, help="Label raster on the scene grid -> masks."
)
@click.option(
    "--label-map", default=None,
    help="Label value:mask value pairs, e.g. '0:255,1:0,2:1' (default: labels are 0/1 masks, 255 ignored).",
)
@click.option(
    "--min-valid", type=float, default=0.5, show_default=True,
    help="Skip patches with a smaller fraction of valid (non-nodata) pixels.",
)
@click.option("--raw", is_flag=True, help="Scene holds raw values: divide by the band profile's L4S divisors.")
@bands_opt
@overwrite_opt
@json_opt
@handle_errors
def tile(scene, out_dir, size, overlap, labels, label_map, min_valid, raw, bands, overwrite, as_json):
    """Cut a scene into Landslide4Sense-style patches plus an index GeoPackage.

    Writes OUT/img/image_N.h5 (and OUT/mask/mask_N.h5 with --labels), OUT/index.gpkg (each
    patch's pixel window and footprint in the scene CRS) and OUT/tiles.json. Nodata pixels are
    written as 0.0 and masked 255.

    \b
    $ lsmap tile stack.tif -o patches/
    $ lsmap tile chittagong.tif -o patches/ --bands rgbn --raw \\
        --labels labels.tif --label-map 0:255,1:0,2:1
    $ lsmap tile stack.tif -o patches/ --size 128 --overlap 32 --min-valid 0.2 --overwrite
    """
    from .tile import tile_scene

    result = tile_scene(
        scene, out_dir, bands=bands, size=size, overlap=overlap, labels=labels, label_map=label_map,
        min_valid=min_valid, raw=raw, overwrite=overwrite, progress=_progress(as_json),
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.out_dir}: {result.n_patches} patches of {result.size} px "
            f"({result.n_skipped} of {result.n_windows} windows skipped, {result.n_padded} padded"
            f"{', with masks' if result.labelled else ''})"
        )


# --- stats (issue 2) ----------------------------------------------------------------------------


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="train", show_default=True,
              help="Split to read from a dataset root.")
@click.option("--valid-only", is_flag=True, help="Leave out nodata pixels (scene nodata; all-0.0 pixels in patches).")
@click.option("--raw", is_flag=True, help="Scene holds raw values: divide by the band profile's L4S divisors.")
@bands_opt
@overwrite_opt
@json_opt
@handle_errors
def stats(input_path, output, split, valid_only, raw, bands, overwrite, as_json):
    """Per-band mean and standard deviation of a patch folder or a scene, as JSON.

    \b
    $ lsmap stats data/TrainData -o train_stats.json
    $ lsmap stats patches/ -o scene_stats.json --bands rgbn --valid-only
    $ lsmap stats chittagong.tif -o stats.json --bands rgbn --raw --valid-only
    """
    from .io import check_output
    from .stats import compute_stats

    check_output(output, overwrite)
    result = compute_stats(input_path, bands, split=split, valid_only=valid_only, raw=raw, progress=_progress(as_json))
    result.save(output)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"{output}: mean/std of {len(result.mean)} bands over {result.count} pixels")


# --- train (issue 3) ----------------------------------------------------------------------------


# --- evaluate (issue 3) -------------------------------------------------------------------------


# --- refine (issue 4) ---------------------------------------------------------------------------


# --- detect (issue 5) ---------------------------------------------------------------------------


@main.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Polygon output: .gpkg (default format), .geojson/.json or .shp; with several scenes "
                   "(or a glob or @list.txt) the output FOLDER.")
@click.option("--model", "models", multiple=True, type=click.Path(),
              help="Checkpoint (.safetensors/.json/stem); repeat for an ensemble (probabilities averaged).")
@click.option("--bands", type=click.Choice(list(PROFILES)), default=None,
              help="Band profile of the scene (default: the models' profile).")
@click.option("--dem", type=click.Path(exists=True, dir_okay=False), default=None,
              help="DEM: SCENE is then the Sentinel-2 folder of 'lsmap stack', stacked first.")
@click.option("--slope", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Slope raster for stacking (default: computed from --dem).")
@click.option("--tta", is_flag=True, help="Also average over horizontal/vertical flips.")
@click.option("--window", type=click.IntRange(16), default=128, show_default=True, help="Window size (pixels).")
@click.option("--overlap", type=click.IntRange(0), default=32, show_default=True,
              help="Overlap of neighbouring windows (pixels), blended with Hann ramps.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Windows per batch (default: sized for the device).")
@click.option("--norm", type=click.Choice(["scene", "model"]), default="scene", show_default=True,
              help="Normalise with the scene's own band statistics or the models' training statistics.")
@click.option("--stats", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Band statistics JSON (L4S scale) to normalise with instead of the scene's own.")
@click.option("--input-scale", type=click.Choice(["auto", "raw", "l4s"]), default="auto", show_default=True,
              help="Scene values: raw (DN, degrees, metres; divided by the profile's divisors), L4S-scaled, or auto.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Landslide probability threshold (default: the models' card thresholds, averaged).")
@click.option("--prob", type=click.Path(dir_okay=False), default=None,
              help="Also write probabilities as a uint8 COG: round(254 p), 255 = nodata.")
@click.option("--mask", type=click.Path(dir_okay=False), default=None,
              help="Also write the pixel mask as a uint8 COG: 1 landslide, 0 background, 255 nodata.")
@click.option("--quicklook", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: the scene in natural colour with the landslide outlines.")
@click.option("--uncertainty", is_flag=True,
              help="Add mean_unc: variance across models/flips (p(1-p) for a single pass).")
@click.option("--min-area", type=click.FloatRange(0), default=0.0, show_default=True, help="Drop polygons below this area (m2).")
@click.option("--simplify", type=click.FloatRange(0), default=0.0, show_default=True, help="Simplification tolerance (m).")
@click.option("--fill-holes", type=click.FloatRange(0), default=0.0, show_default=True, help="Fill holes below this area (m2).")
@click.option("--scheduler", default="local", show_default=True,
              help="Several scenes: 'local' (one after another here) or a Dask scheduler address "
                   "(tcp://host:8786; needs lsmap[cluster] and a filesystem the workers share).")
@click.option("--merged", default="event.gpkg", show_default=True,
              help="Several scenes: file name (in the output folder) of the merged event layer.")
@device_opt
@overwrite_opt
@json_opt
@handle_errors
def detect(scenes, out, models, bands, dem, slope, tta, window, overlap, batch_size, norm, stats, input_scale,
           threshold, prob, mask, quicklook, uncertainty, min_area, simplify, fill_holes, scheduler, merged,
           device, overwrite, as_json):
    """Map the landslides of a scene: polygons with area and probability.

    SCENE is a stacked GeoTIFF (raw or L4S-scaled values; see --input-scale), or with --dem the
    Sentinel-2 folder that 'lsmap stack' takes. Nodata pixels never become landslides.

    \b
    $ lsmap detect scene.tif -o slides.gpkg --model unet.safetensors
    $ lsmap detect scene.tif -o slides.gpkg --model a.safetensors --model b.safetensors --tta \\
          --prob prob.tif --uncertainty --min-area 200 --simplify 5
    $ lsmap detect S2_folder/ --dem dem.tif -o slides.geojson --model unet.safetensors

    Several scenes (paths, a quoted glob, or @list.txt with one path per line): -o is a folder that
    gets one layer per scene plus the merged event layer; complete scenes are skipped on a re-run
    (--overwrite redoes them); the exit status is non-zero when a scene failed.

    \b
    $ lsmap detect scenes/*.tif -o event/ --model unet.safetensors
    $ lsmap detect @scenes.txt -o event/ --model unet.safetensors --scheduler tcp://head:8786
    """
    from .detection import detect as run_detect
    from .regional import is_scene_list

    if len(scenes) > 1 or is_scene_list(scenes[0]) or out.endswith(("/", "\\")) or os.path.isdir(out):
        for flag, value in (("--dem", dem), ("--slope", slope), ("--prob", prob), ("--mask", mask),
                            ("--quicklook", quicklook)):
            if value is not None:
                raise click.BadParameter(f"{flag} works with one scene; with several, run 'lsmap detect' per "
                                         f"scene or call lsmap.detect_many(..., prob=True, mask=True)",
                                         param_hint=flag)
        _detect_many(scenes, out, models, scheduler, merged, overwrite, as_json, bands=bands, tta=tta,
                     overlap=overlap, window=window, batch_size=batch_size, norm=norm, stats=stats,
                     input_scale=input_scale, threshold=threshold, uncertainty=uncertainty, min_area=min_area,
                     simplify=simplify, fill_holes=fill_holes, device=device)
        return
    scene = scenes[0]

    if slope is not None and dem is None:
        raise click.BadParameter("--slope needs --dem (SCENE is then the Sentinel-2 folder)", param_hint="--slope")
    source = scene if dem is None else {"s2": scene, "dem": dem, **({"slope": slope} if slope else {})}
    gdf = run_detect(source, list(models) or None, out=out, bands=bands, tta=tta, overlap=overlap, window=window,
                     batch_size=batch_size, norm=norm, stats=stats, input_scale=input_scale, threshold=threshold,
                     prob=prob, mask=mask, quicklook=quicklook, uncertainty=uncertainty, min_area=min_area, simplify=simplify,
                     fill_holes=fill_holes, device=device, overwrite=overwrite, progress=not as_json)
    summary = gdf.attrs["lsmap"]
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['polygons']} landslide polygons, {summary['landslide_area_m2'] / 1e6:.4f} km2 "
               f"(threshold {summary['threshold']:.2f}) -> {out}")
    click.echo(f"{summary['scene_km2']:.2f} km2 in {summary['seconds']:.1f} s ({summary['km2_per_s']:.2f} km2/s), "
               f"{summary['windows']} windows on {summary['device']}, input {summary['input_scale']}, "
               f"norm {summary['norm']}")



def _detect_many(scenes, out, models, scheduler, merged, overwrite, as_json, **kwargs) -> None:
    """Several scenes: run :func:`lsmap.regional.detect_many` and render its result."""
    from .regional import detect_many

    res = detect_many(list(scenes), list(models) or None, out, scheduler=scheduler, merged=merged,
                      overwrite=overwrite, progress=not as_json, **kwargs)
    if as_json:
        echo_json(res.to_dict())
    else:
        done = len(res.outputs) - len(res.skipped)
        click.echo(f"{len(res.scenes)} scenes: {done} done, {len(res.skipped)} already complete (skipped), "
                   f"{len(res.failures)} failed")
        if res.merged is not None:
            area = float(res.gdf["area_m2"].sum()) if len(res.gdf) else 0.0
            click.echo(f"{len(res.gdf)} landslide polygons, {area / 1e6:.4f} km2 ({res.crs}) -> {res.merged}")
    for scene, message in res.failures.items():
        click.echo(f"failed: {message}", err=True)
    if res.failures:
        raise click.ClickException(f"{len(res.failures)} of {len(res.scenes)} scenes failed: "
                                   + ", ".join(os.path.basename(s) for s in res.failures))


# --- info (issue 6) -----------------------------------------------------------------------------


@main.command()
@click.argument("model", required=False)
@json_opt
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Print a model's card (the default model when MODEL is omitted).

    \b
    $ lsmap info
    $ lsmap info runs/train/best.safetensors --json
    """
    from .models import default_model_path, describe_card, read_card

    card = read_card(model or default_model_path())
    if as_json:
        echo_json(card.to_dict())
        return
    rows = describe_card(card)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
