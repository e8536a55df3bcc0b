"""lsmap info: print a model card."""

from __future__ import annotations

import click

from lsmap.cli.options import echo_json, handle_errors, json_opt


@click.command("info")
@click.argument("model", required=False)
@json_opt
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Print a model's card and path (the default model when MODEL is omitted).

    MODEL is a checkpoint (.safetensors, .json or stem) or the name of a shipped model
    ('default', or each file name in lsmap/weights/ without .safetensors).

    \b
    $ lsmap info
    $ lsmap info default --json
    $ lsmap info runs/train/best.safetensors
    """
    from lsmap.learn.models import checkpoint_paths, default_model_path, describe_card, read_card, resolve_model

    path = checkpoint_paths(resolve_model(model) if model else default_model_path())[0]
    card = read_card(path)
    if as_json:
        echo_json({"path": str(path), **card.to_dict()})
        return
    rows = [("path", str(path)), *describe_card(card)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
