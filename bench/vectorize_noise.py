"""Vectorising a fragmented mask vs a clean one: polygons/s and Mpx/s of ``lsmap.map.vectorize``.

Two generated float32 probability rasters of ``--size``^2 px (10 m pixels, 256 px tiles as detect
writes them):
- ``clean``: ~2 % of the pixels in compact blobs (squares of 4-24 px), a few thousand polygons;
- ``noisy``: the same blobs plus speckle: isolated pixels above the threshold (most polygons one
  pixel), >= 100,000 polygons at 4096^2 (a model's noisy output on a hard scene);
- ``clumps``: the blobs plus clumps of 1-3 x 1-3 px (fewer one-pixel polygons).

For each: ``vectorize`` (read, label, polygonise, join across blocks, attributes), then writing
the GeoPackage (:func:`lsmap.map.vectorize.write_vector`), median of ``--repeats``; with
``--profile`` a cProfile of one noisy run (top functions by cumulative time).

    $ PYTHONPATH=. python bench/vectorize_noise.py [--size 4096] [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_prob(path: Path, size: int, kind: str, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin

    from lsmap.io.rasters import geotiff_profile

    rng = np.random.default_rng(seed)
    p = (0.3 * rng.random((size, size))).astype(np.float32)
    n = size * size // 2000
    rr, cc, rad = rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(2, 12, n)
    for r, c, k in zip(rr, cc, rad, strict=True):
        p[max(0, r - k):r + k, max(0, c - k):c + k] = 0.9
    if kind == "noisy":
        speck = rng.random((size, size)) < 0.012
        p[speck] = 0.5 + 0.5 * rng.random(int(speck.sum()), dtype=np.float32)
    elif kind == "clumps":  # speckle grown into clumps of 1-3 x 1-3 px: few one-pixel components
        seeds = rng.random((size, size)) < 0.004
        grow = np.zeros_like(seeds)
        hs, ws = rng.integers(1, 4, 2)
        for dy in range(3):
            for dx in range(3):
                part = seeds & (rng.random((size, size)) < (0.9 if dy < hs and dx < ws else 0.2))
                grow[dy:, dx:] |= part[:size - dy, :size - dx]
        p[grow] = 0.8
    p[:20, :20] = -1.0  # a nodata corner, as detect writes it
    prof = geotiff_profile(crs="EPSG:32645", transform=from_origin(500000.0, 3000000.0, 10.0, 10.0),
                           width=size, height=size, count=1, nodata=-1.0)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(p[None])


def run_once(path: Path, out: Path) -> tuple[float, float, int, np.ndarray]:
    from lsmap.map.vectorize import vectorize, write_vector

    t0 = time.perf_counter()
    gdf = vectorize(path, threshold=0.5, block=1024)
    t1 = time.perf_counter()
    write_vector(gdf, out, overwrite=True)
    return t1 - t0, time.perf_counter() - t1, len(gdf), np.asarray(gdf["area_m2"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--kinds", nargs="+", default=["clean", "noisy", "clumps"])
    args = ap.parse_args()
    import geopandas  # noqa: F401  (imports before timing)
    import pyogrio  # noqa: F401
    import rasterio.features  # noqa: F401
    import scipy.ndimage  # noqa: F401

    mpx = args.size ** 2 / 1e6
    with tempfile.TemporaryDirectory(prefix="lsmap-vec-") as tmp:
        work = Path(tmp)
        for kind in args.kinds:
            path = work / f"{kind}.tif"
            make_prob(path, args.size, kind)
            run_once(path, work / "warm.gpkg") if kind == "clean" else None  # warm caches and imports
            runs = [run_once(path, work / f"{kind}.gpkg") for _ in range(args.repeats)]
            vec = statistics.median(r[0] for r in runs)
            wr = statistics.median(r[1] for r in runs)
            n = runs[0][2]
            one = int((runs[0][3] <= 100.0 + 1e-6).sum())  # one 10 m pixel = 100 m2
            print(f"{kind}: {args.size}^2 px, {n} polygons ({100 * one / max(1, n):.0f} % of one pixel): vectorize {vec:.2f} s (runs "
                  f"{', '.join(f'{r[0]:.2f}' for r in runs)}) = {n / vec:,.0f} polygons/s, {mpx / vec:.1f} Mpx/s; "
                  f"GeoPackage write {wr:.2f} s; together {n / (vec + wr):,.0f} polygons/s, {mpx / (vec + wr):.1f} Mpx/s")
            if args.profile and kind == "noisy":
                pr = cProfile.Profile()
                pr.enable()
                run_once(path, work / "prof.gpkg")
                pr.disable()
                pstats.Stats(pr).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
