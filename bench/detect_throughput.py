"""Benchmark `lsmap detect` on generated 14-band scenes: throughput, overhead, memory, vectorisation.

Reports, for each scene size (each run in its own subprocess so that peak RSS is its own):
- km2/s of the whole ``lsmap.detect`` call (statistics pass, streamed inference, vectorisation,
  GeoPackage writing) at 10 m pixels;
- the ratio of the bare model forward over the same number of windows (``predict_proba`` on
  in-memory batches of the same size: no reading, blending or writing) to the whole detect time
  (1.0 = no overhead; target >= 0.9), in wall time and in CPU time of the process (user + system;
  less sensitive to other jobs on a shared machine, though spinning threads count too);
- peak RSS (``ru_maxrss``) of the detect process (target: flat across sizes);
- vectorisation time and polygon count of the detect run, plus a standalone vectorisation of a
  generated probability raster with many blobs.

The model is untrained (fixed seed; ``--model``, default ``tiny-unet``): throughput does not depend
on the weights. With the tiny model reading the compressed scene costs about as much as the model,
so the ratio is low; with a production-size model (``--model unet-resnet18``) the model dominates.

Usage:
    PYTHONPATH=. python bench/detect_throughput.py [--sizes 2048 4096] [--window 128] [--overlap 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def make_scene(path: Path, size: int, seed: int = 0, block: int = 512) -> None:
    """Generate a plausible L4S-scaled 14-band scene (smooth fields + noise + bright blobs), block by block."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    centres = rng.integers(0, size, (max(1, size * size // 40000), 2))
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=14, dtype="float32",
                       crs="EPSG:32645", transform=from_origin(500000.0, 3000000.0, 10.0, 10.0), nodata=-9999.0,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        for r0 in range(0, size, block):
            for c0 in range(0, size, block):
                h, w = min(block, size - r0), min(block, size - c0)
                yy, xx = np.mgrid[r0:r0 + h, c0:c0 + w].astype(np.float32)
                bands = np.stack([1.0 + 0.3 * np.sin(xx / (60 + 7 * b)) * np.cos(yy / (80 + 5 * b)) for b in range(14)])
                bands += 0.05 * rng.standard_normal(bands.shape).astype(np.float32)
                near = [(cy, cx) for cy, cx in centres if r0 - 20 <= cy < r0 + h + 20 and c0 - 20 <= cx < c0 + w + 20]
                for cy, cx in near:
                    bands[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 64] += 1.0
                if r0 == 0 and c0 == 0:
                    bands[:, :40, :40] = -9999.0  # a nodata corner
                dst.write(bands.astype(np.float32), window=Window(c0, r0, w, h))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_detect(scene: str, model: str, out: str, window: int, overlap: int, batch_size: int | None) -> None:
    """Run detect in this (fresh) process and print its summary and peak RSS as JSON."""
    import geopandas  # noqa: F401  (imports done before timing: the figures are the work, not Python imports)
    import scipy.ndimage  # noqa: F401
    import torch  # noqa: F401

    import lsmap
    import lsmap.detection  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0 = _cpu()
    gdf = lsmap.detect(scene, [model], out=out, window=window, overlap=overlap, device="cpu",
                       batch_size=batch_size, threshold=0.5)
    info = gdf.attrs["lsmap"]
    info["cpu_seconds"] = _cpu() - cpu0
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info["import_rss_mb"] = baseline
    print(json.dumps(info))


def child_bare(model: str, windows: int, window: int, batch_size: int) -> None:
    """Time the bare ensemble forward over ``windows`` windows in batches (data already in memory)."""
    import torch

    from lsmap.device import use_channels_last
    from lsmap.normalize import BandStats
    from lsmap.predict import load_ensemble, predict_proba

    dev = torch.device("cpu")
    members = load_ensemble([model], dev)
    if use_channels_last(dev):
        for m in members:
            m.module.to(memory_format=torch.channels_last)
    stats = BandStats((1.0,) * 14, (0.3,) * 14, 1)
    x = 1.0 + 0.3 * torch.randn(batch_size, 14, window, window)
    predict_proba(members, x, stats)  # warm-up
    t0, cpu0 = time.perf_counter(), _cpu()
    done = 0
    while done < windows:
        n = min(batch_size, windows - done)
        predict_proba(members, x[:n], stats).cpu()
        done += n
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - cpu0, "windows": windows}))


def standalone_vectorize(work: Path, size: int, seed: int = 1) -> dict:
    """Vectorise a generated probability raster with many blobs; returns time and polygon count."""
    import rasterio
    from rasterio.transform import from_origin

    from lsmap.vectorize import vectorize

    rng = np.random.default_rng(seed)
    p = np.zeros((size, size), np.float32)
    n = size * size // 2000
    rr, cc = rng.integers(0, size, n), rng.integers(0, size, n)
    rad = rng.integers(2, 12, n)
    for r, c, k in zip(rr, cc, rad):
        p[max(0, r - k):r + k, max(0, c - k):c + k] = 0.9
    path = work / f"vec_{size}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32",
                       crs="EPSG:32645", transform=from_origin(0, 0, 10, 10), tiled=True) as dst:
        dst.write(p[None])
    t0 = time.perf_counter()
    gdf = vectorize(path, block=1024)
    return {"size": size, "seconds": time.perf_counter() - t0, "polygons": len(gdf)}


def run(cmd: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, str(HERE), *cmd], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--model", default="tiny-unet", help="registry name of the (untrained) model")
    ap.add_argument("--child", nargs="*")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "detect":
            child_detect(rest[0], rest[1], rest[2], args.window, args.overlap, args.batch_size)
        else:
            child_bare(rest[0], int(rest[1]), args.window, int(rest[2]))
        return

    import platform

    import torch

    from lsmap.device import cpu_has_bf16
    from lsmap.models import ModelCard, build_model, save_checkpoint
    from lsmap.bands import PROFILES

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, bf16 AMX/AVX512: {cpu_has_bf16()}, load avg {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="lsmap-bench-") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        card = ModelCard(model=args.model, bands=PROFILES["l4s14"].to_dict(),
                         stats={"mean": [1.0] * 14, "std": [0.3] * 14, "count": 1})
        model = str(save_checkpoint(work / "model", build_model(args.model, 14).eval(), card))
        print(f"model: {args.model} (untrained)")
        rows = []
        for size in args.sizes:
            scene = work / f"scene_{size}.tif"
            make_scene(scene, size)
            det = run(["--window", str(args.window), "--overlap", str(args.overlap),
                       *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                       "--child", "detect", str(scene), model, str(work / f"out_{size}.gpkg")])
            bare = run(["--window", str(args.window), "--child", "bare", model, str(det["windows"]),
                        str(det["batch_size"])])
            rows.append((size, det, bare))
            t = det["timings"]
            print(f"scene {size} x {size} px ({det['scene_km2']:.0f} km2, {det['windows']} windows of "
                  f"{args.window} px, overlap {args.overlap}, batch {det['batch_size']}):")
            print(f"  detect {det['seconds']:.1f} s = {det['km2_per_s']:.2f} km2/s "
                  f"(scan {t['scan']:.1f} s, predict {t['predict']:.1f} s [model {t['model']:.1f} s, "
                  f"reading {t.get('read', t.get('read_thread', float('nan'))):.1f} s, probability writes {t['prob_write']:.1f} s], vectorize {t['vectorize']:.2f} s "
                  f"for {det['polygons']} polygons, write {t['write']:.2f} s)")
            print(f"  bare model forward over the same windows: {bare['seconds']:.1f} s -> ratio bare/detect "
                  f"{bare['seconds'] / det['seconds']:.3f}; CPU {bare['cpu_seconds']:.1f} s vs {det['cpu_seconds']:.1f} s "
                  f"-> CPU ratio {bare['cpu_seconds'] / det['cpu_seconds']:.3f}")
            print(f"  peak RSS {det['peak_rss_mb']:.0f} MB ({det['peak_rss_mb'] - det['import_rss_mb']:.0f} MB above "
                  f"the {det['import_rss_mb']:.0f} MB after importing torch & co.)")
        if len(rows) > 1:
            print("peak RSS by size: " + ", ".join(f"{s} px: {d['peak_rss_mb']:.0f} MB (+{d['peak_rss_mb'] - d['import_rss_mb']:.0f})"
                                               for s, d, _ in rows))
        v = standalone_vectorize(work, max(args.sizes))
        print(f"standalone vectorize of a {v['size']} x {v['size']} px probability raster: {v['polygons']} "
              f"polygons in {v['seconds']:.2f} s ({v['size'] ** 2 / 1e6 / v['seconds']:.1f} Mpx/s)")


if __name__ == "__main__":
    main()
