"""Command-line interface: thin Click commands over the library, one module per command.

Each command parses its options, calls one library function and renders the result; shared
options live in :mod:`lsmap.cli.options`.
"""

from __future__ import annotations

import click

from lsmap import __version__
from lsmap.cli.detect import detect
from lsmap.cli.download import download
from lsmap.cli.evaluate import evaluate
from lsmap.cli.info import info
from lsmap.cli.refine import refine
from lsmap.cli.stack import stack_cmd
from lsmap.cli.stats import stats
from lsmap.cli.tile import tile
from lsmap.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lsmap")
def main() -> None:
    """Map landslides from Sentinel-2 scenes (Landslide4Sense 2022 winners' methods)."""


for _command in (stack_cmd, tile, stats, train, evaluate, refine, detect, info, download):
    main.add_command(_command)
