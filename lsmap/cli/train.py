"""lsmap train: train a segmentation model on L4S-style patches."""

from __future__ import annotations

import click

from lsmap.cli.options import (
    bands_option,
    device_opt,
    echo_json,
    handle_errors,
    json_opt,
    label_map_opt,
    overwrite_opt,
    progress_default,
    seed_opt,
)
from lsmap.core.constants import SCALES
from lsmap.core.norms import norm_choices
from lsmap.learn.config import OPTIMIZERS, SCHEDULES, VAL_FRACTION, VAL_SPLITS, TrainConfig
from lsmap.learn.registry import MODELS

_D = TrainConfig()  # the library's defaults
_SCALES = [f"{s:g}" for s in SCALES]


@click.command("train")
@click.option("--data", type=click.Path(file_okay=False),
              help="Dataset root (TrainData/ValidData, train/test, or images/+annotations/ layout) or a patch "
                   "folder.")
@click.option("--train", "train_dir", type=click.Path(file_okay=False),
              help="Labelled training patch folder (img/, mask/).")
@click.option("--val", "val_dir", type=click.Path(file_okay=False),
              help="Labelled validation patch folder (the best checkpoint is chosen on it), or 'none' for no "
                   "validation [default: the root's validation split, else --val-fraction of the training patches].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help=f"Hold out this fraction of the training patches (seeded by --seed) for validation when there "
                   f"is no validation folder [default: {VAL_FRACTION:g}].")
@click.option("--val-split", type=click.Choice(list(VAL_SPLITS)), default="random", show_default=True,
              help="How --val-fraction is held out: random patches, or spatial: a block of the scene, the training "
                   "patches overlapping it left out (patches of lsmap tile, which records where each lies).")
@click.option("--model", type=click.Choice(list(MODELS)), default=_D.model, show_default=True, help="Architecture.")
@bands_option("l4s14", "Band set to train on, taken from the patches by name (they may hold more bands).")
@click.option("--loss", default=_D.loss, show_default=True,
              help="Loss spec, e.g. lovasz+ohem, softce+lovasz+ohem, ce, ce+jaccard.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_D.optimizer, show_default=True,
              help="AdamW, or SGD with Nesterov momentum.")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 5e-4 AdamW, 1e-2 SGD].")
@click.option("--weight-decay", type=float, default=None, help="Weight decay [default: 1e-2 AdamW, 5e-4 SGD].")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=_D.schedule, show_default=True,
              help="Learning-rate decay after the warmup.")
@click.option("--scale", type=click.Choice(_SCALES), default=f"{_D.scale:g}", show_default=True,
              help="Scale promotion: upsample inputs by this factor.")
@click.option("--no-augment", is_flag=True, help="No flips, rotations or colour perturbation.")
@click.option("--norm", type=click.Choice(norm_choices()), default=_D.norm, show_default=True,
              help="own: validation/target data normalised by its own statistics (separated); model: by the training statistics (global, the baseline).")
@click.option("--domain-bn", is_flag=True, help="Domain-specific batch-norm statistics (source vs target).")
@click.option("--target", "target_dir", type=click.Path(file_okay=False),
              help="Unlabelled target patches for --domain-bn statistics [default: the validation images].")
@click.option("--mixup", "mixup_alpha", type=float, default=0.0, show_default=True, help="Mix-up Beta(a, a) parameter (0: off).")
@seed_opt
@click.option("--steps", type=click.IntRange(1), default=_D.steps, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(1), default=_D.batch_size, show_default=True,
              help="Images per step (over all processes).")
@click.option("--val-every", type=click.IntRange(1), default=_D.val_every, show_default=True,
              help="Validate and save every N steps.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Data-loading worker processes.")
@device_opt
@click.option("--no-amp", is_flag=True, help="Plain float32 (no bfloat16/float16 autocast).")
@click.option("--encoder-weights", metavar="FILE|imagenet",
              help="Encoder weights to start from: a local file (safetensors or state dict), or 'imagenet' for the "
                   "encoder's published weights (downloaded once; needs internet) [default: random weights].")
@click.option("--init", type=click.Path(), help="Start from this checkpoint (same model and bands).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in RUN_DIR from its last checkpoint.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True, help="Run folder.")
@overwrite_opt
@label_map_opt
@json_opt
@handle_errors
def train(data, train_dir, val_dir, val_fraction, val_split, model, bands, loss, optimizer, lr, weight_decay, schedule, scale, no_augment, norm,
          domain_bn, target_dir, mixup_alpha, seed, steps, batch_size, val_every, workers, device, no_amp, encoder_weights,
          init, resume, out_dir, overwrite, label_map, as_json):
    """Train a landslide segmentation model on L4S-style patches (the winners' recipe by default).

    Writes RUN_DIR/best.safetensors + best.json (chosen on validation F1; not with --val none,
    where last is the result), last.safetensors + last.json + last_state.pt for --resume, log.csv
    and curves.png. Run under torchrun for several GPUs or nodes. With --overwrite the previous run is set aside until the new one
    saves its first last, and comes back if the new run stops before that or diverges; once
    saved, an interrupted run stays resumable in its place.

    \b
    $ lsmap train --data sample_data/patches --model tiny-unet --scale 1 --steps 20 --val-every 10 \\
        -o out/run --overwrite
    $ lsmap train --data L4S_ROOT -o runs/r18 --steps 20000
    $ lsmap train --train patches/train --val patches/val --model tiny-unet --scale 1 --steps 500 -o runs/tiny
    $ lsmap train --train patches/train --val-fraction 0.1 --encoder-weights imagenet -o runs/r18
    $ lsmap train --data L4S_ROOT --loss ce --norm global --no-augment --scale 1 -o runs/baseline
    $ lsmap train --data L4S_ROOT -o runs/r18 --resume            # the run's settings
    $ lsmap train --data L4S_ROOT -o runs/r18 --resume --steps 30000
    $ torchrun --nproc_per_node 2 -m lsmap.cli train --data L4S_ROOT -o runs/ddp
    """
    import os

    from lsmap.learn.train import resume_config
    from lsmap.learn.train import train as run_train

    given = dict(
        model=model, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
        schedule=schedule, scale=float(scale), val_every=val_every, seed=seed, device=device, amp=not no_amp,
        domain_bn=domain_bn, workers=workers, loss=loss, augment=not no_augment, norm=norm,
        encoder_weights=encoder_weights, mixup_alpha=mixup_alpha, val_fraction=val_fraction,
        val_split=val_split,
    )
    if val_dir is not None and val_dir.lower() == "none":
        if val_fraction is not None:
            raise click.BadParameter("--val none trains without validation; leave out --val-fraction",
                                     param_hint="--val-fraction")
        val_dir, given["val_fraction"] = None, 0.0
    if resume:  # the run's own settings, except options given on this command line
        ctx = click.get_current_context()
        option = {"scale": "scale", "no_amp": "amp", "no_augment": "augment"}
        explicit = {option.get(p, p) for p in ctx.params
                    if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT}
        if given["val_fraction"] == 0.0:
            explicit.add("val_fraction")
        config = resume_config(out_dir, given, explicit)
    else:
        config = TrainConfig(**given)
    result = run_train(out_dir, data=data, train_dir=train_dir, val_dir=val_dir, target_dir=target_dir, config=config,
                       bands=bands, init=init, resume=resume, overwrite=overwrite, progress=progress_default(as_json),
                       label_map=label_map)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        echo_json({"best": result.best_path, "last": result.last_path, "metrics": result.best_metrics,
                   "validation": result.validation, "held_out": result.held_out, "history": result.history})
        return
    if result.held_out:
        click.echo(f"validation: {len(result.held_out)} training patches held out (seed {config.seed}): "
                   f"ids {', '.join(result.held_out)}")
    elif result.validation is None:
        click.echo("validation: none (--val none); the last checkpoint is the result")
    m = result.best_metrics
    if m:
        click.echo(f"best: {result.best_path} (step {m['step']}: F1 {m['f1']:.4f}, precision {m['precision']:.4f}, "
                   f"recall {m['recall']:.4f}, IoU {m['iou']:.4f} on validation)")
    click.echo(f"last: {result.last_path}")
    click.echo(f"log: {result.out_dir / 'log.csv'}, curves: {result.out_dir / 'curves.png'}")
