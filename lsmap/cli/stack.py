"""lsmap stack: Sentinel-2 bands or a product + DEM/slope -> one stack on the 10 m grid."""

from __future__ import annotations

from pathlib import Path

import click

from lsmap.cli.options import (
    aoi_opts,
    bands_option,
    dem_opt,
    echo_json,
    handle_errors,
    json_opt,
    offset_opt,
    overwrite_opt,
    progress_default,
)
from lsmap.core.constants import STACK_ENCODINGS


@click.command("stack")
@click.argument("s2", nargs=-1, required=True, type=click.Path(path_type=str))
@dem_opt
@click.option(
    "--slope", type=click.Path(path_type=Path), help="Slope raster in degrees; computed from --dem when absent.",
)
@click.option("-o", "--output", required=True, type=click.Path(), help="Output GeoTIFF.")
@bands_option(None, "Band set to write [default: every L4S band the inputs can fill, in L4S order].")
@aoi_opts
@offset_opt
@click.option("--write-scl", type=click.Path(dir_okay=False), default=None,
              help="Also write the product's scene classification (SCL) on the stack's grid (uint8, nearest).")
@click.option("--write-cldprb", type=click.Path(dir_okay=False), default=None,
              help="Also write the product's cloud probability (MSK_CLDPRB, %) on the stack's grid.")
@click.option("--block", type=int, default=1024, show_default=True, help="Block size in pixels (memory bound).")
@click.option("--encoding", type=click.Choice(STACK_ENCODINGS), default=STACK_ENCODINGS[0], show_default=True,
              help="Stored values: uint16 codes with a per-band GDAL scale/offset (read back as L4S values within "
                   "half a DN; several times faster to decode) or float32 L4S values (older stacks).")
@overwrite_opt
@json_opt
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar [default: on an interactive terminal, without --json].")
@handle_errors
def stack_cmd(s2, dem, slope, output, bands, bbox, bbox_crs, aoi_file, offset, write_scl, write_cldprb, block,
              encoding, overwrite, as_json, progress):
    """Stack a Sentinel-2 product or band files, a DEM and slope on the 10 m grid, scaled like L4S.

    S2 is a product as downloaded: a .SAFE folder, a .SAFE.zip (read in place) or a STAC Item (JSON
    file or http(s) URL), L1C or L2A; its DN offset comes from its metadata. Or loose band files /
    folders of them (searched recursively, .jp2 or .tif, bands recognised by name: ..._B04_10m.jp2,
    B4.tif, B8A.tif); give their offset with --offset. Without --bands the stack holds every L4S
    band the inputs have, in L4S order (an L2A product has no B10; slope and DEM need --dem), and
    says which. --bbox/--aoi crop before any work.

    \b
    $ lsmap stack sample_data/s2 --dem sample_data/dem_30m.tif -o out/scene.tif --overwrite
    $ lsmap stack sample_data/s2 --bbox 87.01,27.81,87.03,27.83 --bands rgbn -o out/aoi.tif --overwrite
    $ lsmap stack S2A_MSIL2A_..._T45RUL_....SAFE.zip --dem dem_tiles/ --bbox 85.30,27.70,85.50,27.90 -o scene.tif
    $ lsmap stack https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/ID --bands rgbn -o s.tif
    $ lsmap stack S2_SAFE/GRANULE/L2A_T45QYF/IMG_DATA --offset -1000 --dem dem.tif -o scene.tif
    $ lsmap stack B02.tif B03.tif B04.tif B08.tif --bands rgbn -o rgbn.tif
    $ lsmap stack product.SAFE --bands l2a --aoi valley.gpkg --write-scl scl.tif -o scene.tif --json
    """
    from lsmap.data.stack import stack_scene
    from lsmap.io.aoi import aoi_from_options
    from lsmap.io.outputs import output_path

    output_path(output, name="output")  # an empty -o, named by its flag (the library says "the output path")
    progress = progress_default(as_json) if progress is None else progress
    aoi = aoi_from_options(bbox, bbox_crs, aoi_file)
    layers = {k: v for k, v in (("SCL", write_scl), ("MSK_CLDPRB", write_cldprb)) if v is not None}
    result = stack_scene(
        list(s2), output, dem=list(dem) or None, slope=slope, bands=bands, overwrite=overwrite, block=block,
        progress=progress, offset=offset, aoi=aoi, layers=layers, encoding=encoding,
    )
    if as_json:
        echo_json(result.to_dict())
        return
    names = result.profile if "," in result.profile else f"{result.profile}: {','.join(result.bands)}"
    offsets = sorted(set(result.offsets.values()))
    radiometry = (f"DN offset {', '.join(f'{o:g}' for o in offsets)}" if result.offsets_known
                  else "DN offset unknown (0)")
    click.echo(
        f"{result.path}: {len(result.bands)} bands ({names}), {result.width} x {result.height} px "
        f"at {result.resolution[0]:g} {_unit(result.crs)}, {result.crs}, {100 * result.valid_fraction:.1f} % valid; "
        f"{result.kind} input, {radiometry}, {result.encoding}"
    )
    if result.left_out:
        why: dict[str, list[str]] = {}
        for b, reason in result.left_out.items():
            why.setdefault(reason, []).append(b)
        click.echo("left out: " + "; ".join(f"{', '.join(bs)} ({r})" for r, bs in why.items()))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for name, path in result.layers.items():
        click.echo(f"{path}: {name} on the same grid")


def _unit(crs: str) -> str:
    """The linear unit of the stack's grid, for its summary line (degrees for a geographic CRS)."""
    from rasterio.crs import CRS

    try:
        return "degrees" if crs and CRS.from_user_input(crs).is_geographic else "m"
    except Exception:  # noqa: BLE001 - a CRS rasterio cannot parse: the summary keeps metres
        return "m"
