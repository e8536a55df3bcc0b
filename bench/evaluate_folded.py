"""Time ``lsmap evaluate`` with the models' batch norms folded into their convolutions (what it runs now)
against the models as trained, on generated 128 px L4S-style patches.

Prints, per model kind, the seconds of each way (best of ``--repeats``, alternating), their ratio, and
whether the pixel counts agree. The models are untrained registry models with batch-norm statistics
set as after training (fixed seed); evaluate's own work (reading patches, metrics) is in both figures.

Usage:
    PYTHONPATH=. python bench/evaluate_folded.py [--models tiny-unet unet-resnet18] [--patches 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_patches(folder: Path, n: int, size: int = 128, seed: int = 0) -> Path:
    """``n`` 14-band patches of noise with bright squares (the landslides) and their masks."""
    from lsmap.io.patches import write_patch

    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.normal(1.0, 0.1, (14, size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        s = int(rng.integers(size // 8, size // 3))
        r, c = rng.integers(0, size - s, 2)
        mask[r:r + s, c:c + s] = 1
        img[:12, mask == 1] += 0.6
        write_patch(folder, str(i), img, mask)
    return folder


def model(kind: str, work: Path) -> Path:
    """An untrained ``kind`` with batch-norm statistics and affine parameters as after training."""
    import torch
    from torch import nn

    from lsmap.core.bands import PROFILES
    from lsmap.learn.models import ModelCard, build_model, save_checkpoint

    torch.manual_seed(0)
    m = build_model(kind, 14)
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    card = ModelCard(model=kind, bands=PROFILES["l4s14"].to_dict(), scale=1.0,
                     stats={"mean": [1.0] * 14, "std": [0.3] * 14, "count": 1})
    return save_checkpoint(work / kind, m.eval(), card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-unet", "unet-resnet18"])
    ap.add_argument("--patches", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    import lsmap.learn.evaluate as ev
    from lsmap.learn.device import cpu_has_bf16

    print(f"{os.cpu_count()} cores, torch {torch.__version__}, bf16 AMX/AVX512: {cpu_has_bf16()}; "
          f"{args.patches} patches of 14 x 128 x 128, best of {args.repeats}")
    with tempfile.TemporaryDirectory(prefix="lsmap-bench-") as tmp:
        work = Path(tmp)
        data = make_patches(work / "data", args.patches)
        folded_members = ev.folded_members
        for kind in args.models:
            ckpt = model(kind, work)
            times = {"folded": [], "as trained": []}
            results = {}
            for _ in range(args.repeats):
                for way, fold in (("folded", folded_members), ("as trained", list)):
                    ev.folded_members = fold
                    t = time.perf_counter()
                    results[way] = ev.evaluate([ckpt], data, device="cpu")
                    times[way].append(time.perf_counter() - t)
            ev.folded_members = folded_members
            a, b = min(times["folded"]), min(times["as trained"])
            pf, pt = results["folded"].pixel, results["as trained"].pixel
            moved = sum(abs(pf[k] - pt[k]) for k in ("tp", "fp", "fn")) // 2
            total = sum(pt[k] for k in ("tp", "fp", "fn", "tn"))
            print(f"{kind}: folded {a:.2f} s, as trained {b:.2f} s -> {b / a:.2f}x; {moved} of {total} pixels change "
                  f"class (F1 {pf['f1']:.5f} vs {pt['f1']:.5f})")


if __name__ == "__main__":
    main()
