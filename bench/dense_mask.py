"""Vectorising a dense mask: landslides that percolate through every block, with hundreds of thousands of holes.

A model given the wrong input (offset DNs, another sensor) can flag half a scene. The mask then holds a few
landslides that span the scene, with a vertex at nearly every other pixel corner. This bench times
``lsmap.map.vectorize`` and the GeoPackage write on such masks, and the peak memory of doing it.

Mask: a uniform random field smoothed by a Gaussian of 0.7 px, thresholded so that ``--shares`` of the
pixels are flagged (10 m pixels, ``--size``^2 px, blocks of 1024). Each share runs in a fresh process; peak
memory is ``VmHWM`` above the RSS after the imports. The largest landslide's vertices and holes are printed.

    $ PYTHONPATH=. python bench/dense_mask.py [--size 4096] [--shares 0.45 0.55 0.6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np


def make_prob(path: Path, size: int, share: float, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from scipy import ndimage

    from lsmap.io.rasters import geotiff_profile

    field = ndimage.gaussian_filter(np.random.default_rng(seed).random((size, size), np.float32), 0.7)
    cut = np.quantile(field[::7, ::7], 1 - share)
    p = np.where(field > cut, np.float32(0.9), np.float32(0.1))
    prof = geotiff_profile(crs="EPSG:32645", transform=from_origin(500000.0, 3000000.0, 10.0, 10.0),
                           width=size, height=size, count=1, nodata=-1.0)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(p[None])


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(path: str, out: str, q) -> None:
    import geopandas  # noqa: F401  (imports before the baseline)
    import pyogrio  # noqa: F401
    import shapely

    from lsmap.io.malloc import limit_malloc_arenas
    from lsmap.map.vectorize import vectorize, write_vector

    limit_malloc_arenas()  # as detect does
    base = rss_mb("VmRSS")
    t0 = time.perf_counter()
    gdf = vectorize(path, threshold=0.5, block=1024)
    t1 = time.perf_counter()
    write_vector(gdf, out, overwrite=True)
    t2 = time.perf_counter()
    verts = shapely.get_num_coordinates(gdf.geometry.values)
    big = int(np.argmax(verts))
    holes = shapely.get_num_interior_rings(gdf.geometry.values[big])
    q.put((t1 - t0, t2 - t1, len(gdf), int(verts.sum()), int(verts[big]), int(holes), rss_mb("VmHWM") - base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.45, 0.55, 0.6])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="lsmap-dense-") as tmp:
        for share in args.shares:
            path = Path(tmp) / f"p{share}.tif"
            make_prob(path, args.size, share)
            for r in range(args.repeats):
                q = ctx.Queue()
                proc = ctx.Process(target=child, args=(str(path), str(Path(tmp) / "out.gpkg"), q))
                proc.start()
                vec, wr, n, v, vbig, holes, peak = q.get()
                proc.join()
                print(f"{args.size}^2, {share:.0%} flagged, run {r + 1}: {n} polygons, {v:,} vertices (largest "
                      f"{vbig:,}, {holes:,} holes); vectorize {vec:.2f} s, write {wr:.2f} s; peak +{peak:.0f} MB "
                      "above the imports")


if __name__ == "__main__":
    main()
