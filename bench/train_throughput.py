"""Throughput of the full training loop vs the bare model forward+backward on the same batches.

The full loop is :func:`lsmap.train.fit` on a patch folder on disk: data loading, augmentation,
normalisation, scale promotion, the loss, backward and the optimizer step, and its logging. The
bare loop runs only forward + backward (cross entropy) of the same model, with the same autocast
and memory format, on the same batches held in memory. Fixed costs (model build, first-step
warmup, checkpoint writing) are cancelled by timing two run lengths and taking the difference.

    $ PYTHONPATH=. python bench/train_throughput.py                  # tiny-unet, generated patches
    $ PYTHONPATH=. python bench/train_throughput.py --model unet-resnet18 --batch-size 8
    $ PYTHONPATH=. python bench/train_throughput.py --data ../shared/data/l4s/train

Prints images/s of both and their ratio (target >= 0.9).
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
    from lsmap.patches import write_patch

    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(1, 0.2, (14, size, size)).astype(np.float32)
        mask = (rng.random((size, size)) > 0.97).astype(np.uint8)
        write_patch(folder, str(i), img, mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-unet")
    ap.add_argument("--data", type=Path, help="labelled patch folder (default: 32 generated 128 x 128 patches)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="timed steps (after --warmup steps)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--loss", default="lovasz+ohem")
    args = ap.parse_args()

    from lsmap.bands import PROFILES
    from lsmap.dataset import Augment, PatchDataset, StepSampler, patch_stats
    from lsmap.device import use_channels_last
    from lsmap.models import ModelCard, build_model
    from lsmap.patches import find_patches
    from lsmap.train import Source, TrainConfig, fit, scaled_forward

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

        def full(steps: int) -> float:
            cfg = TrainConfig(model=args.model, steps=steps, batch_size=args.batch_size, scale=args.scale,
                              val_every=10**9, amp=amp, device="cpu", warmup=0)
            t = time.perf_counter()
            fit([Source(ds, args.loss)], None, cfg, tmp / "run", card=card, progress=False, overwrite=True)
            return time.perf_counter() - t

        # the same batches, in memory, for the bare loop
        it = iter(StepSampler(len(ds), args.batch_size, 0))
        n_batches = args.warmup + args.steps
        batches = []
        for _ in range(n_batches):
            items = [ds[next(it)] for _ in range(args.batch_size)]
            batches.append((torch.stack([b["image"] for b in items]), torch.stack([b["target"] for b in items])))
        module = build_model(args.model, 14).to(device).train()
        cl = use_channels_last(device, amp)
        if cl:
            module = module.to(memory_format=torch.channels_last)
        ce = torch.nn.CrossEntropyLoss(ignore_index=255)

        def bare(steps: int) -> float:
            t = time.perf_counter()
            for x, y in batches[:steps]:
                module.zero_grad(set_to_none=True)
                ce(scaled_forward(module, x, args.scale, amp, cl), y).backward()
            return time.perf_counter() - t

        results = {}
        for name, fn in (("bare forward+backward", bare), ("full training loop", full)):
            short, long = fn(args.warmup), fn(args.warmup + args.steps)
            results[name] = args.steps * args.batch_size / (long - short)
        b, f = results["bare forward+backward"], results["full training loop"]
        print(f"model {args.model}, batch {args.batch_size}, {patches[0].image.parent.parent.name} "
              f"({len(patches)} patches), scale {args.scale:g}, amp {amp}, loss {args.loss}, "
              f"{torch.get_num_threads()} threads, {args.steps} timed steps")
        print(f"bare forward+backward: {b:8.2f} images/s")
        print(f"full training loop:    {f:8.2f} images/s")
        print(f"ratio full / bare:     {f / b:8.3f}  (target >= 0.9)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
