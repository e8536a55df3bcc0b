"""Time and memory of `stack_scene` on a generated scene (prints figures; not a test).

    $ PYTHONPATH=. python bench/bench_stack.py --size 2048 --block 1024
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform

from lsmap.core.bands import S2_RESOLUTION
from lsmap.data.stack import stack_scene

X0, Y0, CRS = 500_000.0, 3_080_000.0, "EPSG:32645"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048, help="10 m pixels per side")
    ap.add_argument("--block", type=int, default=1024)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for b, res in S2_RESOLUTION.items():
            n = -(-args.size * 10 // res)
            with rasterio.open(tmp / f"{b}.tif", "w", driver="GTiff", width=n, height=n, count=1, dtype="uint16",
                               crs=CRS, transform=from_origin(X0, Y0, res, res), tiled=True) as dst:
                dst.write(rng.integers(1, 4000, (n, n), dtype=np.uint16), 1)
        lon, lat = transform(CRS, "EPSG:4326", [X0 - 500], [Y0 + 500])
        step = 1 / 3600
        n = int(args.size * 10 / 25) + 80
        with rasterio.open(tmp / "dem.tif", "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                           crs="EPSG:4326", transform=from_origin(lon[0], lat[0], step, step), tiled=True) as dst:
            dst.write((1000 + 500 * rng.random((n, n))).astype(np.float32), 1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        res = stack_scene(tmp, tmp / "out" / "stack.tif", dem=tmp / "dem.tif", block=args.block)
        dt = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mpx = res.width * res.height / 1e6
        print(f"{res.width} x {res.height} px (DEM in EPSG:4326), block {args.block}: {dt:.1f} s, "
              f"{mpx / dt:.2f} Mpx/s, peak RSS {peak / 1024:.0f} MB (before stacking {before / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
