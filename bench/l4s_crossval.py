"""Cross-validation on the 15 real labelled L4S patches: the recipe vs a plain baseline.

The 15 patches of ``../shared/data/l4s/train`` are split into k folds (5 folds of 3 by default,
shuffled by ``--seed``). For each fold a model is trained on the other patches and scored on the
held-out fold at the *last* step (a fixed number of steps: no checkpoint is chosen on the held-out
patches, so the scores are not biased by selection). Two configurations, same model, steps,
batch, learning rate and seed:

- recipe: separated normalisation (held-out patches normalised by their own statistics),
  flips/rotations/spectral colour perturbation, Lovasz + OHEM loss;
- baseline: plain cross entropy, one global normalisation (training statistics for both), no
  augmentation.

Stronger recipes, scored under the same folds: ``--scale 2.5`` (scale promotion), ``--second-model
ARCH`` (a second architecture trained with the same recipe; the fold is scored on the averaged
ensemble of both), ``--refine-rounds N`` (each fold's model(s) then refined for N rounds of
threshold self-training on the 19 unlabelled L4S patches, ``--refine-steps`` steps a round, the
last checkpoint kept: no held-out label is seen). ``--json FILE`` appends the result as one line.

``--configs`` adds ablations (the baseline plus one part of the recipe). ``--bands SET`` (repeat it)
trains on band sets taken by name from the 14-band patches, e.g. to measure what dropping B10 or
terrain costs; every configuration runs on every band set. Scores are the
landslide-class pixel F1 per fold and summed over all folds (TP/FP/FN summed over
the 15 held-out patches, the benchmark's way). Scale promotion is off by default (``--scale 1``)
to keep the run within about 15 minutes on a 2-core CPU.

    $ PYTHONPATH=. python bench/l4s_crossval.py
    $ PYTHONPATH=. python bench/l4s_crossval.py --model unet-resnet18 --steps 300 --scale 2.5
    $ PYTHONPATH=. python bench/l4s_crossval.py --configs baseline,base+separated,base+augment,base+lovasz+ohem
    $ PYTHONPATH=. python bench/l4s_crossval.py --configs recipe --bands l4s14 --bands l2a-terrain --bands l2a
    $ PYTHONPATH=. python bench/l4s_crossval.py --configs recipe --second-model unet-resnet18 --refine-rounds 2

Exits cleanly (status 0, a message) when the shared data is absent. Writes only to a temporary
folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "data" / "l4s" / "train",
              Path("/work/shared/data/l4s/train")]
#: Folders of unlabelled L4S patches beside ``train`` (the refinement target).
UNLABELLED = ("test", "unknown_split")


#: Configurations: the recipe, the baseline, and the baseline with one part of the recipe added.
VARIANTS = {
    "recipe": dict(loss="lovasz+ohem", norm="separated", augment=True),
    # the recipe with one global normalisation (the held-out patches take the training statistics)
    "recipe-global": dict(loss="lovasz+ohem", norm="global", augment=True),
    "baseline": dict(loss="ce", norm="global", augment=False),
    "base+separated": dict(loss="ce", norm="separated", augment=False),
    "base+augment": dict(loss="ce", norm="global", augment=True),
    "base+lovasz+ohem": dict(loss="lovasz+ohem", norm="global", augment=False),
}


def _fold_dir(root: Path, patches) -> Path:
    """A plain patch folder of symlinks to ``patches``."""
    for p in patches:
        for src, sub in ((p.image, "img"), (p.mask, "mask")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / src.name).symlink_to(src)
    return root


def _unlabelled_dir(root: Path, data: Path) -> Path:
    """A plain folder of the unlabelled patches beside ``data``, with unique ids (symlinks)."""
    (root / "img").mkdir(parents=True)
    for k, sub in enumerate(UNLABELLED):
        for src in sorted((data.parent / sub / "img").glob("*.h5")):
            (root / "img" / f"image_u{k}_{src.stem}.h5").symlink_to(src)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="labelled L4S patch folder (default: shared data)")
    ap.add_argument("--model", default="tiny-unet")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--configs", default="recipe,baseline",
                    help=f"comma-separated variants to compare: {', '.join(VARIANTS)}")
    ap.add_argument("--bands", action="append", default=None,
                    help="band set (profile or comma list of band names); repeat to compare several [default: l4s14]")
    ap.add_argument("--second-model", default=None, help="also train this architecture; score the ensemble of both")
    ap.add_argument("--refine-rounds", type=int, default=0, help="threshold self-training rounds on the unlabelled patches")
    ap.add_argument("--refine-steps", type=int, default=100, help="training steps per refinement round")
    ap.add_argument("--json", type=Path, default=None, help="append the summed scores as one JSON line to this file")
    args = ap.parse_args()

    unknown = set(args.configs.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown --configs {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    data = args.data or next((c for c in CANDIDATES if c.exists()), None)
    if data is None or not data.exists():
        print("l4s_crossval: shared L4S data not found; nothing to do")
        return 0

    from lsmap.core.bands import get_profile
    from lsmap.core.metrics import Confusion
    from lsmap.data.dataset import Augment, PatchDataset
    from lsmap.data.stats import patch_stats
    from lsmap.io.patches import find_patches
    from lsmap.learn.evaluate import evaluate
    from lsmap.learn.models import ModelCard
    from lsmap.learn.refine.rounds import RefineConfig, refine
    from lsmap.learn.train import Source, TrainConfig, fit

    patches = find_patches(data, require_masks=True)
    order = np.random.default_rng(args.seed).permutation(len(patches))
    folds = [sorted(order[k::args.folds].tolist()) for k in range(args.folds)]
    profiles = [get_profile(b) for b in (args.bands or ["l4s14"])]
    # one column per (configuration, band set); named by the configuration alone for one band set
    configs = {(name if len(profiles) == 1 else f"{name}/{p.name}"): (VARIANTS[name], p)
               for name in args.configs.split(",") for p in profiles}
    print(f"data {data} ({len(patches)} patches), {args.folds} folds, model {args.model}, steps {args.steps}, "
          f"batch {args.batch_size}, lr {args.lr:g}, scale {args.scale:g}, seed {args.seed}, "
          f"band sets {'; '.join(f'{p.name} ({p.count})' for p in profiles)}, second model {args.second_model}, "
          f"refine rounds {args.refine_rounds} x {args.refine_steps} steps")
    print("command: PYTHONPATH=. python " + " ".join(sys.argv))
    tmp = Path(tempfile.mkdtemp(prefix="lsmap-cv-"))
    totals = {name: Confusion() for name in configs}
    t0 = time.perf_counter()
    archs = [args.model] + ([args.second_model] if args.second_model else [])
    try:
        target = _unlabelled_dir(tmp / "unlabelled", data) if args.refine_rounds else None
        w = max(18, *(len(n) + 2 for n in configs))  # column width
        print(f"{'fold':>4}  {'held-out ids':<16}" + "".join(f"{n:>{w}}" for n in configs))
        for k, held in enumerate(folds):
            test_p = [patches[i] for i in held]
            train_p = [p for i, p in enumerate(patches) if i not in held]
            fold_dir = _fold_dir(tmp / f"fold{k}", test_p)
            f1s = []
            for name, (c, profile) in configs.items():
                src_stats = patch_stats(train_p, profile)
                run = tmp / f"run{k}-{name.replace('/', '_').replace(',', '+')}"
                members = []
                for arch in archs:
                    cfg = TrainConfig(model=arch, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                      scale=args.scale, seed=args.seed, device=args.device, val_every=args.steps,
                                      loss=c["loss"], norm=c["norm"], augment=c["augment"])
                    ds = PatchDataset(train_p, src_stats, profile, augment=Augment() if c["augment"] else None)
                    card = ModelCard(model=arch, bands=list(profile.bands), stats=src_stats.to_dict(),
                                     data=f"L4S train15 fold {k}")
                    result = fit([Source(ds, c["loss"])], None, cfg, run / arch, card=card, progress=False)
                    members.append(result.last_path)
                if args.refine_rounds:
                    train_dir = _fold_dir(run / "source", train_p)
                    rc = RefineConfig(strategy="threshold", rounds=args.refine_rounds, steps=args.refine_steps,
                                      device=args.device, seed=args.seed)
                    members = refine(members, train_dir, target, run / "refine", rc, progress=False).models
                ev = evaluate(members, fold_dir, norm="auto", device=args.device)
                p = ev.pixel
                totals[name] = totals[name] + Confusion(p["tp"], p["fp"], p["fn"], p["tn"])
                f1s.append(p["f1"])
            ids = ",".join(patches[i].id for i in held)
            print(f"{k:>4}  {ids:<16}" + "".join(f"{f:>{w}.4f}" for f in f1s), flush=True)
        print(f"{'sum':>4}  {'(all held out)':<16}" + "".join(f"{totals[n].f1:>{w}.4f}" for n in configs))
        for n, c in totals.items():
            print(f"{n}: precision {c.precision:.4f}, recall {c.recall:.4f}, F1 {c.f1:.4f}, IoU {c.iou:.4f} "
                  f"(TP {c.tp}, FP {c.fp}, FN {c.fn})")
        elapsed = time.perf_counter() - t0
        print(f"elapsed {elapsed:.0f} s")
        if args.json:
            with open(args.json, "a") as f:
                for n, c in totals.items():
                    f.write(json.dumps({"config": n, "model": "+".join(archs), "steps": args.steps, "scale": args.scale,
                                        "refine_rounds": args.refine_rounds, "refine_steps": args.refine_steps,
                                        "seed": args.seed, "f1": round(c.f1, 4), "precision": round(c.precision, 4),
                                        "recall": round(c.recall, 4), "tp": c.tp, "fp": c.fp, "fn": c.fn,
                                        "seconds": round(elapsed)}) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
