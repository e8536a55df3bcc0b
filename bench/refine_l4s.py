"""Benchmark: self-training refinement on real Landslide4Sense patches (both strategies, per-round F1).

Holds out some labelled L4S patches of ``../shared/data/l4s/train`` as the "target" (their labels
are hidden from training and used only to score), trains a source model on the rest, then runs
``lsmap refine`` on a target folder made of the held-out patches plus the unlabelled L4S patches
(``l4s/test/img`` and ``l4s/unknown_split/img``), for each strategy, and prints the target F1
before and after every round.

The target folder is assembled in a temporary directory with unique names (the unknown split has
``4.h5`` and ``image_4.h5``, which map to the same patch id), symlinking the images; unlabelled
patches get an all-ignored mask (255) so that labelled and unlabelled patches share one folder.
Nothing from the data is written into the repository.

Run (about 15 minutes on 2 CPU cores with the defaults):

    $ PYTHONPATH=. python bench/refine_l4s.py
    $ PYTHONPATH=. python bench/refine_l4s.py --holdout 5 --steps 300 --round-steps 60 --rounds 3

Exits with a message (status 0) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("LSMAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "l4s"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)


def build_folders(root: Path, holdout: int, seed: int) -> dict:
    """Source (labelled), source-val and target folders under ``root``; returns their paths and ids."""
    import h5py

    from lsmap.core.constants import IGNORE_INDEX
    from lsmap.io.patches import find_patches, read_image

    labelled = find_patches(DATA / "train", require_masks=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    held = sorted((labelled[i] for i in order[:holdout]), key=lambda p: int(p.id))
    rest = [labelled[i] for i in order[holdout:]]
    for p in rest:
        _link(p.image, root / "source" / "img" / p.image.name)
        _link(p.mask, root / "source" / "mask" / p.mask.name)
    for p in held:
        _link(p.image, root / "target" / "img" / f"image_h{p.id}.h5")
        _link(p.mask, root / "target" / "mask" / f"mask_h{p.id}.h5")
    unlabelled = [("t", f) for f in sorted((DATA / "test" / "img").glob("*.h5"))]
    unlabelled += [("u", f) for f in sorted((DATA / "unknown_split" / "img").glob("*.h5"))]
    for prefix, f in unlabelled:
        pid = f"{prefix}{f.stem}"
        _link(f, root / "target" / "img" / f"image_{pid}.h5")
        image, _ = read_image(f)
        with h5py.File(root / "target" / "mask" / f"mask_{pid}.h5", "w") as h:
            h.create_dataset("mask", data=np.full(image.shape[1:], IGNORE_INDEX, np.uint8))
    return {"source": root / "source", "target": root / "target", "held": [p.id for p in held],
            "source_ids": [p.id for p in rest], "unlabelled": len(unlabelled)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holdout", type=int, default=5, help="labelled patches held out as the target")
    ap.add_argument("--model", default="tiny-unet")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=300, help="source training steps")
    ap.add_argument("--round-steps", type=int, default=60, help="training steps per refinement round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--strategies", default="threshold,uncertainty")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--source-model", type=Path, default=None,
                    help="reuse this source checkpoint (trained by an earlier run with the same --holdout/--seed)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if not (DATA / "train").is_dir():
        print(f"skipped: real data not available at {DATA}")
        return 0

    from lsmap.learn.refine.rounds import RefineConfig, refine
    from lsmap.learn.train import TrainConfig, train

    warnings.filterwarnings("ignore", category=UserWarning)
    tmp = tempfile.TemporaryDirectory(prefix="lsmap_refine_bench_")
    root = args.out or Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    folders = build_folders(root / "data", args.holdout, args.seed)
    print(f"source: {len(folders['source_ids'])} labelled patches; target: held-out {folders['held']} "
          f"(labels used only to score) + {folders['unlabelled']} unlabelled patches")

    t0 = time.monotonic()
    config = TrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size, scale=args.scale,
                         val_every=max(1, args.steps // 4), seed=args.seed, device=args.device, loss="lovasz+ohem")
    if args.source_model is not None:
        source_path = args.source_model
        print(f"source model: {source_path} (reused)")
    else:
        # 10 labelled patches leave none for a separate validation split: the checkpoint is chosen on the source.
        source = train(root / "source_model", train_dir=folders["source"], val_dir=folders["source"], config=config,
                       progress=False)
        source_path = source.best_path
        print(f"source model: {args.model}, {args.steps} steps, {time.monotonic() - t0:.0f} s -> {source_path}")

    results = {}
    for strategy in args.strategies.split(","):
        t1 = time.monotonic()
        rc = RefineConfig(strategy=strategy, rounds=args.rounds, steps=args.round_steps, batch_size=args.batch_size,
                          device=args.device, seed=args.seed)
        res = refine([source_path], folders["source"], folders["target"], root / f"refine_{strategy}", rc,
                     overwrite=True, progress=False)
        rows = [(r["round"], r["target_f1_before"], r["target_f1_after"], r["kept"]["landslide"], r["kept"]["background"])
                for r in res.rounds]
        results[strategy] = rows
        print(f"\n{strategy} ({time.monotonic() - t1:.0f} s): target F1 (held-out labelled patches)")
        print("round  F1 before  F1 after  kept landslide px  kept background px")
        for i, b, a, ls, bg in rows:
            print(f"{i:>5}  {b:9.4f}  {a:8.4f}  {ls:>17}  {bg:>18}")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    print(json.dumps({"held_out": folders["held"], "rounds": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
