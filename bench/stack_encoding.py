"""Choose `lsmap stack`'s storage by measurement: decode CPU-s per Mpx, file size, error vs float32.

Scenes (each a float32 L4S-scaled 14-band stack, the reference):
- ``sample``: sample_data's Sentinel-2 bands and DEM stacked now with ``lsmap stack`` as float32
  (resampled 20/60 m bands, Horn slope, a nodata corner), 512^2;
- ``l4s``: the real Landslide4Sense training patches (``../shared/data/l4s/train``, if present)
  mosaicked 16 x 16 (patches drawn with a fixed seed), 2048^2: real radiometry;
- ``synthetic``: ``bench/detect_throughput.py``'s generated scene, 4096^2 (the throughput benchmark's).

Candidates, each written from the reference in 256 px tiles, band interleaved, as `lsmap stack` writes:
float32 DEFLATE + floating-point predictor (the old stack), float32 ZSTD + predictor 3, float32
LERC_DEFLATE / LERC_ZSTD with MAX_Z_ERROR 1e-3 or 1e-4 (L4S units, ``kind@error``), and uint16 codes with per-band scale and
offset (:mod:`lsmap.core.encoding`) with DEFLATE or ZSTD and the integer predictor 2.

Decode: the whole file read in full-width strips of 256 rows (as detect's reader reads), GDAL on one
thread, uint16 codes turned into float32 values (:func:`lsmap.core.encoding.decode`) inside the
timing; CPU seconds of the process (user + system), median of ``--repeats``, per Mpx of the scene
(one Mpx = 14 bands of 10^6 pixels). Error: max |value - reference| over valid pixels, in L4S
units, worst band (and which), and whether nodata pixels stay nodata.

    $ PYTHONPATH=. python bench/stack_encoding.py [--sizes 4096] [--repeats 3] [--scenes sample l4s synthetic]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
L4S_TRAIN = ROOT.parent / "shared" / "data" / "l4s" / "train"
STRIP = 256


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sample_stack(path: Path) -> None:
    """sample_data's bands and DEM stacked as float32 (the encoding of stacks before this change)."""
    from lsmap.data.stack import stack_scene

    stack_scene(ROOT / "sample_data" / "s2", path, dem=ROOT / "sample_data" / "dem_30m.tif", encoding="float32",
                overwrite=True)


def l4s_mosaic(path: Path, n: int = 16, seed: int = 0) -> bool:
    """The real L4S training patches tiled ``n`` x ``n`` (drawn with ``seed``) as a float32 stack; False if absent."""
    import h5py
    import rasterio
    from rasterio.transform import from_origin

    from lsmap.core.bands import L4S_BANDS
    from lsmap.io.rasters import geotiff_profile, set_band_descriptions

    files = sorted((L4S_TRAIN / "img").glob("*.h5")) if (L4S_TRAIN / "img").is_dir() else []
    if not files:
        return False
    patches = []
    for f in files:
        with h5py.File(f, "r") as h:
            patches.append(np.asarray(h["img"], np.float32).transpose(2, 0, 1))  # (14, 128, 128)
    rng = np.random.default_rng(seed)
    side = patches[0].shape[1]
    prof = geotiff_profile(crs="EPSG:32645", transform=from_origin(500000.0, 3000000.0, 10.0, 10.0),
                           width=n * side, height=n * side, count=14)
    with rasterio.open(path, "w", **prof) as dst:
        set_band_descriptions(dst, L4S_BANDS)
        for r in range(n):
            row = np.concatenate([patches[k] for k in rng.integers(0, len(patches), n)], axis=2)
            dst.write(row, window=rasterio.windows.Window(0, r * side, n * side, side))
    return True


def synthetic(path: Path, size: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    from detect_throughput import make_scene

    make_scene(path, size)


def write_candidate(ref: Path, out: Path, kind: str) -> None:
    """Re-encode the float32 reference ``ref`` as candidate ``kind``, strip by strip."""
    import rasterio

    from lsmap.core.bands import get_profile
    from lsmap.core.encoding import UINT16_NODATA, encode_uint16, scales_offsets
    from lsmap.io.rasters import OUTPUT_NODATA, geotiff_profile, set_band_descriptions

    kind, _, zerr = kind.partition("@")
    dtype, compress = kind.split("-")
    with rasterio.open(ref) as src:
        profile = get_profile("l4s14")
        opts = {"compress": compress}
        if compress.startswith("lerc"):
            opts.update(MAX_Z_ERROR=float(zerr or 1e-3))
            opts.pop("predictor", None)
        prof = geotiff_profile(crs=src.crs, transform=src.transform, width=src.width, height=src.height, count=14,
                               dtype=dtype, nodata=UINT16_NODATA if dtype == "uint16" else OUTPUT_NODATA,
                               creation_options=opts)
        if compress.startswith("lerc"):
            prof.pop("predictor")
        div = np.asarray(profile.divisors, np.float64).reshape(-1, 1, 1)
        with rasterio.open(out, "w", **prof) as dst:
            set_band_descriptions(dst, profile.bands)
            if dtype == "uint16":
                dst.scales, dst.offsets = scales_offsets(profile)
            for r0 in range(0, src.height, 512):
                win = rasterio.windows.Window(0, r0, src.width, min(512, src.height - r0))
                x = src.read(window=win)
                if dtype == "uint16":
                    invalid = (x == OUTPUT_NODATA).any(axis=0)
                    x = encode_uint16(x * div, invalid, profile)
                dst.write(x, window=win)


def decode_seconds(path: Path) -> tuple[float, float]:
    """CPU and wall seconds to decode the whole file in full-width strips on one GDAL thread."""
    import rasterio

    from lsmap.core.encoding import decode

    with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=64 * 2**20), rasterio.open(path) as src:
        scales, offsets = src.scales, src.offsets
        scaled = src.dtypes[0] != "float32"
        t0, c0 = time.perf_counter(), _cpu()
        for r0 in range(0, src.height, STRIP):
            x = src.read(window=rasterio.windows.Window(0, r0, src.width, min(STRIP, src.height - r0)))
            if scaled:
                x = decode(x, scales, offsets)
        return _cpu() - c0, time.perf_counter() - t0


def errors(ref: Path, path: Path) -> tuple[float, str, bool, list[float]]:
    """Max |value - reference| over valid pixels (worst band, its name, per band) and whether nodata is kept."""
    import rasterio

    from lsmap.core.encoding import decode
    from lsmap.io.rasters import OUTPUT_NODATA

    worst = np.zeros(14)
    same_nodata = True
    with rasterio.open(ref) as a, rasterio.open(path) as b:
        names = a.descriptions
        for r0 in range(0, a.height, 512):
            win = rasterio.windows.Window(0, r0, a.width, min(512, a.height - r0))
            x = a.read(window=win)
            y = b.read(window=win)
            bad_b = (y == b.nodata).any(axis=0) if b.nodata is not None else np.zeros(y.shape[1:], bool)
            if b.dtypes[0] != "float32":
                y = decode(y, b.scales, b.offsets)
            bad_a = (x == OUTPUT_NODATA).any(axis=0)
            same_nodata &= bool((bad_a == bad_b).all())
            ok = ~bad_a & ~bad_b
            if ok.any():
                worst = np.maximum(worst, np.abs(y[:, ok].astype(np.float64) - x[:, ok]).max(axis=1))
    k = int(worst.argmax())
    return float(worst[k]), names[k] or str(k + 1), same_nodata, worst.tolist()


CANDIDATES = ("float32-deflate", "float32-zstd", "float32-lerc_deflate@1e-3", "float32-lerc_zstd@1e-3",
              "float32-lerc_zstd@1e-4", "uint16-deflate", "uint16-zstd")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["sample", "l4s", "synthetic"])
    ap.add_argument("--size", type=int, default=4096, help="side of the synthetic scene")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    args = ap.parse_args()
    from lsmap.core.bands import L4S_BANDS

    with tempfile.TemporaryDirectory(prefix="lsmap-enc-") as tmp:
        work = Path(tmp)
        for scene in args.scenes:
            ref = work / f"{scene}.tif"
            if scene == "sample":
                sample_stack(ref)
            elif scene == "l4s":
                if not l4s_mosaic(ref):
                    print(f"l4s: no patches under {L4S_TRAIN}; skipped")
                    continue
            else:
                synthetic(ref, args.size)
            import rasterio

            with rasterio.open(ref) as src:
                mpx = src.width * src.height / 1e6
                print(f"scene {scene}: {src.width} x {src.height} px x 14 bands ({mpx:.2f} Mpx)")
            print(f"  {'candidate':22s} {'decode CPU-s/Mpx':>17s} {'(spread)':>16s} {'wall-s/Mpx':>10s} "
                  f"{'MB':>8s} {'bytes/px':>9s} {'max abs err':>12s} {'worst band':>10s} nodata kept")
            for kind in args.candidates:
                path = ref if kind == "float32-deflate" else work / f"{scene}_{kind}.tif"
                if path != ref:
                    write_candidate(ref, path, kind)
                runs = [decode_seconds(path) for _ in range(args.repeats)]
                cpu = [c / mpx for c, _ in runs]
                wall = statistics.median(w for _, w in runs) / mpx
                err, band, kept, per_band = errors(ref, path) if path != ref else (0.0, "-", True, [])
                size = path.stat().st_size
                print(f"  {kind:22s} {statistics.median(cpu):17.4f} {min(cpu):7.4f}-{max(cpu):<8.4f} {wall:10.4f} "
                      f"{size / 1e6:8.1f} {size / (mpx * 1e6):9.2f} {err:12.2e} {band:>10s} {kept}")
                if kind.startswith("uint16") and per_band:
                    print("      max abs err per band: " + ", ".join(f"{b} {e:.1e}" for b, e in
                                                                  zip(L4S_BANDS, per_band, strict=True)))
                if path != ref:
                    path.unlink()
            ref.unlink()


if __name__ == "__main__":
    main()
