"""Real NDVI and slope numbers behind the evidence defaults (``docs/evidence.md``); needs ``../shared/data``.

1. Puthumala 2019 (``s2/kerala/puthumala_2019``, post-event L2A, no DN offset): NDVI inside the
   fresh debris-flow scar against its vegetated surroundings. The scar is delimited from the
   bands alone: pixels with NDVI < 0.3 that are soil-coloured (B4 > 1.2 B2) and not cloud
   (B2 < 1000 DN; the scene's cumulus are bright and flat-spectrum, B2 > 1500), in the eastern part
   of the scene (columns >= 320, where the streak runs), the largest 8-connected component of
   those, its holes up to 20 px filled. The surroundings are the pixels 3 to 15 px (30-150 m) from
   the scar, more than 5 px from any cloud-like pixel (B2 >= 1000) and with NDVI >= 0 (no water).
2. The same ground five years later (``s2/kerala/wayanad_2024_a``: DNs with the +1000 offset,
   removed here; the Puthumala box lies inside it, grids 0.44 px apart, warped bilinearly onto the
   2019 grid): the NDVI change of unchanged vegetation between two real dates (outside the scar,
   no cloud in either date), and the change inside the scar (regrowth).
3. Barbellino (``s2/sen2r_barbellino``, L2A BOA 2017-07-03 and 2019-07-23, one grid): the NDVI
   change of unchanged Alpine ground (SCL clear in both) between two real dates.
4. Landslide4Sense training patches (``l4s/train``, real, with masks): NDVI of landslide and of
   background pixels (L4S values times the divisors = DN), and the slope (L4S slope band times its
   divisor = degrees) of landslide pixels and the mean slope of each landslide object
   (8-connected) -- the quantity ``--min-slope`` tests.

Usage:
    PYTHONPATH=. python bench/evidence_real.py [--data ../shared/data] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

from lsmap.core.bands import L4S_BANDS, L4S_DIVISORS
from lsmap.map.evidence import ndvi

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pct(a: np.ndarray, qs=(5, 25, 50, 75, 95)) -> dict:
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    return {"n": int(a.size), "mean": round(float(a.mean()), 3),
            **{f"p{q}": round(float(np.percentile(a, q)), 3) for q in qs}}


def bands(folder: Path, names, offset: float = 0.0) -> dict[str, np.ndarray]:
    out = {}
    for b in names:
        with rasterio.open(folder / f"{b}.tif") as src:
            a = src.read(1).astype(np.float64)
            a[a == 0] = np.nan
            out[b] = a - offset
    return out


def puthumala(data: Path) -> tuple[dict, dict]:
    folder = data / "s2" / "kerala" / "puthumala_2019"
    b = bands(folder, ("B02", "B03", "B04", "B08"))
    nd = ndvi(b["B04"], b["B08"]).astype(np.float64)
    cloudy = b["B02"] >= 1000
    cand = (nd < 0.3) & (b["B04"] > 1.2 * b["B02"]) & ~cloudy
    cand[:, :320] = False
    lab, n = ndimage.label(cand, structure=np.ones((3, 3), bool))
    sizes = np.bincount(lab.ravel())[1:]
    scar = lab == (1 + int(np.argmax(sizes)))
    holes = ndimage.binary_fill_holes(scar) & ~scar
    hl, hn = ndimage.label(holes)
    small = np.isin(hl, 1 + np.flatnonzero(np.bincount(hl.ravel())[1:] <= 20))
    scar |= small
    dist = ndimage.distance_transform_edt(~scar)
    near_cloud = ndimage.distance_transform_edt(~cloudy) <= 5
    ring = (dist >= 3) & (dist <= 15) & ~near_cloud & (nd >= 0)
    rows, cols = np.nonzero(scar)
    res = {
        "scar_pixels": int(scar.sum()), "scar_rows": [int(rows.min()), int(rows.max())],
        "scar_cols": [int(cols.min()), int(cols.max())],
        "ndvi_scar": pct(nd[scar]), "ndvi_surroundings_30_150m": pct(nd[ring]),
        "ndvi_scene_clear": pct(nd[~near_cloud]),
        "contrast_median": round(float(np.nanmedian(nd[ring]) - np.nanmedian(nd[scar])), 3),
    }
    with rasterio.open(folder / "B04.tif") as src:
        grid = (src.crs, src.transform, src.shape)
    return res, {"scar": scar, "ring": ring, "cloudy": near_cloud, "ndvi": nd, "grid": grid}


def two_dates_kerala(data: Path, p: dict) -> dict:
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    crs, transform, shape = p["grid"]
    folder = data / "s2" / "kerala" / "wayanad_2024_a"
    out = {}
    for name in ("B02", "B04", "B08"):
        with rasterio.open(folder / f"{name}.tif") as src:
            a = src.read(1).astype(np.float64)
            a[a == 0] = np.nan
            a -= 1000.0  # the baseline >= 04.00 offset these DNs carry
            dst = np.full(shape, np.nan)
            reproject(a, dst, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan, dst_transform=transform,
                      dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
            out[name] = dst
    nd24 = ndvi(out["B04"], out["B08"]).astype(np.float64)
    cloud24 = ndimage.distance_transform_edt(~(out["B02"] >= 1000)) <= 5
    clear = ~p["cloudy"] & ~cloud24 & np.isfinite(nd24)
    stable = clear & ~ndimage.binary_dilation(p["scar"], iterations=5) & (p["ndvi"] >= 0.6)
    drop = p["ndvi"] - nd24  # 2019 minus 2024: positive = lower NDVI in 2024
    return {
        "clear_both_pixels": int(clear.sum()),
        "stable_vegetation_ndvi_2019_minus_2024": pct(drop[stable], (1, 5, 50, 95, 99)),
        "stable_vegetation_abs_change": pct(np.abs(drop[stable]), (50, 90, 95, 99)),
        "scar_ndvi_2024": pct(nd24[p["scar"] & clear]),
    }


def barbellino(data: Path) -> dict:
    folder = data / "s2" / "sen2r_barbellino"
    nds, clear = [], []
    for date in ("20170703", "20190723"):
        with rasterio.open(folder / f"S2A2A_{date}_022_Barbellino_BOA_10.tif") as src:
            a = src.read().astype(np.float64)
            nod = (a == src.nodata).any(axis=0) if src.nodata is not None else np.zeros(a.shape[1:], bool)
            # sen2r BOA: 11 bands B1..B8, B8A, B11, B12 (no B9/B10): red = band 4, NIR = band 8
            nd = ndvi(a[3], a[7]).astype(np.float64)
            nd[nod] = np.nan
            nds.append(nd)
        with rasterio.open(folder / f"S2A2A_{date}_022_Barbellino_SCL_10.tif") as src:
            scl = src.read(1, out_shape=nd.shape, resampling=rasterio.enums.Resampling.nearest)
            clear.append(np.isin(scl, (4, 5, 6)))
    ok = clear[0] & clear[1] & np.isfinite(nds[0]) & np.isfinite(nds[1])
    drop = nds[0] - nds[1]
    veg = ok & (nds[0] >= 0.4)
    return {"clear_both_pixels": int(ok.sum()), "ndvi_2017": pct(nds[0][ok]),
            "ndvi_2017_minus_2019_all_clear": pct(drop[ok], (1, 5, 50, 95, 99)),
            "ndvi_2017_minus_2019_vegetated": pct(drop[veg], (1, 5, 50, 95, 99))}


def l4s(data: Path) -> dict:
    import h5py

    d = dict(zip(L4S_BANDS, L4S_DIVISORS, strict=True))
    ls_nd, bg_nd, ls_slope, bg_slope, obj_slope, obj_nd = [], [], [], [], [], []
    for img in sorted((data / "l4s" / "train" / "img").glob("image_*.h5")):
        with h5py.File(img) as f:
            x = np.asarray(f["img"], np.float64)
        with h5py.File(img.parent.parent / "mask" / img.name.replace("image", "mask")) as f:
            m = np.asarray(f["mask"]) == 1
        red, nir = x[..., 3] * d["B4"], x[..., 7] * d["B8"]
        nd = ndvi(red, nir).astype(np.float64)
        slope = x[..., 12] * d["slope"]
        ls_nd.append(nd[m])
        bg_nd.append(nd[~m])
        ls_slope.append(slope[m])
        bg_slope.append(slope[~m])
        lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        if n:
            idx = np.arange(1, n + 1)
            obj_slope.append(ndimage.mean(slope, lab, idx))
            obj_nd.append(ndimage.mean(nd, lab, idx))
    cat = np.concatenate
    os_ = cat(obj_slope)
    return {
        "patches": len(ls_nd), "ndvi_landslide_pixels": pct(cat(ls_nd)), "ndvi_background_pixels": pct(cat(bg_nd)),
        "slope_landslide_pixels_deg": pct(cat(ls_slope)), "slope_background_pixels_deg": pct(cat(bg_slope)),
        "landslide_objects": int(os_.size), "object_mean_slope_deg": pct(os_, (1, 5, 10, 25, 50)),
        "objects_below": {str(t): round(float((os_ < t).mean()), 3) for t in (5, 10, 15, 20)},
        "object_mean_ndvi": pct(cat(obj_nd)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--png", type=Path, default=None, help="Write a PNG of the Puthumala scar and surroundings.")
    args = parser.parse_args()
    res, p = puthumala(args.data)
    out = {"puthumala_2019": res, "puthumala_2019_vs_2024": two_dates_kerala(args.data, p),
           "barbellino_2017_vs_2019": barbellino(args.data), "l4s_train": l4s(args.data)}
    if args.png is not None:
        from PIL import Image

        nd = np.clip(np.nan_to_num(p["ndvi"]), 0, 1)
        rgb = np.stack([nd, nd, nd], -1)
        rgb[p["scar"]] = (1, 0.2, 0.2)
        rgb[p["ring"]] = rgb[p["ring"]] * (0.3, 1, 0.3)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(args.png)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
