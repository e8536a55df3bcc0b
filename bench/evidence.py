"""What ``--pre`` adds to ``lsmap detect``: time and peak memory on a generated scene pair.

The post-event scene is ``bench/detect_throughput.py``'s generated L4S-scaled 14-band scene (smooth
fields, noise, bright blobs; 256 px tiles, DEFLATE), the pre-event scene its B4 and B8 with the
blobs taken out (vegetated before), written either on the same grid (read directly) or on another
one: EPSG:32646 at 10 m (the neighbouring UTM zone, so every block is warped). Each run is a fresh
process (peak RSS = its own ``VmHWM``); the configurations alternate for ``--repeats`` rounds and
the medians are printed. The default model; ``nice -n 10`` on a shared machine.

Usage:
    PYTHONPATH=. nice -n 10 python bench/evidence.py [--size 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

CONFIGS = {
    "no --pre": {},
    "--pre (same grid)": {"pre": "pre_same.tif"},
    "--pre (other CRS, warped)": {"pre": "pre_warped.tif"},
    "--pre --gate (same grid)": {"pre": "pre_same.tif", "gate": True},
}


def make_pre(post: Path, same: Path, warped: Path, block: int = 1024) -> None:
    """B4 and B8 of ``post`` without its bright blobs (vegetated before), on the post grid and warped to EPSG:32646."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform
    from rasterio.windows import Window

    from lsmap.io.rasters import geotiff_profile

    with rasterio.open(post) as src:
        prof = geotiff_profile(crs=src.crs, transform=src.transform, width=src.width, height=src.height, count=2)
        with rasterio.open(same, "w", **prof) as dst:
            for r0 in range(0, src.height, block):
                for c0 in range(0, src.width, block):
                    win = Window(c0, r0, min(block, src.width - c0), min(block, src.height - r0))
                    a = src.read((4, 8), window=win)
                    a = np.where(a > 1.6, a - 1.0, a)  # the blobs were +1 over ~1: not there before
                    a[1] *= 1.5  # more NIR: vegetation
                    dst.write(a.astype(np.float32), window=win)
            dst.set_band_description(1, "B4")
            dst.set_band_description(2, "B8")
    with rasterio.open(same) as src:
        transform, w, h = calculate_default_transform(src.crs, "EPSG:32646", src.width, src.height, *src.bounds,
                                                      resolution=10.0)
        prof = geotiff_profile(crs="EPSG:32646", transform=transform, width=w, height=h, count=2)
        with WarpedVRT(src, crs="EPSG:32646", transform=transform, width=w, height=h, resampling=Resampling.bilinear,
                       nodata=-9999.0) as vrt, rasterio.open(warped, "w", **prof) as dst:
            for r0 in range(0, h, block):
                for c0 in range(0, w, block):
                    win = Window(c0, r0, min(block, w - c0), min(block, h - r0))
                    dst.write(vrt.read(window=win), window=win)
            dst.set_band_description(1, "B4")
            dst.set_band_description(2, "B8")


def child(scene: str, out: str, settings: str) -> None:
    """Run detect in this fresh process; print its summary and peak RSS."""
    import geopandas  # noqa: F401  (imports before timing: the figures are the work)
    import scipy.ndimage  # noqa: F401
    import torch  # noqa: F401
    from detect_throughput import peak_rss_mb

    import lsmap
    import lsmap.map.detect  # noqa: F401

    base = peak_rss_mb()
    gdf = lsmap.detect(scene, out=out, device="cpu", overwrite=True, **json.loads(settings))
    info = gdf.attrs["lsmap"]
    info["peak_rss_mb"] = peak_rss_mb()
    info["import_rss_mb"] = base
    print(json.dumps(info, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("SCENE", "OUT", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from detect_throughput import make_scene

    with tempfile.TemporaryDirectory(prefix="lsmap-bench-evidence-") as tmp:
        work = Path(tmp)
        post = work / "post.tif"
        make_scene(post, args.size)
        make_pre(post, work / "pre_same.tif", work / "pre_warped.tif")
        runs: dict[str, list[dict]] = {k: [] for k in CONFIGS}
        for _ in range(args.repeats):
            for name, settings in CONFIGS.items():
                s = {k: str(work / v) if k == "pre" else v for k, v in settings.items()}
                r = subprocess.run([sys.executable, str(HERE), "--child", str(post), str(work / "out.gpkg"),
                                    json.dumps(s)], capture_output=True, text=True, check=True)
                runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    med = statistics.median
    base_s = med(r["seconds"] for r in runs["no --pre"])
    base_mb = med(r["peak_rss_mb"] - r["import_rss_mb"] for r in runs["no --pre"])
    km2 = runs["no --pre"][0]["scene_km2"]
    print(f"scene {args.size}^2 px ({km2:.0f} km2), medians of {args.repeats}")
    print("| run | detect s | added s | evidence s: check / gate / polygons | peak RSS above imports | added MB "
          "| polygons kept / rejected |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        s = med(r["seconds"] for r in rs)
        mb = med(r["peak_rss_mb"] - r["import_rss_mb"] for r in rs)
        ev = [r["evidence"] for r in rs if r.get("evidence")]
        if ev:
            t = {k: med(e["timings"].get(k, 0.0) for e in ev) for k in ("check", "gate", "polygons")}
            times = f"{t['check']:.2f} / {t['gate']:.2f} / {t['polygons']:.2f}"
            counts = f"{ev[0]['kept']} / {ev[0]['rejected']}"
        else:
            times, counts = "-", f"{rs[0]['polygons']} / -"
        print(f"| {name} | {s:.1f} | {s - base_s:+.1f} | {times} | {mb:.0f} MB | {mb - base_mb:+.0f} | {counts} |")
    print(json.dumps({k: [{kk: r.get(kk) for kk in ("seconds", "peak_rss_mb", "import_rss_mb", "evidence")}
                          for r in rs] for k, rs in runs.items()}, default=str))


if __name__ == "__main__":
    main()
