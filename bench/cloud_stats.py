"""Per-band scene statistics of the real T29UNU AOI with and without its SCL mask (issue 19).

Stacks the real L2A product ``../shared/data/s2/l2a_safe_T29UNU`` (baseline 04.00; only its 60 m
bands are present, resampled to 10 m) over an AOI where clouds, shadows and ground mix, with its SCL
written on the stack's grid; then scans the stack (:func:`lsmap.data.scan.scan_scene`) without a
mask and with the default SCL mask (classes 0, 1, 3, 8, 9, 10, 11), and prints per band the mean and
std of both, and how far the per-scene normalised value ``(x - mean) / std`` of the *clear* pixels
moves between the two (median and 95th percentile of the absolute difference, in std units).

    PYTHONPATH=. python bench/cloud_stats.py [--bbox -8.8,52.8,-8.7,52.9]
"""

from __future__ import annotations

import argparse
import glob
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio

from lsmap.core.bands import get_profile
from lsmap.data.masks import MaskSpec, write_not_observed
from lsmap.data.scan import scan_scene
from lsmap.data.stack import stack_scene
from lsmap.io.aoi import parse_bbox
from lsmap.io.scene import scene_info

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "s2" / "l2a_safe_T29UNU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bbox", default="-8.8,52.8,-8.7,52.9")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    safes = glob.glob(f"{args.data}/*.SAFE")
    if not safes:
        print(f"no SAFE under {args.data}", file=sys.stderr)
        return 1
    profile = get_profile("rgb")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        stack_scene(safes[0], t / "s.tif", bands="rgb", aoi=parse_bbox(args.bbox), layers={"SCL": t / "scl.tif"})
        info = scene_info(t / "s.tif", profile)
        nobs = write_not_observed(MaskSpec(scl=t / "scl.tif"), info, t / "no.tif")
        bare = scan_scene(info, profile).stats
        clear = scan_scene(replace(info, mask=nobs.path), profile).stats
        with rasterio.open(t / "s.tif") as s, rasterio.open(nobs.path) as m:
            data, ok = s.read().astype(np.float64), m.read(1) == 0
        ok &= (data > -9999).all(axis=0)
    n = info.height * info.width
    print(f"AOI {args.bbox}: {info.width} x {info.height} px at 10 m; not observed {nobs.pixels / n:.1%} "
          f"({', '.join(f'{k} {v / n:.1%}' for k, v in nobs.counts.items())}); clear pixels {clear.count}")
    print("| band | mean (no mask) | std (no mask) | mean (SCL mask) | std (SCL mask) | "
          "clear pixels' normalised value moves: median / p95 (std units) |")
    print("|---|---|---|---|---|---|")
    for b, name in enumerate(profile.bands):
        x = data[b][ok]
        d = np.abs((x - bare.mean[b]) / bare.std[b] - (x - clear.mean[b]) / clear.std[b])
        print(f"| {name} | {bare.mean[b]:.4f} | {bare.std[b]:.4f} | {clear.mean[b]:.4f} | {clear.std[b]:.4f} | "
              f"{np.median(d):.3f} / {np.percentile(d, 95):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
