"""Does the sliding window's size change the map? Pixel agreement and landslide F1 by window size.

Runs ``lsmap.detect`` with the shipped default model (``l4s14-default``, a fully convolutional
tiny U-Net) at each ``--windows`` size with the default overlap (32 px) on:
- ``sample``: sample_data/scene_l4s14.tif against sample_data/truth_mask.tif (512^2, 30 scars);
- ``l4s``: the 15 labelled Landslide4Sense training patches (``../shared/data/l4s/train``, 128^2 x 14,
  real Sentinel-2 + ALOS PALSAR terrain, their masks) mosaicked 5 x 3 into one 640 x 384 scene in a
  temporary folder (real data; skipped when absent).

Prints, per window: windows run, seconds, landslide pixels, F1 / precision / recall of the pixel
mask against the truth, and the share of valid pixels whose mask differs from the first window's.

    $ PYTHONPATH=. python bench/window_size.py [--windows 128 256 512] [--scenes sample l4s]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
L4S_TRAIN = ROOT.parent / "shared" / "data" / "l4s" / "train"


def l4s_mosaic(folder: Path, cols: int = 5) -> tuple[Path, np.ndarray] | None:
    """The labelled L4S patches tiled ``cols`` wide as a float32 L4S stack and its truth mask, or ``None``."""
    import h5py
    import rasterio
    from rasterio.transform import from_origin

    from lsmap.core.bands import L4S_BANDS
    from lsmap.io.rasters import geotiff_profile, set_band_descriptions

    imgs = sorted((L4S_TRAIN / "img").glob("*.h5")) if (L4S_TRAIN / "img").is_dir() else []
    if not imgs:
        return None
    patches, masks = [], []
    for f in imgs:
        m = L4S_TRAIN / "mask" / f.name.replace("image", "mask")
        with h5py.File(f, "r") as h, h5py.File(m, "r") as hm:
            patches.append(np.asarray(h["img"], np.float32).transpose(2, 0, 1))
            masks.append(np.asarray(hm["mask"], np.uint8))
    rows = -(-len(patches) // cols)
    side = patches[0].shape[1]
    img = np.zeros((14, rows * side, cols * side), np.float32)
    truth = np.zeros((rows * side, cols * side), np.uint8)
    for k, (p, m) in enumerate(zip(patches, masks, strict=True)):
        r, c = divmod(k, cols)
        img[:, r * side:(r + 1) * side, c * side:(c + 1) * side] = p
        truth[r * side:(r + 1) * side, c * side:(c + 1) * side] = m
    path = folder / "l4s_mosaic.tif"
    prof = geotiff_profile(crs="EPSG:32645", transform=from_origin(500000.0, 3000000.0, 10.0, 10.0),
                           width=img.shape[2], height=img.shape[1], count=14)
    with rasterio.open(path, "w", **prof) as dst:
        set_band_descriptions(dst, L4S_BANDS)
        dst.write(img)
    return path, truth


def f1(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> tuple[float, float, float]:
    p, t = pred[valid] == 1, truth[valid] == 1
    tp = float((p & t).sum())
    prec = tp / max(1.0, float(p.sum()))
    rec = tp / max(1.0, float(t.sum()))
    return 2 * prec * rec / max(1e-12, prec + rec), prec, rec


def run(scene: Path, truth: np.ndarray, windows: list[int], work: Path, overlap: int) -> None:
    import rasterio

    import lsmap

    first = None
    for w in windows:
        mask_path = work / f"{scene.stem}_{w}_mask.tif"
        t0 = time.perf_counter()
        gdf = lsmap.detect(scene, out=None, mask=mask_path, window=w, overlap=overlap, device="cpu", overwrite=True)
        dt = time.perf_counter() - t0
        with rasterio.open(mask_path) as src:
            m = src.read(1)
        valid = (m != 255) & (truth != 255)
        score, prec, rec = f1(m, truth, valid)
        if first is None:
            first = m
        differ = float(((m == 1) != (first == 1))[valid].mean())
        info = gdf.attrs["lsmap"]
        print(f"  window {w:4d} (overlap {overlap}): {info['windows']:4d} windows, {dt:5.1f} s, "
              f"{int((m == 1).sum()):6d} landslide px, F1 {score:.4f} (P {prec:.4f}, R {rec:.4f}), "
              f"differs from window {windows[0]} at {100 * differ:.3f} % of valid px")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--scenes", nargs="+", default=["sample", "l4s"])
    args = ap.parse_args()
    import rasterio

    with tempfile.TemporaryDirectory(prefix="lsmap-win-") as tmp:
        work = Path(tmp)
        for name in args.scenes:
            if name == "sample":
                scene = ROOT / "sample_data" / "scene_l4s14.tif"
                with rasterio.open(ROOT / "sample_data" / "truth_mask.tif") as src:
                    truth = src.read(1)
            else:
                made = l4s_mosaic(work)
                if made is None:
                    print(f"l4s: no patches under {L4S_TRAIN}; skipped")
                    continue
                scene, truth = made
            print(f"scene {name}: {scene.name}, {truth.shape[1]} x {truth.shape[0]} px, "
                  f"{int((truth == 1).sum())} landslide px in the truth")
            run(scene, truth, args.windows, work, args.overlap)


if __name__ == "__main__":
    main()
