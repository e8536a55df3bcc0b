"""The dark-pixel test (``--dark-max``) for cloud shadows measured on real data (needs ../shared/data).

1. Against the real SCL of the cloudy L2A tile T29UNU (its 60 m bands, the whole tile, DN offset -1000
   of baseline 04.00; NIR there is B8A, SWIR B11 and B12 for comparison): of the pixels the test flags at
   each threshold (no margin), the share SCL calls cloud shadow (3), water (6), dark area (2), cloud
   (8-10) and clear land (4, 5); of SCL's shadow pixels, the share flagged ("recall"); of SCL's clear
   land, the share flagged (the cost on the ground). With ``--margin``, also the test grown by 1-3 px.
2. On real landslide pixels: the Landslide4Sense labelled patches (``l4s/train``, and the unlabelled
   ``l4s/test`` as more background), NIR (B8) and SWIR reflectance of the landslide and background
   pixels (DN = L4S value x divisor, reflectance = DN / 10000; L4S looks top-of-atmosphere); the share
   below each threshold (the landslides a threshold would mask).
3. ``lsmap.detect`` with the default model on the real Kerala bands (no SCL), without and with
   ``dark_max``: polygons, landslide km2, masked km2, and how much of the largest polygon of the
   unmasked run (the debris-flow scar / track) the masked run keeps.

    PYTHONPATH=. python bench/cloud_dark.py [--margin] [--skip-detect]
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Thresholds per band: NIR as asked (0.04-0.12); SWIR, darker over land and shadow alike, a lower range.
THRESHOLDS = {"B8A": (0.04, 0.06, 0.08, 0.10, 0.12), "B8": (0.04, 0.06, 0.08, 0.10, 0.12),
              "B11": (0.02, 0.03, 0.04, 0.05, 0.06, 0.08), "B12": (0.02, 0.03, 0.04, 0.06)}
#: The Kerala runs: (band, threshold, margin in 10 m pixels).
DETECT_RUNS = (("B11", 0.03, 0), ("B11", 0.04, 0), ("B11", 0.05, 0), ("B11", 0.04, 1), ("B11", 0.04, 3),
               ("B8", 0.06, 0), ("B8", 0.08, 0), ("B8", 0.10, 0))


def t29unu(margins: bool) -> None:
    import rasterio
    from scipy import ndimage

    d = glob.glob(str(DATA / "s2" / "l2a_safe_T29UNU" / "*.SAFE" / "GRANULE" / "*" / "IMG_DATA" / "R60m"))[0]

    def read(band: str) -> np.ndarray:
        with rasterio.open(glob.glob(f"{d}/*_{band}_60m.jp2")[0]) as src:
            return src.read(1)

    scl = read("SCL")
    bands = {b: read(b).astype(np.float64) for b in ("B8A", "B11", "B12")}
    valid = (scl > 1) & np.logical_and.reduce([v > 0 for v in bands.values()])
    shadow, water, dark_area = (scl == 3) & valid, (scl == 6) & valid, (scl == 2) & valid
    cloud, land = np.isin(scl, (8, 9, 10)) & valid, np.isin(scl, (4, 5)) & valid
    n = valid.sum()
    print(f"T29UNU, 60 m, whole tile: {n:,} valid px; SCL shadow {shadow.sum() / n:.1%}, water {water.sum() / n:.1%}, "
          f"dark area {dark_area.sum() / n:.2%}, cloud {cloud.sum() / n:.1%}, clear land (4, 5) {land.sum() / n:.1%}")
    for band, dn in bands.items():
        refl = (dn - 1000.0) / 10000.0
        print(f"  {band} reflectance 5/50/95 %: shadow {' / '.join(f'{np.percentile(refl[shadow], q):.3f}' for q in (5, 50, 95))}"
              f"; clear land {' / '.join(f'{np.percentile(refl[land], q):.3f}' for q in (5, 50, 95))}")
        for t in THRESHOLDS[band]:
            hit = (refl < t) & valid
            k = max(hit.sum(), 1)
            print(f"  {band} < {t:.2f}: flagged {hit.sum():>8,}  of them shadow {(hit & shadow).sum() / k:.3f}  "
                  f"water {(hit & water).sum() / k:.3f}  dark area {(hit & dark_area).sum() / k:.3f}  "
                  f"cloud {(hit & cloud).sum() / k:.3f}  land {(hit & land).sum() / k:.3f}; "
                  f"shadow flagged {(hit & shadow).sum() / shadow.sum():.3f}  land flagged {(hit & land).sum() / land.sum():.4f}")
        if margins and band != "B12":  # B12 flags too much clear land already
            for t in THRESHOLDS[band][1:4]:
                for m in (1, 2, 3):
                    hit = ndimage.binary_dilation((refl < t) & valid, structure=np.ones((3, 3), bool),
                                                  iterations=m) & valid
                    k = max(hit.sum(), 1)
                    print(f"  {band} < {t:.2f} + {m} px (60 m): shadow flagged {(hit & shadow).sum() / shadow.sum():.3f}"
                          f"  of flagged shadow {(hit & shadow).sum() / k:.3f}  cloud {(hit & cloud).sum() / k:.3f}"
                          f"  land flagged {(hit & land).sum() / land.sum():.4f}")


def l4s() -> None:
    import h5py

    from lsmap.core.bands import PROFILES

    prof = PROFILES["l4s14"]
    cols = {b: (prof.bands.index(b), prof.divisors[prof.bands.index(b)]) for b in ("B8", "B11", "B12")}
    ls: dict[str, list] = {b: [] for b in cols}
    bg: dict[str, list] = {b: [] for b in cols}
    unl: dict[str, list] = {b: [] for b in cols}
    for img in sorted(glob.glob(str(DATA / "l4s" / "train" / "img" / "*.h5"))):
        mask = img.replace("/img/", "/mask/").replace("image_", "mask_")
        with h5py.File(img) as f, h5py.File(mask) as g:
            x, y = f["img"][()], g["mask"][()]
        for b, (i, div) in cols.items():
            r = x[..., i] * div / 10000.0
            ls[b].append(r[y == 1])
            bg[b].append(r[y == 0])
    tests = sorted(glob.glob(str(DATA / "l4s" / "test" / "img" / "*.h5")))
    for img in tests:
        with h5py.File(img) as f:
            x = f["img"][()]
        for b, (i, div) in cols.items():
            unl[b].append((x[..., i] * div / 10000.0).ravel())
    for b in cols:
        for name, parts in (("train landslide", ls[b]), ("train background", bg[b]),
                            (f"test ({len(tests)} patches, no masks)", unl[b])):
            v = np.concatenate(parts)
            shares = "  ".join(f"< {t:.2f}: {(v < t).mean():.4f}" for t in THRESHOLDS[b])
            print(f"L4S {name} {b} ({v.size:,} px): reflectance 0.1/1/5/50 % {np.percentile(v, 0.1):.3f} / "
                  f"{np.percentile(v, 1):.3f} / {np.percentile(v, 5):.3f} / {np.percentile(v, 50):.3f}; share {shares}")


def kerala() -> None:
    import rasterio
    from rasterio.features import geometry_mask

    import lsmap
    import lsmap.data.masks as masks

    band_default = masks.DARK_BAND
    for name, offset in (("puthumala_2019", None), ("wayanad_2024_a", -1000)):
        folder = DATA / "s2" / "kerala" / name
        source = {"s2": folder, "offset": offset}
        bare = lsmap.detect(source, None, device="cpu")
        track = bare.loc[bare["area_m2"].idxmax()].geometry
        pct = []
        for b in ("B08", "B11"):
            with rasterio.open(folder / f"{b}.tif") as src:
                inside = ~geometry_mask([track], (src.height, src.width), src.transform)
                refl = (src.read(1)[inside].astype(np.float64) + (offset or 0)) / 10000.0
            pct.append(f"{b} 1/5/50 % {' / '.join(f'{np.percentile(refl, q):.3f}' for q in (1, 5, 50))}")
        print(f"{name}: {len(bare)} polygons, {bare['area_m2'].sum() / 1e6:.4f} km2 without; largest polygon "
              f"{track.area / 1e6:.4f} km2, its reflectance {'; '.join(pct)}")
        if name == "wayanad_2024_a":
            _beside_clouds(folder, offset)
        runs = [(band, {"dark_max": t}, m, f"{band} < {t:.2f} + {m} px") for band, t, m in DETECT_RUNS]
        if name == "wayanad_2024_a":
            runs += [("B11", {"blue_max": 0.2}, 1, "blue_max 0.2 alone"),
                     ("B11", {"blue_max": 0.2, "dark_max": 0.04}, 0, "blue_max 0.2 + B11 < 0.04")]
        for band, kw, margin, label in runs:
            masks.DARK_BAND = band  # the same test on another band (the library's band is DARK_BAND)
            try:
                masked = _detect(source, margin, kw)
            finally:
                masks.DARK_BAND = band_default
            kept = masked.geometry.intersection(track).area.sum() / track.area
            union = masked.geometry.union_all() if len(masked) else None
            gone = int((~bare.geometry.intersects(union)).sum()) if union is not None else len(bare)
            s = masked.attrs["lsmap"]
            km2 = s["not_observed"]["km2"]
            print(f"  {label}: {len(masked)} polygons, {masked['area_m2'].sum() / 1e6:.4f} km2, {gone} of the "
                  f"{len(bare)} gone ({s['not_observed_km2']:.2f} of {s['scene_km2']:.2f} km2 masked: "
                  f"{', '.join(f'{k} {v:.2f}' for k, v in km2.items())}); largest polygon kept {kept:.1%}")


def _beside_clouds(folder: Path, offset: float, near_m: float = 1000.0) -> None:
    """Where the dark pixels lie: the share within ``near_m`` of a bright-blue cloud (B2 > 0.2), where the
    shadows of the scene's cumulus fall, against the share of all valid pixels there."""
    import rasterio
    from scipy import ndimage

    def read(b: str):
        with rasterio.open(folder / f"{b}.tif") as src:
            v = src.read(1).astype(np.float64)
            return np.where(v > 0, (v + offset) / 10000.0, np.nan), abs(src.transform.a)

    (b2, px), (b11, _) = read("B02"), read("B11")
    valid = np.isfinite(b2) & np.isfinite(b11)
    cloud = valid & (b2 > 0.2)
    near = ndimage.distance_transform_edt(~cloud) * px <= near_m
    for t in (0.03, 0.04, 0.05):
        dark = valid & ~cloud & (b11 < t)
        print(f"  B11 < {t:.2f} (outside the B2 > 0.2 clouds): {dark.sum() / valid.sum():.2%} of the valid pixels, "
              f"{(dark & near).sum() / max(dark.sum(), 1):.1%} of them within {near_m:.0f} m of a cloud "
              f"(all valid pixels outside clouds: {(near & valid & ~cloud).sum() / (valid & ~cloud).sum():.1%})")


def _detect(source, margin: int, kw: dict):
    """``lsmap.detect`` with the dark test's margin ``margin`` pixels (the library's is DARK_BUFFER_PX)."""
    import dataclasses

    import lsmap
    import lsmap.map.detect as det

    spec_of = det.mask_spec
    det.mask_spec = lambda *a, **k: dataclasses.replace(spec_of(*a, **k), dark_buffer=margin)
    try:
        return lsmap.detect(source, None, device="cpu", **kw)
    finally:
        det.mask_spec = spec_of


if __name__ == "__main__":
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the real data this measures)")
        sys.exit(0)
    t29unu("--margin" in sys.argv)
    l4s()
    if "--skip-detect" not in sys.argv:
        kerala()
