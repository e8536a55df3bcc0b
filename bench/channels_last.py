"""Forward (and training step) time of every registered architecture, contiguous vs channels-last, float32.

Why :func:`lsmap.learn.device.inference_channels_last` runs CPU inference channels-last even where there is
no bfloat16 autocast: oneDNN's NHWC convolution kernels. Prints, per model, the seconds of one forward
(eval, no grad) of a batch and of one training step (forward + backward) in each memory format, single
threaded (as each of detect's CPU model workers runs), and their ratio (> 1: channels-last faster).
Untrained weights (fixed seed); the timing does not depend on them.

Usage:
    PYTHONPATH=. python bench/channels_last.py [--batch 2] [--size 256] [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def seconds(fn, repeat: int) -> float:
    fn()  # warm-up: kernels chosen, buffers allocated
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    from lsmap.learn.device import cpu_has_bf16
    from lsmap.learn.registry import MODELS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2, help="inference batch (windows)")
    ap.add_argument("--size", type=int, default=256, help="inference window (px)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}, torch {torch.__version__}, "
          f"bf16 units: {cpu_has_bf16()}, {args.threads} thread(s); float32")
    print(f"inference: batch {args.batch} x {args.bands} x {args.size}^2; training step: batch 8 x 128^2")
    for name in args.models:
        torch.manual_seed(0)
        base = MODELS[name].build(args.bands, 2)
        x = torch.randn(args.batch, args.bands, args.size, args.size)
        xt = torch.randn(8, args.bands, 128, 128)
        row = {}
        for fmt, mf in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last)):
            m = base.to(memory_format=mf).eval()
            xi = x.contiguous(memory_format=mf)
            with torch.no_grad():
                row[fmt] = seconds(lambda m=m, xi=xi: m(xi), args.repeat)
            m.train()
            xs = xt.contiguous(memory_format=mf)

            def step(m=m, xs=xs):
                m.zero_grad(set_to_none=True)
                m(xs).float().mean().backward()

            row[fmt + " train"] = seconds(step, args.repeat)
        print(f"{name:24s} forward {row['contiguous']:.3f} -> {row['channels-last']:.3f} s "
              f"({row['contiguous'] / row['channels-last']:.2f}x)   train step {row['contiguous train']:.3f} -> "
              f"{row['channels-last train']:.3f} s ({row['contiguous train'] / row['channels-last train']:.2f}x)",
              flush=True)


if __name__ == "__main__":
    main()
