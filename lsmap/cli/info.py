"""lsmap info: print a model card, list the shipped default models, or say what lsmap sees in an input."""

from __future__ import annotations

import click

from lsmap.cli.options import echo_json, handle_errors, json_opt


@click.command("info")
@click.argument("model", required=False, metavar="[MODEL|INPUT]")
@json_opt
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Print MODEL's card and path; without MODEL, the default model's and the list of shipped defaults;
    for an INPUT, what lsmap sees in it before any work.

    MODEL is a checkpoint (.safetensors, .json or stem), a training run folder (its best checkpoint, else
    its last) or the name of a shipped model ('default', or each file name in lsmap/weights/ without
    .safetensors). Without --model, 'lsmap detect' uses the first shipped default (in the order listed)
    whose bands the scene has.

    INPUT is what 'lsmap detect' takes: a Sentinel-2 product (.SAFE, .SAFE.zip, STAC Item file or URL)
    or a folder of band files (its kind, level, baseline, bands, DN offset, mask layers, the band set a
    stack fills and the default model detect would take), or a stacked GeoTIFF.

    \b
    $ lsmap info
    $ lsmap info l2a-default
    $ lsmap info default --json
    $ lsmap info runs/train/best.safetensors
    $ lsmap info sample_data/s2
    $ lsmap info sample_data/scene_l4s14.tif
    """
    if model is not None and not model.strip():  # Path("") is '.': it read ".: raster is a folder"
        raise click.ClickException("MODEL|INPUT is an empty path; give a scene, a Sentinel-2 product, a band folder "
                                   "or a checkpoint")
    run_folder = None
    if model is not None and (checkpoint := _run_checkpoint(model)) is not None:
        # a training run folder read as a band folder: "no Sentinel-2 band file in this folder"
        run_folder, model = model, str(checkpoint)
    if model is not None and _is_input(model):
        from lsmap.data.sources import describe_source

        described = describe_source(model)
        if as_json:
            echo_json(described)
            return
        _rows(described)
        return
    from lsmap.learn.models import (
        check_weights_file,
        checkpoint_paths,
        default_model_path,
        describe_card,
        read_card,
        resolve_model,
        shipped_defaults,
    )

    if model is not None:
        _check_model_name(model)
    path = checkpoint_paths(resolve_model(model) if model else default_model_path())[0]
    card = read_card(path)
    check_weights_file(path)
    defaults = [(p, read_card(p)) for p in shipped_defaults()] if model is None else []
    if as_json:
        listed = {"shipped_defaults": [{"name": p.stem, "path": str(p), "bands": c.bands} for p, c in defaults]}
        run = {"run_folder": run_folder} if run_folder is not None else {}
        echo_json({**run, "path": str(path), **card.to_dict(), **(listed if model is None else {})})
        return
    if run_folder is not None:
        click.echo(f"{run_folder}: a training run folder; its {path.name} is shown (give it as --model or MODEL)\n")
    rows = [("path", str(path)), *describe_card(card)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    if defaults:
        click.echo("\nshipped default models (lsmap detect without --model takes the first whose bands the scene has):")
        width = max(len(p.stem) for p, _ in defaults)
        for p, c in defaults:
            f1 = c.metrics.get("val3_f1")
            score = f", validation F1 {f1:.3f}" if isinstance(f1, float) else ""
            click.echo(f"  {p.stem:<{width}}  {len(c.bands):>2} bands: {','.join(c.bands)}{score}")


def _run_checkpoint(arg: str):
    """The checkpoint of training run folder ``arg`` (``best``, else ``last``), or ``None`` when ``arg`` is not one."""
    from pathlib import Path

    folder = Path(arg)
    if not folder.is_dir():
        return None
    for name in ("best", "last"):
        if (folder / f"{name}.safetensors").is_file():
            return folder / f"{name}.safetensors"
    return None


def _check_model_name(arg: str) -> None:
    """Refuse, in words about what ``info`` reads, an argument that is neither an input nor a checkpoint name: a
    missing raster file, or an existing file of another kind (it read "model.txt.safetensors: checkpoint does not
    exist" for ``lsmap info model.txt``)."""
    from pathlib import Path

    from lsmap.errors import InputError, MissingInputError
    from lsmap.io.bandfiles import RASTER_SUFFIXES

    path = Path(arg)
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES and not path.exists():
        raise MissingInputError(f"{arg}: no such file; give an existing scene, band file, product or checkpoint")
    if path.is_file() and suffix not in (".safetensors", ".json", *RASTER_SUFFIXES):
        raise InputError(f"{arg}: not a scene, product or lsmap checkpoint; lsmap info describes GeoTIFF/JP2 rasters, "
                         f"band folders, Sentinel-2 products (.SAFE, .SAFE.zip, STAC Item) and NAME.safetensors models")


def _is_input(arg: str) -> bool:
    """Whether ``arg`` names an input to describe rather than a model: a product or URL, a folder, a raster file."""
    from pathlib import Path

    from lsmap.io.bandfiles import RASTER_SUFFIXES
    from lsmap.io.s2product import is_product

    path = Path(arg)
    if path.suffix.lower() == ".json" and path.with_suffix(".safetensors").exists():
        return False  # a checkpoint's card
    return is_product(arg) or path.is_dir() or (path.is_file() and path.suffix.lower() in RASTER_SUFFIXES)


def _rows(described: dict) -> None:
    """An input's description as aligned ``key  value`` lines."""

    def text(k: str, v) -> str:
        if isinstance(v, dict):
            return "; ".join(f"{b}: {x:g}" if isinstance(x, float) else f"{b}: {x}" for b, x in v.items()) or "none"
        if isinstance(v, (list, tuple)):
            return ", ".join(str(x) for x in v) if v else "none"
        if v is None and k == "dn_offsets":
            return ("not recorded" if described["kind"] in ("stack", "raster")
                    else "unknown (give --offset: baseline >= 04.00 files carry +1000)")
        return str(v)

    rows = [(k.replace("_", " "), text(k, v)) for k, v in described.items()
            if not (k in ("quantification", "default_model") and v is None) and k != "default_model_why"]
    if described.get("default_model") is None and "default_model_why" in described:
        from lsmap.cli.detect import detect
        from lsmap.cli.options import cli_message

        rows.append(("default model", f"none: {cli_message(described['default_model_why'], detect)}"))  # detect's flags
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
