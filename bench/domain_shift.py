"""Scenes unlike the training data: the per-band shift detect reports, measured on real data (needs ../shared/data).

1. The labelled Landslide4Sense patches (``l4s/train``, ``l4s/test``): each patch's band means against the shipped
   models' training statistics, in training standard deviations (what a patch of the training data itself
   shows), for the l4s14 and l2a defaults.
2. ``lsmap detect`` with the shipped default on the real Kerala bands (Puthumala 2019, Wayanad 2024; stacked
   first) and on the sample scene: ``shift_sigmas`` of the summary, the bands warned about, polygons and km2;
   Wayanad also with ``blue_max=0.2`` (bright clouds masked), Puthumala also with ``norm="own"``.
3. How much the map depends on the most shifted band: Puthumala with B9 (then B9 and B1) rescaled so that the
   scene's mean equals the training mean; polygons, km2, and the overlap (IoU) with the map of the scene as is.
4. The training data's radiometry: the mean digital numbers of B1, B2, B3, B9 and B10 in the Landslide4Sense
   patches, beside a real L1C (top of atmosphere) and L2A (surface) pair of one date (Barbellino, sen2r).

    PYTHONPATH=. python bench/domain_shift.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def patches() -> None:
    from lsmap.core.bands import get_profile
    from lsmap.io.patches import find_patches, read_patch_image
    from lsmap.learn.models import read_card, resolve_model

    for model in ("l4s14-default", "l2a-default"):
        card = read_card(resolve_model(model))
        prof = get_profile(card.profile.name)
        mean, std = np.asarray(card.band_stats.mean), np.asarray(card.band_stats.std)
        for split in ("train", "test"):
            z = []
            for p in find_patches(DATA / "l4s" / split, masks=False):
                img, _ = read_patch_image(p, prof)
                z.append((img.reshape(len(prof.bands), -1).mean(1) - mean) / std)
            worst = np.abs(np.array(z)).max(0)
            print(f"{model} on l4s/{split} ({len(z)} patches): largest |shift| per band:",
                  ", ".join(f"{b} {w:.1f}" for b, w in zip(prof.bands, worst, strict=True)))


def _detect(scene, out: Path, **kw):
    import lsmap

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gdf = lsmap.detect(scene, out=out, overwrite=True, **kw)
    said = [str(w.message).split(": unlike")[0] for w in seen if "unlike the models' training data" in str(w.message)]
    return gdf, bool(said)


def scenes(tmp: Path) -> None:
    import lsmap

    runs = {"sample (synthetic)": (Path(__file__).resolve().parents[1] / "sample_data" / "scene_l4s14.tif", {})}
    for name in ("puthumala_2019", "wayanad_2024_a"):
        stack = tmp / f"{name}.tif"
        lsmap.stack_scene(DATA / "s2" / "kerala" / name, stack, overwrite=True)
        runs[name] = (stack, {})
    runs["wayanad_2024_a, blue_max 0.2"] = (tmp / "wayanad_2024_a.tif", {"blue_max": 0.2})
    runs["puthumala_2019, norm own"] = (tmp / "puthumala_2019.tif", {"norm": "own"})
    for name, (scene, kw) in runs.items():
        gdf, warned = _detect(scene, tmp / "o.gpkg", **kw)
        info = gdf.attrs["lsmap"]
        shift = sorted((info["shift_sigmas"] or {}).items(), key=lambda bz: -abs(bz[1]))
        print(f"{name}: {len(gdf)} polygons, {info['landslide_area_m2'] / 1e6:.4f} km2, warned {warned}; "
              f"shift: " + ", ".join(f"{b} {z:+.1f}" for b, z in shift[:6]))


def sensitivity(tmp: Path) -> None:
    import rasterio

    from lsmap.learn.models import read_card, resolve_model

    stats = read_card(resolve_model("l2a-default")).band_stats
    with rasterio.open(tmp / "puthumala_2019.tif") as src:
        data = src.read(masked=True).astype(np.float32)
        data = data * np.asarray(src.scales, np.float32)[:, None, None] + np.asarray(src.offsets, np.float32)[:, None, None]
        profile, names = src.profile, list(src.descriptions)
    profile.update(dtype="float32", nodata=None, compress="deflate", predictor=3)
    maps = {}
    for case, bands in (("as is", ()), ("B9 at the training mean", ("B9",)), ("B9 and B1 at the training mean", ("B9", "B1"))):
        x = data.filled(0).copy()
        for b in bands:
            i = names.index(b)
            x[i] *= stats.mean[i] / x[i].mean()
        path = tmp / f"case{len(maps)}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(x)
            for k, b in enumerate(names, start=1):
                dst.set_band_description(k, b)
        gdf, _ = _detect(path, tmp / "o.gpkg")
        maps[case] = gdf
        iou = ""
        if bands:
            a, b = gdf.union_all(), maps["as is"].union_all()
            iou = f", IoU with the map as is {a.intersection(b).area / a.union(b).area:.3f}"
        print(f"Puthumala, {case}: {len(gdf)} polygons, {gdf['area_m2'].sum() / 1e6:.4f} km2{iou}")


def radiometry() -> None:
    import rasterio

    from lsmap.core.bands import L4S_BANDS, L4S_DIVISORS, get_profile
    from lsmap.io.patches import find_patches, read_patch_image

    prof = get_profile("l4s14")
    imgs = [read_patch_image(p, prof)[0] for split in ("train", "test") for p in find_patches(DATA / "l4s" / split, masks=False)]
    mean = np.concatenate([i.reshape(14, -1) for i in imgs], 1).mean(1) * np.asarray(L4S_DIVISORS)
    dn = dict(zip(L4S_BANDS, mean, strict=True))
    print("Landslide4Sense patches, mean DN: " + ", ".join(f"{b} {dn[b]:.0f}" for b in ("B1", "B2", "B3", "B9", "B10")))
    # sen2r's files: TOA B1-B9, B10, B11, B12 (no B8A); BOA B1-B8, B8A, B11, B12 (no B9, B10)
    for kind, order in (("TOA", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12")),
                        ("BOA", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"))):
        path = next((DATA / "s2" / "sen2r_barbellino").glob(f"S2A*_20170703_*_{kind}_10.tif"))
        with rasterio.open(path) as src:
            a = src.read().astype(np.float64)
        a[(a == 0) | (a == 65535)] = np.nan
        m = dict(zip(order, np.nanmean(a.reshape(a.shape[0], -1), 1), strict=True))
        print(f"Barbellino 2017-07-03 {kind}, mean DN: " + ", ".join(f"{b} {m[b]:.0f}" for b in ("B1", "B2", "B3", "B9", "B10") if b in m))


def main() -> None:
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: not found; this benchmark needs ../shared/data")
    patches()
    with tempfile.TemporaryDirectory() as d:
        scenes(Path(d))
        sensitivity(Path(d))
    radiometry()


if __name__ == "__main__":
    main()
