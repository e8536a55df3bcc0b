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

from .models import MODELS  # noqa: E402  (registry names for --model; imports no torch)

_SCALES = ("1", "2.5", "4")


@main.command()
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root (official TrainData/ValidData or Hugging Face layout).")
@click.option("--train", "train_dir", type=click.Path(file_okay=False), help="Labelled training patch folder (img/, mask/).")
@click.option("--val", "val_dir", type=click.Path(file_okay=False), help="Labelled validation patch folder; the best checkpoint is chosen on it.")
@click.option("--model", type=click.Choice(list(MODELS)), default="unet-resnet18", show_default=True, help="Architecture.")
@bands_opt
@click.option("--loss", default="lovasz+ohem", show_default=True, help="Loss spec, e.g. lovasz+ohem, softce+lovasz+ohem, ce, ce+jaccard.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True, help="AdamW, or SGD with Nesterov momentum.")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 5e-4 AdamW, 1e-2 SGD].")
@click.option("--weight-decay", type=float, default=None, help="Weight decay [default: 1e-2 AdamW, 5e-4 SGD].")
@click.option("--schedule", type=click.Choice(["poly", "cosine", "constant"]), default="poly", show_default=True, help="Learning-rate decay after the warmup.")
@click.option("--scale", type=click.Choice(_SCALES), default="2.5", show_default=True, help="Scale promotion: upsample inputs by this factor.")
@click.option("--no-augment", is_flag=True, help="No flips, rotations or colour perturbation.")
@click.option("--norm", type=click.Choice(["separated", "global"]), default="separated", show_default=True,
              help="separated: validation/target data normalised by its own statistics; global: by the training statistics (baseline).")
@click.option("--domain-bn", is_flag=True, help="Domain-specific batch-norm statistics (source vs target).")
@click.option("--target", "target_dir", type=click.Path(file_okay=False), help="Unlabelled target patches for --domain-bn statistics [default: the validation images].")
@click.option("--mixup", type=float, default=0.0, show_default=True, help="Mix-up Beta(a, a) parameter (0: off).")
@seed_opt
@click.option("--steps", type=click.IntRange(1), default=20000, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="Images per step (over all processes).")
@click.option("--val-every", type=click.IntRange(1), default=500, show_default=True, help="Validate and save every N steps.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Data-loading worker processes.")
@device_opt
@click.option("--no-amp", is_flag=True, help="Plain float32 (no bfloat16/float16 autocast).")
@click.option("--encoder-weights", type=click.Path(dir_okay=False, exists=True), help="Local encoder weights (safetensors or state dict).")
@click.option("--init", type=click.Path(), help="Start from this checkpoint (same model and bands).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in RUN_DIR from its last checkpoint.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True, help="Run folder.")
@overwrite_opt
@json_opt
@handle_errors
def train(data, train_dir, val_dir, model, bands, loss, optimizer, lr, weight_decay, schedule, scale, no_augment, norm,
          domain_bn, target_dir, mixup, seed, steps, batch_size, val_every, workers, device, no_amp, encoder_weights,
          init, resume, out_dir, overwrite, as_json):
    """Train a landslide segmentation model on L4S-style patches (the winners' recipe by default).

    Writes RUN_DIR/best.safetensors + best.json (chosen on validation F1), last.* for --resume,
    log.csv and curves.png. Run under torchrun for several GPUs or nodes.

    \b
    $ lsmap train --data L4S_ROOT -o runs/r18 --steps 20000
    $ lsmap train --train patches/train --val patches/val --model tiny-unet --scale 1 --steps 500 -o runs/tiny
    $ lsmap train --data L4S_ROOT --loss ce --norm global --no-augment --scale 1 -o runs/baseline
    $ lsmap train --data L4S_ROOT -o runs/r18 --resume            # the run's settings
    $ lsmap train --data L4S_ROOT -o runs/r18 --resume --steps 30000
    $ torchrun --nproc_per_node 2 -m lsmap.cli train --data L4S_ROOT -o runs/ddp
    """
    import os

    from .train import TrainConfig
    from .train import train as run_train

    given = dict(
        model=model, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
        schedule=schedule, scale=float(scale), val_every=val_every, seed=seed, device=device, amp=not no_amp,
        domain_bn=domain_bn, workers=workers, loss=loss, augment=not no_augment, norm=norm,
        encoder_weights=encoder_weights, mixup_alpha=mixup,
    )
    if resume:  # the run's own settings, except options given on this command line
        import dataclasses

        from .train import saved_config

        option = {"scale": "scale", "no_amp": "amp", "no_augment": "augment", "mixup": "mixup_alpha"}
        ctx = click.get_current_context()
        explicit = {option.get(p, p) for p in ctx.params
                    if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT}
        config = dataclasses.replace(saved_config(out_dir), **{k: v for k, v in given.items() if k in explicit})
    else:
        config = TrainConfig(**given)
    result = run_train(out_dir, data=data, train_dir=train_dir, val_dir=val_dir, target_dir=target_dir, config=config,
                       bands=bands, init=init, resume=resume, overwrite=overwrite, progress=not as_json)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        echo_json({"best": result.best_path, "last": result.last_path, "metrics": result.best_metrics,
                   "history": result.history})
        return
    m = result.best_metrics
    if m:
        click.echo(f"best: {result.best_path} (step {m['step']}: F1 {m['f1']:.4f}, precision {m['precision']:.4f}, "
                   f"recall {m['recall']:.4f}, IoU {m['iou']:.4f} on validation)")
    click.echo(f"log: {result.out_dir / 'log.csv'}, curves: {result.out_dir / 'curves.png'}")


# --- evaluate (issue 3) -------------------------------------------------------------------------


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", type=click.Path(file_okay=False), required=True, help="Labelled patch folder or dataset root.")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="validation", show_default=True,
              help="Split to read from a dataset root.")
@click.option("--tta", is_flag=True, help="Average over flips (test-time augmentation).")
@click.option("--stats", type=click.Path(dir_okay=False, exists=True), help="Normalisation statistics of the data (from lsmap stats).")
@click.option("--norm", type=click.Choice(["auto", "target", "model"]), default="auto", show_default=True,
              help="target: the data's own statistics; model: the training statistics; auto: what each model was trained with.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Probability threshold [default: the models' cards].")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="Patches per forward pass.")
@device_opt
@json_opt
@handle_errors
def evaluate(models, data, split, tta, stats, norm, threshold, batch_size, device, as_json):
    """Score MODEL(s) on labelled patches: pixel P/R/F1/IoU summed over the split, object scores.

    Several models are averaged as an ensemble.

    \b
    $ lsmap evaluate runs/r18/best.safetensors --data L4S_ROOT
    $ lsmap evaluate runs/a/best runs/b/best --data patches/val --tta --json
    $ lsmap evaluate runs/r18/best --data scene_patches --stats scene_stats.json
    """
    from .evaluate import evaluate as run_evaluate
    from .evaluate import format_table

    result = run_evaluate(list(models), data, split=split, tta=tta, stats=stats, norm=norm, device=device,
                          batch_size=batch_size, threshold=threshold, progress=not as_json)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(format_table(result))


# --- refine (issue 4) ---------------------------------------------------------------------------

from .refine import STRATEGIES as REFINE_STRATEGIES  # noqa: E402  (imports no torch)


@main.command()
@click.option("--model", "models", multiple=True, required=True, type=click.Path(),
              help="Starting checkpoint; repeat for an ensemble (threshold) - the teacher for uncertainty.")
@click.option("--source", type=click.Path(file_okay=False), required=True, help="Labelled patch folder (img/, mask/).")
@click.option("--target", type=click.Path(file_okay=False), required=True,
              help="Target patch folder (e.g. from lsmap tile); masks there are used only to report F1.")
@click.option("--val", type=click.Path(file_okay=False), default=None,
              help="Labelled folder to choose each round's best checkpoint on [default: the last checkpoint].")
@click.option("--strategy", type=click.Choice(list(REFINE_STRATEGIES)), default="threshold", show_default=True,
              help="threshold: 1st-place progressive label refinement; uncertainty: 3rd-place MC-dropout teacher-student.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Self-training rounds.")
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True, help="Training steps per round and model.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per step and stream [default: the model card's].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: the model card's].")
@click.option("--pos-thresh", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="threshold: probability at or above which a target pixel becomes landslide.")
@click.option("--neg-thresh", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="threshold: probability at or below which a target pixel becomes background.")
@click.option("--keep-bg", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="uncertainty: fraction of predicted-background pixels kept (lowest variance first).")
@click.option("--keep-ls", type=click.FloatRange(0, 1, min_open=True), default=0.7, show_default=True,
              help="uncertainty: fraction of predicted-landslide pixels kept (lowest variance first).")
@click.option("--mc-passes", type=click.IntRange(2), default=10, show_default=True, help="uncertainty: MC-dropout passes.")
@click.option("--mc-p", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="uncertainty: dropout probability on the first feature map.")
@click.option("--mixup-alpha", type=click.FloatRange(0), default=None,
              help="Mix-up Beta(a, a) on both streams [default: 0 (off) for threshold, 0.4 for uncertainty].")
@click.option("--crf", is_flag=True, help="Sharpen the teacher's probabilities with a dense CRF (needs lsmap[crf]).")
@bands_opt
@device_opt
@seed_opt
@click.option("--resume", is_flag=True, help="Continue the run in OUT after its last finished round.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True, help="Run folder.")
@overwrite_opt
@json_opt
@handle_errors
def refine(models, source, target, val, strategy, rounds, steps, batch_size, lr, pos_thresh, neg_thresh, keep_bg,
           keep_ls, mc_passes, mc_p, mixup_alpha, crf, bands, device, seed, resume, out_dir, overwrite, as_json):
    """Self-train MODEL(s) on an unlabelled target patch folder for N rounds.

    Each round labels the target with the current models (normalised with the target's own
    statistics), trains on source labels plus the pseudo labels, and writes OUT/round_<i>/
    (pseudo labels, confidence/uncertainty maps, selection.json, models/, summary.json).
    --resume continues after the last finished round; a partial round is redone.

    \b
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches -o runs/refine
    $ lsmap refine --model runs/a/best --model runs/b/best --source l4s/train --target l4s/test \\
        --rounds 3 --steps 2000 --pos-thresh 0.7 --neg-thresh 0.3 -o runs/refine
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches \\
        --strategy uncertainty --keep-bg 0.9 --keep-ls 0.7 --mc-passes 10 --mc-p 0.3 -o runs/teacher
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches -o runs/refine --resume
    """
    from .refine import RefineConfig
    from .refine import refine as run_refine

    config = RefineConfig(
        strategy=strategy, rounds=rounds, steps=steps, batch_size=batch_size, lr=lr, pos_thresh=pos_thresh,
        neg_thresh=neg_thresh, keep_bg=keep_bg, keep_ls=keep_ls, mc_passes=mc_passes, mc_p=mc_p,
        mixup_alpha=mixup_alpha, crf=crf, bands=bands, device=device, seed=seed,
    )
    result = run_refine(list(models), source, target, out_dir, config, val=val, resume=resume, overwrite=overwrite,
                        progress=not as_json)
    if as_json:
        echo_json(result.to_dict())
        return
    if result.resumed_after:
        click.echo(f"resumed after round {result.resumed_after}")
    for r in result.rounds:
        kept = r["kept"]
        line = (f"round {r['round']}: kept {kept['background']} background / {kept['landslide']} landslide of "
                f"{r['pixels']} pixels, mean confidence {r['mean_confidence']:.3f}")
        if r.get("target_f1_before") is not None:
            line += f", target F1 {r['target_f1_before']:.4f} -> {r['target_f1_after']:.4f}"
        click.echo(line)
    click.echo("models: " + " ".join(result.models))



# --- detect (issue 5) ---------------------------------------------------------------------------


# --- info (issue 6) -----------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
