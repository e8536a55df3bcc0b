"""The bright-blue cloud test (``--blue-max``) measured on real data (needs ../shared/data).

1. Against the real SCL of the cloudy L2A tile T29UNU (its 60 m bands, the whole tile, DN offset -1000
   of baseline 04.00): of the pixels the test flags at each threshold (no margin), the share SCL calls
   cloud (8, 9, 10: "precision"); of SCL's cloud pixels, the share flagged ("recall"); and the share of
   SCL's clear ground (4-7: vegetation, bare, water, unclassified) flagged.
2. On real landslide pixels: the Landslide4Sense labelled patches (``l4s/train``), B2 reflectance of the
   landslide and background pixels; the share above each threshold.
3. ``lsmap.detect`` with the default model on the real Kerala bands (no SCL), without and with
   ``blue_max=0.2``: polygons, landslide km2, masked km2, and how much of the largest polygon of the
   unmasked run (the debris-flow track / scar) the masked run keeps.

    PYTHONPATH=. python bench/cloud_blue.py
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
THRESHOLDS = (0.15, 0.2, 0.25, 0.3)


def t29unu() -> None:
    import rasterio

    d = glob.glob(str(DATA / "s2" / "l2a_safe_T29UNU" / "*.SAFE" / "GRANULE" / "*" / "IMG_DATA" / "R60m"))[0]

    def read(band: str) -> np.ndarray:
        with rasterio.open(glob.glob(f"{d}/*_{band}_60m.jp2")[0]) as src:
            return src.read(1)

    b2, scl = read("B02").astype(np.float64), read("SCL")
    valid = (b2 > 0) & (scl > 1)
    refl = (b2 - 1000.0) / 10000.0
    cloud = np.isin(scl, (8, 9, 10)) & valid
    clear = np.isin(scl, (4, 5, 6, 7)) & valid
    print(f"T29UNU, 60 m, whole tile: {valid.sum():,} valid px, SCL cloud {cloud.mean() / valid.mean():.1%}, "
          f"clear ground {clear.mean() / valid.mean():.1%}")
    for t in THRESHOLDS:
        hit = (refl > t) & valid
        print(f"  B2 > {t:.2f}: flagged {hit.sum():>9,}  precision {(hit & cloud).sum() / max(hit.sum(), 1):.3f}  "
              f"recall {(hit & cloud).sum() / cloud.sum():.3f}  clear ground flagged {(hit & clear).sum() / clear.sum():.4f}")


def l4s() -> None:
    import h5py

    from lsmap.core.bands import PROFILES

    prof = PROFILES["l4s14"]
    i, div = prof.bands.index("B2"), prof.divisors[prof.bands.index("B2")]
    ls, bg = [], []
    for img in sorted(glob.glob(str(DATA / "l4s" / "train" / "img" / "*.h5"))):
        mask = img.replace("/img/", "/mask/").replace("image_", "mask_")
        with h5py.File(img) as f, h5py.File(mask) as g:
            b2 = f["img"][()][..., i] * div / 10000.0
            y = g["mask"][()]
        ls.append(b2[y == 1])
        bg.append(b2[y == 0])
    for name, v in (("landslide", np.concatenate(ls)), ("background", np.concatenate(bg))):
        shares = "  ".join(f"> {t:.2f}: {(v > t).mean():.4f}" for t in THRESHOLDS)
        print(f"L4S {name} pixels ({v.size:,}): B2 reflectance 50/95/99.9 % {np.percentile(v, 50):.3f} / "
              f"{np.percentile(v, 95):.3f} / {np.percentile(v, 99.9):.3f}; share {shares}")


def kerala() -> None:
    import lsmap

    for name, offset in (("puthumala_2019", None), ("wayanad_2024_a", -1000)):
        source = {"s2": DATA / "s2" / "kerala" / name, "offset": offset}
        bare, masked = (lsmap.detect(source, None, device="cpu", blue_max=blue) for blue in (None, 0.2))
        track = bare.loc[bare["area_m2"].idxmax()].geometry
        kept = masked.geometry.intersection(track).area.sum() / track.area
        s = masked.attrs["lsmap"]
        print(f"{name}: {len(bare)} polygons, {bare['area_m2'].sum() / 1e6:.4f} km2 without; {len(masked)} polygons, "
              f"{masked['area_m2'].sum() / 1e6:.4f} km2 with blue_max 0.2 ({s['not_observed_km2']:.2f} of "
              f"{s['scene_km2']:.2f} km2 masked); largest polygon kept {kept:.1%}")


if __name__ == "__main__":
    t29unu()
    l4s()
    kerala()
