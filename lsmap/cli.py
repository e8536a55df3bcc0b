"""Command-line interface: thin Click commands over the library.

Each command parses its options, calls one library function and renders the result. Library
errors (:class:`lsmap.errors.LsmapError`) become a one-line ``Error: ...`` message and exit code 1.
Shared options are defined once below so that a flag means the same in every command.
"""

from __future__ import annotations

import functools
import json
import sys

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


# --- tile (issue 2) -----------------------------------------------------------------------------


# --- stats (issue 2) ----------------------------------------------------------------------------


# --- train (issue 3) ----------------------------------------------------------------------------


# --- evaluate (issue 3) -------------------------------------------------------------------------


# --- refine (issue 4) ---------------------------------------------------------------------------


# --- detect (issue 5) ---------------------------------------------------------------------------


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
