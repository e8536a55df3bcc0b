"""Landslide detection under a synthetic cloud deck, without and with the not-observed mask (issue 19).

Takes the synthetic sample scene's Sentinel-2 band files (``sample_data/s2``, digital numbers at
their native 10/20/60 m) and draws over them a cloud deck (bright and flat in every band: opaque
core, soft edges, a little texture) and its shadow (the deck's shape shifted south-east, every band
darkened to 30 %), stacks them with the sample DEM exactly as the sample scene is stacked, and
writes an SCL raster at 20 m (9 cloud high probability where the deck is opaque, 8 medium on its
edges, 3 shadow, 4 elsewhere). Then runs the default model (``lsmap.detect``, default settings)
on the clear sample stack, on the cloudy stack without a mask, and on the cloudy stack with the SCL
(each with the scene's own statistics, the default, and with ``--norm model``), and prints per run: pixel precision/recall against ``sample_data/truth_mask.tif`` (over every
valid truth pixel, and recall over the scars that stay observed), the number of polygons, those
that touch no true scar ("false"), and the false ones lying mostly (>= 50 % of their area) on the
cloud deck or on its shadow (for the clear scene: on the ground the deck and shadow cover in the
cloudy one).

    PYTHONPATH=. python bench/cloud_detect.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
SEED = 19
#: Cloud top-of-atmosphere-like DNs per band (bright, flat over VNIR, lower in SWIR and cirrus).
CLOUD_DN = {"B1": 7200, "B2": 7000, "B3": 6900, "B4": 6900, "B5": 6900, "B6": 6800, "B7": 6800, "B8": 6700,
            "B8A": 6600, "B9": 3000, "B10": 600, "B11": 4200, "B12": 2800}
SHADOW_GAIN = 0.3
SHIFT = (70, 90)  # shadow offset in 10 m pixels (rows south, columns east)
CANVAS = 516  # the 10 m canvas that covers the 60 m grid (86 px)


def smooth(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Smooth noise in [-1, 1] of shape (n, n) (Gaussian-filtered white noise, by FFT)."""
    f = np.fft.fftfreq(n)
    kernel = np.exp(-0.5 * (np.hypot(*np.meshgrid(f, f, indexing="ij")) * scale * 2 * np.pi) ** 2)
    z = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * kernel))
    return z / np.abs(z).max()


def cloud_fields(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity in [0, 1] and shadow strength in [0, 1] on the 10 m canvas (the shadow left out under cloud)."""
    yy, xx = np.mgrid[:CANVAS, :CANVAS].astype(np.float64)
    blobs = [(150, 330, 95), (260, 150, 70), (110, 120, 45)]  # (row, col, radius) in 10 m pixels
    field = np.zeros((CANVAS, CANVAS))
    edge = 18 * smooth(rng, CANVAS, 10)
    for r, c, rad in blobs:
        d = np.hypot(yy - r, xx - c) - rad + edge
        field = np.maximum(field, np.clip(1 - d / 25, 0, 1))  # opaque core, 250 m soft edge
    opacity = np.clip(field, 0, 1)
    shadow = np.zeros_like(opacity)
    dy, dx = SHIFT
    shadow[dy:, dx:] = opacity[:-dy, :-dx]
    shadow = np.where(opacity > 0.05, 0.0, shadow)
    return opacity, shadow


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    n = a.shape[0] // k
    return a[: n * k, : n * k].reshape(n, k, n, k).mean(axis=(1, 3))


def cloudy_bands(src: Path, dst: Path, opacity: np.ndarray, shadow: np.ndarray, rng: np.random.Generator) -> None:
    """Copy the band files of ``src`` into ``dst`` with the deck and its shadow drawn on them (nodata kept)."""
    dst.mkdir(parents=True)
    texture = 1 + 0.03 * smooth(rng, CANVAS, 4)
    for f in sorted(src.glob("*.tif")):
        name = f.stem.split("_")[2]  # B01 ... B8A
        band = name if name == "B8A" else f"B{int(name[1:])}"
        with rasterio.open(f) as s:
            dn, profile = s.read(1).astype(np.float64), s.profile
            k = int(round(s.transform.a / 10))
        a, sh, tex = (block_mean(x, k)[: dn.shape[0], : dn.shape[1]] for x in (opacity, shadow, texture))
        out = dn * (1 - sh * (1 - SHADOW_GAIN))
        out = (1 - a) * out + a * CLOUD_DN[band] * tex
        out = np.where(dn == 0, 0, np.clip(np.round(out), 1, 65535))
        with rasterio.open(dst / f.name, "w", **profile) as d:
            d.write(out.astype(np.uint16), 1)


def write_scl(path: Path, opacity: np.ndarray, shadow: np.ndarray) -> Path:
    """SCL at 20 m: 9 where the 20 m cell is mostly opaque cloud, 8 on the deck's edges, 3 shadow, 4 elsewhere."""
    a, sh = block_mean(opacity[:512, :512], 2), block_mean(shadow[:512, :512], 2)
    scl = np.full(a.shape, 4, np.uint8)
    scl[sh > 0.3] = 3
    scl[a > 0.1] = 8
    scl[a > 0.6] = 9
    with rasterio.open(path, "w", driver="GTiff", width=scl.shape[1], height=scl.shape[0], count=1, dtype="uint8",
                       crs="EPSG:32645", transform=from_origin(500_000.0, 3_080_000.0, 20.0, 20.0)) as d:
        d.write(scl, 1)
    return path


def score(mask_tif: Path, truth: np.ndarray, hidden: np.ndarray) -> dict:
    with rasterio.open(mask_tif) as s:
        pred = s.read(1) == 1
    ok = truth != 255
    t = truth == 1
    tp, fp, fn = (int((x & ok).sum()) for x in (pred & t, pred & ~t, ~pred & t))
    seen = t & ok & ~hidden
    return {"P": tp / (tp + fp) if tp + fp else float("nan"), "R": tp / (tp + fn) if tp + fn else float("nan"),
            "R_observed": int((pred & seen).sum()) / int(seen.sum())}


def _f(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3f}"


def polygons(gdf, truth_polys, cloud_poly, shadow_poly) -> dict:
    import shapely

    union = shapely.union_all(truth_polys.geometry.values)
    false = [g for g in gdf.geometry if not g.intersects(union)]
    on_cloud = sum(g.intersection(cloud_poly).area >= 0.5 * g.area for g in false)
    on_shadow = sum(g.intersection(shadow_poly).area >= 0.5 * g.area for g in false)
    return {"polygons": len(gdf), "false": len(false), "false_on_cloud": on_cloud, "false_on_shadow": on_shadow}


def area_polygon(mask: np.ndarray):
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    t = from_origin(500_000.0, 3_080_000.0, 10.0, 10.0)
    return unary_union([shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=t) if v == 1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="keep the generated scene and outputs here")
    args = ap.parse_args()
    import geopandas as gpd

    import lsmap
    from lsmap.data.stack import stack_scene

    rng = np.random.default_rng(SEED)
    opacity, shadow = cloud_fields(rng)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lsmap-cloud-"))
    if work.exists() and args.out:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        cloudy_bands(SAMPLE / "s2", work / "s2", opacity, shadow, rng)
        stack_scene(work / "s2", work / "cloudy.tif", dem=SAMPLE / "dem_30m.tif")
        scl = write_scl(work / "scl_20m.tif", opacity, shadow)
        with rasterio.open(SAMPLE / "truth_mask.tif") as s:
            truth = s.read(1)
        with rasterio.open(scl) as s:
            scl20 = s.read(1)
        scl10 = np.kron(scl20, np.ones((2, 2), np.uint8))
        cloud10, shadow10 = np.isin(scl10, (8, 9)), scl10 == 3
        hidden = cloud10 | shadow10
        truth_polys = gpd.read_file(SAMPLE / "truth_scars.geojson")
        cloud_poly, shadow_poly = area_polygon(cloud10), area_polygon(shadow10)
        ok = truth != 255
        print(f"scene 512 x 512 px at 10 m: SCL cloud {cloud10[ok].mean():.1%}, shadow {shadow10[ok].mean():.1%} of "
              f"valid pixels; true scar pixels under them {int((hidden & (truth == 1)).sum())} of "
              f"{int((truth == 1).sum())}")
        runs = [("clear sample scene, no mask", SAMPLE / "scene_l4s14.tif", {}),
                ("cloudy, no mask", work / "cloudy.tif", {}),
                ("cloudy, SCL mask (default classes)", work / "cloudy.tif", {"scl": scl}),
                ("clear sample scene, no mask, --norm model", SAMPLE / "scene_l4s14.tif", {"norm": "model"}),
                ("cloudy, no mask, --norm model", work / "cloudy.tif", {"norm": "model"}),
                ("cloudy, SCL mask, --norm model", work / "cloudy.tif", {"scl": scl, "norm": "model"})]
        print("| run | pixel P | pixel R | pixel R (observed scars) | polygons | false polygons | false on cloud | "
              "false on shadow | seconds |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, (name, scene, kw) in enumerate(runs):
            t0 = time.perf_counter()
            gdf = lsmap.detect(scene, out=work / f"run{i}.gpkg", mask=work / f"run{i}.mask.tif", overwrite=True, **kw)
            sec = time.perf_counter() - t0
            s = score(work / f"run{i}.mask.tif", truth, hidden)
            p = polygons(gdf, truth_polys.to_crs(gdf.crs), cloud_poly, shadow_poly)
            print(f"| {name} | {_f(s['P'])} | {s['R']:.3f} | {s['R_observed']:.3f} | {p['polygons']} | {p['false']} | "
                  f"{p['false_on_cloud']} | {p['false_on_shadow']} | {sec:.1f} |")
        print(f"model: {gdf.attrs['lsmap']['models']}, threshold {gdf.attrs['lsmap']['threshold']:.2f}")
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
