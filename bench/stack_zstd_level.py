"""ZSTD level of uint16 stacks: compression CPU, size and decode CPU of a stack's pixels at levels 1, 3, 6, 9.

Reads a (central, at most 4096^2) window of an existing uint16 stack (``lsmap stack`` output) and rewrites it
as `lsmap stack` writes (256 px tiles, predictor 2, GDAL compression threads), 1024-row writes; then
decodes it in full-width strips of 256 rows on one GDAL thread (as detect's reader). Best of 3 per level.
GDAL's default ZSTD level is 9; lsmap's is :data:`lsmap.data.stack.UINT16_OPTIONS`'s.

    $ PYTHONPATH=. python bench/stack_zstd_level.py STACK.tif [STACK2.tif ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stacks", nargs="+", type=Path)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6, 9])
    args = ap.parse_args()

    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    print(f"{os.cpu_count()} cores")
    for path in args.stacks:
        with rasterio.open(path) as src:
            profile = src.profile
            n = min(4096, src.width, src.height)
            win = Window((src.width - n) // 2, (src.height - n) // 2, n, n)
            data = src.read(window=win)
        print(f"{path.name}: {data.shape[0]} bands x {n}^2 px ({data.size / 1e6:.0f} Mvalues)")
        with tempfile.TemporaryDirectory(prefix="lsmap-bench-") as tmp:
            for level in args.levels:
                p = dict(profile, width=n, height=n, transform=window_transform(win, profile["transform"]),
                         compress="zstd", predictor=2, zstd_level=level, num_threads="ALL_CPUS",
                         tiled=True, blockxsize=256, blockysize=256)
                out = Path(tmp) / f"z{level}.tif"
                best = None
                for _ in range(3):
                    t, c = time.perf_counter(), _cpu()
                    with rasterio.open(out, "w", **p) as dst:
                        for r in range(0, n, 1024):
                            dst.write(data[:, r:r + 1024], window=Window(0, r, n, min(1024, n - r)))
                    wt, wc = time.perf_counter() - t, _cpu() - c
                    c = _cpu()
                    with rasterio.Env(GDAL_NUM_THREADS=1), rasterio.open(out) as src:
                        for r in range(0, n, 256):
                            src.read(window=Window(0, r, n, min(256, n - r)))
                    rc = _cpu() - c
                    now = (wt, wc, rc)
                    best = now if best is None else tuple(min(a, b) for a, b in zip(best, now, strict=True))
                wt, wc, rc = best
                mv = data.size / 1e6
                print(f"  level {level}: write {wt:.2f} s, {wc / mv:.4f} CPU-s/Mvalue; {os.path.getsize(out) / data.size:.3f} "
                      f"bytes/value; decode {rc / mv:.4f} CPU-s/Mvalue")


if __name__ == "__main__":
    main()
