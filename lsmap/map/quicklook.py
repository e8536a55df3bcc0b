"""Quick-look map: a scene in natural colour with the detected landslide polygons, as a PNG.

The scene is read decimated (:func:`lsmap.io.scene.read_scene_overview`, never whole, with the
scene module's validity rule) and shown in natural colour (B4, B3, B2) with one stretch common to
the three bands (:func:`lsmap.core.display.percentile_stretch` with ``joint=True``) on values
proportional to the sensor's digital numbers, so the colour balance of the scene is kept; a stack
on the L4S scale is multiplied back by the profile's divisors first, since those differ per band.
Pixels without data are a flat dark grey and pixels not observed (clouds, given as a mask) are
tinted and hatched, both in the legend; polygon outlines are coloured by their ``mean_prob`` in
the classes of :data:`lsmap.core.display.PROB_CLASSES` with a colour bar. The frame carries the
scene CRS's coordinates and units, a scale bar and a north arrow (turned by the grid convergence
of the CRS at the scene centre); the title names the scene, its date when known and the model.

:func:`natural_colour` is the image alone, shared with the HTML report (:mod:`lsmap.map.report`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.bands import L4S_BANDS, BandProfile, get_profile
from lsmap.core.display import (
    NODATA_COLOUR,
    NOT_OBSERVED_COLOUR,
    PROB_CLASSES,
    REJECTED_COLOUR,
    percentile_stretch,
    prob_class,
    to_uint8,
)
from lsmap.core.ground import ground_metres_per_unit
from lsmap.data.scan import INPUT_SCALES, RAW_THRESHOLD
from lsmap.errors import InputError
from lsmap.io.rasters import atomic_output, check_output, open_raster, read_window
from lsmap.io.scene import band_names, open_scene, read_scene_overview

#: Longest side of the decimated image, in pixels.
MAX_SIDE = 1600
#: Natural-colour stretch: percentiles of the three bands' values pooled, then a display gamma.
PERCENTILES = (1.0, 99.5)
GAMMA = 1.5
#: Scene metadata tags that hold the acquisition date, most specific first.
DATE_TAGS = ("ACQUISITION_DATE", "DATATAKE_1_DATATAKE_SENSING_START", "SENSING_TIME", "PRODUCT_START_TIME",
             "DATE_ACQUIRED", "ACQUISITION_TIME", "DATE")
_DATE_RE = re.compile(r"(?<!\d)((?:19|20)\d\d)-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass(frozen=True)
class NaturalColour:
    """A scene decimated for display, in natural colour.

    Attributes:
        rgb: ``(h, w, 3)`` float in ``[0, 1]``; pixels without data hold 0.
        valid: ``(h, w)``: the scene has data there (:func:`lsmap.io.scene.valid_pixels`).
        not_observed: ``(h, w)`` not-observed mask (clouds), or ``None`` when none was given.
        bounds: ``(left, bottom, right, top)`` in the scene CRS.
        crs: The scene's CRS (rasterio).
        transform: Affine transform of the full-resolution scene.
        width: Full-resolution width in pixels.
        height: Full-resolution height in pixels.
        tags: The scene's metadata tags.
    """

    rgb: np.ndarray
    valid: np.ndarray
    not_observed: np.ndarray | None
    bounds: tuple[float, float, float, float]
    crs: Any
    transform: Any
    width: int
    height: int
    tags: dict

    def rgba8(self) -> np.ndarray:
        """``(h, w, 4)`` uint8 image: nodata in :data:`NODATA_COLOUR`, not observed tinted; opaque."""
        img = self.rgb.copy()
        if self.not_observed is not None:
            tint = np.array(_hex_rgb(NOT_OBSERVED_COLOUR))
            img[self.not_observed] = 0.45 * img[self.not_observed] + 0.55 * tint
        img[~self.valid] = _hex_rgb(NODATA_COLOUR)
        out = np.empty((*img.shape[:2], 4), np.uint8)
        out[..., :3] = to_uint8(img)
        out[..., 3] = 255
        return out


def _hex_rgb(colour: str) -> tuple[float, float, float]:
    c = colour.lstrip("#")
    return int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255


def natural_colour(scene: str | os.PathLike, bands: str | BandProfile | Sequence[str] | None = None, *,
                   input_scale: str = "auto", not_observed: Any = None, max_side: int = MAX_SIDE) -> NaturalColour:
    """Read ``scene`` decimated and stretch B4, B3, B2 to natural colour (see the module docstring).

    Args:
        scene: GeoTIFF whose bands include B4, B3 and B2.
        bands: The scene's bands in file order; ``None``: its band descriptions (the L4S order for
            a 14-band file without them).
        input_scale: ``"raw"`` (digital numbers), ``"l4s"`` (divided by the profile's divisors) or
            ``"auto"`` (the rule of :mod:`lsmap.data.scan`, on the decimated pixels).
        not_observed: Not-observed mask: a bool/0-1 array of the scene's (or the overview's) shape,
            or a raster on the scene's grid whose non-zero pixels are not observed; ``None``: none.
        max_side: Longest side of the decimated image.

    Raises:
        InputError: the scene lacks a natural-colour band or its band names cannot be told, an
            unknown ``input_scale``, or a not-observed mask of another shape.
    """
    given = get_profile(bands) if bands is not None else None
    if given is not None:
        _rgb_indices(scene, given.bands)
    if input_scale not in INPUT_SCALES:
        raise InputError(f"unknown input scale '{input_scale}'; choose one of: {', '.join(INPUT_SCALES)}")
    with open_scene(scene, given) as src:
        names = given.bands if given is not None else band_names(src)
        if names is None and src.count == len(L4S_BANDS):
            names = L4S_BANDS
        if names is None:
            raise InputError(f"{scene}: no band names (band descriptions) to find B4, B3, B2 for the quick-look; "
                             f"pass `bands`")
        profile = get_profile(names)
        idx = _rgb_indices(scene, profile.bands)
        rgb, valid = read_scene_overview(src, profile, max_side, idx)
        bounds, crs, transform = tuple(src.bounds), src.crs, src.transform
        width, height, tags = src.width, src.height, dict(src.tags())
    if input_scale == "auto":
        means = [float(b[valid].mean()) if valid.any() else 0.0 for b in rgb]
        raw = float(np.median(means)) > RAW_THRESHOLD
    else:
        raw = input_scale == "raw"
    if not raw:  # back to digital numbers: the L4S divisors differ per band and would shift the colours
        rgb = rgb * np.array([profile.divisors[i] for i in idx], np.float32)[:, None, None]
    img = percentile_stretch(rgb, valid, PERCENTILES, joint=True, gamma=GAMMA).astype(np.float32)
    img[:, ~valid] = 0.0
    mask = _not_observed(not_observed, valid.shape, (height, width))
    return NaturalColour(img.transpose(1, 2, 0), valid, mask, bounds, crs, transform, width, height, tags)


def _rgb_indices(scene: object, names: Sequence[str]) -> tuple[int, ...]:
    """0-based indexes of B4, B3, B2 among ``names``."""
    if not {"B4", "B3", "B2"} <= set(names):
        raise InputError(f"{scene}: bands {', '.join(names)} have no B4/B3/B2 for a natural-colour quick-look")
    return tuple(list(names).index(b) for b in ("B4", "B3", "B2"))


def _not_observed(mask: Any, shape: tuple[int, int], full: tuple[int, int]) -> np.ndarray | None:
    """The not-observed mask on the overview grid (nearest pixel), from an array or a raster path."""
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        from rasterio.enums import Resampling

        with open_raster(mask, "not-observed mask") as src:
            if (src.height, src.width) != full:
                raise InputError(f"{mask}: not-observed mask is {src.height} x {src.width} pixels but the scene "
                                 f"is {full[0]} x {full[1]}; write it on the scene's grid")
            m = read_window(src, 1, None, out_shape=shape, resampling=Resampling.nearest)
            nodata = src.nodata
        out = m != 0
        if nodata is not None and not np.isnan(nodata):
            out &= m != nodata
        return out
    m = np.asarray(mask)
    if m.shape == shape:
        return m.astype(bool)
    if m.shape == full:
        rows = np.minimum(((np.arange(shape[0]) + 0.5) * full[0] / shape[0]).astype(int), full[0] - 1)
        cols = np.minimum(((np.arange(shape[1]) + 0.5) * full[1] / shape[1]).astype(int), full[1] - 1)
        return m[np.ix_(rows, cols)].astype(bool)
    raise InputError(f"not-observed mask has shape {m.shape}; expected the scene's {full} (or {shape})")


def scene_date(name: str | os.PathLike | None, tags: dict | None = None) -> str | None:
    """Acquisition date ``YYYY-MM-DD`` of a scene from its tags (:data:`DATE_TAGS`) or its file name.

    ``None`` when neither holds a date.
    """
    for key in DATE_TAGS:
        for k, v in (tags or {}).items():
            if k.upper() == key and (m := _DATE_RE.search(str(v))):
                return "-".join(m.groups())
    if name is not None:
        for part in reversed(Path(name).parts):  # the file's own name first, then its folders
            if m := _DATE_RE.search(part):
                return "-".join(m.groups())
    return None


def model_label(models: Any) -> str | None:
    """Short label of the models of a run, comma-joined: checkpoint stem and architecture of each
    ensemble member, the architecture of a model card, or the name of a checkpoint path."""
    if not models:
        return None
    if isinstance(models, str):
        return models
    names = []
    for m in models:
        if isinstance(m, (str, os.PathLike)):
            source, card = m, None
        elif hasattr(m, "module"):  # an ensemble member
            source, card = getattr(m, "source", None), getattr(m, "card", None)
        else:  # a model card (object or dict)
            source, card = None, m
        arch = card.get("model") if isinstance(card, dict) else getattr(card, "model", None)
        stem = Path(str(source)).name.removesuffix(".safetensors").removesuffix(".json") if source else ""
        names.append(f"{stem} ({arch})" if arch and stem and stem != arch else stem or str(arch or m))
    return ", ".join(names)


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 x 10^k) of about a fifth of ``span``."""
    target = span / 5
    k = 10 ** math.floor(math.log10(target))
    return max((m * k for m in (1, 2, 5) if m * k <= target), default=k)


def _metres_per_unit(crs, bounds) -> tuple[float, str]:
    """Ground metres per CRS unit along x at the scene centre (:func:`lsmap.core.ground.ground_metres_per_unit`),
    and the axes' unit label."""
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    if c.is_geographic:
        lat = (bounds[1] + bounds[3]) / 2
        return 111_320.0 * math.cos(math.radians(lat)), "°"
    axis = c.axis_info[0]
    return ground_metres_per_unit(c, bounds), {"metre": "m"}.get(axis.unit_name, axis.unit_name)


def grid_convergence(crs, x: float, y: float) -> float:
    """Angle (degrees, clockwise from the grid's up) of true north at ``(x, y)``; 0 when unknown."""
    try:
        from pyproj import CRS, Transformer

        c = CRS.from_user_input(crs)
        if c.is_geographic:
            return 0.0
        to_ll = Transformer.from_crs(c, c.geodetic_crs, always_xy=True)
        back = Transformer.from_crs(c.geodetic_crs, c, always_xy=True)
        lon, lat = to_ll.transform(x, y)
        x2, y2 = back.transform(lon, min(lat + 0.01, 89.99))
        angle = math.degrees(math.atan2(x2 - x, y2 - y))
        return angle if math.isfinite(angle) else 0.0
    except Exception:  # noqa: BLE001 - a decoration: never fail the map for it
        return 0.0


def polygon_rings(geoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ring of the (Multi)Polygons ``geoms`` (each polygon's exterior, then its holes), all at once;
    parts that are not polygons, and empty ones, are skipped.

    Returns:
        ``(xy, sizes, owner)``: ``(v, 2)`` vertices of all rings one after another, ``(r,)`` vertices of
        each ring, ``(r,)`` index in ``geoms`` of each ring's geometry.
    """
    import shapely

    parts, owner = shapely.get_parts(np.asarray(list(geoms), dtype=object), return_index=True)
    keep = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(parts)
    rings, ring_part = shapely.get_rings(parts[keep], return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    return xy, np.bincount(ring_of, minlength=len(rings)), owner[keep][ring_part]


def _ring_list(xy: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """The rings of :func:`polygon_rings` as one ``(n, 2)`` array each."""
    return np.split(xy, np.cumsum(sizes)[:-1]) if len(sizes) else []


def _outlined(ax, segs, colors, *, width: float, halo: float, halo_alpha: float, zorder: float, **line) -> None:
    """Outlines with a dark halo: the halo as a wider black line collection under the coloured one. Two
    collections, not a path effect: matplotlib draws a path effect path by path (the whole map of the 153 k
    outlines of a fragmented mask took 25.9 s, 9.4 s now: BENCHMARKS.md); landslides do not overlap, so it
    looks the same."""
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segs, colors="black", alpha=halo_alpha, linewidths=halo, zorder=zorder,
                                     capstyle="round", joinstyle="round"))
    ax.add_collection(LineCollection(segs, colors=colors, linewidths=width, zorder=zorder, **line))


def _fit_text(text, width_px: float, smallest: float = 7.0) -> None:
    """Shrink ``text`` (a matplotlib Text) to fit ``width_px``: a smaller font down to ``smallest`` pt, then the
    middle of the string cut out (``...``): a long product name (a SAFE name is 60 characters) ran off the image."""
    renderer = text.figure.canvas.get_renderer()
    wide = text.get_window_extent(renderer).width
    if wide <= width_px:
        return
    text.set_fontsize(max(smallest, text.get_fontsize() * width_px / wide))
    full = text.get_text()
    keep = len(full)
    while text.get_window_extent(renderer).width > width_px and keep > 8:
        keep -= 2
        text.set_text(f"{full[:keep // 2]}...{full[len(full) - keep // 2:]}")


def render_quicklook(scene: str | os.PathLike, polygons, out: str | os.PathLike,
                     bands: str | BandProfile | Sequence[str] | None = None,
                     overwrite: bool = False, title: str | None = None, *, models: Any = None,
                     date: str | None = None, scene_name: str | None = None, not_observed: Any = None,
                     input_scale: str = "auto", image: NaturalColour | None = None, rejected=None) -> Path:
    """Render ``scene`` in natural colour with ``polygons`` outlined, as a PNG map (module docstring).

    Args:
        scene: GeoTIFF with the bands of ``bands``.
        polygons: GeoDataFrame of landslide polygons (reprojected to the scene's CRS if needed);
            outlines are coloured by ``mean_prob`` when it has that column.
        out: PNG path (written atomically).
        bands: The scene's bands in file order; ``None``: its band descriptions (the L4S order for
            a 14-band file without them).
        overwrite: Replace an existing ``out``.
        title: First title line (default: the scene's name and date).
        models: Model label, or the checkpoints/members of the run (:func:`model_label`).
        date: Acquisition date (default: :func:`scene_date` of the scene's tags and name).
        scene_name: Name shown for the scene (default: the file name of ``scene``); also searched
            for a date.
        not_observed: Not-observed mask (see :func:`natural_colour`).
        input_scale: Scale of the scene's values (see :func:`natural_colour`).
        image: The already-read :func:`natural_colour` of the scene (then ``scene`` is not read).
        rejected: GeoDataFrame of polygons the change/terrain evidence rejected
            (:func:`lsmap.map.evidence.apply_evidence`): drawn as dashed grey outlines, counted in the legend.

    Raises:
        InputError: the profile lacks a natural-colour band; a bad not-observed mask.
        OutputExistsError: ``out`` exists and not ``overwrite``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors as mcolors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Patch, Polygon
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    out = check_output(out, overwrite)
    nc = image or natural_colour(scene, bands, input_scale=input_scale, not_observed=not_observed)
    left, bottom, right, top = nc.bounds
    name = scene_name or Path(scene).name
    date = date or scene_date(name, nc.tags)
    h, w = nc.valid.shape

    # layout in inches: title band, map (aspect of the scene), colour bar at the right, caption below
    # a degree of longitude is cos(latitude) of a degree of latitude on the ground: drawn so (an audit found a
    # geographic scene stretched east-west by 13 %)
    y_per_x = 1.0
    if nc.crs is not None and _metres_per_unit(nc.crs, nc.bounds)[1] == "°":
        y_per_x = 1.0 / max(math.cos(math.radians((bottom + top) / 2)), 1e-6)
    aspect = abs(top - bottom) * y_per_x / max(abs(right - left), 1e-9)  # a south-up grid has bottom above top
    map_w = 5.9
    map_h = min(max(map_w * aspect, 2.5), 11.0)
    if map_h == 11.0:  # a tall scene: narrow the map instead of stretching it
        map_w = map_h / aspect
    elif map_h == 2.5:  # a wide, short scene: widen the map (up to 10 in) so the axes fit the image
        map_w = min(map_h / aspect, 10.0)
        map_h = map_w * aspect if map_w == 10.0 else map_h
        map_h = max(map_h, 1.2)
    pad_l, pad_r, pad_t, pad_b = 0.85, 1.45, 0.85, 0.75
    fig_w, fig_h = pad_l + map_w + pad_r, pad_b + map_h + pad_t
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=150)
    ax = fig.add_axes((pad_l / fig_w, pad_b / fig_h, map_w / fig_w, map_h / fig_h))
    cb_h = min(2.6, map_h * 0.8)
    cax = fig.add_axes(((pad_l + map_w + 0.22) / fig_w, (pad_b + (map_h - cb_h) / 2) / fig_h, 0.16 / fig_w,
                        cb_h / fig_h))
    extent = (left, right, bottom, top)
    ax.imshow(nc.rgba8(), extent=extent, interpolation="nearest" if max(h, w) < 400 else "antialiased")
    ax.set_aspect(y_per_x)
    legend = []
    if not nc.valid.all():
        legend.append(Patch(facecolor=NODATA_COLOUR, edgecolor="0.6", label="no data"))
    if nc.not_observed is not None:
        hatch_colour = "#3b3b8f"
        if nc.not_observed.any():
            cs = ax.contourf(nc.not_observed.astype(np.float32), levels=[0.5, 1.5], colors="none", hatches=["////"],
                             extent=extent, origin="upper")
            cs.set_edgecolor(hatch_colour)
            cs.set_linewidth(0)
        legend.append(Patch(facecolor=NOT_OBSERVED_COLOUR, edgecolor=hatch_colour, hatch="////",
                            label="not observed"))

    cmap = mcolors.ListedColormap([c.colour for c in PROB_CLASSES])
    norm = mcolors.BoundaryNorm([c.lower for c in PROB_CLASSES] + [PROB_CLASSES[-1].upper], cmap.N)
    n = 0 if polygons is None else len(polygons)
    area_km2 = 0.0
    if n:
        crs = nc.crs
        gdf = polygons.to_crs(crs) if polygons.crs is not None and crs is not None and polygons.crs != crs else polygons
        probs = gdf["mean_prob"].to_numpy(float) if "mean_prob" in gdf else np.ones(n)
        xy, sizes, owner = polygon_rings(gdf.geometry.values)
        colours = [prob_class(p).colour for p in probs]
        _outlined(ax, _ring_list(xy, sizes), [colours[i] for i in owner.tolist()], width=1.1, halo=2.4,
                  halo_alpha=0.8, zorder=3)
        area_km2 = float(gdf["area_m2"].sum()) / 1e6 if "area_m2" in gdf else float(gdf.geometry.area.sum()) / 1e6
    if rejected is not None and len(rejected):
        crs = nc.crs
        rj = rejected.to_crs(crs) if rejected.crs is not None and crs is not None and rejected.crs != crs else rejected
        segs = _ring_list(*polygon_rings(rj.geometry.values)[:2])
        _outlined(ax, segs, REJECTED_COLOUR, width=0.9, halo=1.8, halo_alpha=0.6, zorder=2, linestyles=(0, (3, 2)))
        legend.append(Line2D([], [], color=REJECTED_COLOUR, linestyle=(0, (3, 2)), linewidth=1.2,
                             label=f"rejected by evidence ({len(rj)})"))
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, cax=cax, ticks=[c.lower for c in PROB_CLASSES] + [1.0])
    cb.set_label("mean landslide probability\n(polygon outline)", fontsize=7.5)
    cb.ax.tick_params(labelsize=7)
    ax.set_xlim(min(left, right), max(left, right))  # north up and east right, whatever the grid's own order
    ax.set_ylim(min(bottom, top), max(bottom, top))

    # frame: coordinates in the scene CRS
    per_unit, unit = _metres_per_unit(nc.crs, nc.bounds) if nc.crs is not None else (1.0, "")
    geographic = unit == "°"
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3f}" if geographic else f"{v:,.0f}")
    ax.xaxis.set_major_formatter(fmt)
    ax.yaxis.set_major_formatter(fmt)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(max(2, min(5, int(map_h / 0.9)))))
    ax.tick_params(labelsize=7, direction="out")
    plt.setp(ax.get_yticklabels(), rotation=90, va="center")
    ax.set_xlabel("longitude (°)" if geographic else f"easting ({unit})", fontsize=7.5)
    ax.set_ylabel("latitude (°)" if geographic else f"northing ({unit})", fontsize=7.5)
    crs_name = ""
    if nc.crs is not None:
        from pyproj import CRS

        c = CRS.from_user_input(nc.crs)
        epsg = c.to_epsg()
        crs_name = c.name + (f" (EPSG:{epsg})" if epsg else "")

    # scale bar
    span_m = (right - left) * per_unit
    length_m = nice_length(span_m)
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    bar = AnchoredSizeBar(ax.transData, length_m / per_unit, label, loc="lower left", pad=0.4, borderpad=0.6,
                          sep=3, frameon=True, size_vertical=(top - bottom) * 0.008, color="black",
                          fontproperties={"size": 7})
    bar.patch.set_alpha(0.8)
    ax.add_artist(bar)

    # north arrow, turned to true north, on a white disc in the upper right corner
    angle = grid_convergence(nc.crs, (left + right) / 2, (bottom + top) / 2) if nc.crs is not None else 0.0
    r = 0.27  # disc radius, inches
    cx, cy = map_w - r - 0.1, map_h - r - 0.1  # centre, inches from the map's lower left corner
    to_map = fig.dpi_scale_trans + matplotlib.transforms.ScaledTranslation(0, 0, ax.transAxes)
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))

    def turn(u: float, v: float) -> tuple[float, float]:  # (u right, v up) in the arrow's frame -> inches
        return cx + u * cos + v * sin, cy - u * sin + v * cos

    ax.add_patch(Circle((cx, cy), r, transform=to_map, facecolor="white", edgecolor="0.35", lw=0.6, alpha=0.85,
                        zorder=4))
    tip, base_l, base_r, notch = turn(0, 0.09), turn(-0.085, -0.21), turn(0.085, -0.21), turn(0, -0.14)
    ax.add_patch(Polygon([tip, base_l, notch], closed=True, transform=to_map, facecolor="black", lw=0, zorder=5))
    ax.add_patch(Polygon([tip, notch, base_r], closed=True, transform=to_map, facecolor="white", edgecolor="black",
                         lw=0.7, zorder=5))
    ax.text(*turn(0, 0.1), "N", transform=to_map, ha="center", va="bottom", fontsize=7.5, fontweight="bold",
            rotation=-angle, rotation_mode="anchor", zorder=6)

    if legend:
        ax.legend(handles=legend, loc="lower right", fontsize=7, framealpha=0.85, borderpad=0.5, handlelength=1.6)

    head = title or " · ".join(x for x in (Path(name).stem, date) if x)
    y_title = 1 - 0.30 / fig_h
    _fit_text(fig.text(pad_l / fig_w, y_title, head, fontsize=11, fontweight="bold", ha="left", va="center"),
              (fig_w - pad_l - 0.15) * fig.dpi)
    sub = [f"{n} landslide polygon{'s' if n != 1 else ''}, {area_km2:.2f} km²"]
    if models:
        sub.append(f"model: {model_label(models)}")
    fig.text(pad_l / fig_w, y_title - 0.27 / fig_h, " · ".join(sub), fontsize=8, ha="left", va="center", color="0.2")
    fig.text(pad_l / fig_w, 0.16 / fig_h, f"{crs_name}    natural colour (B4, B3, B2), one stretch for the three bands",
             fontsize=6.5, ha="left", va="center", color="0.35")
    with atomic_output(out, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
