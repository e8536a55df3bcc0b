"""Command-line interface: thin Click commands over the library.

Each command parses its options, calls one library function and renders the result. Library
errors (:class:`lsmap.errors.LsmapError`) become a one-line ``Error: ...`` message and exit code 1.
Shared options are defined once below so that a flag means the same in every command.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

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


def _progress(as_json: bool) -> bool:
    """Progress bars only on an interactive terminal, never with --json."""
    return not as_json and sys.stderr.isatty()


def echo_json(obj) -> None:
    """Print ``obj`` as indented JSON."""
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lsmap")
def main() -> None:
    """Map landslides from Sentinel-2 scenes (Landslide4Sense 2022 winners' methods)."""


# --- stack (issue 2) ----------------------------------------------------------------------------


@main.command("stack")
@click.argument("s2", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dem", type=click.Path(path_type=Path), help="DEM in metres (any CRS/resolution).")
@click.option(
    "--slope", type=click.Path(path_type=Path), help="Slope raster in degrees; computed from --dem when absent.",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output GeoTIFF.")
@bands_opt
@click.option("--block", type=int, default=1024, show_default=True, help="Block size in pixels (memory bound).")
@overwrite_opt
@json_opt
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar [default: on an interactive terminal, without --json].")
@handle_errors
def stack_cmd(s2, dem, slope, output, bands, block, overwrite, as_json, progress):
    """Stack Sentinel-2 band files, a DEM and slope on the 10 m grid, scaled like L4S.

    S2 is a folder of band files (searched recursively, .jp2 or .tif, bands recognised by
    name: ..._B04_10m.jp2, B4.tif, B8A.tif) or the band files themselves.

    \b
    $ lsmap stack S2_SAFE/GRANULE/L2A_T45QYF/IMG_DATA --dem dem.tif -o scene.tif
    $ lsmap stack B02.tif B03.tif B04.tif B08.tif --bands rgbn -o rgbn.tif
    $ lsmap stack bands/ --dem dem.tif --slope slope.tif -o scene.tif --overwrite --json
    """
    from .stack import stack_scene

    progress = _progress(as_json) if progress is None else progress
    result = stack_scene(
        list(s2), output, dem=dem, slope=slope, bands=bands, overwrite=overwrite, block=block, progress=progress,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.path}: {len(result.bands)} bands ({result.profile}), {result.width} x {result.height} px "
            f"at {result.resolution[0]:g} m, {result.crs}, {100 * result.valid_fraction:.1f} % valid"
        )



# --- tile (issue 2) -----------------------------------------------------------------------------


@main.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Patch folder to write."
)
@click.option("--size", type=int, default=128, show_default=True, help="Patch size in pixels.")
@click.option("--overlap", type=int, default=0, show_default=True, help="Pixels shared by neighbouring patches.")
@click.option(
    "--labels", type=click.Path(dir_okay=False), default=None, help="Label raster on the scene grid -> masks."
)
@click.option(
    "--label-map", default=None,
    help="Label value:mask value pairs, e.g. '0:255,1:0,2:1' (default: labels are 0/1 masks, 255 ignored).",
)
@click.option(
    "--min-valid", type=float, default=0.5, show_default=True,
    help="Skip patches with a smaller fraction of valid (non-nodata) pixels.",
)
@click.option("--raw", is_flag=True, help="Scene holds raw values: divide by the band profile's L4S divisors.")
@bands_opt
@overwrite_opt
@json_opt
@handle_errors
def tile(scene, out_dir, size, overlap, labels, label_map, min_valid, raw, bands, overwrite, as_json):
    """Cut a scene into Landslide4Sense-style patches plus an index GeoPackage.

    Writes OUT/img/image_N.h5 (and OUT/mask/mask_N.h5 with --labels), OUT/index.gpkg (each
    patch's pixel window and footprint in the scene CRS) and OUT/tiles.json. Nodata pixels are
    written as 0.0 and masked 255.

    \b
    $ lsmap tile stack.tif -o patches/
    $ lsmap tile chittagong.tif -o patches/ --bands rgbn --raw \\
        --labels labels.tif --label-map 0:255,1:0,2:1
    $ lsmap tile stack.tif -o patches/ --size 128 --overlap 32 --min-valid 0.2 --overwrite
    """
    from .tile import tile_scene

    result = tile_scene(
        scene, out_dir, bands=bands, size=size, overlap=overlap, labels=labels, label_map=label_map,
        min_valid=min_valid, raw=raw, overwrite=overwrite, progress=_progress(as_json),
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.out_dir}: {result.n_patches} patches of {result.size} px "
            f"({result.n_skipped} of {result.n_windows} windows skipped, {result.n_padded} padded"
            f"{', with masks' if result.labelled else ''})"
        )


# --- stats (issue 2) ----------------------------------------------------------------------------


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="train", show_default=True,
              help="Split to read from a dataset root.")
@click.option("--valid-only", is_flag=True, help="Leave out nodata pixels (scene nodata; all-0.0 pixels in patches).")
@click.option("--raw", is_flag=True, help="Scene holds raw values: divide by the band profile's L4S divisors.")
@bands_opt
@overwrite_opt
@json_opt
@handle_errors
def stats(input_path, output, split, valid_only, raw, bands, overwrite, as_json):
    """Per-band mean and standard deviation of a patch folder or a scene, as JSON.

    \b
    $ lsmap stats data/TrainData -o train_stats.json
    $ lsmap stats patches/ -o scene_stats.json --bands rgbn --valid-only
    $ lsmap stats chittagong.tif -o stats.json --bands rgbn --raw --valid-only
    """
    from .io import check_output
    from .stats import compute_stats

    check_output(output, overwrite)
    result = compute_stats(input_path, bands, split=split, valid_only=valid_only, raw=raw, progress=_progress(as_json))
    result.save(output)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"{output}: mean/std of {len(result.mean)} bands over {result.count} pixels")


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
                       bands=bands, init=init, resume=resume, overwrite=overwrite, progress=_progress(as_json))
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
@click.option("--crf", is_flag=True, help="Sharpen each patch's probabilities with a dense CRF before thresholding (needs lsmap[crf]).")
@device_opt
@json_opt
@handle_errors
def evaluate(models, data, split, tta, stats, norm, threshold, batch_size, crf, device, as_json):
    """Score MODEL(s) on labelled patches: pixel P/R/F1/IoU summed over the split, object scores.

    Several models are averaged as an ensemble.

    \b
    $ lsmap evaluate runs/r18/best.safetensors --data L4S_ROOT
    $ lsmap evaluate runs/a/best runs/b/best --data patches/val --tta --json
    $ lsmap evaluate runs/r18/best --data scene_patches --stats scene_stats.json
    $ lsmap evaluate runs/r18/best --data L4S_ROOT --crf
    """
    from .evaluate import evaluate as run_evaluate
    from .evaluate import format_table

    result = run_evaluate(list(models), data, split=split, tta=tta, stats=stats, norm=norm, device=device,
                          batch_size=batch_size, threshold=threshold, crf=crf, progress=_progress(as_json))
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
                        progress=_progress(as_json))
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


@main.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Polygon output: .gpkg (default format), .geojson/.json or .shp; with several scenes "
                   "(or a glob or @list.txt) the output FOLDER.")
@click.option("--model", "models", multiple=True, type=click.Path(),
              help="Checkpoint (.safetensors/.json/stem); repeat for an ensemble (probabilities averaged).")
@click.option("--bands", type=click.Choice(list(PROFILES)), default=None,
              help="Band profile of the scene (default: the models' profile).")
@click.option("--dem", type=click.Path(exists=True, dir_okay=False), default=None,
              help="DEM: SCENE is then the Sentinel-2 folder of 'lsmap stack', stacked first.")
@click.option("--slope", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Slope raster for stacking (default: computed from --dem).")
@click.option("--tta", is_flag=True, help="Also average over horizontal/vertical flips.")
@click.option("--window", type=click.IntRange(16), default=128, show_default=True, help="Window size (pixels).")
@click.option("--overlap", type=click.IntRange(0), default=32, show_default=True,
              help="Overlap of neighbouring windows (pixels), blended with Hann ramps.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Windows per batch (default: sized for the device).")
@click.option("--norm", type=click.Choice(["scene", "model"]), default="scene", show_default=True,
              help="Normalise with the scene's own band statistics or the models' training statistics.")
@click.option("--stats", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Band statistics JSON (L4S scale) to normalise with instead of the scene's own.")
@click.option("--input-scale", type=click.Choice(["auto", "raw", "l4s"]), default="auto", show_default=True,
              help="Scene values: raw (DN, degrees, metres; divided by the profile's divisors), L4S-scaled, or auto.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Landslide probability threshold (default: the models' card thresholds, averaged).")
@click.option("--prob", type=click.Path(dir_okay=False), default=None,
              help="Also write probabilities as a uint8 COG: round(254 p), 255 = nodata.")
@click.option("--mask", type=click.Path(dir_okay=False), default=None,
              help="Also write the pixel mask as a uint8 COG: 1 landslide, 0 background, 255 nodata.")
@click.option("--quicklook", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: the scene in natural colour with the landslide outlines.")
@click.option("--uncertainty", is_flag=True,
              help="Add mean_unc: variance across models/flips (p(1-p) for a single pass).")
@click.option("--min-area", type=click.FloatRange(0), default=0.0, show_default=True, help="Drop polygons below this area (m2).")
@click.option("--simplify", type=click.FloatRange(0), default=0.0, show_default=True, help="Simplification tolerance (m).")
@click.option("--fill-holes", type=click.FloatRange(0), default=0.0, show_default=True, help="Fill holes below this area (m2).")
@click.option("--crf", is_flag=True,
              help="Sharpen each window's probabilities with a dense CRF before blending (needs lsmap[crf]).")
@click.option("--scheduler", default="local", show_default=True,
              help="Several scenes: 'local' (one after another here) or a Dask scheduler address "
                   "(tcp://host:8786; needs lsmap[cluster] and a filesystem the workers share).")
@click.option("--merged", default="event.gpkg", show_default=True,
              help="Several scenes: file name (in the output folder) of the merged event layer.")
@device_opt
@overwrite_opt
@json_opt
@handle_errors
def detect(scenes, out, models, bands, dem, slope, tta, window, overlap, batch_size, norm, stats, input_scale,
           threshold, prob, mask, quicklook, uncertainty, min_area, simplify, fill_holes, crf, scheduler, merged,
           device, overwrite, as_json):
    """Map the landslides of a scene: polygons with area and probability.

    SCENE is a stacked GeoTIFF (raw or L4S-scaled values; see --input-scale), or with --dem the
    Sentinel-2 folder that 'lsmap stack' takes. Nodata pixels never become landslides.

    \b
    $ lsmap detect scene.tif -o slides.gpkg --model unet.safetensors
    $ lsmap detect scene.tif -o slides.gpkg --model a.safetensors --model b.safetensors --tta \\
          --prob prob.tif --uncertainty --min-area 200 --simplify 5
    $ lsmap detect scene.tif -o slides.gpkg --model unet.safetensors --crf
    $ lsmap detect S2_folder/ --dem dem.tif -o slides.geojson --model unet.safetensors

    Several scenes (paths, a quoted glob, or @list.txt with one path per line): -o is a folder that
    gets one layer per scene plus the merged event layer; complete scenes are skipped on a re-run
    (--overwrite redoes them); the exit status is non-zero when a scene failed.

    \b
    $ lsmap detect scenes/*.tif -o event/ --model unet.safetensors
    $ lsmap detect @scenes.txt -o event/ --model unet.safetensors --scheduler tcp://head:8786
    """
    from .detection import detect as run_detect
    from .scenelist import is_scene_list

    if len(scenes) > 1 or is_scene_list(scenes[0]) or out.endswith(("/", "\\")) or os.path.isdir(out):
        for flag, value in (("--dem", dem), ("--slope", slope), ("--prob", prob), ("--mask", mask),
                            ("--quicklook", quicklook)):
            if value is not None:
                raise click.BadParameter(f"{flag} works with one scene; with several, run 'lsmap detect' per "
                                         f"scene or call lsmap.detect_many(..., prob=True, mask=True)",
                                         param_hint=flag)
        _detect_many(scenes, out, models, scheduler, merged, overwrite, as_json, bands=bands, tta=tta,
                     overlap=overlap, window=window, batch_size=batch_size, norm=norm, stats=stats,
                     input_scale=input_scale, threshold=threshold, uncertainty=uncertainty, min_area=min_area,
                     simplify=simplify, fill_holes=fill_holes, device=device,
                     **({"crf": True} if crf else {}))  # absent when off: completion markers of earlier runs stay valid
        return
    scene = scenes[0]

    if slope is not None and dem is None:
        raise click.BadParameter("--slope needs --dem (SCENE is then the Sentinel-2 folder)", param_hint="--slope")
    source = scene if dem is None else {"s2": scene, "dem": dem, **({"slope": slope} if slope else {})}
    gdf = run_detect(source, list(models) or None, out=out, bands=bands, tta=tta, overlap=overlap, window=window,
                     batch_size=batch_size, norm=norm, stats=stats, input_scale=input_scale, threshold=threshold,
                     prob=prob, mask=mask, quicklook=quicklook, uncertainty=uncertainty, min_area=min_area, simplify=simplify,
                     fill_holes=fill_holes, crf=crf, device=device, overwrite=overwrite, progress=_progress(as_json))
    summary = gdf.attrs["lsmap"]
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['polygons']} landslide polygons, {summary['landslide_area_m2'] / 1e6:.4f} km2 "
               f"(threshold {summary['threshold']:.2f}) -> {out}")
    click.echo(f"{summary['scene_km2']:.2f} km2 in {summary['seconds']:.1f} s ({summary['km2_per_s']:.2f} km2/s), "
               f"{summary['windows']} windows on {summary['device']}, input {summary['input_scale']}, "
               f"norm {summary['norm']}")



def _detect_many(scenes, out, models, scheduler, merged, overwrite, as_json, **kwargs) -> None:
    """Several scenes: run :func:`lsmap.regional.detect_many` and render its result."""
    from .regional import detect_many

    res = detect_many(list(scenes), list(models) or None, out, scheduler=scheduler, merged=merged,
                      overwrite=overwrite, progress=_progress(as_json), **kwargs)
    if as_json:
        echo_json(res.to_dict())
    else:
        done = len(res.outputs) - len(res.skipped)
        click.echo(f"{len(res.scenes)} scenes: {done} done, {len(res.skipped)} already complete (skipped), "
                   f"{len(res.failures)} failed")
        if res.merged is not None:
            area = float(res.gdf["area_m2"].sum()) if len(res.gdf) else 0.0
            click.echo(f"{len(res.gdf)} landslide polygons, {area / 1e6:.4f} km2 ({res.crs}) -> {res.merged}")
    for scene, message in res.failures.items():
        click.echo(f"failed: {message}", err=True)
    if res.failures:
        raise click.ClickException(f"{len(res.failures)} of {len(res.scenes)} scenes failed: "
                                   + ", ".join(os.path.basename(s) for s in res.failures))


# --- info (issue 6) -----------------------------------------------------------------------------


@main.command()
@click.argument("model", required=False)
@json_opt
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Print a model's card (the default model when MODEL is omitted).

    \b
    $ lsmap info
    $ lsmap info runs/train/best.safetensors --json
    """
    from .models import default_model_path, describe_card, read_card

    card = read_card(model or default_model_path())
    if as_json:
        echo_json(card.to_dict())
        return
    rows = describe_card(card)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
