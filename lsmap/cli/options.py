"""Options, error handling and output helpers shared by every command.

Shared options are defined once here so that a flag means the same in every command; their
Choice lists come from the library's registries. Library errors (:class:`lsmap.errors.LsmapError`)
become a one-line ``Error: ...`` message and exit code 1.
"""

from __future__ import annotations

import functools
import json
import re
import warnings

import click

from lsmap.core.bands import PROFILES
from lsmap.errors import InputError, LsmapError, LsmapWarning
from lsmap.learn.device import DEVICES

overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def _check_bands(ctx, param, value):
    """Validate a ``--bands`` value (a profile name or a comma list of band names) early."""
    if value is None:
        return None
    from lsmap.core.bands import get_profile

    try:
        get_profile(value)
    except LsmapError as e:
        raise click.BadParameter(cli_message(str(e), ctx.command)) from None
    return value


def bands_option(default: str | None = "l4s14", help: str = "Band set of the input.") -> click.decorators.FC:
    """A ``--bands`` option: a profile name (``PROFILES``) or a comma list of band names."""
    return click.option(
        "--bands", "bands", metavar="SET", default=default, show_default=default is not None, callback=_check_bands,
        help=f"{help} A profile ({', '.join(PROFILES)}) or a comma list of band names, e.g. B4,B3,B2,B8.",
    )


#: ``--bands`` of commands that read a scene's band set from the scene when none is given (``tile``, ``stats``).
scene_bands_opt = bands_option(None, "Band set of the input [default: a GeoTIFF's band names, as 'lsmap stack' writes them (L4S order for a 14-band file without them); for products and band folders every L4S band they can fill; for patches the bands their folder records, else l4s14].")
def _device_name(ctx, param, value: str) -> str:
    if value in DEVICES or re.fullmatch(r"cuda:\d+", value):
        return value
    raise click.BadParameter(f"'{value}' is not one of {', '.join(DEVICES)} or cuda:N (a GPU's index)")


device_opt = click.option(
    "--device", default="auto", show_default=True, callback=_device_name, metavar="auto|cpu|cuda[:N]",
    help="Where to run: auto picks CUDA when a GPU is visible, else the CPU; cuda:N names one GPU.",
)
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random generator.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
label_map_opt = click.option(
    "--label-map", default=None,
    help="Mask value:0/1/255 pairs for masks in another convention, e.g. '0:0,255:1' for 0/255 masks.",
)
dem_opt = click.option(
    "--dem", "dem", multiple=True, type=click.Path(path_type=str),
    help="DEM in metres (any CRS/resolution); repeat it, or give a folder, for DEM tiles (mosaicked on the fly).",
)
offset_opt = click.option(
    "--offset", type=float, default=None,
    help="DN offset of loose band files, e.g. -1000 for processing baseline >= 04.00 (products carry theirs).",
)


def stacking_opts(fn):
    """``--dem``, ``--slope`` and ``--offset``: what a product or band files are stacked with (:func:`scene_source`)."""
    fn = offset_opt(fn)
    fn = click.option("--slope", type=click.Path(exists=True, dir_okay=False), default=None,
                      help="Slope raster in degrees, for stacking (default: computed from --dem).")(fn)
    fn = click.option("--dem", "dem", multiple=True, type=click.Path(), default=None,
                      help="DEM (one file, repeated for tiles, or a folder of tiles): SCENE is then stacked first.")(fn)
    return fn


def scene_source(scene: str, dem, slope, offset, *, folders: bool = True) -> str | dict:
    """What a command reads for SCENE (:func:`lsmap.data.sources.scene_inputs` with the command's flags).

    Raises:
        click.BadParameter: ``--slope`` without ``--dem``; ``--offset`` for a stacked GeoTIFF.
    """
    from lsmap.data.sources import scene_inputs

    try:
        return scene_inputs(scene, list(dem) or None, slope, offset, folders=folders)
    except InputError as e:
        ctx = click.get_current_context(silent=True)
        raise click.BadParameter(cli_message(str(e), ctx.command if ctx else None)) from None


def mask_opts(fn):
    """``--scl FILE``, ``--scl-mask CLASSES`` and ``--mask-raster FILE``: the not-observed pixels (:mod:`lsmap.data.masks`)."""
    fn = click.option("--mask-raster", type=click.Path(exists=True, dir_okay=False), default=None,
                      help="Raster whose non-zero pixels are not observed (e.g. an external cloud mask; any grid, "
                           "nearest neighbour); combines with SCL.")(fn)
    fn = click.option("--scl-mask", default=None, metavar="CLASSES",
                      help="SCL classes not observed, e.g. 3,8,9 ('none': SCL unused). Default: 0,1,3,8,9,10,11 "
                           "(no data, defective, cloud shadow, cloud medium/high, cirrus, snow).")(fn)
    fn = click.option("--scl", type=click.Path(exists=True, dir_okay=False), default=None,
                      help="Scene classification (SCL) raster of the scene (any grid); a product's own SCL is used "
                           "without it.")(fn)
    return fn


cloud_prob_opt = click.option(
    "--cloud-prob-max", type=click.FloatRange(0, 100, max_open=True), default=None, metavar="PERCENT",
    help="Also mask as cloud the pixels whose cloud probability (the L2A product's MSK_CLDPRB, 0-100) exceeds "
         "PERCENT (SAFE/zip/STAC products with that layer) [default: off; the SCL's cloud classes].",
)

blue_max_opt = click.option(
    "--blue-max", type=click.FloatRange(0, 2, min_open=True, max_open=True), default=None, metavar="REFL",
    help="Also mask as cloud the pixels whose blue (B2) surface reflectance exceeds REFL, and 3 pixels around "
         "them: for scenes without an SCL (loose bands, exports); 0.2 is measured in BENCHMARKS.md [default: off].",
)

dark_max_opt = click.option(
    "--dark-max", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, metavar="REFL",
    help="Also mask as 'dark' (cloud shadow or water) the pixels whose SWIR (B11) surface reflectance is below "
         "REFL: for scenes without an SCL (loose bands, exports); 0.04 is measured in BENCHMARKS.md [default: off].",
)


def aoi_opts(fn):
    """``--bbox W,S,E,N``, ``--bbox-crs`` and ``--aoi FILE``: the area of interest, cropped before any work."""
    fn = click.option("--aoi", "aoi_file", type=click.Path(exists=True, dir_okay=False), default=None,
                      help="Area of interest: a vector file (GeoPackage, GeoJSON, Shapefile...; its CRS honoured); "
                           "pixels outside its polygons are nodata.")(fn)
    fn = click.option("--bbox-crs", default=None, help="CRS of --bbox (default: lon/lat, EPSG:4326).")(fn)
    fn = click.option("--bbox", default=None, metavar="W,S,E,N",
                      help="Area of interest: a box, lon/lat unless --bbox-crs; only its window is processed.")(fn)
    return fn


#: A Python argument named in a library message: ```overlap```.
_ARGUMENT = re.compile(r"`([a-z][a-z0-9_]*)`")


def flag_names(command: click.Command) -> dict[str, str]:
    """Python argument name -> the command's flag for it (``overlap`` -> ``--overlap``).

    A parameter answers to its own name and to the names of its flags (``models`` and ``model``
    for ``--model``; ``out_dir`` and ``output`` for ``-o/--output``); the longest flag is shown.
    """
    names: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Argument):
            names[param.name] = param.human_readable_name
            continue
        flag = max(param.opts, key=len)
        for name in (param.name, *(o.lstrip("-").replace("-", "_") for o in param.opts)):
            names.setdefault(name, flag)
    return names


def cli_message(message: str, command: click.Command | None) -> str:
    """A library message in the command's words: each ```argument``` becomes its flag.

    Library errors name Python arguments (``lsmap.detect(..., overlap=200)`` fails with
    "`overlap` must be in [0, `window`)"); on the command line the same error names ``--overlap``.
    Arguments the command does not have are shown plainly.
    """
    names = flag_names(command) if command is not None else {}
    return _ARGUMENT.sub(lambda m: names.get(m.group(1), m.group(1)), message)


def handle_errors(fn):
    """Turn library errors into a one-line message in the command's flags and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context(silent=True)
        command = ctx.command if ctx else None
        with warnings.catch_warnings():
            warnings.simplefilter("always", LsmapWarning)
            shown = warnings.showwarning
            said: set[str] = set()  # a warning the library gives at several steps of one command is shown once

            def show(message, category, *rest, **kw):
                if issubclass(category, LsmapWarning):
                    text = cli_message(str(message), command)
                    if text not in said:
                        said.add(text)
                        click.echo(f"Warning: {text}", err=True)
                else:
                    shown(message, category, *rest, **kw)

            warnings.showwarning = show
            try:
                return fn(*args, **kwargs)
            except LsmapError as e:
                raise click.ClickException(cli_message(str(e), command)) from None
            except OSError as e:  # a full or read-only disk outside the library's own checks: still one line
                from lsmap.io.outputs import output_oserror

                mapped = output_oserror(e, getattr(e, "filename", None) or "output")
                if mapped is None:
                    raise
                raise click.ClickException(str(mapped)) from None

    return wrapper


def progress_default(as_json: bool) -> bool:
    """Progress on stderr unless --json: a bar on a terminal, a line now and then elsewhere (a log file, a
    batch job; :mod:`lsmap.io.progress`)."""
    return not as_json


def echo_json(obj) -> None:
    """Print ``obj`` as indented JSON."""
    click.echo(json.dumps(obj, indent=2, default=str))
