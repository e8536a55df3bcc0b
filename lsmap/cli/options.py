"""Options, error handling and output helpers shared by every command.

Shared options are defined once here so that a flag means the same in every command; their
Choice lists come from the library's registries. Library errors (:class:`lsmap.errors.LsmapError`)
become a one-line ``Error: ...`` message and exit code 1.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from lsmap.core.bands import PROFILES
from lsmap.errors import LsmapError
from lsmap.learn.device import DEVICES

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


def progress_default(as_json: bool) -> bool:
    """Progress bars only on an interactive terminal, never with --json."""
    return not as_json and sys.stderr.isatty()


def echo_json(obj) -> None:
    """Print ``obj`` as indented JSON."""
    click.echo(json.dumps(obj, indent=2, default=str))
