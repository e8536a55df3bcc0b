"""lsmap stats: per-band statistics of a patch folder or a scene."""

from __future__ import annotations

from pathlib import Path

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
from lsmap.core.constants import SPLITS


@click.command("stats")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True,
              help="Split to read from a dataset root.")
@click.option("--valid-only/--all-pixels", default=None,
              help="Leave out nodata pixels (scene nodata; all-0.0 pixels in patches) or count every pixel "
                   "[default: left out, as training and detection leave them out].")
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
def stats(input_path, output, split, valid_only, raw, bands, dem, slope, offset, bbox, bbox_crs, aoi_file, scl,
          scl_mask, mask_raster, cloud_prob_max, blue_max, dark_max, overwrite, as_json):
    """Per-band mean and standard deviation of a patch folder or a scene, as JSON.

    INPUT is a patch folder, a GeoTIFF scene, or what 'lsmap stack' takes: a Sentinel-2 product
    (.SAFE, .SAFE.zip, STAC Item) or a folder of band files (a folder without patches), stacked
    first with --bands (--dem, --bbox/--aoi as for 'lsmap stack'). Not-observed pixels of a scene
    (the product's own SCL, --scl, --mask-raster, --cloud-prob-max) are left out, as 'lsmap detect'
    leaves them out of its statistics.

    \b
    $ lsmap stats sample_data/patches -o out/stats.json --overwrite
    $ lsmap stats data/TrainData -o train_stats.json
    $ lsmap stats patches/ -o scene_stats.json --bands rgbn --valid-only
    $ lsmap stats chittagong.tif -o stats.json --bands rgbn --raw --valid-only
    $ lsmap stats scene.tif -o clear_stats.json --scl scl_20m.tif --mask-raster clouds.tif
    $ lsmap stats S2B_MSIL2A_....SAFE.zip -o stats.json --bands l2a --scl-mask 3,8,9
    $ lsmap stats sample_data/s2 -o out/s2_stats.json --dem sample_data/dem_30m.tif --overwrite
    """
    from lsmap.data.stats import compute_stats
    from lsmap.io.aoi import aoi_from_options
    from lsmap.io.outputs import check_outputs_apart, input_paths, output_path
    from lsmap.io.rasters import check_output

    check_output(output_path(output, name="output"), overwrite)
    check_outputs_apart([output], input_paths(input_path, dem, slope, scl, mask_raster, aoi_file))
    source = scene_source(input_path, dem, slope, offset, folders=False)
    result = compute_stats(source, bands, split=split, valid_only=valid_only, raw=raw,
                           progress=progress_default(as_json), scl=scl, scl_mask=scl_mask, mask_raster=mask_raster,
                           cloud_prob_max=cloud_prob_max, blue_max=blue_max, dark_max=dark_max,
                           aoi=aoi_from_options(bbox, bbox_crs, aoi_file),
                           scratch=_existing_parent(output))

    why = result.problem()  # a file detect, evaluate and refine would refuse is not written
    if why is not None:
        raise click.ClickException(f"{input_path}: {why} over {result.count:,} pixels, so these statistics cannot "
                                   f"normalise data; compute them over a larger area or more patches (nothing written)")
    result.save(output, lock=True)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"{output}: mean/std of {len(result.mean)} bands over {result.count} pixels")


def _existing_parent(output: str) -> Path | None:
    """The output's folder, where a product's scratch stack goes (as detect's), when it exists already."""
    parent = Path(output).absolute().parent
    return parent if parent.is_dir() else None
