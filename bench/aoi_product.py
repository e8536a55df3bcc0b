"""Time to stack / detect a 20 x 20 km area of interest of a full-tile Sentinel-2 product, against the whole tile.

Generates a synthetic L2A product in SAFE layout (baseline 05.10, DN offset -1000) holding the four
10 m bands B2, B3, B4, B8 of a full 109.8 km tile (10980 x 10980 px; ``--tile-px`` for smaller
runs), as deflate GeoTIFFs (real products are JPEG 2000, slower to decode: these times are a lower
bound for real files), plus its zip (stored, as the hub serves them). Then times:

- ``stack_scene(product, bands="rgbn")`` of the whole tile, and with ``aoi=`` a 20 x 20 km box
  (from the folder and from the zip, read in place);
- ``lsmap.detect(product, ...)`` (stacks first, then detects) of the whole tile and of the AOI,
  with an untrained tiny U-Net for 4 bands (the default model's architecture, 0.12 M parameters:
  timing only, the probabilities mean nothing).

AOI runs are repeated (median printed); whole-tile runs once (``--repeats-full``). Run with nice:

    PYTHONPATH=. nice -n 10 python bench/aoi_product.py                # about 5 minutes on 2 cores
    PYTHONPATH=. python bench/aoi_product.py --tile-px 4000 --no-detect-full
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

BANDS = ("B2", "B3", "B4", "B8")
CRS = "EPSG:32645"
X0, Y0 = 300000.0, 3100020.0  # corner of tile 45RUL


def make_product(folder: Path, n: int, seed: int = 0) -> Path:
    """A synthetic L2A SAFE with the four 10 m bands of an ``n`` x ``n`` px tile (DN = reflectance DN + 1000)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    name = "S2B_MSIL2A_20240730T044709_N0510_R076_T45RUL_20240730T071920.SAFE"
    safe = folder / name
    granule = "GRANULE/L2A_T45RUL_A038607_20240730T045508"
    files = []
    rng = np.random.default_rng(seed)
    for k, b in enumerate(BANDS):
        rel = f"{granule}/IMG_DATA/R10m/T45RUL_20240730T044709_B{b[1:].zfill(2)}_10m"
        files.append(rel)
        (safe / rel).parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(safe / (rel + ".tif"), "w", driver="GTiff", width=n, height=n, count=1, dtype="uint16",
                           crs=CRS, transform=from_origin(X0, Y0, 10, 10), tiled=True, blockxsize=1024,
                           blockysize=1024, compress="deflate", ZLEVEL=1, predictor=2) as dst:
            x = np.arange(n)[None, :] / 997.0
            for r in range(0, n, 1024):
                h = min(1024, n - r)
                y = (r + np.arange(h))[:, None] / 1013.0
                dn = 1000 + 1200 + 800 * np.sin(x * (k + 1) + y) * np.cos(y * 0.7 - x * 0.3)
                dn += rng.normal(0, 60, (h, n))
                dst.write(np.clip(dn, 1, 65535).astype(np.uint16), 1, window=Window(0, r, n, h))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from products_fixtures import mtd_xml

    (safe / "MTD_MSIL2A.xml").write_text(mtd_xml(name, files, baseline="05.10", offsets=dict.fromkeys(
        ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"), -1000)))
    return safe


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tile-px", type=int, default=10980, help="tile size in 10 m pixels (10980: a full tile)")
    p.add_argument("--aoi-km", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=3, help="repeats of the AOI runs")
    p.add_argument("--repeats-full", type=int, default=1, help="repeats of the whole-tile runs")
    p.add_argument("--no-detect-full", action="store_true", help="skip the whole-tile detection")
    p.add_argument("--work", type=Path, default=None, help="folder for the product (default: a temporary one)")
    args = p.parse_args()

    import torch

    import lsmap
    from lsmap.core.bands import PROFILES
    from lsmap.data.stack import stack_scene
    from lsmap.io.aoi import parse_bbox
    from lsmap.learn.ensemble import Member
    from lsmap.learn.models import ModelCard, build_model

    torch.manual_seed(0)
    work = args.work or Path(tempfile.mkdtemp(prefix="lsmap-bench-aoi-"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.tile_px
    t = time.perf_counter()
    safe = make_product(work, n)
    t_make = time.perf_counter() - t
    t = time.perf_counter()
    z = work / (safe.name + ".zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, f.relative_to(work).as_posix())
    t_zip = time.perf_counter() - t
    km = n * 10 / 1000
    a = args.aoi_km * 1000
    cx, cy = X0 + n * 5 + 1234.0, Y0 - n * 5 - 567.0  # off the block grid on purpose
    aoi = parse_bbox(f"{cx - a / 2},{cy - a / 2},{cx + a / 2},{cy + a / 2}", CRS)
    print(f"product: {n} x {n} px ({km:.1f} km, {km * km:.0f} km2), bands {','.join(BANDS)}, "
          f"made in {t_make:.1f} s, zipped in {t_zip:.1f} s ({z.stat().st_size / 2**20:.0f} MiB)")
    print(f"AOI: {args.aoi_km:g} x {args.aoi_km:g} km ({args.aoi_km ** 2:.0f} km2)")

    out = work / "out"
    out.mkdir(exist_ok=True)
    rows = []

    def stack(src, name, **kw):
        return lambda: stack_scene(src, out / f"{name}.tif", bands="rgbn", overwrite=True, **kw)

    med_full, t_full = timed(stack(safe, "full"), args.repeats_full)
    rows.append(("stack, whole tile (SAFE folder)", med_full, t_full))
    med, ts = timed(stack(safe, "aoi", aoi=aoi), args.repeats)
    rows.append(("stack, AOI (SAFE folder)", med, ts))
    med, ts = timed(stack(z, "aoiz", aoi=aoi), args.repeats)
    rows.append(("stack, AOI (SAFE zip, in place)", med, ts))

    profile = PROFILES["rgbn"]
    card = ModelCard(model="tiny-unet", bands=profile.to_dict(),
                     stats={"mean": [1.0] * 4, "std": [0.5] * 4, "count": 1})
    member = Member(build_model("tiny-unet", 4).eval(), card, source="untrained tiny-unet (rgbn)")

    def detect(src, name, **kw):
        return lambda: lsmap.detect({"s2": str(src)}, [member], out=out / f"{name}.gpkg", overwrite=True,
                                    device="cpu", **kw)

    med, ts = timed(detect(safe, "aoi", aoi=aoi), args.repeats)
    rows.append(("detect from the product, AOI (stack + detect)", med, ts))
    if not args.no_detect_full:
        med_df, ts = timed(detect(safe, "full"), args.repeats_full)
        rows.append(("detect from the product, whole tile", med_df, ts))
    for what, med, ts in rows:
        print(f"{what:48s} {med:8.2f} s  (runs: {', '.join(f'{x:.2f}' for x in ts)})")
    print(f"stack: whole tile / AOI = {rows[0][1] / rows[1][1]:.1f}x; area ratio "
          f"{km * km / args.aoi_km ** 2:.1f}x")
    if not args.no_detect_full:
        print(f"detect: whole tile / AOI = {rows[-1][1] / rows[-2][1]:.1f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
