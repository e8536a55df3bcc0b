"""Quick-look PNG: a scene in natural colour with the detected landslide polygons drawn on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lsmap.core.bands import BandProfile, get_profile
from lsmap.errors import InputError
from lsmap.io.rasters import atomic_output, check_output
from lsmap.io.scene import declares_nodata, open_scene

#: Longest side of the rendered image, in pixels (the scene is read decimated, never whole).
MAX_SIDE = 1600


def _stretch(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """2-98 % percentile stretch per band to [0, 1] over valid pixels."""
    out = np.zeros_like(rgb, dtype=np.float32)
    for i in range(rgb.shape[0]):
        vals = rgb[i][valid]
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, [2, 98])
        out[i] = np.clip((rgb[i] - lo) / max(hi - lo, 1e-6), 0, 1)
    out[:, ~valid] = 1.0
    return out


def render_quicklook(scene: str | os.PathLike, polygons, out: str | os.PathLike, bands: str | BandProfile = "l4s14",
                     overwrite: bool = False, title: str | None = None) -> Path:
    """Render ``scene`` (bands B4, B3, B2 as RGB) with ``polygons`` outlined, as a PNG.

    Args:
        scene: GeoTIFF with the bands of ``bands``.
        polygons: GeoDataFrame of landslide polygons (reprojected to the scene's CRS if needed).
        out: PNG path (written atomically).
        bands: Band profile of the scene; it must contain B4, B3 and B2.
        overwrite: Replace an existing ``out``.
        title: Figure title (default: the scene's name and the polygon count).

    Raises:
        InputError: the profile lacks a natural-colour band.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rasterio.enums import Resampling


    out = check_output(out, overwrite)
    profile = get_profile(bands)
    try:
        idx = [profile.bands.index(b) + 1 for b in ("B4", "B3", "B2")]
    except ValueError:
        raise InputError(f"band profile '{profile.name}' has no B4/B3/B2 for a natural-colour quick-look") from None
    with open_scene(scene, profile) as src:
        f = max(src.width, src.height) / MAX_SIDE
        shape = (max(1, round(src.height / max(f, 1))), max(1, round(src.width / max(f, 1))))
        rgb = src.read(idx, out_shape=(3, *shape), resampling=Resampling.average, masked=True)
        bounds, crs, declared = src.bounds, src.crs, declares_nodata(src)
    # the validity rule of lsmap.io.scene on the decimated pixels (B4, B3, B2 are spectral bands)
    valid = ~np.ma.getmaskarray(rgb).any(axis=0) & np.isfinite(rgb.filled(np.nan)).all(axis=0)
    if not declared and profile.nodata is not None:
        valid &= ~(rgb.data == profile.nodata).any(axis=0)
    img = _stretch(rgb.filled(0).astype(np.float32), valid).transpose(1, 2, 0)

    fig, ax = plt.subplots(figsize=(8, 8 * shape[0] / shape[1] + 0.6), dpi=150)
    ax.imshow(img, extent=(bounds.left, bounds.right, bounds.bottom, bounds.top))
    if polygons is not None and len(polygons):
        gdf = polygons.to_crs(crs) if polygons.crs is not None and crs is not None and polygons.crs != crs else polygons
        gdf.boundary.plot(ax=ax, color="#ff2a00", linewidth=0.9)
    n = 0 if polygons is None else len(polygons)
    ax.set_title(title or f"{Path(scene).name}: {n} landslide polygon{'s' if n != 1 else ''}", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    with atomic_output(out, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
