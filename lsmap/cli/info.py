"""lsmap info: print a model card."""

from __future__ import annotations

import click

from lsmap.cli.options import echo_json, handle_errors, json_opt


@click.command("info")
@click.argument("model", required=False)
@json_opt
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Print a model's card (the default model when MODEL is omitted).

    \b
    $ lsmap info
    $ lsmap info runs/train/best.safetensors --json
    """
    from lsmap.learn.models import default_model_path, describe_card, read_card

    card = read_card(model or default_model_path())
    if as_json:
        echo_json(card.to_dict())
        return
    rows = describe_card(card)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
