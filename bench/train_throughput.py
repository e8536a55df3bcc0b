"""Throughput of the full training loop vs the bare model forward+backward on the same batches.

The full loop is :func:`lsmap.learn.train.fit` on a patch folder on disk: data loading, augmentation,
normalisation, scale promotion, the loss, backward, the optimizer step and the progress
bookkeeping; its speed is fit's own measure of the steps after ``--warmup`` (model build and
checkpoint writing are outside the timed steps). The bare loop runs only forward + loss +
backward of a fresh model of the same kind, with the same autocast and memory format, on the
same batches held in memory, timed after the same warmup; "bare + optimizer step" adds the
optimizer step fit uses, to show its share. They alternate ``--repeats`` times; the median and the
best (least disturbed) repeat are compared, since on a shared machine other processes slow some
runs down.

    $ PYTHONPATH=. python bench/train_throughput.py                  # tiny-unet, generated patches
    $ PYTHONPATH=. python bench/train_throughput.py --model unet-resnet18 --batch-size 8
    $ PYTHONPATH=. python bench/train_throughput.py --data ../shared/data/l4s/train

Prints images/s of both and their ratios (target >= 0.9).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _make_patches(folder: Path, n: int, size: int) -> None:
    from lsmap.io.patches import write_patch

    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(1, 0.2, (14, size, size)).astype(np.float32)
        mask = (rng.random((size, size)) > 0.97).astype(np.uint8)
        write_patch(folder, str(i), img, mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-unet")
    ap.add_argument("--data", type=Path, help="labelled patch folder (default: 32 generated 128 x 128 patches)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per step (default: lsmap train's default, the winners' 16)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps (after --warmup steps)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--loss", default="lovasz+ohem", help="loss of both loops")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians are reported")
    args = ap.parse_args()

    from lsmap.core.bands import PROFILES
    from lsmap.data.dataset import Augment, PatchDataset, StepSampler
    from lsmap.data.stats import patch_stats
    from lsmap.io.patches import find_patches
    from lsmap.learn.device import use_channels_last
    from lsmap.learn.losses import build_loss
    from lsmap.learn.models import ModelCard, build_model
    from lsmap.learn.train import Source, TrainConfig, _optimizer, fit, scaled_forward

    if args.batch_size is None:
        args.batch_size = TrainConfig().batch_size

    tmp = Path(tempfile.mkdtemp(prefix="lsmap-bench-"))
    try:
        data = args.data
        if data is None:
            data = tmp / "patches"
            _make_patches(data, 32, 128)
        patches = find_patches(data, require_masks=True)
        stats = patch_stats(patches)
        ds = PatchDataset(patches, stats, "l4s14", augment=Augment(), cache=True)
        card = ModelCard(model="", bands=PROFILES["l4s14"].to_dict(), stats=stats.to_dict())
        amp = not args.no_amp
        device = torch.device("cpu")
        torch.manual_seed(0)

        def full() -> float:
            """Images/s of fit over the steps after the warmup, as fit itself measures them."""
            cfg = TrainConfig(model=args.model, steps=args.warmup + args.steps, batch_size=args.batch_size,
                              scale=args.scale, val_every=args.warmup, amp=amp, device="cpu", warmup=0)
            result = fit([Source(ds, args.loss)], None, cfg, tmp / "run", card=card, progress=False, overwrite=True)
            return result.history[-1]["images_per_s"]

        # the same batches, in memory, for the bare loops
        it = iter(StepSampler(len(ds), args.batch_size, 0))
        batches = []
        for _ in range(args.warmup + args.steps):
            items = [ds[next(it)] for _ in range(args.batch_size)]
            batches.append((torch.stack([b["image"] for b in items]), torch.stack([b["target"] for b in items])))
        cl = use_channels_last(device, amp)
        loss_fn = build_loss(args.loss)

        def bare(step: bool = False) -> float:
            """Images/s of forward + loss + backward (+ the optimizer step) of a fresh model."""
            torch.manual_seed(0)
            module = build_model(args.model, 14).to(device).train()
            if cl:
                module = module.to(memory_format=torch.channels_last)
            opt = _optimizer(module, TrainConfig()) if step else None
            t = 0.0
            for k, (x, y) in enumerate(batches):
                if k == args.warmup:
                    t = time.perf_counter()
                module.zero_grad(set_to_none=True)
                loss_fn(scaled_forward(module, x, args.scale, amp, cl), y).backward()
                if opt is not None:
                    opt.step()
            return args.steps * args.batch_size / (time.perf_counter() - t)

        names = ("bare forward+backward", "bare + optimizer step", "full training loop")
        runs: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.repeats):  # alternate, so that load changes on a shared machine hit all
            runs[names[0]].append(bare())
            runs[names[1]].append(bare(step=True))
            runs[names[2]].append(full())
        print(f"model {args.model}, batch {args.batch_size}, {patches[0].image.parent.parent.name} "
              f"({len(patches)} patches), scale {args.scale:g}, amp {amp}, loss {args.loss}, "
              f"{torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup}, "
              f"{args.repeats} repeats")
        print(f"{'images/s':24}{'median':>10}{'best':>10}   per repeat")
        for n in names:
            print(f"{n:24}{np.median(runs[n]):>10.2f}{max(runs[n]):>10.2f}   "
                  + ", ".join(f"{v:.2f}" for v in runs[n]))
        b, f = runs[names[0]], runs[names[2]]
        print(f"{'ratio full / bare':24}{np.median(f) / np.median(b):>10.3f}{max(f) / max(b):>10.3f}   (target >= 0.9)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
