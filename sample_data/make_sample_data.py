"""Generate lsmap's synthetic sample scene (fixed seed; numpy + rasterio + lsmap only).

Run from the repository root::

    $ PYTHONPATH=. python sample_data/make_sample_data.py            # writes sample_data/*
    $ PYTHONPATH=. python sample_data/make_sample_data.py --out /tmp/x

What it writes (all synthetic, nothing from real data):

- ``s2/SYNTH_20230601_Bxx_<res>m.tif``: Sentinel-2-like bands B1..B12 (and B8A) as uint16
  digital numbers at their native 10/20/60 m resolutions, UTM 45N (EPSG:32645), 0 = nodata
  (a swath-edge corner);
- ``dem_30m.tif``: int16 DEM in metres on a 30 m grid that is offset from the 10 m grid, with
  ridges, valleys and a river;
- ``truth_mask.tif``: uint8 landslide mask at 10 m (0 background, 1 landslide, 255 nodata);
  ``truth_scars.geojson``: the same scars as polygons;
- ``scene_l4s14.tif``: the 14-band L4S-scaled stack made by :func:`lsmap.data.stack.stack_scene`
  (stored with GDAL's ``DISCARD_LSB`` so the file stays small: spectral bands to 0.4 %, slope
  to 0.2 %, DEM to 0.8 m; see ``LOSSY``);
- ``patches/img|mask``: 8 L4S-format 128 x 128 patches cut from that stack, with masks
  (gzip-compressed HDF5);
- ``scene_pre_rgbn.tif``: the same area before the event (:func:`build_pre`), stacked the same
  way but only bands B4, B3, B2, B8: vegetated where the scars will be, the same gravel bars,
  rock and fields, another atmosphere and a cloud (nodata).

The landscape: forest on the slopes, meadow and bare rock on the ridges, fields on gentle low
ground, a river with bright gravel bars (a look-alike of landslides on flat ground), and fresh
landslide scars (bright in the visible, NIR low relative to vegetation, high B11/B12) as
teardrop shapes pointing downslope on slopes steeper than about 28 degrees.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import shapes
from rasterio.transform import from_origin

from lsmap.core.bands import S2_RESOLUTION
from lsmap.data.stack import stack_scene
from lsmap.io.patches import write_patch
from lsmap.io.rasters import geotiff_profile

SEED = 20230601
CRS = "EPSG:32645"
X0, Y0 = 500_000.0, 3_080_000.0  # top-left of the 10 m grid (about 87.0 E, 27.8 N)
N = 512  # 10 m pixels per side
NGEN = 516  # generation canvas: covers the 60 m grid (86 px)
DEM_RES, DEM_X0, DEM_Y0, DEM_N = 30.0, X0 - 215.0, Y0 + 185.0, 185
#: Stored precision of the stack (GDAL DISCARD_LSB per band, float32 has 23 mantissa bits):
#: spectral bands keep 7 bits (relative error <= 0.4 %, about the sensor's noise), slope 8 bits,
#: DEM 11 bits (<= 0.8 m). This keeps every committed file together under 5 MB.
LOSSY = {"DISCARD_LSB": ",".join(["16"] * 12 + ["15", "12"]), "ZLEVEL": 9}
BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

#: Top-of-atmosphere-like digital numbers per cover type, in BANDS order.
SPECTRA = {
    #          B1    B2    B3    B4    B5    B6    B7    B8   B8A    B9  B10   B11   B12
    "forest": (1150, 850, 700, 420, 800, 1900, 2300, 2400, 2450, 750, 10, 1200, 550),
    "meadow": (1180, 900, 820, 650, 1050, 1800, 2100, 2200, 2250, 700, 10, 1750, 950),
    "field": (1200, 950, 850, 750, 1100, 1600, 1850, 1950, 2000, 650, 9, 1900, 1150),
    "rock": (1350, 1200, 1150, 1150, 1300, 1450, 1550, 1600, 1650, 550, 10, 2100, 1600),
    "gravel": (1450, 1350, 1350, 1400, 1500, 1600, 1700, 1750, 1780, 600, 9, 2300, 1850),
    "water": (1250, 1000, 850, 600, 550, 450, 430, 400, 390, 150, 8, 250, 150),
    "scar": (1500, 1450, 1500, 1650, 1800, 1950, 2050, 2100, 2150, 700, 10, 2900, 2300),
}


# --- terrain ------------------------------------------------------------------------------------


class Terrain:
    """A smooth random landscape z(x, y) in metres, evaluable anywhere (map coordinates)."""

    def __init__(self, rng: np.random.Generator) -> None:
        cx, cy = X0 + 2560.0, Y0 - 2560.0
        n = 90  # hills and hollows of many sizes
        sig = np.exp(rng.uniform(np.log(180), np.log(1400), n))
        self.bumps = np.c_[
            cx + rng.uniform(-3600, 3600, n), cy + rng.uniform(-3600, 3600, n),
            rng.choice([-1, 1, 1], n) * sig * rng.uniform(0.25, 0.55, n), sig,
        ]
        self.river = (cy + 300.0, 600.0, 1 / 2600, rng.uniform(0, 2 * np.pi))

    def river_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        y0, amp, k, ph = self.river
        return np.abs(y - (y0 + amp * np.sin(2 * np.pi * k * (x - X0) + ph)))

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        z = np.full(np.broadcast(x, y).shape, 1400.0)
        for bx, by, amp, sig in self.bumps:
            z += amp * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sig**2))
        d = self.river_distance(x, y)
        z += 0.12 * d - 350.0 * np.exp(-(d / 700.0) ** 2)  # valley walls rising from the river
        return z


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (via FFT), standardised to mean 0, std 1."""
    white = rng.normal(size=shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-2 * (np.pi * scale_px) ** 2 * (fx**2 + fy**2)), s=shape)
    return (field - field.mean()) / field.std()


# --- scene ------------------------------------------------------------------------------------


def build(out: Path) -> dict:
    rng = np.random.default_rng(SEED)
    terrain = Terrain(rng)

    # 10 m canvas: pixel centres
    xs = X0 + 10 * (np.arange(NGEN) + 0.5)
    ys = Y0 - 10 * (np.arange(NGEN) + 0.5)
    x, y = np.meshgrid(xs, ys)
    z = terrain(x, y)
    dzdy, dzdx = np.gradient(z, -10.0, 10.0)  # rows go south: dy = -10 m
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    downslope = np.arctan2(-dzdy, -dzdx)  # direction (radians, x east / y north) of steepest descent
    # hillshade: sun from the south-east, 50 deg above the horizon
    az, alt = np.radians(135.0), np.radians(50.0)
    sx, sy = np.sin(az) * np.cos(alt), np.cos(az) * np.cos(alt)
    nz = 1 / np.sqrt(1 + dzdx**2 + dzdy**2)
    cos_i = np.clip((-dzdx * sx - dzdy * sy) * nz + nz * np.sin(alt), 0.05, None)
    illum = 0.55 + 0.45 * cos_i / np.sin(alt)

    # land cover fractions
    d_river = terrain.river_distance(x, y)
    veg = smooth_noise(rng, (NGEN, NGEN), 12)
    treeline = np.percentile(z, 90) + 40 * smooth_noise(rng, (NGEN, NGEN), 25)
    cover = {k: np.zeros((NGEN, NGEN)) for k in SPECTRA}
    water = d_river < 22
    gravel = ~water & (d_river < 60 + 25 * veg)
    high = ~water & ~gravel & (z > treeline)
    patchy = smooth_noise(rng, (NGEN, NGEN), 6) > 0.2
    fields = ~water & ~gravel & ~high & (slope < 15) & (z < np.percentile(z, 35)) & patchy
    rest = ~(water | gravel | high | fields)
    cover["water"][water] = 1
    cover["gravel"][gravel] = 1
    rock_frac = np.clip((z - treeline) / 250 + 0.3 * veg, 0, 1)
    cover["rock"][high] = rock_frac[high]
    cover["meadow"][high] = 1 - rock_frac[high]
    cover["field"][fields] = 1
    meadow_frac = np.clip(0.15 - 0.15 * veg, 0, 1)
    cover["meadow"][rest] = meadow_frac[rest]
    cover["forest"][rest] = 1 - meadow_frac[rest]

    # landslide scars: teardrops pointing downslope on steep ground, away from the river
    scar_frac, truth = scars(rng, x, y, slope, downslope, rest | high)
    # the same ground before the event, vegetated where the scars will be (their share of bare
    # rock on the ridges was meadow)
    before = {k: v.copy() for k, v in cover.items()}
    before["meadow"] += before["rock"] * scar_frac
    before["rock"] *= 1 - scar_frac
    for k in cover:
        cover[k] *= 1 - scar_frac
    cover["scar"] = scar_frac

    # nodata: a swath-edge corner (south-east)
    nodata = (x - X0) + 0.6 * (Y0 - y) > 6200.0

    texture = smooth_noise(rng, (NGEN, NGEN), 3)
    s2 = out / "s2"
    write_bands(s2, "20230601", cover, illum, texture, nodata, rng)

    # DEM on its own 30 m grid
    dxs = DEM_X0 + DEM_RES * (np.arange(DEM_N) + 0.5)
    dys = DEM_Y0 - DEM_RES * (np.arange(DEM_N) + 0.5)
    dem = np.round(terrain(*np.meshgrid(dxs, dys))).astype(np.int16)
    prof = geotiff_profile(crs=CRS, transform=from_origin(DEM_X0, DEM_Y0, DEM_RES, DEM_RES), width=DEM_N,
                           height=DEM_N, count=1, dtype="int16", nodata=-9999)
    with rasterio.open(out / "dem_30m.tif", "w", **prof) as dst:
        dst.write(dem, 1)
        dst.set_band_description(1, "DEM")

    # truth
    mask = truth[:N, :N].astype(np.uint8)
    mask[nodata[:N, :N]] = 255
    tr10 = from_origin(X0, Y0, 10, 10)
    prof = geotiff_profile(crs=CRS, transform=tr10, width=N, height=N, count=1, dtype="uint8", nodata=255)
    with rasterio.open(out / "truth_mask.tif", "w", **prof) as dst:
        dst.write(mask, 1)
        dst.set_band_description(1, "landslide")
    feats = [
        {"type": "Feature", "properties": {"id": i + 1}, "geometry": geom}
        for i, (geom, _) in enumerate(shapes(mask, mask=mask == 1, transform=tr10, connectivity=8))
    ]
    (out / "truth_scars.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32645"}},
         "features": feats}, separators=(",", ":")))

    # the stack and patches
    scene = out / "scene_l4s14.tif"
    stack_scene(s2, scene, dem=out / "dem_30m.tif", overwrite=True, creation_options=LOSSY, encoding="float32")
    with rasterio.open(scene) as src:
        img = src.read()
    picks = patch_windows(rng, mask, nodata[:N, :N])
    for i, (r, c) in enumerate(picks, start=1):
        write_patch(out / "patches", str(i), img[:, r:r + 128, c:c + 128], mask[r:r + 128, c:c + 128],
                    compression="gzip")
    return {
        "landslide_pixels": int((mask == 1).sum()), "scars": len(feats),
        "landslide_fraction_of_valid": float((mask == 1).sum() / (mask != 255).sum()),
        "nodata_fraction": float((mask == 255).mean()), "patches": picks,
        **build_pre(out, rng, before, illum, nodata),
    }


def write_bands(s2: Path, date: str, cover: dict, illum: np.ndarray, texture: np.ndarray, nodata: np.ndarray,
                rng: np.random.Generator, gain: np.ndarray | None = None) -> None:
    """Write the Sentinel-2-like band files of one date: cover fractions x spectra, shaded, with noise.

    ``gain``: per-band factors (the atmosphere and calibration of another date); ``None``: 1.
    """
    spectra = np.array([SPECTRA[k] for k in cover], np.float64)  # (covers, bands)
    frac = np.stack([cover[k] for k in cover])  # (covers, H, W)
    s2.mkdir(parents=True)
    for bi, band in enumerate(BANDS):
        dn = np.tensordot(spectra[:, bi], frac, axes=1)
        if band != "B10":  # cirrus band: no surface signal to shade
            dn = dn * illum * (1 + 0.02 * texture)
        if gain is not None:
            dn = dn * gain[bi]
        dn = dn * (1 + 0.0025 * rng.normal(size=dn.shape))
        res = S2_RESOLUTION[band]
        k = res // 10
        m = N // k if res < 60 else NGEN // k
        dn = dn[: m * k, : m * k].reshape(m, k, m, k).mean(axis=(1, 3))
        nod = nodata[: m * k, : m * k].reshape(m, k, m, k).mean(axis=(1, 3)) > 0.5
        arr = np.clip(np.round(dn), 1, 65535).astype(np.uint16)
        arr[nod] = 0
        prof = geotiff_profile(crs=CRS, transform=from_origin(X0, Y0, res, res), width=m, height=m, count=1,
                               dtype="uint16", nodata=0, creation_options={"ZLEVEL": 9})
        with rasterio.open(s2 / f"SYNTH_{date}_{band[0]}{band[1:].zfill(2)}_{res}m.tif", "w", **prof) as dst:
            dst.write(arr, 1)
            dst.set_band_description(1, band)


def build_pre(out: Path, rng: np.random.Generator, cover: dict, illum: np.ndarray, nodata: np.ndarray) -> dict:
    """The same area before the event: ``scene_pre_rgbn.tif`` (bands B4, B3, B2, B8: what ``--pre``
    needs, red and NIR, and a natural-colour view).

    Drawn from the generator's random state after everything above, so the post-event files do
    not change. The ground is the same (forest and meadow where the scars will be, also where the
    scars reach onto rock; the same gravel bars, rock and fields); what differs is what differs between two real dates: another
    atmosphere (a gain of 1 +- 2 % per band), new canopy texture and sensor noise, and a cloud
    (masked as nodata, 0) that hides part of the scene.
    """
    import tempfile

    xs = X0 + 10 * (np.arange(NGEN) + 0.5)
    ys = Y0 - 10 * (np.arange(NGEN) + 0.5)
    x, y = np.meshgrid(xs, ys)
    gain = 1 + 0.02 * rng.normal(size=len(BANDS))
    texture = smooth_noise(rng, (NGEN, NGEN), 3)
    cx, cy = X0 + rng.uniform(800, 4400), Y0 - rng.uniform(800, 4400)
    cloud = np.hypot(x - cx, y - cy) < 260 + 60 * smooth_noise(rng, (NGEN, NGEN), 8)
    with tempfile.TemporaryDirectory() as tmp:
        write_bands(Path(tmp) / "s2", "20230420", cover, illum, texture, nodata | cloud, rng, gain)
        stack_scene(Path(tmp) / "s2", out / "scene_pre_rgbn.tif", bands="rgbn", overwrite=True, encoding="float32",
                    creation_options={**LOSSY, "DISCARD_LSB": "16,16,16,16"})
    return {"pre_cloud_fraction": float(cloud[:N, :N].mean())}


def scars(rng, x, y, slope, downslope, allowed, n_target: int = 30):
    """Fractional cover (10 m, from 2 x 2 sub-samples) of landslide scars, and the truth mask."""
    cand = np.argwhere(allowed & (slope > 28) & ((x - X0) + 0.6 * (Y0 - y) < 5800))
    rng.shuffle(cand)
    centres: list[tuple[float, float]] = []
    for r, c in cand:
        px, py = x[r, c], y[r, c]
        if all((px - qx) ** 2 + (py - qy) ** 2 > 350.0**2 for qx, qy, _ in centres):
            centres.append((px, py, downslope[r, c]))
        if len(centres) == n_target:
            break
    frac = np.zeros(x.shape)
    for sub in ((-2.5, -2.5), (-2.5, 2.5), (2.5, -2.5), (2.5, 2.5)):
        sx, sy = x + sub[0], y + sub[1]
        inside = np.zeros(x.shape, bool)
        for (cx, cy, ang), length, width, wob in zip(
            centres, rng.uniform(140, 420, len(centres)), rng.uniform(45, 120, len(centres)),
            rng.uniform(0, 2 * np.pi, len(centres)), strict=False,
        ):
            # local axes: u along the downslope direction (head at u = -L/2), v across
            u = (sx - cx) * np.cos(ang) + (sy - cy) * np.sin(ang)
            v = -(sx - cx) * np.sin(ang) + (sy - cy) * np.cos(ang)
            t = np.clip(u / length + 0.5, 0, 1)  # 0 head .. 1 toe
            half_w = 0.5 * width * (1.0 - 0.55 * t) * (1 + 0.12 * np.sin(u / 23.0 + wob))
            inside |= (np.abs(u) <= length / 2) & (np.abs(v) <= half_w)
        frac += inside / 4.0
    return frac, frac >= 0.5


def patch_windows(rng, mask: np.ndarray, nodata: np.ndarray, n: int = 8, size: int = 128) -> list[tuple[int, int]]:
    """Top-left corners of ``n`` patches without nodata: ``n - 2`` with landslides, two without."""
    picks: list[tuple[int, int]] = []
    tries = 0
    while len(picks) < n and tries < 20000:
        tries += 1
        r, c = (int(v) for v in rng.integers(0, N - size + 1, 2))
        m = mask[r:r + size, c:c + size]
        if nodata[r:r + size, c:c + size].any():
            continue
        frac = (m == 1).mean()
        if (frac <= 0.005) if len(picks) < n - 2 else (frac > 0):
            continue
        if any(abs(r - pr) < size // 2 and abs(c - pc) < size // 2 for pr, pc in picks):
            continue
        picks.append((r, c))
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    out: Path = args.out
    for name in ("s2", "patches"):
        shutil.rmtree(out / name, ignore_errors=True)
    info = build(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix != ".py")
    print(json.dumps({**info, "bytes": size}, indent=1))


if __name__ == "__main__":
    main()
