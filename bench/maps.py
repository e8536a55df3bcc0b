"""Time and size of the maps `lsmap detect` hands over: quick-look PNG, HTML report, QGIS style.

Runs detection once on a scene (default: the bundled sample scene, default model), then times, each
``--repeat`` times (median printed): reading the scene in natural colour, rendering the quick-look
PNG from it, writing the HTML report from it, and writing the GeoPackage with and without its
QGIS style. Prints the output sizes too.

    $ PYTHONPATH=. python bench/maps.py
    $ PYTHONPATH=. python bench/maps.py --scene big.tif --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default="sample_data/scene_l4s14.tif")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import lsmap
    from lsmap.map.detect import default_models
    from lsmap.map.quicklook import natural_colour, render_quicklook
    from lsmap.map.report import write_report
    from lsmap.map.vectorize import write_layer

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        gdf = lsmap.detect(args.scene, None, device="cpu")
        models = default_models()
        summary = gdf.attrs["lsmap"]

        def timed(fn) -> float:
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return statistics.median(times)

        image = natural_colour(args.scene, summary["bands"])
        t_read = timed(lambda: natural_colour(args.scene, summary["bands"]))
        t_png = timed(lambda: render_quicklook(args.scene, gdf, d / "q.png", summary["bands"], overwrite=True,
                                               models=models, image=image))
        t_html = timed(lambda: write_report(d / "r.html", gdf, image, scene_name=Path(args.scene).name,
                                            models=models, summary=summary, overwrite=True))

        def gpkg(styled: bool) -> None:
            for p in d.glob("g*.gpkg"):
                p.unlink()
            out = d / "g.gpkg"
            if styled:
                write_layer(gdf, out, out)
            else:
                gdf.to_file(out, driver="GPKG", engine="pyogrio", geometry_type="Polygon")

        t_plain = timed(lambda: gpkg(False))
        t_styled = timed(lambda: gpkg(True))
        print(f"scene {args.scene}: {image.width} x {image.height} px, overview {image.valid.shape[1]} x "
              f"{image.valid.shape[0]}, {len(gdf)} polygons; medians of {args.repeat}")
        print(f"natural colour read   {t_read:.3f} s")
        print(f"quick-look PNG        {t_png:.3f} s   {(d / 'q.png').stat().st_size / 1e3:.0f} kB")
        print(f"HTML report           {t_html:.3f} s   {(d / 'r.html').stat().st_size / 1e3:.0f} kB")
        print(f"GeoPackage plain      {t_plain:.3f} s")
        print(f"GeoPackage + style    {t_styled:.3f} s   (+{(t_styled - t_plain) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
