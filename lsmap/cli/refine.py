"""lsmap refine: self-training rounds on an unlabelled target region."""

from __future__ import annotations

import click

from lsmap.cli.options import (
    bands_option,
    device_opt,
    echo_json,
    handle_errors,
    json_opt,
    overwrite_opt,
    progress_default,
    seed_opt,
)
from lsmap.learn.refine import STRATEGIES as REFINE_STRATEGIES


@click.command("refine")
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
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True,
              help="Training steps per round and model.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Images per step and stream [default: the model card's].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: the model card's].")
@click.option("--pos-thresh", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="threshold: probability at or above which a target pixel becomes landslide.")
@click.option("--neg-thresh", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="threshold: probability at or below which a target pixel becomes background.")
@click.option("--keep-bg", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="uncertainty: fraction of predicted-background pixels kept (lowest variance first).")
@click.option("--keep-ls", type=click.FloatRange(0, 1, min_open=True), default=0.7, show_default=True,
              help="uncertainty: fraction of predicted-landslide pixels kept (lowest variance first).")
@click.option("--mc-passes", type=click.IntRange(2), default=10, show_default=True,
              help="uncertainty: MC-dropout passes.")
@click.option("--mc-p", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="uncertainty: dropout probability on the first feature map.")
@click.option("--mixup-alpha", type=click.FloatRange(0), default=None,
              help="Mix-up Beta(a, a) on both streams [default: 0 (off) for threshold, 0.4 for uncertainty].")
@click.option("--crf", is_flag=True, help="Sharpen the teacher's probabilities with a dense CRF (needs lsmap[crf]).")
@bands_option(None, "Band set to take from source and target [default: the first model card's].")
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
    $ lsmap refine --model default --source sample_data/patches --target sample_data/patches --steps 5 \\
        --rounds 1 -o out/refine --overwrite
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches -o runs/refine
    $ lsmap refine --model runs/a/best --model runs/b/best --source l4s/train --target l4s/test \\
        --rounds 3 --steps 2000 --pos-thresh 0.7 --neg-thresh 0.3 -o runs/refine
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches \\
        --strategy uncertainty --keep-bg 0.9 --keep-ls 0.7 --mc-passes 10 --mc-p 0.3 -o runs/teacher
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches -o runs/refine --resume
    """
    from lsmap.learn.refine.rounds import RefineConfig
    from lsmap.learn.refine.rounds import refine as run_refine

    config = RefineConfig(
        strategy=strategy, rounds=rounds, steps=steps, batch_size=batch_size, lr=lr, pos_thresh=pos_thresh,
        neg_thresh=neg_thresh, keep_bg=keep_bg, keep_ls=keep_ls, mc_passes=mc_passes, mc_p=mc_p,
        mixup_alpha=mixup_alpha, crf=crf, bands=bands, device=device, seed=seed,
    )
    result = run_refine(list(models), source, target, out_dir, config, val=val, resume=resume, overwrite=overwrite,
                        progress=progress_default(as_json))
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
