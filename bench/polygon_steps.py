"""The steps after the models, on many landslides: seconds of each, on a generated fragmented mask.

A ``noisy`` probability raster of ``--size``^2 px (``bench/vectorize_noise.py``'s: blobs plus speckle,
>= 100,000 polygons at 4096^2) is vectorised, then each later step is timed on its landslides:
- joining the traced blocks into landslides (``BlockStream.landslides``: build, dissolve, order);
- the polygon options of the README's example (``--min-area 200 --simplify 5 --fill-holes 500``),
  and each alone;
- cutting a synthetic 20 % cloud mask out of them and flagging those near it (``_respect_not_observed``);
- the HTML report's SVG paths (``report._svg_paths``);
- merging two scene layers, the second shifted by half the scene (``merge_layers``).

    $ PYTHONPATH=. python bench/polygon_steps.py [--size 4096]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - t0:.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    import geopandas  # noqa: F401  (imports before timing)
    import rasterio
    import scipy.ndimage
    import shapely

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vectorize_noise import make_prob

    from lsmap.core.windows import block_grid
    from lsmap.map.components import BlockStream
    from lsmap.map.detect import _respect_not_observed
    from lsmap.map.regional.merge import merge_layers
    from lsmap.map.report import _svg_paths
    from lsmap.map.vectorize import landslide_table, not_observed_polygons

    with tempfile.TemporaryDirectory(prefix="lsmap-poly-") as tmp:
        work = Path(tmp)
        make_prob(work / "p.tif", args.size, "noisy")
        with rasterio.open(work / "p.tif") as src:
            crs, transform = src.crs, src.transform
            stream = BlockStream(src.height, src.width, 0.5, block=1024)
            for win in block_grid(src.height, src.width, 1024):
                stream.add(win.row_off, win.col_off, src.read(1, window=win))
            while stream.futures:  # every block traced: what follows is the join alone
                cell, f = stream.futures.popleft()
                stream.parts.add(cell, f.result())
        print(f"noisy {args.size}^2 px mask, {stream.parts.n_parts} parts:")
        found = timed("joining the blocks into landslides", lambda: stream.landslides(transform))
        print(f"  -> {len(found.geoms)} landslides")
        timed("table, no options", lambda: landslide_table(found, crs))
        timed("table, --fill-holes 500", lambda: landslide_table(found, crs, fill_holes=500))
        timed("table, --simplify 5", lambda: landslide_table(found, crs, simplify=5))
        gdf = timed("table, --min-area 200 --simplify 5 --fill-holes 500",
                    lambda: landslide_table(found, crs, min_area=200, simplify=5, fill_holes=500))
        rng = np.random.default_rng(0)
        side = args.size // 8
        field = scipy.ndimage.gaussian_filter(rng.standard_normal((side, side)), 12)
        cloud = np.kron(field > np.quantile(field, 0.8), np.ones((8, 8), np.uint8)).astype(np.uint8)
        with rasterio.open(work / "nobs.tif", "w", driver="GTiff", width=cloud.shape[1], height=cloud.shape[0],
                           count=1, dtype="uint8", crs=crs, transform=transform) as dst:
            dst.write(cloud[None])
        masked = not_observed_polygons(work / "nobs.tif")
        print(f"  (a synthetic cloud mask: {100 * cloud.mean():.0f} % of the scene, "
              f"{int(shapely.get_num_coordinates(masked.geometry.values).sum())} vertices)")
        plain = landslide_table(found, crs)
        timed(f"cutting the cloud mask out of {len(plain)} landslides and flagging those near it",
              lambda: _respect_not_observed(plain, masked, SimpleNamespace(transform=transform)))
        timed(f"the report's SVG paths of {len(gdf)} landslides", lambda: _svg_paths(gdf.geometry.values, ~transform))
        half = args.size * transform.a / 2
        other = gdf.set_geometry(shapely.transform(gdf.geometry.values, lambda xy: xy + [half, 0.0]), crs=crs)
        merged = timed(f"merging two layers of {len(gdf)} landslides (the second shifted by half the scene)",
                       lambda: merge_layers({"a": gdf, "b": other}))
        print(f"  -> {len(merged)} polygons, {int((merged.n_parts > 1).sum())} joined across the layers")


if __name__ == "__main__":
    main()
