"""What ``--cloud-prob-max`` (MSK_CLDPRB above P %) adds to the default SCL mask on the real T29UNU product.

Reads the real L2A product's ``SCL_20m`` and ``QI_DATA/MSK_CLDPRB_20m`` (the same 20 m grid) window by
window over the whole tile and prints, for several thresholds P: the share of the tile's data
pixels (SCL class != 0) whose cloud probability exceeds P, the share of those the default SCL
classes (0, 1, 3, 8, 9, 10, 11) do not already mask (what the option adds), and the SCL classes of
the added pixels.

    PYTHONPATH=. python bench/cloud_prob.py [--data ../shared/data/s2/l2a_safe_T29UNU]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

from lsmap.core.windows import block_grid
from lsmap.data.masks import DEFAULT_SCL_CLASSES, SCL_CLASSES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "s2" / "l2a_safe_T29UNU"
THRESHOLDS = (10, 20, 30, 50, 70, 90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    scl_f = glob.glob(f"{args.data}/*.SAFE/GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2")
    cld_f = glob.glob(f"{args.data}/*.SAFE/GRANULE/*/QI_DATA/MSK_CLDPRB_20m.jp2")
    if not scl_f or not cld_f:
        print(f"no SCL_20m / MSK_CLDPRB_20m under {args.data}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    data = 0
    above = np.zeros(len(THRESHOLDS), np.int64)
    added = np.zeros((len(THRESHOLDS), 12), np.int64)
    with rasterio.open(scl_f[0]) as s, rasterio.open(cld_f[0]) as c:
        assert s.transform == c.transform and s.shape == c.shape, "SCL and MSK_CLDPRB grids differ"
        for win in block_grid(s.height, s.width, 1024):
            scl, cld = s.read(1, window=win), c.read(1, window=win)
            ok = scl != 0
            data += int(ok.sum())
            free = ok & ~np.isin(scl, DEFAULT_SCL_CLASSES)
            for i, p in enumerate(THRESHOLDS):
                hit = ok & (cld > p) & (cld <= 100)
                above[i] += int(hit.sum())
                added[i] += np.bincount(scl[hit & free], minlength=12)[:12]
        shape = s.shape
    print(f"{Path(scl_f[0]).name}: {shape[1]} x {shape[0]} px at 20 m, {data / (shape[0] * shape[1]):.1%} data "
          f"pixels; read in {time.perf_counter() - t0:.1f} s")
    print("| P (%) | MSK_CLDPRB > P (of data pixels) | added to the default SCL mask (of data pixels) | "
          "SCL classes of the added pixels |")
    print("|---|---|---|---|")
    for i, p in enumerate(THRESHOLDS):
        n = int(added[i].sum())
        top = ", ".join(f"{SCL_CLASSES[k]} {added[i][k] / n:.0%}" for k in np.argsort(-added[i])[:3] if added[i][k]) \
            if n else "-"
        print(f"| {p} | {above[i] / data:.2%} | {n / data:.3%} ({n:,} px) | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
