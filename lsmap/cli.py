"""Command-line interface: thin Click commands over the library.

Each command parses its options, calls one library function and renders the result. Library
errors (:class:`lsmap.errors.LsmapError`) become a one-line ``Error: ...`` message and exit code 1.
Shared options are defined once below so that a flag means the same in every command.
"""

from __future__ import annotations

import functools
import json
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


# --- stats (issue 2) ----------------------------------------------------------------------------


# --- train (issue 3) ----------------------------------------------------------------------------


# --- evaluate (issue 3) -------------------------------------------------------------------------


# --- refine (issue 4) ---------------------------------------------------------------------------


# --- detect (issue 5) ---------------------------------------------------------------------------


# --- info (issue 6) -----------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
