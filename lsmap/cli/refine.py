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
from lsmap.core.norms import norm_choices, norm_mode
from lsmap.learn.refine import STRATEGIES as REFINE_STRATEGIES


@click.command("refine")
@click.option("--model", "models", multiple=True, required=True, type=click.Path(),
              help="Starting checkpoint; repeat for an ensemble (threshold) - the teacher for uncertainty.")
@click.option("--source", type=click.Path(file_okay=False), required=True, help="Labelled patch folder (img/, mask/).")
@click.option("--target", type=click.Path(file_okay=False), required=True,
              help="Target patch folder (e.g. from lsmap tile); masks there, for all patches or a few, are used only to "
                   "report F1.")
@click.option("--val", type=click.Path(file_okay=False), default=None,
              help="Labelled folder (or a dataset root's validation split) to choose each round's best checkpoint "
                   "on [default: as --select says].")
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
@click.option("--norm", type=click.Choice(norm_choices(auto=True)), default="auto", show_default=True,
              help="Target normalisation: own statistics, the source's (model), or auto: the one under which the "
                   "models predict a landslide share closest to the source labels' (recorded in summary and card).")
@click.option("--teacher", type=click.Choice(["fixed", "previous"]), default="fixed", show_default=True,
              help="uncertainty: the given models label every round (fixed, 3rd place) or the previous student.")
@click.option("--select", "select", type=click.Choice(["source", "last"]), default="source", show_default=True,
              help="Checkpoint of each round without --val: best F1 on the labelled source, or the last one.")
@click.option("--guard/--no-guard", default=True, show_default=True,
              help="Stop and keep the previous models when the pseudo labels' landslide share collapses "
                   "(below 0.01 x the source labels') or keeps growing (above 1.5 x what the given models "
                   "predict, the source's share and round 1's).")
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
           keep_ls, mc_passes, mc_p, mixup_alpha, norm, teacher, select, guard, crf, bands, device, seed, resume, out_dir, overwrite, as_json):
    """Self-train MODEL(s) on an unlabelled target patch folder for N rounds.

    Each round labels the target with the current models (normalised with the target's own
    statistics or the source's, --norm), trains on source labels plus the pseudo labels, and writes
    OUT/round_<i>/ (pseudo labels, confidence/uncertainty maps, selection.json, models/,
    summary.json). Degenerate pseudo labels stop the run (--guard), and a round that scores below
    the given models on a label-free proxy (F1 on the source, target confidence, landslide share)
    prints a warning.
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
    $ lsmap refine --model runs/r18/best --source l4s/train --target scene_patches --norm model \\
        --select source -o runs/refine
    """
    from lsmap.learn.refine.rounds import RefineConfig
    from lsmap.learn.refine.rounds import refine as run_refine

    ctx = click.get_current_context()
    other = {"threshold": ("keep_bg", "keep_ls", "mc_passes", "mc_p", "teacher"),
             "uncertainty": ("pos_thresh", "neg_thresh")}
    for name in other[strategy]:  # a setting of the other strategy did nothing without a word (the CLI audit)
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            flag = "--" + name.replace("_", "-")
            raise click.BadParameter(f"{flag} belongs to the other strategy; --strategy {strategy} does not use it: "
                                     f"drop it or choose the other --strategy", param_hint=flag)

    config = RefineConfig(
        strategy=strategy, rounds=rounds, steps=steps, batch_size=batch_size, lr=lr, pos_thresh=pos_thresh,
        neg_thresh=neg_thresh, keep_bg=keep_bg, keep_ls=keep_ls, mc_passes=mc_passes, mc_p=mc_p,
        mixup_alpha=mixup_alpha, crf=crf, bands=bands, device=device, seed=seed, norm=norm_mode(norm, auto=True), teacher=teacher,
        select=select, guard=guard,
    )
    result = run_refine(list(models), source, target, out_dir, config, val=val, resume=resume, overwrite=overwrite,
                        progress=progress_default(as_json))
    if as_json:
        echo_json(result.to_dict())
        return
    if result.resumed_after:
        click.echo(f"resumed after round {result.resumed_after}")
    if result.rounds and "norm" in result.rounds[-1]:
        n = result.rounds[-1]["norm"]
        how = "forced by --norm" if n["mode"] != "auto" else (
            f"auto: predicted landslide share {n['share']['own']:.4f} (own) / {n['share']['model']:.4f} (model), "
            f"source {n['prior']:.4f}")
        click.echo(f"target normalisation: {n['chosen']} ({how}); detect's --norm auto follows it")
    for r in result.rounds:
        kept = r["kept"]
        line = (f"round {r['round']}: kept {kept['background']} background / {kept['landslide']} landslide of "
                f"{r['pixels']} pixels, mean confidence {r['mean_confidence']:.3f}")
        if r.get("target_f1_before") is not None:
            line += f", target F1 {r['target_f1_before']:.4f} -> {r['target_f1_after']:.4f}"
        click.echo(line + (" (stopped: models kept)" if r.get("stopped") else ""))
    click.echo("models: " + " ".join(result.models))
