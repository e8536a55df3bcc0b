"""lsmap download: fetch a public benchmark into a folder that --data reads."""

from __future__ import annotations

import click

from lsmap.cli.options import echo_json, handle_errors, json_opt, progress_default
from lsmap.io.download import DATASETS, URL_ENV, ZENODO_URL  # imports no torch


@click.command("download")
@click.argument("dataset", type=click.Choice(DATASETS))
@click.argument("root", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--url", default=None,
              help=f"Zenodo base URL (a mirror) [default: ${URL_ENV} or {ZENODO_URL}].")
@click.option("--keep-archives/--remove-archives", default=True, show_default=True,
              help="Keep the downloaded archives in DIR/archives after unpacking.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True,
              help="Seconds to wait for the server on each request.")
@json_opt
@handle_errors
def download(dataset, root, url, keep_archives, timeout, as_json):
    """Download the Landslide4Sense benchmark (Zenodo record 10463239) into DIR.

    Reads the record's file list (sizes, MD5 checksums) from Zenodo, downloads each archive to
    DIR/archives (a re-run resumes a partial download and skips complete ones), checks its size
    and checksum, and unpacks it: DIR then has TrainData/, ValidData/, TestData/ with img/ (and
    mask/), a root that 'lsmap train --data' and 'lsmap evaluate --data' read. Several GB.

    \b
    $ lsmap download l4s data/l4s
    $ lsmap train --data data/l4s -o runs/r18
    """
    from lsmap.io.download import download_l4s

    result = download_l4s(root, url=url, keep_archives=keep_archives, timeout=timeout,
                          progress=progress_default(as_json))
    if as_json:
        echo_json(result.to_dict())
        return
    fetched = f"downloaded {', '.join(result.downloaded)}" if result.downloaded else "nothing to download"
    if result.resumed:
        fetched += f" (resumed {', '.join(result.resumed)})"
    click.echo(f"{result.root}: {fetched}; unpacked {', '.join(result.unpacked) or 'nothing new'}")
    click.echo("patches: " + ", ".join(f"{split} {n}" for split, n in result.patches.items())
               + f" -> lsmap train --data {result.root}")
