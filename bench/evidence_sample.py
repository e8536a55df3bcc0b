"""Accuracy of the evidence filters on the bundled sample scene pair, against the generator's truth mask.

Runs ``lsmap.detect`` with the default model on ``sample_data/scene_l4s14.tif`` (post-event) and
``sample_data/scene_pre_rgbn.tif`` (pre-event) in each configuration, rasterises the polygons it
keeps onto the truth grid and prints pixel precision/recall/F1 (summed over the scene) and object
precision/recall (connected components, IoU >= 0.5; :func:`lsmap.core.metrics.object_scores`)
against ``sample_data/truth_mask.tif`` (255 = nodata, ignored). With ``--sweep`` it also prints
the scores over a range of ``min_ndvi_drop`` and ``min_slope`` values (polygon filter and gate).

Usage:
    PYTHONPATH=. python bench/evidence_sample.py [--sweep] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize

import lsmap
from lsmap.core.constants import MIN_NDVI_DROP, MIN_SLOPE
from lsmap.core.metrics import confusion, object_scores, scores

ROOT = Path(__file__).resolve().parents[1] / "sample_data"
POST, PRE, TRUTH = ROOT / "scene_l4s14.tif", ROOT / "scene_pre_rgbn.tif", ROOT / "truth_mask.tif"

CONFIGS = {
    "no filter": {},
    f"--min-slope {MIN_SLOPE:g}": {"min_slope": MIN_SLOPE},
    f"--pre --min-ndvi-drop {MIN_NDVI_DROP:g} --min-slope 0": {"pre": PRE, "min_slope": 0},
    "--pre (both, defaults)": {"pre": PRE},
    "--pre --gate (both, defaults)": {"pre": PRE, "gate": True},
}


def score(gdf, truth: np.ndarray, transform) -> dict:
    """Pixel and object scores of the polygons against the truth mask."""
    pred = np.zeros(truth.shape, np.uint8)
    if len(gdf):
        pred = rasterize(((g, 1) for g in gdf.geometry), out_shape=truth.shape, transform=transform, dtype="uint8")
    px = scores(confusion(pred, truth))
    obj = object_scores(pred, truth).as_dict()
    return {"pixel_precision": px["precision"], "pixel_recall": px["recall"], "pixel_f1": px["f1"],
            "object_precision": obj["precision"], "object_recall": obj["recall"], "polygons": len(gdf),
            "objects_pred": obj["n_pred"], "objects_true": obj["n_true"]}


def run(settings: dict, work: Path) -> dict:
    gdf = lsmap.detect(POST, out=work / "s.gpkg", overwrite=True, **settings)
    return score(gdf, TRUTH_ARR, TRUTH_TRANSFORM)


def main() -> None:
    global TRUTH_ARR, TRUTH_TRANSFORM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="Also sweep min_ndvi_drop and min_slope.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args()
    with rasterio.open(TRUTH) as src:
        TRUTH_ARR, TRUTH_TRANSFORM = src.read(1), src.transform
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in CONFIGS.items():
            rows[name] = run(settings, Path(tmp))
        if args.sweep:
            for d in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4):
                rows[f"--pre --min-ndvi-drop {d:g} --min-slope 0"] = run({"pre": PRE, "min_ndvi_drop": d, "min_slope": 0},
                                                                          Path(tmp))
                rows[f"--pre --min-ndvi-drop {d:g} --min-slope 0 --gate"] = run(
                    {"pre": PRE, "min_ndvi_drop": d, "min_slope": 0, "gate": True}, Path(tmp))
            for s in (5, 10, 15, 20, 25):
                rows[f"--min-slope {s:g}"] = run({"min_slope": s}, Path(tmp))
                rows[f"--min-slope {s:g} --gate"] = run({"min_slope": s, "gate": True}, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    base = rows["no filter"]["pixel_recall"]
    print("| configuration | pixel P | pixel R | R loss | pixel F1 | object P | object R | polygons |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| `{name}` | {r['pixel_precision']:.3f} | {r['pixel_recall']:.3f} | {base - r['pixel_recall']:.3f} | "
              f"{r['pixel_f1']:.3f} | {r['object_precision']:.3f} | {r['object_recall']:.3f} | {r['polygons']} |")


if __name__ == "__main__":
    main()
