"""lsmap tile: a scene -> L4S-style patches and their index."""

from __future__ import annotations

import click

from lsmap.cli.options import (
    aoi_opts,
    blue_max_opt,
    cloud_prob_opt,
    dark_max_opt,
    echo_json,
    handle_errors,
    json_opt,
    mask_opts,
    overwrite_opt,
    progress_default,
    scene_bands_opt,
    scene_source,
    stacking_opts,
)
from lsmap.core.constants import PATCH_SIZE


@click.command("tile")
@click.argument("scene", type=click.Path(path_type=str))
@click.option(
    "-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Patch folder to write."
)
@click.option("--size", type=int, default=PATCH_SIZE, show_default=True, help="Patch size in pixels (at least 16).")
@click.option("--overlap", type=int, default=0, show_default=True, help="Pixels shared by neighbouring patches.")
@click.option(
    "--labels", type=click.Path(dir_okay=False), default=None,
    help="Labels -> masks: a raster on the scene's grid (any extent), or a landslide inventory as polygons "
         "(GeoPackage, GeoJSON, Shapefile...; any CRS): 1 inside a polygon, 0 elsewhere.",
)
@click.option(
    "--label-map", default=None,
    help="Label value:mask value pairs of a label raster, e.g. '0:255,1:0,2:1' (default: labels are 0/1 masks, "
         "255 ignored).",
)
@click.option(
    "--label-where", default=None, metavar="FIELD=VALUE[,VALUE...]",
    help="Which polygons of an inventory are landslides, e.g. 'class=landslide' (the others are background) "
         "[default: every polygon].",
)
@click.option(
    "--min-valid", type=float, default=0.5, show_default=True,
    help="Skip patches with a smaller fraction of valid (non-nodata) pixels.",
)
@click.option("--raw", is_flag=True, help="Scene holds raw values: divide by the band profile's L4S divisors.")
@scene_bands_opt
@stacking_opts
@aoi_opts
@mask_opts
@cloud_prob_opt
@blue_max_opt
@dark_max_opt
@overwrite_opt
@json_opt
@handle_errors
def tile(scene, out_dir, size, overlap, labels, label_map, label_where, min_valid, raw, bands, dem, slope, offset, bbox, bbox_crs,
         aoi_file, scl, scl_mask, mask_raster, cloud_prob_max, blue_max, dark_max, overwrite, as_json):
    """Cut a scene into Landslide4Sense-style patches plus an index GeoPackage.

    SCENE is a stack from 'lsmap stack', or what 'lsmap stack' takes: a Sentinel-2 product (.SAFE,
    .SAFE.zip, STAC Item) or a folder of band files, stacked first with --bands (and --dem for
    slope and DEM bands); a product's own SCL masks by default. --bbox/--aoi crop before any work.

    Writes OUT/img/image_N.h5 (and OUT/mask/mask_N.h5 with --labels: a raster on the scene's grid,
    or landslide polygons), OUT/index.gpkg (each patch's pixel window and footprint in the scene CRS) and
    OUT/tiles.json. Nodata pixels are written as 0.0 and masked 255; so are not-observed pixels
    (the product's SCL, --scl, --mask-raster, --cloud-prob-max: clouds, shadows...), which also
    count against --min-valid.

    \b
    $ lsmap tile sample_data/scene_l4s14.tif -o out/patches --overwrite
    $ lsmap tile sample_data/s2 --dem sample_data/dem_30m.tif -o out/s2_patches --overwrite
    $ lsmap tile sample_data/scene_l4s14.tif --labels sample_data/truth_scars.geojson -o out/labelled --overwrite
    $ lsmap tile stack.tif -o patches/
    $ lsmap tile S2B_MSIL2A_....SAFE.zip --bands l2a --bbox 76.10,11.45,76.20,11.55 -o patches/
    $ lsmap tile chittagong.tif -o patches/ --bands rgbn --raw \\
        --labels labels.tif --label-map 0:255,1:0,2:1
    $ lsmap tile stack.tif -o patches/ --size 128 --overlap 32 --min-valid 0.2 --overwrite
    """
    from lsmap.data.tile import tile_scene
    from lsmap.io.aoi import aoi_from_options

    source = scene_source(scene, dem, slope, offset)
    result = tile_scene(
        source, out_dir, bands=bands, size=size, overlap=overlap, labels=labels, label_map=label_map,
        label_where=label_where,
        min_valid=min_valid, raw=raw, overwrite=overwrite, progress=progress_default(as_json), scl=scl,
        scl_mask=scl_mask, mask_raster=mask_raster, cloud_prob_max=cloud_prob_max, blue_max=blue_max, dark_max=dark_max,
        aoi=aoi_from_options(bbox, bbox_crs, aoi_file),
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.out_dir}: {result.n_patches} patches of {result.size} px "
            f"({result.n_skipped} of {result.n_windows} windows skipped, {result.n_padded} padded"
            f"{', with masks' if result.labelled else ''})"
        )
