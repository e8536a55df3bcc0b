"""lsmap stack: Sentinel-2 bands + DEM/slope -> one stack on the 10 m grid."""

from __future__ import annotations

from pathlib import Path

import click

from lsmap.cli.options import bands_option, echo_json, handle_errors, json_opt, overwrite_opt, progress_default


@click.command("stack")
@click.argument("s2", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dem", type=click.Path(path_type=Path), help="DEM in metres (any CRS/resolution).")
@click.option(
    "--slope", type=click.Path(path_type=Path), help="Slope raster in degrees; computed from --dem when absent.",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output GeoTIFF.")
@bands_option(None, "Band set to write [default: every L4S band the inputs can fill, in L4S order].")
@click.option("--block", type=int, default=1024, show_default=True, help="Block size in pixels (memory bound).")
@overwrite_opt
@json_opt
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar [default: on an interactive terminal, without --json].")
@handle_errors
def stack_cmd(s2, dem, slope, output, bands, block, overwrite, as_json, progress):
    """Stack Sentinel-2 band files, a DEM and slope on the 10 m grid, scaled like L4S.

    S2 is a folder of band files (searched recursively, .jp2 or .tif, bands recognised by
    name: ..._B04_10m.jp2, B4.tif, B8A.tif) or the band files themselves. Without --bands the
    stack holds every L4S band the inputs have, in L4S order (an L2A product has no B10; slope
    and DEM need --dem), and says which.

    \b
    $ lsmap stack sample_data/s2 --dem sample_data/dem_30m.tif -o out/scene.tif --overwrite
    $ lsmap stack S2_SAFE/GRANULE/L2A_T45QYF/IMG_DATA --dem dem.tif -o scene.tif
    $ lsmap stack B02.tif B03.tif B04.tif B08.tif --bands rgbn -o rgbn.tif
    $ lsmap stack L2A_bands/ -o scene.tif --bands l2a
    $ lsmap stack bands/ --dem dem.tif --slope slope.tif -o scene.tif --overwrite --json
    """
    from lsmap.data.stack import stack_scene

    progress = progress_default(as_json) if progress is None else progress
    result = stack_scene(
        list(s2), output, dem=dem, slope=slope, bands=bands, overwrite=overwrite, block=block, progress=progress,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        names = result.profile if "," in result.profile else f"{result.profile}: {','.join(result.bands)}"
        click.echo(
            f"{result.path}: {len(result.bands)} bands ({names}), {result.width} x {result.height} px "
            f"at {result.resolution[0]:g} m, {result.crs}, {100 * result.valid_fraction:.1f} % valid"
        )
        if result.left_out:
            why: dict[str, list[str]] = {}
            for b, reason in result.left_out.items():
                why.setdefault(reason, []).append(b)
            click.echo("left out: " + "; ".join(f"{', '.join(bs)} ({r})" for r, bs in why.items()))
