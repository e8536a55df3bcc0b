"""Benchmark `lsmap detect` on generated 14-band scenes: throughput, overhead, memory, vectorisation.

Reports, for each scene size (each run in its own subprocess so that peak RSS is its own):
- km2/s of the whole ``lsmap.detect`` call (statistics pass, streamed inference, vectorisation,
  GeoPackage writing) at 10 m pixels;
- the ratio of the bare model forward over the same number of windows (the ensemble on in-memory
  batches of the same size: no reading, blending or writing; warmed up; timed both as one batch at
  a time on all cores and as detect's CPU model workers, and the faster taken) to the whole detect
  time (1.0 = no overhead; target >= 0.9), in wall time and in CPU time of the process (user +
  system; less sensitive to other jobs on a shared machine, though spinning threads count too);
- peak RSS of the detect process (``VmHWM``: its own high-water mark; ``ru_maxrss`` of a child
  process also counts the parent's memory at the fork) (target: flat across sizes);
- vectorisation time and polygon count of the detect run, plus a standalone vectorisation of a
  generated probability raster with many blobs.

Models: by default the shipped default model (a trained tiny U-Net, what ``lsmap detect`` uses
without ``--model``). ``--model NAME`` builds untrained models of a registry kind (fixed seeds,
``--members`` of them, optionally ``--scale`` promotion as the 1st-place solution's x2.5 and
``--tta``), with the landslide logit shifted so that about 2 % of the pixels are detected, as in a
post-event scene; otherwise the random head flags half the scene and the polygon step measures
noise. The scene is written as ``lsmap stack`` writes scenes (``--encoding``: uint16 codes + ZSTD, the
default now, or the float32 + DEFLATE of older stacks); also timed: one decode of the scene as detect's
reader reads it, and the ratio (bare forward + that decode) / detect (target >= 0.9).

Usage:
    PYTHONPATH=. python bench/detect_throughput.py [--sizes 2048 4096] [--window 128] [--overlap 32]
    PYTHONPATH=. python bench/detect_throughput.py --model unet-resnet18 [--scale 2.5] [--members 3] [--tta]
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


def make_scene(path: Path, size: int, seed: int = 0, block: int = 512, encoding: str = "float32",
               noise: float = 0.05) -> None:
    """Generate a plausible L4S-scaled 14-band scene (smooth fields + noise + bright blobs), block by block,
    in the GeoTIFF layout `lsmap stack` writes: 256 px tiles, and ``encoding`` ``float32`` (DEFLATE with
    the floating-point predictor, the stacks before issue 20) or ``uint16`` (codes with per-band scale and
    offset, ZSTD with the integer predictor: :mod:`lsmap.core.encoding`, what `lsmap stack` writes now)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from lsmap.core.bands import PROFILES
    from lsmap.core.encoding import UINT16_NODATA, encode_uint16, scales_offsets
    from lsmap.data.stack import UINT16_OPTIONS
    from lsmap.io.rasters import geotiff_profile, set_band_descriptions
    from lsmap.io.scene import STACK_TAG

    rng = np.random.default_rng(seed)
    centres = rng.integers(0, size, (max(1, size * size // 40000), 2))
    coded = encoding == "uint16"
    l4s = PROFILES["l4s14"]
    div = np.asarray(l4s.divisors, np.float64).reshape(-1, 1, 1)
    profile = geotiff_profile(crs="EPSG:32645", transform=from_origin(500000.0, 3000000.0, 10.0, 10.0),
                              width=size, height=size, count=14, dtype=encoding,
                              nodata=UINT16_NODATA if coded else -9999.0,
                              creation_options=UINT16_OPTIONS if coded else None)
    with rasterio.open(path, "w", **profile) as dst:  # as `lsmap stack` writes scenes
        set_band_descriptions(dst, l4s.bands)
        dst.update_tags(**{STACK_TAG: l4s.name})  # one nodata mask for all bands, as lsmap stack writes them
        if coded:
            dst.scales, dst.offsets = scales_offsets(l4s)
        for r0 in range(0, size, block):
            for c0 in range(0, size, block):
                h, w = min(block, size - r0), min(block, size - c0)
                yy, xx = np.mgrid[r0:r0 + h, c0:c0 + w].astype(np.float32)
                bands = np.stack([1.0 + 0.3 * np.sin(xx / (60 + 7 * b)) * np.cos(yy / (80 + 5 * b)) for b in range(14)])
                bands += noise * rng.standard_normal(bands.shape).astype(np.float32)
                near = [(cy, cx) for cy, cx in centres if r0 - 20 <= cy < r0 + h + 20 and c0 - 20 <= cx < c0 + w + 20]
                for cy, cx in near:
                    bands[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 64] += 1.0
                invalid = np.zeros(bands.shape[1:], bool)
                if r0 == 0 and c0 == 0:
                    invalid[:40, :40] = True  # a nodata corner
                if coded:
                    out = encode_uint16(bands * div, invalid, l4s)
                else:
                    out = bands.astype(np.float32)
                    out[:, invalid] = -9999.0
                dst.write(out, window=Window(c0, r0, w, h))


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): ``VmHWM``, which starts afresh at ``exec``.

    Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` includes the parent's resident memory at the
    fork, so it would measure the bench's parent process rather than detect.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_detect(scene: str, models: list[str], out: str, window: int, overlap: int, batch_size: int | None,
                 tta: bool, fold: bool = True, smp: bool = True) -> None:
    """Run detect in this (fresh) process and print its summary and peak RSS as JSON (``fold=False``: with
    the models' batch norms left unfolded, as detect ran them before; ``smp``: the models are
    segmentation-models-pytorch ones, whose import is done before timing, as that of torch & co.)."""
    import geopandas  # noqa: F401  (imports done before timing: the figures are the work, not Python imports)
    import scipy.ndimage  # noqa: F401
    import torch  # noqa: F401

    if smp:  # 1.7 s and ~190 MB (timm, torchvision) here, paid once per process by smp models only:
        import segmentation_models_pytorch  # noqa: F401  detect never imports it for the default model

    import lsmap
    import lsmap.map.detect  # noqa: F401
    import lsmap.map.stream

    if not fold:
        lsmap.map.stream.folded_members = list
    baseline = peak_rss_mb()
    cpu0 = _cpu()
    gdf = lsmap.detect(scene, models, out=out, window=window, overlap=overlap, device="cpu",
                       batch_size=batch_size, threshold=0.5, tta=tta)
    info = gdf.attrs["lsmap"]
    info["cpu_seconds"] = _cpu() - cpu0
    info["peak_rss_mb"] = peak_rss_mb()
    info["import_rss_mb"] = baseline
    print(json.dumps(info))


def child_bare(models: list[str], windows: int, window: int, batch_size: int, tta: bool, layout: str,
               fold: bool = True) -> None:
    """Time the bare ensemble forward over ``windows`` windows in batches (data already in memory).

    ``layout`` ``"all-cores"``: one batch at a time on all of torch's threads; ``"workers"``: the
    batches shared among model worker threads exactly as detect runs them on this CPU
    (:func:`lsmap.map.stream.model_threads`). The models' batch norms are folded as detect folds them
    (:func:`lsmap.learn.ensemble.folded_members`) unless ``fold`` is false. glibc's malloc is set as detect
    sets it around its models (:mod:`lsmap.io.malloc`): one arena, freed memory reused.
    """
    import torch

    from lsmap.core.normalize import BandStats
    from lsmap.io.malloc import limit_malloc_arenas, reuse_freed_memory
    from lsmap.learn.device import inference_channels_last
    from lsmap.learn.ensemble import folded_members, inference_context, load_ensemble
    from lsmap.map.stream import ensemble_moments, model_threads, ordered_map

    limit_malloc_arenas()  # glibc's malloc set as detect sets it for its models (lsmap.map.stream.predict_scene)
    dev = torch.device("cpu")
    members = load_ensemble(models, dev)
    if fold:
        members = folded_members(members)  # as detect runs them (lsmap.map.stream._plan)
    if inference_channels_last(dev):  # as detect runs them
        for m in members:
            m.module.to(memory_format=torch.channels_last)
    stats = BandStats((1.0,) * 14, (0.3,) * 14, 1)
    x = 1.0 + 0.3 * torch.randn(batch_size, 14, window, window)
    workers, threads = model_threads(dev) if layout == "workers" else (1, torch.get_num_threads())
    torch.set_num_threads(threads)
    sizes = [min(batch_size, windows - s) for s in range(0, windows, batch_size)]

    def run(n: int):
        return ensemble_moments(members, x[:n], stats, tta, False)[0].float().cpu()

    def context():
        return inference_context(dev)  # as detect runs its model threads

    with reuse_freed_memory():
        for _ in ordered_map(run, iter(sorted(set(sizes)) * workers), workers, context):  # warm-up: every shape, worker
            pass
        t0, cpu0 = time.perf_counter(), _cpu()
        for _ in ordered_map(run, iter(sizes), workers, context):
            pass
        seconds, cpu_seconds = time.perf_counter() - t0, _cpu() - cpu0
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "windows": windows,
                      "workers": workers, "threads": threads}))


def child_decode(scene: str) -> None:
    """One decode of the whole scene as detect's reader reads it (full-width strips of 256 rows, one GDAL
    thread, values unscaled to float32 through :func:`lsmap.io.scene.read_scene_window`)."""
    import rasterio

    from lsmap.core.bands import PROFILES
    from lsmap.core.windows import Window
    from lsmap.io.scene import read_scene_window

    with rasterio.Env(GDAL_NUM_THREADS=1), rasterio.open(scene) as src:
        out = np.empty((14, 256, src.width), np.float32)
        t0, cpu0 = time.perf_counter(), _cpu()
        for r0 in range(0, src.height, 256):
            n = min(256, src.height - r0)
            read_scene_window(src, Window(0, r0, src.width, n), PROFILES["l4s14"], out=out[:, :n])
        print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - cpu0}))


def calibrate_head(module, scene: Path, scale: float = 1.0, positive: float = 0.02) -> float:
    """Shift the untrained model's landslide logit so that about ``positive`` of the scene's pixels
    exceed p = 0.5, as in a post-event scene (Landslide4Sense: 2-3 % landslide pixels); the random
    head would otherwise flag half the scene and the polygon step would measure noise. Returns the shift.
    """
    import rasterio
    import torch
    from torch import nn

    from lsmap.core.bands import PROFILES
    from lsmap.io.scene import read_scene_window

    with rasterio.open(scene) as src:
        h, w = min(512, src.height), min(512, src.width)
        win = rasterio.windows.Window((src.width - w) // 2, (src.height - h) // 2, w, h)
        x, _ = read_scene_window(src, win, PROFILES["l4s14"])
    x = torch.from_numpy(x).float()
    x = (x - x.mean((1, 2), keepdim=True)) / x.std((1, 2), keepdim=True)
    tiles = x.unfold(1, 128, 128).unfold(2, 128, 128).permute(1, 2, 0, 3, 4).reshape(-1, 14, 128, 128)
    if scale != 1:
        tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="bilinear", align_corners=False)
    head = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 2][-1]
    with torch.no_grad():
        logits = module.eval()(tiles)
        shift = float(torch.quantile((logits[:, 1] - logits[:, 0]).flatten()[::7], 1 - positive))
        head.bias[1] -= shift
    return shift


def standalone_vectorize(work: Path, size: int, seed: int = 1) -> dict:
    """Vectorise a generated probability raster with many blobs; returns time and polygon count."""
    import rasterio
    from rasterio.transform import from_origin

    from lsmap.map.vectorize import vectorize

    rng = np.random.default_rng(seed)
    p = np.zeros((size, size), np.float32)
    n = size * size // 2000
    rr, cc = rng.integers(0, size, n), rng.integers(0, size, n)
    rad = rng.integers(2, 12, n)
    for r, c, k in zip(rr, cc, rad, strict=False):
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
    ap.add_argument("--window", type=int, default=None, help="default: detect's choice for the model (auto_window)")
    ap.add_argument("--encoding", choices=("uint16", "float32"), default="uint16",
                    help="the scene's storage (uint16: what `lsmap stack` writes now)")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--model", default="default",
                    help="'default': the shipped default model (trained tiny U-Net, what `lsmap detect` uses "
                         "without --model); or a registry name: an untrained model of that kind")
    ap.add_argument("--members", type=int, default=1, help="ensemble of this many models (seeds 0..N-1)")
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation (4 passes per member)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="the models' input scale (scale promotion; the 1st-place solution used 2.5)")
    ap.add_argument("--positive", type=float, default=0.02,
                    help="fraction of pixels an untrained model is calibrated to flag (more: a more fragmented mask)")
    ap.add_argument("--noise", type=float, default=0.05,
                    help="per-pixel noise of the generated scene (L4S scale; a hard, speckled scene: 0.5 makes an "
                         "untrained unet-resnet18 at --positive 0.45 give a fragmented mask)")
    ap.add_argument("--no-fold", action="store_true",
                    help="run detect and the bare model with the batch norms unfolded (as before the folding)")
    ap.add_argument("--child", nargs="*")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "detect":
            child_detect(rest[0], rest[3:], rest[1], args.window, args.overlap, args.batch_size, args.tta,
                         not args.no_fold, smp=args.model != "default")
        elif kind == "decode":
            child_decode(rest[0])
        else:
            child_bare(rest[3:], int(rest[0]), args.window, int(rest[1]), args.tta, rest[2], not args.no_fold)
        return

    import platform

    import torch

    from lsmap.core.bands import PROFILES
    from lsmap.learn.device import cpu_has_bf16
    from lsmap.learn.models import ModelCard, build_model, save_checkpoint

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, bf16 AMX/AVX512: {cpu_has_bf16()}, load avg {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="lsmap-bench-") as tmp:
        work = Path(tmp)
        card = ModelCard(model=args.model, bands=PROFILES["l4s14"].to_dict(), scale=args.scale,
                         stats={"mean": [1.0] * 14, "std": [0.3] * 14, "count": 1})
        scenes = {size: work / f"scene_{size}.tif" for size in args.sizes}
        for size, scene in scenes.items():
            make_scene(scene, size, encoding=args.encoding, noise=args.noise)
        models, shifts = [], []
        if args.model == "default":
            from lsmap.map.detect import default_models

            if args.members != 1 or args.scale != 1:
                raise SystemExit("--model default is one trained model: no --members or --scale")
            models = [str(default_models()[0])]  # l4s14-default: what detect picks for a 14-band scene
        for seed in range(args.members if args.model != "default" else 0):
            torch.manual_seed(seed)
            module = build_model(args.model, 14)
            shifts.append(calibrate_head(module, scenes[args.sizes[0]], args.scale, args.positive))
            models.append(str(save_checkpoint(work / f"model{seed}", module.eval(), card)))
        if args.model == "default":
            print(f"model: the shipped default model {models[0]}{' + flip TTA' if args.tta else ''}")
        else:
            print(f"model: {args.model} x {args.members}{' + flip TTA' if args.tta else ''}, input scale "
                  f"{args.scale:g} (untrained; landslide logit shifted by {', '.join(f'{s:+.2f}' for s in shifts)} "
                  f"so that ~{100 * args.positive:g} % of pixels exceed p = 0.5)")
        print("batch norms " + ("left unfolded (--no-fold)" if args.no_fold else "folded into the convolutions, as detect runs them"))
        tta = (["--tta"] if args.tta else []) + (["--no-fold"] if args.no_fold else [])
        rows = []
        for size, scene in scenes.items():
            win = ["--window", str(args.window)] if args.window else []
            det = run([*win, "--overlap", str(args.overlap), *tta, "--model", args.model,
                       *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                       "--child", "detect", str(scene), str(work / f"out_{size}.gpkg"), "-", *models])
            bares = {layout: run(["--window", str(det["window"]), *tta, "--child", "bare", str(det["windows"]),
                                  str(det["batch_size"]), layout, *models])
                     for layout in ("all-cores", "workers")}
            bare = min(bares.values(), key=lambda b: b["seconds"])  # the faster way to run the model alone
            dec = run(["--child", "decode", str(scene), "-", "-"])
            rows.append((size, det, bare))
            t = det["timings"]
            trace = (f", handing pieces to the tracer {t['handoff']:.1f} s, tracing {t['trace']:.1f} s in its thread"
                     if t.get("trace") is not None else "")
            print(f"scene {size} x {size} px ({det['scene_km2']:.0f} km2, {args.encoding} stack, {det['windows']} "
                  f"windows of {det['window']} px [{det['window_choice']}], overlap {args.overlap}, batch {det['batch_size']}, {t['workers']} model workers):")
            print(f"  detect {det['seconds']:.1f} s = {det['km2_per_s']:.2f} km2/s "
                  f"(scan {t['scan']:.1f} s, predict {t['predict']:.1f} s [model {t['model']:.1f} s summed over "
                  f"workers, reading {t['read']:.1f} s in the reader thread, probability writes "
                  f"{t['prob_write']:.1f} s{trace}], vectorize {t['vectorize']:.2f} s after it for {det['polygons']} "
                  f"polygons, write {t['write']:.2f} s)")
            print(f"  bare model forward over the same windows: {bares['all-cores']['seconds']:.2f} s one batch at a "
                  f"time on all cores, {bares['workers']['seconds']:.2f} s as {bares['workers']['workers']} workers")
            print(f"  ratio bare (faster) / detect {bare['seconds'] / det['seconds']:.3f}; CPU {bare['cpu_seconds']:.1f} s "
                  f"vs {det['cpu_seconds']:.1f} s -> CPU ratio {bare['cpu_seconds'] / det['cpu_seconds']:.3f}")
            both = bare["seconds"] + dec["seconds"]
            print(f"  one decode of the scene: {dec['seconds']:.2f} s ({dec['cpu_seconds']:.2f} CPU-s); ratio (bare + "
                  f"decode) / detect {both / det['seconds']:.3f}; CPU ratio "
                  f"{(bare['cpu_seconds'] + dec['cpu_seconds']) / det['cpu_seconds']:.3f}")
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
