"""lsmap evaluate: the benchmark metric for one model or an ensemble."""

from __future__ import annotations

import click

from lsmap.cli.options import (
    bands_option,
    device_opt,
    echo_json,
    handle_errors,
    json_opt,
    label_map_opt,
    progress_default,
)
from lsmap.core.constants import SPLITS
from lsmap.core.norms import norm_choices


@click.command("evaluate")
@click.argument("models", nargs=-1, type=click.Path())
@click.option("--data", type=click.Path(file_okay=False), required=True, help="Labelled patch folder or dataset root.")
@click.option("--split", type=click.Choice(SPLITS), default="validation", show_default=True,
              help="Split to read from a dataset root.")
@click.option("--tta", is_flag=True, help="Average over flips (test-time augmentation).")
@click.option("--stats", type=click.Path(dir_okay=False, exists=True),
              help="Normalisation statistics of the data (from lsmap stats).")
@click.option("--norm", type=click.Choice(norm_choices(auto=True)), default="auto", show_default=True,
              help="own: the data's own statistics; model: the training statistics; auto: what each model was trained with.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Probability threshold [default: the models' cards].")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="Patches per forward pass.")
@click.option("--crf", is_flag=True,
              help="Sharpen each patch's probabilities with a dense CRF before thresholding (needs lsmap[crf]).")
@click.option("--unseen", is_flag=True,
              help="Score only the patches the models were not trained on (their cards record which, by folder "
                   "and id and by image content, so copies count too): on the folder a model was trained from, the "
                   "patches its training held out.")
@click.option("--no-landslides-ok", "allow_no_landslides", is_flag=True,
              help="Score masks without any landslide pixel: false alarms on stable ground (refused otherwise, "
                   "since a 0/255 export read without --label-map looks the same).")
@bands_option(None, "Band set the models take from the patches [default: the first model card's].")
@device_opt
@label_map_opt
@json_opt
@handle_errors
def evaluate(models, data, split, tta, stats, norm, threshold, batch_size, crf, unseen, allow_no_landslides, bands,
             device, label_map, as_json):
    """Score MODEL(s) on labelled patches: pixel P/R/F1/IoU summed over the split, object scores.

    Several models are averaged as an ensemble; without MODEL the default model is scored. A
    MODEL is a checkpoint or a shipped model's name (see 'lsmap info').

    \b
    $ lsmap evaluate default --data sample_data/patches
    $ lsmap evaluate runs/r18/best.safetensors --data L4S_ROOT
    $ lsmap evaluate runs/r18/best --data own_patches --unseen
    $ lsmap evaluate runs/a/best runs/b/best --data patches/val --tta --json
    $ lsmap evaluate runs/r18/best --data scene_patches --stats scene_stats.json
    $ lsmap evaluate runs/r18/best --data L4S_ROOT --crf
    """
    from lsmap.learn.evaluate import evaluate as run_evaluate
    from lsmap.learn.evaluate import format_table

    if not models:
        from lsmap.learn.models import default_model_path

        models = (str(default_model_path()),)
    result = run_evaluate(list(models), data, split=split, tta=tta, stats=stats, norm=norm, device=device,
                          batch_size=batch_size, threshold=threshold, crf=crf, bands=bands,
                          progress=progress_default(as_json), label_map=label_map, unseen=unseen,
                          allow_no_landslides=allow_no_landslides)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(format_table(result))
