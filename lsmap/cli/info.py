"""lsmap info: print a model card, or list the shipped default models."""

from __future__ import annotations

import click

from lsmap.cli.options import echo_json, handle_errors, json_opt


@click.command("info")
@click.argument("model", required=False)
@json_opt
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Print MODEL's card and path; without MODEL, the default model's and the list of shipped defaults.

    MODEL is a checkpoint (.safetensors, .json or stem) or the name of a shipped model
    ('default', or each file name in lsmap/weights/ without .safetensors). Without --model,
    'lsmap detect' uses the first shipped default (in the order listed) whose bands the scene has.

    \b
    $ lsmap info
    $ lsmap info l2a-default
    $ lsmap info default --json
    $ lsmap info runs/train/best.safetensors
    """
    from lsmap.learn.models import (
        checkpoint_paths,
        default_model_path,
        describe_card,
        read_card,
        resolve_model,
        shipped_defaults,
    )

    path = checkpoint_paths(resolve_model(model) if model else default_model_path())[0]
    card = read_card(path)
    defaults = [(p, read_card(p)) for p in shipped_defaults()] if model is None else []
    if as_json:
        listed = {"shipped_defaults": [{"name": p.stem, "path": str(p), "bands": c.bands} for p, c in defaults]}
        echo_json({"path": str(path), **card.to_dict(), **(listed if model is None else {})})
        return
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
